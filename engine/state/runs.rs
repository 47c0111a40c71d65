//! `job_runs`: every run's history, written by the run itself.
//!
//! A run inserts itself RUNNING, beats its heartbeat while it works, and ends COMPLETED (with its
//! counts and the time it listed its inputs, which becomes its job's watermark) or FAILED (with
//! the error, already scrubbed of secrets by the caller). A run that dies stops its heartbeat;
//! [`StateStore::expire_stale`] marks it FAILED and releases its job.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{col, col_int, store_time, Arg, StateError, StateStore};

/// A run's (and a job's) status as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        match text {
            "RUNNING" => Some(RunStatus::Running),
            "COMPLETED" => Some(RunStatus::Completed),
            "FAILED" => Some(RunStatus::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's final figures.
#[derive(Debug, Clone, Default)]
pub struct RunCounts {
    pub rows_in: u64,
    pub bad_rows: u64,
    pub rows_out: u64,
    pub hudi_instant: Option<String>,
    /// When the run listed its input files (a lower bound: taken just before the listing). It
    /// becomes the job's watermark: files validated after it count as new for the next run.
    pub inputs_listed_at: Option<DateTime<Utc>>,
}

/// One `job_runs` row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    pub job_config_id: Option<String>,
    pub province: Option<String>,
    pub status: String,
    pub rows_in: Option<i64>,
    pub bad_rows: Option<i64>,
    pub rows_out: Option<i64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub hudi_instant: Option<String>,
    pub inputs_listed_at: Option<String>,
}

/// What [`StateStore::expire_stale`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Expired {
    /// Runs whose heartbeat stopped, now FAILED.
    pub runs: u64,
    /// Jobs released from RUNNING (their run died, or their claim never became a run).
    pub released_jobs: Vec<String>,
}

/// The error recorded for a run whose heartbeat stopped.
pub const NO_HEARTBEAT: &str = "no heartbeat: the run stopped without reporting (killed or lost)";

