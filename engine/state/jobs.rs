//! `aggr_job_configuration`: the jobs, how to run them, and where each one stands.
//!
//! A job moves RUNNING (claimed by a scheduler, or started by a run) → COMPLETED or FAILED.
//! COMPLETED sets the watermark (`last_run_timestamp`, the time the run listed its inputs) and
//! clears the failure count; FAILED counts one more consecutive failure (`failed_attempts`, with
//! `last_failed_at`) and leaves the watermark alone, so the same inputs stay eligible and the
//! scheduler retries them under the job's [`RetryPolicy`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{col, col_int, store_time, Arg, StateError, StateStore};

/// How a failed job is retried without new input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Retries after consecutive failures before the job waits for new input files.
    pub max_retries: u32,
    /// The wait before the second retry; it doubles for each further one (the first retry is
    /// the next scheduler pass, which is itself periodic).
    pub backoff_secs: u64,
    /// The longest wait between two attempts.
    pub max_backoff_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff_secs: 60,
            max_backoff_secs: 3600,
        }
    }
}

impl RetryPolicy {
    /// After `failures` consecutive failures: how long to wait from the last one before the
    /// next attempt, or `None` when the retries are spent.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        if failures == 0 {
            return Some(Duration::ZERO);
        }
        if failures > self.max_retries {
            return None;
        }
        let doublings = failures.saturating_sub(2).min(32);
        let secs = if failures == 1 {
            0
        } else {
            self.backoff_secs
                .saturating_mul(1u64 << doublings)
                .min(self.max_backoff_secs)
        };
        Some(Duration::from_secs(secs))
    }
}

/// How a scheduled run is made: the `job_params` JSON that `tally jobs register` writes and
/// `tally schedule` and `tally run --job-config-id` read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    /// The job's name (or path to its .sql file).
    pub job: String,
    /// The job's parameters (`province`, ...).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Folder of the job's validated input files.
    pub input: String,
    /// Hudi table URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Warehouse URL, or where to find it: `env:NAME` or a Secrets Manager ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl JobParams {
    pub fn parse(text: Option<&str>) -> Result<JobParams, serde_json::Error> {
        serde_json::from_str(text.unwrap_or("{}"))
    }
}

/// A job's configuration as `tally jobs register` writes it.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub job_config_id: String,
    /// Glob over tracked file URLs (`s3://pos/validated/IL-*.csv`).
    pub input_pattern: String,
    pub min_file_count: i64,
    /// Extra criteria: one read-only SELECT that must return a row.
    pub criteria_sql: Option<String>,
    pub params: JobParams,
}

/// A row of `aggr_job_configuration` as the scheduler reads it.
#[derive(Debug, Clone)]
pub struct JobConfigRow {
    pub job_config_id: String,
    pub input_pattern: String,
    pub min_file_count: i64,
    pub criteria_sql: Option<String>,
    pub params: Option<String>,
    pub last_exec_status: Option<String>,
    /// The watermark: when the last COMPLETED run listed its inputs.
    pub last_run_timestamp: Option<String>,
    pub last_exec_stepid: Option<String>,
    /// Consecutive failures since the last COMPLETED run.
    pub failed_attempts: i64,
    pub last_failed_at: Option<String>,
    pub claimed_at: Option<String>,
}

impl JobConfigRow {
    /// The job's last status as stored.
    pub fn status(&self) -> Option<super::RunStatus> {
        self.last_exec_status
            .as_deref()
            .and_then(super::RunStatus::parse)
    }

    pub fn last_failed_at(&self) -> Option<DateTime<Utc>> {
        self.last_failed_at
            .as_deref()
            .and_then(super::parse_store_time)
    }
}

const JOB_COLUMNS: &str =
    "job_config_id, job_input_pattern, job_min_file_count, job_addl_criteria, \
    job_params, last_exec_status, last_run_timestamp, last_exec_stepid, failed_attempts, \
    last_failed_at, claimed_at";

fn job_row(r: &[Option<String>]) -> JobConfigRow {
    JobConfigRow {
        job_config_id: col(r, 0).unwrap_or_default(),
        input_pattern: col(r, 1).unwrap_or_default(),
        min_file_count: col_int(r, 2).unwrap_or(1),
        criteria_sql: col(r, 3),
        params: col(r, 4),
        last_exec_status: col(r, 5),
        last_run_timestamp: col(r, 6),
        last_exec_stepid: col(r, 7),
        failed_attempts: col_int(r, 8).unwrap_or(0),
        last_failed_at: col(r, 9),
        claimed_at: col(r, 10),
    }
}

