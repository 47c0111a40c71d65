//! Job definitions: one `.sql` file per job under `jobs/`.
//!
//! The file is plain SQL that DataFusion executes, preceded by a block comment opened with
//! `/* tally:job` that holds the job's declared metadata as TOML: its name, parameters, the input
//! files and their layout, the record key, partition and precombine fields, and the sink tables.
//! Because the metadata is a comment, the whole file still pastes into any SQL editor.
//!
//! ```
//! let job = tally::job::JobDefinition::parse(r#"
//! /* tally:job
//! name = "tiny"
//! params = ["province"]
//! [input]
//! files = ["{province}-*.csv"]
//! layout = "pos_transactions"
//! [output]
//! record_key = ["store_id"]
//! partition_field = "store_id"
//! precombine_field = "source_time"
//! */
//! SELECT store_id, MAX(source_time) AS source_time FROM transactions GROUP BY store_id
//! "#, "tiny.sql", &tally::layout::LayoutSet::embedded()).unwrap();
//! assert_eq!(job.name, "tiny");
//! assert_eq!(job.input_patterns(&[("province", "IL")].into()).unwrap(), vec!["IL-*.csv"]);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::layout::{ColumnToml, ColumnType, Layout, LayoutError, LayoutSet, LayoutToml};

/// The marker that opens a job's metadata comment.
pub const METADATA_MARKER: &str = "/* tally:job";

/// Jobs compiled into the binary, so `tally` runs anywhere (an EMR node, the demo) without the
/// repository's `jobs/` folder. A file of the same name in the jobs folder takes precedence.
pub const EMBEDDED_JOBS: &[(&str, &str)] = &[(
    "province_sales.sql",
    include_str!("../../jobs/province_sales.sql"),
)];

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read job file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("no job named `{name}` (known: {known}); pass a path to a .sql file or add one to the jobs folder")]
    NotFound { name: String, known: String },
    #[error(
        "parameter `{name}` is required by job `{job}` (pass --{name} or --param {name}=VALUE)"
    )]
    MissingParam { job: String, name: String },
    #[error(
        "parameter `{name}` value `{value}` is not allowed: use letters, digits, `_` and `-` only"
    )]
    BadParam { name: String, value: String },
}

/// A job: its SQL and what it declares about inputs, outputs and sinks.
#[derive(Debug, Clone)]
pub struct JobDefinition {
    pub name: String,
    pub description: String,
    /// Where the definition came from (a path, or `embedded:<file>`).
    pub origin: String,
    /// Parameters the SQL refers to as `$name`.
    pub params: Vec<String>,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub sinks: SinkSpec,
    /// The query, without the metadata comment.
    pub sql: String,
}

/// What the job reads.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The table name the SQL reads.
    pub table: String,
    /// File-name globs, with `{param}` placeholders.
    pub files: Vec<String>,
    pub layout: Layout,
    /// A string column of the layout each input file holds one value of (a store's own file
    /// holds only that store's rows): the files are then read in ranges of it, one range per
    /// partition, so a GROUP BY whose key includes it runs without an exchange between
    /// partitions. Checked on every row (see [`crate::sources::KeyRanges`]).
    pub file_key: Option<String>,
}

/// What the job's rows are, for the sinks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputSpec {
    pub record_key: Vec<String>,
    pub partition_field: String,
    pub precombine_field: String,
}

