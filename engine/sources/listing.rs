//! Finding a job's input files in a folder.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use globset::{Glob, GlobSetBuilder};
use object_store::path::Path;
use object_store::ObjectStore;

use crate::storage::{Location, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("input pattern `{pattern}` is not a valid glob: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("{file}: unsupported input format (expected .csv or .parquet)")]
    UnsupportedFormat { file: String },
}

/// The formats a job can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Parquet,
}

/// One input file with what the readers need to know about it.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub name: String,
    /// Full URL, used in messages and as the `source_file` lineage value.
    pub url: String,
    /// URL of the folder the file is in, as [`Location::open`] takes it.
    pub folder: String,
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// The file on disk, for local inputs: read directly rather than through the object store.
    pub local_path: Option<std::path::PathBuf>,
    pub size: u64,
    /// When the file's data was produced (see [`Location::source_time`]).
    pub source_time: DateTime<Utc>,
    pub format: InputFormat,
}

/// Lists the files directly in `location` whose names match any of `patterns` (globs, matched
/// against the file name only), sorted by name.
pub async fn list_inputs(
    location: &Location,
    patterns: &[String],
) -> Result<Vec<InputFile>, ListingError> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| ListingError::BadPattern {
            pattern: p.clone(),
            message: e.to_string(),
        })?);
    }
    let matcher = builder.build().map_err(|e| ListingError::BadPattern {
        pattern: patterns.join(", "),
        message: e.to_string(),
    })?;
    let mut inputs = Vec::new();
    for entry in location.list_files().await? {
        if !matcher.is_match(&entry.name) {
            continue;
        }
        let lower = entry.name.to_ascii_lowercase();
        let format = if lower.ends_with(".csv") {
            InputFormat::Csv
        } else if lower.ends_with(".parquet") {
            InputFormat::Parquet
        } else {
            return Err(ListingError::UnsupportedFormat {
                file: location.child_url(&entry.name),
            });
        };
        let source_time = location.source_time(&entry).await?;
        inputs.push(InputFile {
            url: location.child_url(&entry.name),
            folder: location.url.clone(),
            local_path: location.local_path(&entry.name),
            name: entry.name,
            store: location.store.clone(),
            path: entry.path,
            size: entry.size,
            source_time,
            format,
        });
    }
    Ok(inputs)
}