impl StateStore {
    /// Records a run as RUNNING (and its job, when it has one); returns the run's id.
    pub async fn start_run(
        &self,
        job: &str,
        job_config_id: Option<&str>,
        province: Option<&str>,
    ) -> Result<String, StateError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let now = store_time(Utc::now());
        let host = gethostname::gethostname().to_string_lossy().to_string();
        self.execute(
            "INSERT INTO job_runs (run_id, job, job_config_id, province, status, started_at, heartbeat_at, host) \
             VALUES (?, ?, ?, ?, 'RUNNING', ?, ?, ?)",
            &[
                Arg::text(&run_id),
                Arg::text(job),
                Arg::Text(job_config_id.map(str::to_string)),
                Arg::Text(province.map(str::to_string)),
                Arg::text(&now),
                Arg::text(&now),
                Arg::text(host),
            ],
        )
        .await
        .map_err(|e| self.query_err("cannot record the run", e))?;
        if let Some(id) = job_config_id {
            self.mark_job_running(id).await?;
        }
        Ok(run_id)
    }

    /// Says the run is still alive.
    pub async fn heartbeat(&self, run_id: &str) -> Result<(), StateError> {
        self.execute(
            "UPDATE job_runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'RUNNING'",
            &[Arg::text(store_time(Utc::now())), Arg::text(run_id)],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err("heartbeat", e))
    }

    /// Records a run's success, its counts and its watermark.
    pub async fn complete_run(
        &self,
        run_id: &str,
        job_config_id: Option<&str>,
        counts: &RunCounts,
    ) -> Result<(), StateError> {
        let now = Utc::now();
        let listed = counts.inputs_listed_at.unwrap_or(now);
        self.execute(
            "UPDATE job_runs SET status = 'COMPLETED', rows_in = ?, bad_rows = ?, rows_out = ?, \
             hudi_instant = ?, inputs_listed_at = ?, finished_at = ?, heartbeat_at = ?, error = NULL \
             WHERE run_id = ?",
            &[
                Arg::Int(Some(counts.rows_in as i64)),
                Arg::Int(Some(counts.bad_rows as i64)),
                Arg::Int(Some(counts.rows_out as i64)),
                Arg::Text(counts.hudi_instant.clone()),
                Arg::text(store_time(listed)),
                Arg::text(store_time(now)),
                Arg::text(store_time(now)),
                Arg::text(run_id),
            ],
        )
        .await
        .map_err(|e| self.query_err("cannot record the run's completion", e))?;
        if let Some(id) = job_config_id {
            self.mark_job_completed(id, listed).await?;
        }
        Ok(())
    }

    /// Records a run's failure with the error text (which the caller has scrubbed of secrets).
    pub async fn fail_run(
        &self,
        run_id: &str,
        job_config_id: Option<&str>,
        error: &str,
    ) -> Result<(), StateError> {
        let now = store_time(Utc::now());
        self.execute(
            "UPDATE job_runs SET status = 'FAILED', error = ?, finished_at = ?, heartbeat_at = ? WHERE run_id = ?",
            &[
                Arg::text(error),
                Arg::text(&now),
                Arg::text(&now),
                Arg::text(run_id),
            ],
        )
        .await
        .map_err(|e| self.query_err("cannot record the run's failure", e))?;
        if let Some(id) = job_config_id {
            self.mark_job_failed(id, false).await?;
        }
        Ok(())
    }

    /// Marks RUNNING runs whose heartbeat is older than `lease` as FAILED and releases their
    /// jobs; also releases jobs claimed longer than `lease` ago that never got a run (the
    /// scheduler died between its claim and starting the run). Claims recorded as an EMR step
    /// (`j-...:s-...`) are left to `tally monitor`, which asks EMR how the step ended: a step may
    /// wait in EMR's queue longer than any lease.
    pub async fn expire_stale(&self, lease: Duration) -> Result<Expired, StateError> {
        let now = Utc::now();
        let cutoff = store_time(now - chrono::Duration::from_std(lease).unwrap_or_default());
        let stale = self
            .fetch_texts(
                "SELECT run_id, job_config_id FROM job_runs WHERE status = 'RUNNING' AND heartbeat_at < ?",
                &[Arg::text(&cutoff)],
            )
            .await
            .map_err(|e| self.query_err("cannot list stale runs", e))?;
        let mut expired = Expired::default();
        let mut jobs = Vec::new();
        for row in &stale {
            let run_id = col(row, 0).unwrap_or_default();
            let n = self
                .execute(
                    "UPDATE job_runs SET status = 'FAILED', finished_at = ?, error = ? \
                     WHERE run_id = ? AND status = 'RUNNING' AND heartbeat_at < ?",
                    &[
                        Arg::text(store_time(now)),
                        Arg::text(NO_HEARTBEAT),
                        Arg::text(&run_id),
                        Arg::text(&cutoff),
                    ],
                )
                .await
                .map_err(|e| self.query_err("cannot expire a stale run", e))?;
            expired.runs += n;
            if let (1, Some(job)) = (n, col(row, 1)) {
                jobs.push(job);
            }
        }
        // Claims that never became a run.
        let claims = self
            .fetch_texts(
                "SELECT job_config_id, last_exec_stepid FROM aggr_job_configuration \
                 WHERE last_exec_status = 'RUNNING' AND (claimed_at IS NULL OR claimed_at < ?)",
                &[Arg::text(&cutoff)],
            )
            .await
            .map_err(|e| self.query_err("cannot list claimed jobs", e))?;
        for row in &claims {
            let step = col(row, 1).unwrap_or_default();
            if is_emr_step(&step) {
                continue;
            }
            if let Some(job) = col(row, 0) {
                jobs.push(job);
            }
        }
        jobs.sort();
        jobs.dedup();
        for job in jobs {
            if self.release_orphaned_job(&job, &cutoff).await? {
                expired.released_jobs.push(job);
            }
        }
        Ok(expired)
    }

    /// Most recent runs, newest first; of one job when `job_config_id` is given.
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        self.runs_where(None, limit).await
    }

    /// The most recent runs of one job configuration, newest first.
    pub async fn runs_of(
        &self,
        job_config_id: &str,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StateError> {
        self.runs_where(Some(job_config_id), limit).await
    }

    async fn runs_where(
        &self,
        job_config_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StateError> {
        let (filter, mut args) = match job_config_id {
            Some(id) => ("WHERE job_config_id = ?", vec![Arg::text(id)]),
            None => ("", vec![]),
        };
        args.push(Arg::Int(Some(limit)));
        let sql = format!(
            "SELECT run_id, job, job_config_id, province, status, rows_in, bad_rows, rows_out, \
             started_at, finished_at, error, hudi_instant, inputs_listed_at FROM job_runs {filter} \
             ORDER BY started_at DESC LIMIT ?"
        );
        let rows = self
            .fetch_texts(&sql, &args)
            .await
            .map_err(|e| self.query_err("cannot read runs", e))?;
        Ok(rows
            .iter()
            .map(|r| RunRecord {
                run_id: col(r, 0).unwrap_or_default(),
                job: col(r, 1).unwrap_or_default(),
                job_config_id: col(r, 2),
                province: col(r, 3),
                status: col(r, 4).unwrap_or_default(),
                rows_in: col_int(r, 5),
                bad_rows: col_int(r, 6),
                rows_out: col_int(r, 7),
                started_at: col(r, 8).unwrap_or_default(),
                finished_at: col(r, 9),
                error: col(r, 10),
                hudi_instant: col(r, 11),
                inputs_listed_at: col(r, 12),
            })
            .collect())
    }

    /// Marks a job's RUNNING runs FAILED (its EMR step ended without the run reporting).
    pub async fn fail_running_runs_of(
        &self,
        job_config_id: &str,
        error: &str,
    ) -> Result<u64, StateError> {
        let now = store_time(Utc::now());
        self.execute(
            "UPDATE job_runs SET status = 'FAILED', error = ?, finished_at = ? WHERE job_config_id = ? AND status = 'RUNNING'",
            &[Arg::text(error), Arg::text(now), Arg::text(job_config_id)],
        )
        .await
        .map_err(|e| self.query_err("cannot fail the job's runs", e))
    }

    /// Records a run that never started (its submission failed, or its claim was reclaimed), so
    /// the history says why the job did not run.
    pub async fn record_failed_attempt(
        &self,
        job: &str,
        job_config_id: &str,
        error: &str,
    ) -> Result<(), StateError> {
        let now = store_time(Utc::now());
        let host = gethostname::gethostname().to_string_lossy().to_string();
        self.execute(
            "INSERT INTO job_runs (run_id, job, job_config_id, status, started_at, heartbeat_at, finished_at, error, host) \
             VALUES (?, ?, ?, 'FAILED', ?, ?, ?, ?, ?)",
            &[
                Arg::text(uuid::Uuid::new_v4().to_string()),
                Arg::text(job),
                Arg::text(job_config_id),
                Arg::text(&now),
                Arg::text(&now),
                Arg::text(&now),
                Arg::text(error),
                Arg::text(host),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.query_err("cannot record a failed attempt", e))
    }
}

/// `clusterId:stepId` as the EMR executor records it.
pub fn is_emr_step(step: &str) -> bool {
    step.split_once(':')
        .is_some_and(|(c, s)| c.starts_with("j-") && s.starts_with("s-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [RunStatus::Running, RunStatus::Completed, RunStatus::Failed] {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RunStatus::parse("running"), None);
    }

    #[test]
    fn emr_steps_are_recognised() {
        assert!(is_emr_step("j-ABC:s-DEF"));
        assert!(!is_emr_step("local:host:12"));
        assert!(!is_emr_step("emr:submitting"));
    }

    #[tokio::test]
    async fn a_run_is_recorded_from_start_to_finish_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s/state.db").display());
        let store = StateStore::connect(&url).await.unwrap();
        let ok = store.start_run("j", None, Some("IL")).await.unwrap();
        store
            .complete_run(
                &ok,
                None,
                &RunCounts {
                    rows_in: 5,
                    bad_rows: 1,
                    rows_out: 3,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let bad = store.start_run("j", None, Some("IL")).await.unwrap();
        store.fail_run(&bad, None, "boom").await.unwrap();
        let stuck = store.start_run("j", None, None).await.unwrap();
        assert_eq!(
            store
                .expire_stale(Duration::from_secs(3600))
                .await
                .unwrap()
                .runs,
            0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            store
                .expire_stale(Duration::from_millis(1))
                .await
                .unwrap()
                .runs,
            1
        );
        let runs = store.recent_runs(10).await.unwrap();
        let by_id = |id: &str| runs.iter().find(|r| r.run_id == id).unwrap().clone();
        assert_eq!(
            (by_id(&ok).status.as_str(), by_id(&ok).rows_out),
            ("COMPLETED", Some(3))
        );
        assert_eq!(by_id(&bad).error.as_deref(), Some("boom"));
        assert!(by_id(&stuck).error.unwrap().contains("no heartbeat"));
        // Connecting again applies nothing new and keeps the rows.
        let again = StateStore::connect(&url).await.unwrap();
        assert_eq!(again.recent_runs(10).await.unwrap().len(), 3);
    }
}
