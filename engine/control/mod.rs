//! The control plane beside the pipeline: deciding when a job runs and starting it.
//!
//! `tally schedule` goes through the jobs in `aggr_job_configuration` that are not RUNNING and
//! submits each one whose preconditions hold:
//! 1. at least `job_min_file_count` tracked files match its input pattern;
//! 2. all of them were validated after the job's last run;
//! 3. its extra criteria (one read-only SELECT on the state store, with a timeout) return a row.
//!
//! A job is claimed with one conditional UPDATE before it is submitted, so two schedulers running
//! at once never submit it twice. The submitted run reports its own outcome (see
//! [`crate::state`]); runs whose heartbeat stopped are marked FAILED first.

use std::path::PathBuf;
use std::time::Duration;

use globset::GlobBuilder;
use serde::Serialize;

use crate::state::{JobConfigRow, StateError, StateStore};

/// Where submitted jobs run.
#[derive(Debug, Clone)]
pub enum Executor {
    /// `tally run` as a child process of the scheduler, waited for.
    Local { tally: PathBuf },
}

#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub executor: Executor,
    /// The state store URL handed to submitted runs.
    pub state_url: String,
    /// A RUNNING run whose heartbeat is older than this is marked FAILED.
    pub lease: Duration,
    pub criteria_timeout: Duration,
}

/// What the scheduler decided for one job.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub job_config_id: String,
    /// `submitted`, `skipped` or `failed`.
    pub outcome: String,
    pub detail: String,
}

impl Decision {
    fn new(job: &str, outcome: &str, detail: impl Into<String>) -> Decision {
        Decision {
            job_config_id: job.to_string(),
            outcome: outcome.to_string(),
            detail: detail.into(),
        }
    }
}

/// Why a job is not ready, or `None` when every precondition holds.
async fn unmet_precondition(
    store: &StateStore,
    job: &JobConfigRow,
    files: &[(String, Option<String>)],
    options: &ScheduleOptions,
) -> Result<Option<String>, StateError> {
    let matcher = match GlobBuilder::new(&job.input_pattern)
        .literal_separator(true)
        .build()
    {
        Ok(glob) => glob.compile_matcher(),
        Err(e) => {
            return Ok(Some(format!(
                "input pattern `{}` is not a glob: {e}",
                job.input_pattern
            )))
        }
    };
    let matching: Vec<&(String, Option<String>)> = files
        .iter()
        .filter(|(url, _)| matcher.is_match(url))
        .collect();
    if (matching.len() as i64) < job.min_file_count {
        return Ok(Some(format!(
            "{} of {} files tracked for {}",
            matching.len(),
            job.min_file_count,
            job.input_pattern
        )));
    }
    if let Some(last_run) = &job.last_run_timestamp {
        let stale: Vec<&str> = matching
            .iter()
            .filter(|(_, validated)| validated.as_deref().is_none_or(|v| v <= last_run.as_str()))
            .map(|(url, _)| url.as_str())
            .collect();
        if !stale.is_empty() {
            return Ok(Some(format!(
                "{} files were not validated again since the last run at {last_run} (e.g. {})",
                stale.len(),
                stale[0]
            )));
        }
    }
    if let Some(sql) = job.criteria_sql.as_deref().filter(|s| !s.trim().is_empty()) {
        if !store.criteria_met(sql, options.criteria_timeout).await? {
            return Ok(Some("the extra criteria returned no row".into()));
        }
    }
    Ok(None)
}

/// The `tally run` arguments for a job, from its `job_params`.
fn run_arguments(job: &JobConfigRow, state_url: &str) -> Result<Vec<String>, String> {
    let params: serde_json::Value = serde_json::from_str(job.params.as_deref().unwrap_or("{}"))
        .map_err(|e| format!("job_params is not JSON: {e}"))?;
    let name = params["job"].as_str().ok_or("job_params has no \"job\"")?;
    let input = params["input"]
        .as_str()
        .ok_or("job_params has no \"input\"")?;
    let mut args = vec![
        "run".to_string(),
        "--job".into(),
        name.into(),
        "--input".into(),
        input.into(),
    ];
    for (k, v) in params["params"].as_object().into_iter().flatten() {
        args.push("--param".into());
        args.push(format!("{k}={}", v.as_str().unwrap_or_default()));
    }
    for sink in ["table", "warehouse"] {
        if let Some(url) = params[sink].as_str() {
            args.push(format!("--{sink}"));
            args.push(url.into());
        }
    }
    args.extend([
        "--state".into(),
        state_url.into(),
        "--job-config-id".into(),
        job.job_config_id.clone(),
    ]);
    Ok(args)
}

/// One scheduler pass.
pub async fn schedule(
    store: &StateStore,
    options: &ScheduleOptions,
) -> Result<Vec<Decision>, StateError> {
    let expired = store.expire_stale(options.lease).await?;
    if expired > 0 {
        tracing::warn!(expired, "runs without a heartbeat were marked FAILED");
    }
    let files = store.tracked_files().await?;
    let mut decisions = Vec::new();
    for job in store.job_configs().await? {
        let id = job.job_config_id.clone();
        if job.last_exec_status.as_deref() == Some("RUNNING") {
            decisions.push(Decision::new(&id, "skipped", "already RUNNING"));
            continue;
        }
        match unmet_precondition(store, &job, &files, options).await {
            Ok(Some(reason)) => {
                decisions.push(Decision::new(&id, "skipped", reason));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                decisions.push(Decision::new(&id, "failed", e.to_string()));
                continue;
            }
        }
        let args = match run_arguments(&job, &options.state_url) {
            Ok(a) => a,
            Err(e) => {
                decisions.push(Decision::new(&id, "failed", e));
                continue;
            }
        };
        let Executor::Local { tally } = &options.executor;
        let step = format!(
            "local:{}:{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        );
        if !store.claim_job(&id, &step).await? {
            decisions.push(Decision::new(
                &id,
                "skipped",
                "claimed by another scheduler",
            ));
            continue;
        }
        // The run's own output (its summary, Athena statements) goes to the scheduler's stderr, so
        // the scheduler's stdout stays its decisions.
        let output = tokio::process::Command::new(tally)
            .args(&args)
            .output()
            .await;
        let status = output.map(|o| {
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&o.stdout);
            let _ = err.write_all(&o.stderr);
            o.status
        });
        match status {
            Ok(s) if s.success() => decisions.push(Decision::new(
                &id,
                "submitted",
                format!("ran locally: {}", args.join(" ")),
            )),
            Ok(s) => decisions.push(Decision::new(
                &id,
                "submitted",
                format!("ran locally and failed ({s}); see job_runs"),
            )),
            Err(e) => {
                store.release_job(&id, "FAILED").await?;
                decisions.push(Decision::new(
                    &id,
                    "failed",
                    format!("cannot start {}: {e}", tally.display()),
                ));
            }
        }
    }
    Ok(decisions)
}
