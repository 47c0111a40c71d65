//! When a job is ready to run: the reference implementation's three preconditions, plus the
//! retry rule for a job whose last attempt failed.
//!
//! 1. at least `job_min_file_count` tracked files match the job's input pattern;
//! 2. all of them were validated after the job's watermark (when its last COMPLETED run listed
//!    its inputs; a FAILED run does not move it, so the same inputs stay eligible);
//! 3. after consecutive failures, the next attempt waits out the job's [`RetryPolicy`] backoff,
//!    and once the retries are spent the job waits for a new version of one of its files;
//! 4. its extra criteria return a row (see [`crate::state::criteria`]).

use chrono::{DateTime, Utc};
use globset::GlobBuilder;

use crate::state::{store_time, JobConfigRow, JobParams, RetryPolicy};

/// What the file-based preconditions say about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready, over these files; `retry` is the number of the retry when it is one.
    Ready {
        inputs: Vec<String>,
        retry: Option<u32>,
    },
    /// Not ready, and why.
    Waiting(String),
}

/// A job's input pattern that is not a glob.
#[derive(Debug, thiserror::Error)]
#[error("input pattern `{pattern}` is not a glob: {source}")]
pub struct PatternError {
    pub pattern: String,
    source: globset::Error,
}

/// Why a failed job's retry may not start yet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetryWait {
    #[error("gave up after {failures} failed attempts (retry limit {limit}): waiting for a new version of an input file")]
    GaveUp { failures: u32, limit: u32 },
    #[error("retry {failures} of {limit} is due at {} (backoff after {failures} failed attempts)", store_time(*due))]
    NotYet {
        failures: u32,
        limit: u32,
        due: DateTime<Utc>,
    },
}

/// The tracked files (URL, validation time) that `job`'s input pattern matches, or why the
/// pattern cannot match anything.
pub fn job_files<'f>(
    job: &JobConfigRow,
    files: &'f [(String, Option<String>)],
) -> Result<Vec<&'f (String, Option<String>)>, PatternError> {
    let matcher = GlobBuilder::new(&job.input_pattern)
        .literal_separator(true)
        .build()
        .map_err(|source| PatternError {
            pattern: job.input_pattern.clone(),
            source,
        })?
        .compile_matcher();
    Ok(files
        .iter()
        .filter(|(url, _)| matcher.is_match(url))
        .collect())
}

/// Checks preconditions 1–3 for `job` over the tracked files at time `now`.
pub fn file_readiness(
    job: &JobConfigRow,
    files: &[(String, Option<String>)],
    now: DateTime<Utc>,
) -> Readiness {
    let matching = match job_files(job, files) {
        Ok(matching) => matching,
        Err(reason) => return Readiness::Waiting(reason.to_string()),
    };
    if (matching.len() as i64) < job.min_file_count {
        return Readiness::Waiting(format!(
            "{} of {} files tracked for {}",
            matching.len(),
            job.min_file_count,
            job.input_pattern
        ));
    }
    let validated_after = |t: &str| {
        matching
            .iter()
            .any(|(_, v)| v.as_deref().is_some_and(|v| v > t))
    };

    let mut retry = None;
    let failures = u32::try_from(job.failed_attempts.max(0)).unwrap_or(u32::MAX);
    if failures > 0 {
        let policy = JobParams::parse(job.params.as_deref())
            .map(|p| p.retry)
            .unwrap_or_default();
        let last_failed = job.last_failed_at();
        let new_input = job.last_failed_at.as_deref().is_some_and(validated_after);
        if !new_input {
            match retry_due(&policy, failures, last_failed, now) {
                Ok(()) => retry = Some(failures),
                Err(wait) => return Readiness::Waiting(wait.to_string()),
            }
        }
    }

    if let Some(watermark) = &job.last_run_timestamp {
        let stale: Vec<&str> = matching
            .iter()
            .filter(|(_, validated)| validated.as_deref().is_none_or(|v| v <= watermark.as_str()))
            .map(|(url, _)| url.as_str())
            .collect();
        if !stale.is_empty() {
            return Readiness::Waiting(format!(
                "{} files were not validated again since the last run at {watermark} (e.g. {})",
                stale.len(),
                stale[0]
            ));
        }
    }
    Readiness::Ready {
        inputs: matching.iter().map(|(url, _)| url.clone()).collect(),
        retry,
    }
}

