//! The file sink: the job's rows in a local file (`tally run --output FILE`), in any output
//! format.
//!
//! Invariant: the file at the path is either the previous one or complete. Staging writes a
//! hidden temporary file beside it; publishing renames it over the path (atomic on one file
//! system); discarding removes it.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{JobRows, Sink, SinkDetails, SinkError, SinkReport, StagedWrite};
use crate::output::{write_rows, OutputFormat};

/// Writes a job's rows to one local file.
#[derive(Debug, Clone)]
pub struct FileSink {
    pub path: PathBuf,
    pub format: OutputFormat,
}

impl FileSink {
    fn err(&self, message: String) -> SinkError {
        SinkError {
            sink: "file",
            target: self.path.display().to_string(),
            message,
        }
    }
}

/// The temporary file a write goes to before it is renamed over `path`.
fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.tally-{}", uuid::Uuid::new_v4()))
}

#[async_trait]
impl Sink for FileSink {
    async fn stage(&self, rows: &JobRows<'_>) -> Result<Box<dyn StagedWrite>, SinkError> {
        let staged = staging_path(&self.path);
        let write = || -> Result<u64, WriteError> {
            let io = |source| WriteError::Io {
                path: staged.clone(),
                source,
            };
            let mut out = std::io::BufWriter::new(std::fs::File::create(&staged).map_err(io)?);
            write_rows(self.format, &rows.schema, rows.batches, &mut out)
                .map_err(WriteError::Encode)?;
            let file = out.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            Ok(file.metadata().map(|m| m.len()).unwrap_or_default())
        };
        match write() {
            Ok(bytes) => Ok(Box::new(StagedFile {
                sink: self.clone(),
                staged,
                rows: rows.batches.iter().map(|b| b.num_rows() as u64).sum(),
                bytes,
            })),
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                Err(SinkError::caused_by(
                    "file",
                    self.path.display().to_string(),
                    None,
                    &e,
                ))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the rows")]
    Encode(#[source] datafusion::arrow::error::ArrowError),
}

struct StagedFile {
    sink: FileSink,
    staged: PathBuf,
    rows: u64,
    bytes: u64,
}

#[async_trait]
impl StagedWrite for StagedFile {
    async fn publish(self: Box<Self>) -> Result<SinkReport, SinkError> {
        let path = &self.sink.path;
        std::fs::rename(&self.staged, path).map_err(|e| {
            let _ = std::fs::remove_file(&self.staged);
            self.sink
                .err(format!("cannot move the rows into place: {e}"))
        })?;
        Ok(SinkReport {
            sink: "file".into(),
            target: path.display().to_string(),
            summary: format!("{} rows, {} bytes", self.rows, self.bytes),
            details: SinkDetails::File {
                path: path.display().to_string(),
                rows: self.rows,
                bytes: self.bytes,
            },
        })
    }

    async fn discard(self: Box<Self>) -> Result<(), SinkError> {
        match std::fs::remove_file(&self.staged) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self
                .sink
                .err(format!("cannot remove {}: {e}", self.staged.display()))),
        }
    }
}