impl StateStore {
    /// Writes (or replaces) a job's configuration row, keeping its run history columns.
    pub async fn register_job(&self, config: &JobConfig) -> Result<(), StateError> {
        let upsert = match self.dialect() {
            super::SqlDialect::MySql => {
                "INSERT INTO aggr_job_configuration (job_config_id, job_input_pattern, job_min_file_count, job_addl_criteria, job_params) \
                 VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE job_input_pattern = VALUES(job_input_pattern), \
                 job_min_file_count = VALUES(job_min_file_count), job_addl_criteria = VALUES(job_addl_criteria), job_params = VALUES(job_params)"
            }
            _ => {
                "INSERT INTO aggr_job_configuration (job_config_id, job_input_pattern, job_min_file_count, job_addl_criteria, job_params) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_config_id) DO UPDATE SET job_input_pattern = excluded.job_input_pattern, \
                 job_min_file_count = excluded.job_min_file_count, job_addl_criteria = excluded.job_addl_criteria, job_params = excluded.job_params"
            }
        };
        let params = serde_json::to_string(&config.params).map_err(|e| StateError::Store {
            url: self.url.clone(),
            message: format!("cannot encode job_params: {e}"),
        })?;
        self.execute(
            upsert,
            &[
                Arg::text(&config.job_config_id),
                Arg::text(&config.input_pattern),
                Arg::Int(Some(config.min_file_count)),
                Arg::Text(config.criteria_sql.clone()),
                Arg::text(params),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err(format!("cannot register job {}", config.job_config_id), e))
    }

    /// Every job configuration row.
    pub async fn job_configs(&self) -> Result<Vec<JobConfigRow>, StateError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM aggr_job_configuration ORDER BY job_config_id");
        let rows = self
            .fetch_texts(&sql, &[])
            .await
            .map_err(|e| self.query_err("cannot read job configurations", e))?;
        Ok(rows.iter().map(|r| job_row(r)).collect())
    }