/// Where the job's rows go, by name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkSpec {
    pub hudi_table: String,
    pub hive_style_partitioning: bool,
    pub warehouse_table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataToml {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    params: Vec<String>,
    input: InputToml,
    output: OutputSpecToml,
    #[serde(default)]
    sinks: SinksToml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputToml {
    #[serde(default = "default_table")]
    table: String,
    files: Vec<String>,
    layout: Option<String>,
    columns: Option<Vec<ColumnToml>>,
    file_key: Option<String>,
}

fn default_table() -> String {
    "transactions".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSpecToml {
    record_key: Vec<String>,
    partition_field: String,
    precombine_field: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SinksToml {
    hudi_table: Option<String>,
    #[serde(default)]
    hive_style_partitioning: bool,
    warehouse_table: Option<String>,
}

impl JobDefinition {
    /// Reads a job file.
    pub fn load(path: &Path, layouts: &LayoutSet) -> Result<JobDefinition, DefinitionError> {
        let text = std::fs::read_to_string(path).map_err(|cause| DefinitionError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        Self::parse(&text, &path.display().to_string(), layouts)
    }

    /// Parses a job file's text; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        layouts: &LayoutSet,
    ) -> Result<JobDefinition, DefinitionError> {
        let invalid = |message: String| DefinitionError::Invalid {
            path: origin.to_string(),
            message,
        };
        let start = text.find(METADATA_MARKER).ok_or_else(|| {
            invalid(format!(
                "no `{METADATA_MARKER}` metadata comment (see jobs/province_sales.sql for the format)"
            ))
        })?;
        let body_start = start + METADATA_MARKER.len();
        let end = text[body_start..]
            .find("*/")
            .map(|i| body_start + i)
            .ok_or_else(|| invalid("the metadata comment is never closed with */".into()))?;
        let meta: MetadataToml = toml::from_str(&text[body_start..end])
            .map_err(|e| invalid(format!("metadata is not valid: {e}")))?;
        let sql = format!("{}{}", &text[..start], &text[end + 2..])
            .trim()
            .to_string();
        if sql.is_empty() {
            return Err(invalid("the job has no SQL after its metadata".into()));
        }
        let layout = match (meta.input.layout, meta.input.columns) {
            (Some(name), None) => layouts.by_name(&name)?.clone(),
            (None, Some(columns)) => LayoutToml {
                name: format!("{}_input", meta.name),
                description: String::new(),
                files: vec![],
                columns,
            }
            .build(origin)?,
            _ => {
                return Err(invalid(
                    "[input] needs exactly one of `layout = \"NAME\"` or `columns = [...]`".into(),
                ))
            }
        };
        if meta.input.files.is_empty() {
            return Err(invalid("[input] files lists no patterns".into()));
        }
        if let Some(key) = &meta.input.file_key {
            match layout.columns.iter().find(|c| &c.name == key) {
                Some(c) if c.ty == ColumnType::String => {}
                Some(c) => {
                    return Err(invalid(format!(
                        "[input] file_key `{key}` is a {} column; it must be a string column",
                        c.ty
                    )))
                }
                None => {
                    return Err(invalid(format!(
                        "[input] file_key `{key}` is not a column of layout `{}`",
                        layout.name
                    )))
                }
            }
        }
        if meta.output.record_key.is_empty() {
            return Err(invalid("[output] record_key is empty".into()));
        }
        for pattern in &meta.input.files {
            for name in placeholders(pattern) {
                if !meta.params.iter().any(|p| p == name) {
                    return Err(invalid(format!(
                        "input pattern `{pattern}` uses {{{name}}}, which is not in params"
                    )));
                }
            }
        }
        let sinks = SinkSpec {
            hudi_table: meta.sinks.hudi_table.unwrap_or_else(|| meta.name.clone()),
            hive_style_partitioning: meta.sinks.hive_style_partitioning,
            warehouse_table: meta
                .sinks
                .warehouse_table
                .unwrap_or_else(|| meta.name.clone()),
        };
        Ok(JobDefinition {
            name: meta.name,
            description: meta.description,
            origin: origin.to_string(),
            params: meta.params,
            input: InputSpec {
                table: meta.input.table,
                files: meta.input.files,
                layout,
                file_key: meta.input.file_key,
            },
            output: OutputSpec {
                record_key: meta.output.record_key,
                partition_field: meta.output.partition_field,
                precombine_field: meta.output.precombine_field,
            },
            sinks,
            sql,
        })
    }

    /// Checks that every declared parameter has a safe value.
    pub fn check_params(&self, values: &BTreeMap<String, String>) -> Result<(), DefinitionError> {
        for name in &self.params {
            let value = values
                .get(name)
                .ok_or_else(|| DefinitionError::MissingParam {
                    job: self.name.clone(),
                    name: name.clone(),
                })?;
            let safe = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !safe {
                return Err(DefinitionError::BadParam {
                    name: name.clone(),
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }

    /// The input file globs with parameters substituted.
    pub fn input_patterns(
        &self,
        values: &BTreeMap<&str, &str>,
    ) -> Result<Vec<String>, DefinitionError> {
        let owned: BTreeMap<String, String> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.check_params(&owned)?;
        Ok(self
            .input
            .files
            .iter()
            .map(|p| {
                owned
                    .iter()
                    .fold(p.clone(), |acc, (k, v)| acc.replace(&format!("{{{k}}}"), v))
            })
            .collect())
    }
}

fn placeholders(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(name);
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// The jobs a command can name: files in the jobs folder, then the embedded ones.
pub struct JobCatalog {
    pub dir: PathBuf,
    layouts: LayoutSet,
}

impl JobCatalog {
    pub fn new(dir: impl Into<PathBuf>, layouts: LayoutSet) -> JobCatalog {
        JobCatalog {
            dir: dir.into(),
            layouts,
        }
    }

    /// The layouts jobs resolve their input layout names against.
    pub fn layouts(&self) -> &LayoutSet {
        &self.layouts
    }

    /// Every job, by name; a job file in the folder shadows an embedded job of the same file name.
    /// A broken file is listed as an error rather than hidden.
    pub fn list(&self) -> Vec<Result<JobDefinition, DefinitionError>> {
        let mut seen_files = Vec::new();
        let mut jobs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            paths.sort();
            for path in paths {
                if let Some(name) = path.file_name() {
                    seen_files.push(name.to_string_lossy().to_string());
                }
                jobs.push(JobDefinition::load(&path, &self.layouts));
            }
        }
        for (file, text) in EMBEDDED_JOBS {
            if !seen_files.iter().any(|f| f == file) {
                jobs.push(JobDefinition::parse(
                    text,
                    &format!("embedded:{file}"),
                    &self.layouts,
                ));
            }
        }
        jobs
    }

    /// A job by name or by path to a `.sql` file.
    pub fn find(&self, name_or_path: &str) -> Result<JobDefinition, DefinitionError> {
        let path = Path::new(name_or_path);
        if name_or_path.ends_with(".sql") || path.components().count() > 1 {
            if path.exists() {
                return JobDefinition::load(path, &self.layouts);
            }
            // `jobs/province_sales.sql` outside a checkout: fall back to the embedded copy.
            if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
                if let Some((_, text)) = EMBEDDED_JOBS.iter().find(|(f, _)| *f == file) {
                    tracing::info!(job = file, "job file not found; using the embedded copy");
                    return JobDefinition::parse(text, &format!("embedded:{file}"), &self.layouts);
                }
            }
            return JobDefinition::load(path, &self.layouts);
        }
        let mut known = Vec::new();
        for job in self.list().into_iter().flatten() {
            if job.name == name_or_path {
                return Ok(job);
            }
            known.push(job.name);
        }
        Err(DefinitionError::NotFound {
            name: name_or_path.to_string(),
            known: known.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layouts() -> LayoutSet {
        LayoutSet::embedded()
    }

    #[test]
    fn the_province_job_parses() {
        let job = JobDefinition::parse(EMBEDDED_JOBS[0].1, "embedded", &layouts()).unwrap();
        assert_eq!(job.name, "province_sales");
        assert_eq!(job.params, ["province"]);
        assert_eq!(job.output.record_key, ["store_id", "item_id", "trans_date"]);
        assert_eq!(job.input.layout.name, "pos_transactions");
        assert!(job.sql.starts_with("-- Stores send cumulative files"));
        assert!(!job.sql.contains("tally:job"));
        let patterns = job.input_patterns(&[("province", "IL")].into()).unwrap();
        assert_eq!(patterns, ["IL-*.csv", "IL-*.parquet"]);
    }

    #[test]
    fn unsafe_parameter_values_are_refused() {
        let job = JobDefinition::parse(EMBEDDED_JOBS[0].1, "embedded", &layouts()).unwrap();
        for bad in ["", "I*", "../x", "IL' OR 1=1", "a/b"] {
            assert!(
                job.input_patterns(&[("province", bad)].into()).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            job.input_patterns(&BTreeMap::new()),
            Err(DefinitionError::MissingParam { .. })
        ));
    }

    #[test]
    fn broken_metadata_is_reported_with_the_file() {
        let cases = [
            ("SELECT 1", "no `/* tally:job`"),
            ("/* tally:job name = 'x' ", "never closed"),
            ("/* tally:job\nname='x'\n*/ SELECT 1", "metadata is not valid"),
            (
                "/* tally:job\nname='x'\n[input]\nfiles=['{p}-*.csv']\nlayout='pos_transactions'\n[output]\nrecord_key=['a']\npartition_field='a'\nprecombine_field='a'\n*/ SELECT 1",
                "not in params",
            ),
            (
                "/* tally:job\nname='x'\n[input]\nfiles=['*.csv']\nlayout='nope'\n[output]\nrecord_key=['a']\npartition_field='a'\nprecombine_field='a'\n*/ SELECT 1",
                "unknown layout",
            ),
        ];
        for (text, expected) in cases {
            let err = JobDefinition::parse(text, "bad.sql", &layouts())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn inline_columns_make_a_layout() {
        let job = JobDefinition::parse(
            "/* tally:job\nname='x'\n[input]\nfiles=['*.csv']\ncolumns=[{name='k', type='string'}, {name='v', type='decimal(10,3)'}]\n[output]\nrecord_key=['k']\npartition_field='k'\nprecombine_field='source_time'\n*/ SELECT k FROM transactions",
            "x.sql",
            &layouts(),
        )
        .unwrap();
        assert_eq!(job.input.layout.columns.len(), 2);
        assert_eq!(job.sinks.hudi_table, "x");
    }
}