/// Whether the retry after `failures` consecutive failures may start at `now`.
fn retry_due(
    policy: &RetryPolicy,
    failures: u32,
    last_failed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), RetryWait> {
    let Some(delay) = policy.delay_after(failures) else {
        return Err(RetryWait::GaveUp {
            failures,
            limit: policy.max_retries,
        });
    };
    let due = last_failed
        .map(|t| t + chrono::Duration::from_std(delay).unwrap_or_default())
        .unwrap_or(now);
    if now < due {
        return Err(RetryWait::NotYet {
            failures,
            limit: policy.max_retries,
            due,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse_store_time as parse_time;

    fn job(failed: i64, last_failed: Option<&str>, watermark: Option<&str>) -> JobConfigRow {
        JobConfigRow {
            job_config_id: "j".into(),
            input_pattern: "v/IL-*.csv".into(),
            min_file_count: 2,
            criteria_sql: None,
            params: Some(
                r#"{"job":"p","input":"v","retry":{"max_retries":2,"backoff_secs":60,"max_backoff_secs":600}}"#
                    .into(),
            ),
            last_exec_status: Some(if failed > 0 { "FAILED" } else { "COMPLETED" }.into()),
            last_run_timestamp: watermark.map(str::to_string),
            last_exec_stepid: None,
            failed_attempts: failed,
            last_failed_at: last_failed.map(str::to_string),
            claimed_at: None,
        }
    }

    fn files(times: &[&str]) -> Vec<(String, Option<String>)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("v/IL-{i}.csv"), Some(t.to_string())))
            .collect()
    }

    fn at(t: &str) -> DateTime<Utc> {
        parse_time(t).unwrap()
    }

    const T1: &str = "2026-05-01 10:00:00.000000";
    const T2: &str = "2026-05-01 10:05:00.000000";

    #[test]
    fn too_few_files_wait() {
        let r = file_readiness(&job(0, None, None), &files(&[T1]), at(T2));
        assert!(matches!(r, Readiness::Waiting(w) if w.contains("1 of 2")));
    }

    #[test]
    fn a_failed_job_retries_the_same_inputs_then_backs_off_then_gives_up() {
        let f = files(&[T1, T1]);
        // First retry: at once.
        let r = file_readiness(&job(1, Some(T2), None), &f, at(T2));
        assert_eq!(
            r,
            Readiness::Ready {
                inputs: vec!["v/IL-0.csv".into(), "v/IL-1.csv".into()],
                retry: Some(1)
            }
        );
        // Second retry: 60 s after the second failure.
        let r = file_readiness(
            &job(2, Some(T2), None),
            &f,
            at("2026-05-01 10:05:30.000000"),
        );
        assert!(
            matches!(&r, Readiness::Waiting(w) if w.contains("due at 2026-05-01 10:06:00")),
            "{r:?}"
        );
        let r = file_readiness(
            &job(2, Some(T2), None),
            &f,
            at("2026-05-01 10:06:00.000000"),
        );
        assert!(matches!(r, Readiness::Ready { retry: Some(2), .. }));
        // Spent.
        let r = file_readiness(
            &job(3, Some(T2), None),
            &f,
            at("2026-06-01 00:00:00.000000"),
        );
        assert!(
            matches!(&r, Readiness::Waiting(w) if w.contains("gave up after 3")),
            "{r:?}"
        );
    }

    #[test]
    fn a_new_file_version_rearms_a_job_that_gave_up() {
        let f = files(&[T1, "2026-05-01 11:00:00.000000"]);
        let r = file_readiness(
            &job(9, Some(T2), None),
            &f,
            at("2026-05-01 11:00:01.000000"),
        );
        assert!(matches!(r, Readiness::Ready { retry: None, .. }), "{r:?}");
    }

    #[test]
    fn the_watermark_still_applies_to_retries() {
        // Both files were read by the last completed run (listed at T2).
        let r = file_readiness(&job(1, Some(T2), Some(T2)), &files(&[T1, T1]), at(T2));
        assert!(
            matches!(&r, Readiness::Waiting(w) if w.contains("not validated again")),
            "{r:?}"
        );
    }
}