    /// One job configuration row.
    pub async fn job_config(&self, job_config_id: &str) -> Result<JobConfigRow, StateError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM aggr_job_configuration WHERE job_config_id = ?");
        let rows = self
            .fetch_texts(&sql, &[Arg::text(job_config_id)])
            .await
            .map_err(|e| self.query_err("cannot read the job configuration", e))?;
        rows.first()
            .map(|r| job_row(r))
            .ok_or_else(|| StateError::Store {
                url: self.url.clone(),
                message: format!(
                    "no job configuration `{job_config_id}` (see `tally jobs register`)"
                ),
            })
    }

    /// Claims a job for one submission: true only for the one caller that moved it to RUNNING.
    pub async fn claim_job(&self, job_config_id: &str, claim: &str) -> Result<bool, StateError> {
        let n = self
            .execute(
                "UPDATE aggr_job_configuration SET last_exec_status = 'RUNNING', last_exec_stepid = ?, claimed_at = ? \
                 WHERE job_config_id = ? AND (last_exec_status IS NULL OR last_exec_status <> 'RUNNING')",
                &[
                    Arg::text(claim),
                    Arg::text(store_time(Utc::now())),
                    Arg::text(job_config_id),
                ],
            )
            .await
            .map_err(|e| self.query_err("cannot claim the job", e))?;
        Ok(n == 1)
    }

    /// Records where a claimed job was submitted (`clusterId:stepId` for EMR).
    pub async fn set_step_id(&self, job_config_id: &str, step_id: &str) -> Result<(), StateError> {
        self.execute(
            "UPDATE aggr_job_configuration SET last_exec_stepid = ? WHERE job_config_id = ?",
            &[Arg::text(step_id), Arg::text(job_config_id)],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err("cannot record the step id", e))
    }

    /// A run of the job started.
    pub(crate) async fn mark_job_running(&self, job_config_id: &str) -> Result<(), StateError> {
        self.execute(
            "UPDATE aggr_job_configuration SET last_exec_status = 'RUNNING' WHERE job_config_id = ?",
            &[Arg::text(job_config_id)],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err("cannot mark the job RUNNING", e))
    }

    /// A run of the job completed: the watermark moves to when it listed its inputs, and the
    /// failure count is cleared.
    pub(crate) async fn mark_job_completed(
        &self,
        job_config_id: &str,
        watermark: DateTime<Utc>,
    ) -> Result<(), StateError> {
        self.execute(
            "UPDATE aggr_job_configuration SET last_exec_status = 'COMPLETED', last_run_timestamp = ?, \
             failed_attempts = 0, last_failed_at = NULL WHERE job_config_id = ?",
            &[Arg::text(store_time(watermark)), Arg::text(job_config_id)],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err("cannot mark the job COMPLETED", e))
    }

    /// An attempt of the job failed: one more consecutive failure; the watermark stays. With
    /// `only_if_running`, nothing changes unless the job is still RUNNING (a settled job is not
    /// failed twice).
    pub(crate) async fn mark_job_failed(
        &self,
        job_config_id: &str,
        only_if_running: bool,
    ) -> Result<bool, StateError> {
        let guard = if only_if_running {
            " AND last_exec_status = 'RUNNING'"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE aggr_job_configuration SET last_exec_status = 'FAILED', \
             failed_attempts = failed_attempts + 1, last_failed_at = ? WHERE job_config_id = ?{guard}"
        );
        let n = self
            .execute(
                &sql,
                &[Arg::text(store_time(Utc::now())), Arg::text(job_config_id)],
            )
            .await
            .map_err(|e| self.query_err("cannot mark the job FAILED", e))?;
        Ok(n == 1)
    }

    /// Ends a claimed job's submission that failed before a run could report (EMR refused the
    /// step, the child could not start): FAILED, counted as an attempt.
    pub async fn release_job_failed(&self, job_config_id: &str) -> Result<bool, StateError> {
        self.mark_job_failed(job_config_id, true).await
    }

    /// Settles a RUNNING job whose EMR step completed without the run reporting.
    pub async fn release_job_completed(&self, job_config_id: &str) -> Result<(), StateError> {
        self.execute(
            "UPDATE aggr_job_configuration SET last_exec_status = 'COMPLETED' \
             WHERE job_config_id = ? AND last_exec_status = 'RUNNING'",
            &[Arg::text(job_config_id)],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err("cannot settle the job", e))
    }

    /// Releases a RUNNING job that has no RUNNING run left (its run expired, or its claim older
    /// than `cutoff` never became a run); records why in `job_runs`. True if released.
    pub(crate) async fn release_orphaned_job(
        &self,
        job_config_id: &str,
        cutoff: &str,
    ) -> Result<bool, StateError> {
        let claim = self
            .fetch_texts(
                "SELECT last_exec_stepid, claimed_at, job_params FROM aggr_job_configuration WHERE job_config_id = ?",
                &[Arg::text(job_config_id)],
            )
            .await
            .map_err(|e| self.query_err("cannot read the claim", e))?;
        let n = self
            .execute(
                "UPDATE aggr_job_configuration SET last_exec_status = 'FAILED', \
                 failed_attempts = failed_attempts + 1, last_failed_at = ? \
                 WHERE job_config_id = ? AND last_exec_status = 'RUNNING' \
                 AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.job_config_id = ? AND r.status = 'RUNNING' AND r.heartbeat_at >= ?)",
                &[
                    Arg::text(store_time(Utc::now())),
                    Arg::text(job_config_id),
                    Arg::text(job_config_id),
                    Arg::text(cutoff),
                ],
            )
            .await
            .map_err(|e| self.query_err("cannot release the job", e))?;
        if n == 1 {
            let row = claim.first();
            let step = row.and_then(|r| col(r, 0)).unwrap_or_default();
            let at = row.and_then(|r| col(r, 1)).unwrap_or_else(|| "?".into());
            let job = row
                .and_then(|r| col(r, 2))
                .and_then(|p| JobParams::parse(Some(&p)).ok())
                .map(|p| p.job)
                .unwrap_or_else(|| job_config_id.to_string());
            // A run that died was already recorded FAILED by the expiry; a claim that never
            // became a run has no row yet.
            let explained = self
                .runs_of(job_config_id, 1)
                .await?
                .first()
                .is_some_and(|r| r.error.as_deref() == Some(super::runs::NO_HEARTBEAT));
            if !explained {
                self.record_failed_attempt(
                    &job,
                    job_config_id,
                    &format!(
                        "claimed by {step} at {at}, but no run reported within the lease: released"
                    ),
                )
                .await?;
            }
            tracing::warn!(job = job_config_id, claim = %step, "released a job left RUNNING");
        }
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_stop() {
        let p = RetryPolicy {
            max_retries: 4,
            backoff_secs: 60,
            max_backoff_secs: 150,
        };
        let delays: Vec<Option<u64>> = (0..6)
            .map(|n| p.delay_after(n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [Some(0), Some(0), Some(60), Some(120), Some(150), None]
        );
        let never = RetryPolicy {
            max_retries: 0,
            ..Default::default()
        };
        assert_eq!(never.delay_after(1), None);
    }

    #[test]
    fn job_params_read_what_older_registrations_wrote() {
        let p = JobParams::parse(Some(
            r#"{"job":"province_sales","params":{"province":"IL"},"input":"s3://pos/validated","table":null,"warehouse":"sqlite://w.db"}"#,
        ))
        .unwrap();
        assert_eq!(p.table, None);
        assert_eq!(p.warehouse.as_deref(), Some("sqlite://w.db"));
        assert_eq!(p.retry, RetryPolicy::default());
        assert!(JobParams::parse(Some("{}")).is_err());
    }
}
