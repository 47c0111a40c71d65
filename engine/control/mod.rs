//! The control plane beside the pipeline: deciding when a job runs and starting it.
//!
//! `tally schedule` first releases what is stuck (runs whose heartbeat stopped, claims that never
//! became a run; see [`StateStore::expire_stale`]), then goes through the jobs in
//! `aggr_job_configuration` that are not RUNNING and submits each one whose preconditions hold
//! ([`preconditions`]: file count, freshness against the watermark, the retry backoff after
//! failures, the extra criteria).
//!
//! Beside it: [`emr`] (steps and `tally monitor`), [`status`] and [`status_page`] (the read-only
//! view), and the event-driven layers as code: [`watch`] (`tally watch`: validate, track and
//! schedule as files arrive in a folder) and [`events`] (what the Lambda function does with an S3
//! or a scheduled event).
//!
//! Invariants:
//! - a job is claimed with one conditional UPDATE before it is submitted, so two schedulers
//!   running at once never submit it twice;
//! - a submitted run gets the id of its configuration, never a URL with a password: the local
//!   executor hands the state store URL to the child in its environment, the EMR executor passes
//!   a reference (`env:NAME`, a Secrets Manager ARN) or a URL without secrets, and the run reads
//!   its job, input and sinks from its configuration row;
//! - every outcome ends the claim: the run reports COMPLETED/FAILED itself; a run that could not
//!   (it died, or never started) is failed here or by the next pass, and counted as an attempt.

pub mod emr;
pub mod events;
pub mod preconditions;
pub mod status;
pub mod status_page;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::secrets::{secrets_in_url, UrlSource};
use crate::state::{JobConfigRow, JobParams, RunStatus, StateError, StateStore};
pub use emr::monitor;
use preconditions::{file_readiness, Readiness};

/// Where submitted jobs run.
#[derive(Debug, Clone)]
pub enum Executor {
    /// `tally run` as a child process of the scheduler, waited for.
    Local { tally: PathBuf },
    /// An EMR step (`command-runner.jar` running `tally run` on the primary node) on a WAITING
    /// cluster carrying the tag `tag_key=tag_value`.
    Emr {
        client: aws_sdk_emr::Client,
        tag_key: String,
        tag_value: String,
        /// Where the bootstrap action installed tally on the nodes.
        tally_path: String,
    },
}

#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub executor: Executor,
    /// The state store URL (handed to local runs in their environment).
    pub state_url: String,
    /// What an EMR step is told about the state store: a reference (`env:NAME`, a Secrets
    /// Manager ARN) or a URL without a password. `None`: the state URL, if it has no secret.
    pub step_state: Option<String>,
    /// A RUNNING run whose heartbeat is older than this is marked FAILED; a claim older than
    /// this that never became a run is released.
    pub lease: Duration,
    pub criteria_timeout: Duration,
}

/// What the scheduler (or the monitor) decided for one job.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub job_config_id: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// The scheduler's outcomes (`submitted`, `skipped`, `failed`, `released`) and the monitor's
/// (`running`, and the step's end as the job's status: `COMPLETED`, `FAILED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    #[serde(rename = "submitted")]
    Submitted,
    #[serde(rename = "skipped")]
    Skipped,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "released")]
    Released,
    #[serde(rename = "running")]
    StepRunning,
    #[serde(rename = "COMPLETED")]
    StepCompleted,
    #[serde(rename = "FAILED")]
    StepFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Submitted => "submitted",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Released => "released",
            Outcome::StepRunning => "running",
            Outcome::StepCompleted => "COMPLETED",
            Outcome::StepFailed => "FAILED",
        }
    }
}

/// Compares with the outcome's text, as printed and serialized.
impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that `{:<10}` aligns the decision lines.
        f.pad(self.as_str())
    }
}

impl Decision {
    pub(crate) fn new(job: &str, outcome: Outcome, detail: impl Into<String>) -> Decision {
        Decision {
            job_config_id: job.to_string(),
            outcome,
            detail: detail.into(),
        }
    }
}

/// Why a job cannot be submitted as configured.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("job_params is not valid: {0}")]
    Params(#[source] serde_json::Error),
    #[error(
        "the state store URL carries a password, which an EMR step's arguments would show: pass \
         --step-state with a Secrets Manager ARN or env:NAME (as the cluster's nodes see it)"
    )]
    SecretInStepState,
}

/// The `tally run` arguments for a job: its configuration id, and for EMR where the state store
/// is. Nothing else: the run reads job, input, parameters and sinks from the configuration.
pub fn run_arguments(
    job: &JobConfigRow,
    step_state: Option<&str>,
) -> Result<Vec<String>, SubmitError> {
    JobParams::parse(job.params.as_deref()).map_err(SubmitError::Params)?;
    let mut args = vec![
        "run".to_string(),
        "--job-config-id".into(),
        job.job_config_id.clone(),
    ];
    if let Some(state) = step_state {
        if !UrlSource::parse(state).is_reference() && !secrets_in_url(state).is_empty() {
            return Err(SubmitError::SecretInStepState);
        }
        args.extend(["--state".into(), state.to_string()]);
    }
    Ok(args)
}

