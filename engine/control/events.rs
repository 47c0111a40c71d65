//! The event-driven layers as functions of their events: what the Lambda function
//! (`tally-lambda`, `--features lambda`) does with an S3 `ObjectCreated` record or a schedule.
//!
//! - an object created under the raw prefix is validated into the validated prefix (its
//!   quarantine beside it); validating the same object twice writes the same bytes again;
//! - an object created under the validated prefix (not its quarantine) is tracked, with the
//!   event's time;
//! - a scheduled event runs a scheduler pass, then a monitor pass.
//!
//! Invariants: a failure that a retry can cure (the store, S3 or the state store unreachable)
//! is an error, so Lambda's own retries and its dead-letter queue apply; a file that validation
//! refuses (too many bad rows) is not one: its report says so and the event succeeds.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{monitor, schedule, Decision, ScheduleOptions};
use crate::layout::LayoutSet;
use crate::progress::Progress;
use crate::state::{StateError, StateStore};
use crate::validate::{validate_some, FileReport, ValidateError, ValidateOptions};

/// Where raw files arrive and where their validated files go (folders or S3 prefixes), and how
/// they are validated: what the Lambda function and `tally watch` both work on.
#[derive(Debug, Clone)]
pub struct Folders {
    /// Raw `.tdf` files arrive here (`raw/`, `s3://bucket/raw`).
    pub raw: String,
    /// Validated files go here; they are tracked under this spelling.
    pub validated: String,
    /// A file with more bad rows than this is not published.
    pub max_bad_rows: Option<u64>,
    pub layouts: LayoutSet,
}

impl Folders {
    /// Validation from the raw folder into the validated one, `parallelism` files at once.
    pub fn validation(&self, parallelism: usize) -> ValidateOptions {
        ValidateOptions {
            input: self.raw.clone(),
            output: self.validated.clone(),
            max_bad_rows: self.max_bad_rows,
            parallelism,
            layouts: self.layouts.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the function did with one created object.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ObjectAction {
    /// A raw file, validated (or refused: see its status).
    Validated { url: String, report: FileReport },
    /// A validated file, recorded for the scheduler.
    Tracked { url: String },
    /// Neither (a quarantine file, another prefix, another kind of file).
    Ignored { url: String, why: String },
}

/// What a scheduled event did.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledPass {
    pub scheduled: Vec<Decision>,
    pub monitored: Vec<Decision>,
}

/// `url` under `prefix`: the rest of the path, if any.
fn under<'u>(url: &'u str, prefix: &str) -> Option<&'u str> {
    url.strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty())
}

/// Handles one created object (`s3://bucket/key`, key decoded) at the event's time.
pub async fn on_object_created(
    config: &Folders,
    store: &StateStore,
    url: &str,
    time: DateTime<Utc>,
) -> Result<ObjectAction, EventError> {
    let ignored = |why: &str| ObjectAction::Ignored {
        url: url.to_string(),
        why: why.to_string(),
    };
    if let Some(rest) = under(url, &config.raw) {
        if rest.contains('/') || !rest.to_ascii_lowercase().ends_with(".tdf") {
            return Ok(ignored("not a .tdf file directly under the raw prefix"));
        }
        let mut report = validate_some(&config.validation(1), &Progress::hidden(), |f| {
            f.name == rest
        })
        .await?;
        return Ok(match report.files.pop() {
            Some(report) => ObjectAction::Validated {
                url: url.to_string(),
                report,
            },
            // Listed a moment later, the object is gone (deleted, or an event delivered late).
            None => ignored("the object is no longer there"),
        });
    }
    if let Some(rest) = under(url, &config.validated) {
        let lower = rest.to_ascii_lowercase();
        if rest.contains('/') || !(lower.ends_with(".csv") || lower.ends_with(".parquet")) {
            return Ok(ignored(
                "not a validated file directly under the validated prefix",
            ));
        }
        store.track_files(&[(url.to_string(), time)]).await?;
        return Ok(ObjectAction::Tracked {
            url: url.to_string(),
        });
    }
    Ok(ignored("under neither the raw nor the validated prefix"))
}

/// A scheduled event: a scheduler pass (submitting ready jobs), then a monitor pass (settling
/// EMR steps that ended without their run reporting).
pub async fn on_schedule(
    store: &StateStore,
    options: &ScheduleOptions,
    emr: &aws_sdk_emr::Client,
) -> Result<ScheduledPass, EventError> {
    let scheduled = schedule(store, options).await?;
    let monitored = monitor(store, emr).await?;
    Ok(ScheduledPass {
        scheduled,
        monitored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_routed_by_prefix() {
        assert_eq!(
            under("s3://b/raw/WI-1.tdf", "s3://b/raw/"),
            Some("WI-1.tdf")
        );
        assert_eq!(under("s3://b/raw/WI-1.tdf", "s3://b/raw"), Some("WI-1.tdf"));
        assert_eq!(under("s3://b/rawer/WI-1.tdf", "s3://b/raw"), None);
        assert_eq!(under("s3://b/raw/", "s3://b/raw"), None);
        assert_eq!(
            under("s3://b/validated/_quarantine/WI-1.csv", "s3://b/validated"),
            Some("_quarantine/WI-1.csv")
        );
    }
}
