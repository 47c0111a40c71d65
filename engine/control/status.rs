//! The single view the state store promises: every configured job with its last outcome, whether
//! it would run now and, if not, why; the most recent runs; the files validated since.
//!
//! Invariants:
//! - read-only: the preconditions are the scheduler's own ([`file_readiness`], the extra criteria
//!   on the criteria guard's read-only connection), evaluated without claiming anything;
//! - no secret leaves: URLs in job parameters are shown redacted, and every text that could carry
//!   one (run errors) passes through the [`Scrubber`] of the state store's URL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::preconditions::{file_readiness, job_files, Readiness};
use crate::secrets::{redact_url, Scrubber};
use crate::state::{store_time, JobParams, RunRecord, RunStatus, StateError, StateStore};

/// Files listed per job at most (the count is always complete).
const FILES_SHOWN: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub generated_at: String,
    pub jobs: Vec<JobStatus>,
    /// Newest first.
    pub recent_runs: Vec<RunRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job_config_id: String,
    /// The SQL job it runs, and its province, from the job's parameters.
    pub job: Option<String>,
    pub province: Option<String>,
    /// `COMPLETED`, `FAILED`, `RUNNING`, or none before the first run.
    pub last_status: Option<String>,
    /// When the last COMPLETED run listed its inputs (the watermark).
    pub last_completed_inputs_at: Option<String>,
    pub input_pattern: String,
    pub files_tracked: usize,
    pub min_file_count: i64,
    /// Whether `tally schedule` would submit it now.
    pub ready: bool,
    /// Why not, when not: the first precondition that fails.
    pub waiting_reason: Option<String>,
    /// When ready after failures: the number of the retry the next pass makes.
    pub next_retry: Option<u32>,
    /// Consecutive failed attempts since the last COMPLETED run, and the latest one's time.
    pub failed_attempts: i64,
    pub last_failed_at: Option<String>,
    /// The latest run of this job: its counts, or its error.
    pub last_run: Option<RunRecord>,
    /// Files of this job validated after its watermark (at most 20 listed).
    pub new_files: Vec<String>,
    pub new_file_count: usize,
    /// Where its outputs go (redacted).
    pub table: Option<String>,
    pub warehouse: Option<String>,
}

/// Builds the report; with `only`, for one job.
pub async fn status(
    store: &StateStore,
    state_url: &str,
    only: Option<&str>,
    criteria_timeout: Duration,
    now: DateTime<Utc>,
) -> Result<StatusReport, StateError> {
    let mut scrub = Scrubber::default();
    scrub.add_url(state_url);
    let files = store.tracked_files().await?;
    let mut jobs = Vec::new();
    for row in store.job_configs().await? {
        if only.is_some_and(|id| id != row.job_config_id) {
            continue;
        }
        let params = JobParams::parse(row.params.as_deref()).ok();
        // A pattern that is not a glob matches nothing; `file_readiness` below says why.
        let matching = job_files(&row, &files).unwrap_or_default();
        let watermark = row.last_run_timestamp.clone();
        let new_files: Vec<String> = matching
            .iter()
            .filter(|(_, validated)| {
                validated
                    .as_deref()
                    .is_some_and(|v| watermark.as_deref().is_none_or(|w| v > w))
            })
            .map(|(url, _)| redact_url(url))
            .collect();
        let mut next_retry = None;
        let (ready, waiting_reason) = if row.status() == Some(RunStatus::Running) {
            (false, Some("running now".to_string()))
        } else {
            match file_readiness(&row, &files, now) {
                Readiness::Waiting(reason) => (false, Some(reason)),
                Readiness::Ready { retry, .. } => {
                    next_retry = retry;
                    match row.criteria_sql.as_deref().filter(|s| !s.trim().is_empty()) {
                        None => (true, None),
                        Some(sql) => match store.criteria_met(sql, criteria_timeout).await {
                            Ok(true) => (true, None),
                            Ok(false) => (
                                false,
                                Some("the extra criteria returned no row".to_string()),
                            ),
                            Err(e) => (false, Some(format!("the extra criteria failed: {e}"))),
                        },
                    }
                }
            }
        };
        let last_run = store
            .runs_of(&row.job_config_id, 1)
            .await?
            .into_iter()
            .next()
            .map(|run| scrub_run(run, &scrub));
        jobs.push(JobStatus {
            job: params.as_ref().map(|p| p.job.clone()),
            province: params
                .as_ref()
                .and_then(|p| p.params.get("province").cloned()),
            table: params
                .as_ref()
                .and_then(|p| p.table.as_deref())
                .map(redact_url),
            warehouse: params
                .as_ref()
                .and_then(|p| p.warehouse.as_deref())
                .map(redact_url),
            last_status: row.last_exec_status.clone(),
            last_completed_inputs_at: watermark,
            files_tracked: matching.len(),
            min_file_count: row.min_file_count,
            ready,
            next_retry,
            waiting_reason: waiting_reason.map(|r| scrub.scrub(&r).into_owned()),
            failed_attempts: row.failed_attempts,
            last_failed_at: row.last_failed_at.clone(),
            last_run,
            new_file_count: new_files.len(),
            new_files: new_files.into_iter().take(FILES_SHOWN).collect(),
            input_pattern: row.input_pattern.clone(),
            job_config_id: row.job_config_id,
        });
    }
    let recent_runs = match only {
        Some(id) => store.runs_of(id, 10).await?,
        None => store.recent_runs(10).await?,
    }
    .into_iter()
    .map(|run| scrub_run(run, &scrub))
    .collect();
    Ok(StatusReport {
        generated_at: store_time(now),
        jobs,
        recent_runs,
    })
}

fn scrub_run(mut run: RunRecord, scrub: &Scrubber) -> RunRecord {
    run.error = run.error.map(|e| scrub.scrub(&e).into_owned());
    run
}

impl JobStatus {
    /// One phrase for the job's state: what an operator reads first.
    pub fn headline(&self) -> String {
        match (self.ready, &self.waiting_reason) {
            (true, _) => match self.next_retry {
                Some(n) => format!(
                    "ready: the next `tally schedule` submits it (retry {n} after {} failed attempts)",
                    self.failed_attempts
                ),
                None => "ready: the next `tally schedule` submits it".to_string(),
            },
            (false, Some(reason)) => format!("waiting: {reason}"),
            (false, None) => "waiting".to_string(),
        }
    }

    /// The last run in a few words: counts when it completed, the error when it failed.
    pub fn last_run_text(&self) -> String {
        let Some(run) = &self.last_run else {
            return "no run yet".to_string();
        };
        match RunStatus::parse(&run.status) {
            Some(RunStatus::Failed) => format!(
                "FAILED at {}: {}",
                run.finished_at.as_deref().unwrap_or(&run.started_at),
                run.error.as_deref().unwrap_or("no error recorded")
            ),
            Some(RunStatus::Completed) => format!(
                "COMPLETED at {}: {} rows in, {} bad, {} out{}",
                run.finished_at.as_deref().unwrap_or(&run.started_at),
                run.rows_in.unwrap_or(0),
                run.bad_rows.unwrap_or(0),
                run.rows_out.unwrap_or(0),
                run.hudi_instant
                    .as_deref()
                    .map(|i| format!(", Hudi commit {i}"))
                    .unwrap_or_default()
            ),
            _ => format!("{} since {}", run.status, run.started_at),
        }
    }
}