/// One scheduler pass.
pub async fn schedule(
    store: &StateStore,
    options: &ScheduleOptions,
) -> Result<Vec<Decision>, StateError> {
    let mut decisions = Vec::new();
    let expired = store.expire_stale(options.lease).await?;
    if expired.runs > 0 {
        tracing::warn!(
            expired = expired.runs,
            "runs without a heartbeat were marked FAILED"
        );
    }
    for job in &expired.released_jobs {
        decisions.push(Decision::new(
            job,
            Outcome::Released,
            "was RUNNING without a live run (run lost or claim never started): marked FAILED",
        ));
    }
    let files = store.tracked_files().await?;
    for job in store.job_configs().await? {
        let id = job.job_config_id.clone();
        if job.status() == Some(RunStatus::Running) {
            decisions.push(Decision::new(&id, Outcome::Skipped, "already RUNNING"));
            continue;
        }
        let (inputs, retry) = match file_readiness(&job, &files, Utc::now()) {
            Readiness::Ready { inputs, retry } => (inputs, retry),
            Readiness::Waiting(reason) => {
                decisions.push(Decision::new(&id, Outcome::Skipped, reason));
                continue;
            }
        };
        if let Some(sql) = job.criteria_sql.as_deref().filter(|s| !s.trim().is_empty()) {
            match store.criteria_met(sql, options.criteria_timeout).await {
                Ok(true) => {}
                Ok(false) => {
                    decisions.push(Decision::new(
                        &id,
                        Outcome::Skipped,
                        "the extra criteria returned no row",
                    ));
                    continue;
                }
                Err(e) => {
                    decisions.push(Decision::new(&id, Outcome::Failed, e.to_string()));
                    continue;
                }
            }
        }
        let step_state = match &options.executor {
            Executor::Local { .. } => None,
            Executor::Emr { .. } => Some(
                options
                    .step_state
                    .clone()
                    .unwrap_or_else(|| options.state_url.clone()),
            ),
        };
        let args = match run_arguments(&job, step_state.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                decisions.push(Decision::new(&id, Outcome::Failed, e.to_string()));
                continue;
            }
        };
        let claim = match &options.executor {
            Executor::Local { .. } => format!(
                "local:{}:{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
            Executor::Emr { .. } => "emr:submitting".to_string(),
        };
        if !store.claim_job(&id, &claim).await? {
            decisions.push(Decision::new(
                &id,
                Outcome::Skipped,
                "claimed by another scheduler",
            ));
            continue;
        }
        store.mark_submitted(&inputs, &id).await?;
        let retrying = retry
            .map(|n| format!(" (retry {n} after failed attempts)"))
            .unwrap_or_default();
        let decision = match &options.executor {
            Executor::Local { tally } => {
                run_locally(store, &job, tally, &args, &options.state_url, &retrying).await?
            }
            Executor::Emr {
                client,
                tag_key,
                tag_value,
                tally_path,
            } => {
                match emr::submit_emr_step(client, (tag_key, tag_value), tally_path, &id, &args)
                    .await
                {
                    Ok(step) => {
                        store.set_step_id(&id, &step).await?;
                        Decision::new(
                            &id,
                            Outcome::Submitted,
                            format!("EMR step {step}{retrying}"),
                        )
                    }
                    Err(e) => {
                        fail_unreported(store, &job, &e.to_string()).await?;
                        Decision::new(&id, Outcome::Failed, e.to_string())
                    }
                }
            }
        };
        decisions.push(decision);
    }
    Ok(decisions)
}

/// Runs `tally run` as a child and waits; the child reports its own outcome. The state store URL
/// goes in the child's environment (`TALLY_STATE`), not on its command line.
async fn run_locally(
    store: &StateStore,
    job: &JobConfigRow,
    tally: &Path,
    args: &[String],
    state_url: &str,
    retrying: &str,
) -> Result<Decision, StateError> {
    let id = &job.job_config_id;
    // The run's own output (its summary, Athena statements) goes to the scheduler's stderr, so
    // the scheduler's stdout stays its decisions.
    let output = tokio::process::Command::new(tally)
        .args(args)
        .env("TALLY_STATE", state_url)
        .output()
        .await;
    let shown = format!("tally {}", args.join(" "));
    Ok(match output {
        Ok(o) => {
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&o.stdout);
            let _ = err.write_all(&o.stderr);
            if o.status.success() {
                Decision::new(
                    id,
                    Outcome::Submitted,
                    format!("ran locally: {shown}{retrying}"),
                )
            } else {
                // A run that reported FAILED has settled its job; one that died first has not.
                let error = format!(
                    "`{shown}` exited with {} before reporting an outcome",
                    o.status
                );
                fail_unreported(store, job, &error).await?;
                Decision::new(
                    id,
                    Outcome::Submitted,
                    format!(
                        "ran locally and failed ({}){retrying}; see job_runs",
                        o.status
                    ),
                )
            }
        }
        Err(e) => {
            let error = format!("cannot start {}: {e}", tally.display());
            fail_unreported(store, job, &error).await?;
            Decision::new(id, Outcome::Failed, error)
        }
    })
}

/// Ends a claim whose run did not report: fails the job's RUNNING runs (if it started one) and
/// the job itself, recording `error` for the history when no run row says it.
async fn fail_unreported(
    store: &StateStore,
    job: &JobConfigRow,
    error: &str,
) -> Result<(), StateError> {
    let id = &job.job_config_id;
    let failed_runs = store.fail_running_runs_of(id, error).await?;
    if store.release_job_failed(id).await? && failed_runs == 0 {
        let name = JobParams::parse(job.params.as_deref())
            .map(|p| p.job)
            .unwrap_or_else(|_| id.clone());
        store.record_failed_attempt(&name, id, error).await?;
    }
    Ok(())
}
