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

/// Finds a WAITING cluster with the tag and adds one step running `tally` with `args`; returns
/// `clusterId:stepId`.
async fn submit_emr_step(
    client: &aws_sdk_emr::Client,
    tag: (&str, &str),
    tally_path: &str,
    job_config_id: &str,
    args: &[String],
) -> Result<String, String> {
    use aws_sdk_emr::error::DisplayErrorContext;
    use aws_sdk_emr::types::{ActionOnFailure, ClusterState, HadoopJarStepConfig, StepConfig};
    let mut marker: Option<String> = None;
    let mut cluster = None;
    'pages: loop {
        let page = client
            .list_clusters()
            .cluster_states(ClusterState::Waiting)
            .set_marker(marker.clone())
            .send()
            .await
            .map_err(|e| format!("ListClusters failed: {}", DisplayErrorContext(e)))?;
        for summary in page.clusters() {
            let Some(id) = summary.id() else { continue };
            let described = client
                .describe_cluster()
                .cluster_id(id)
                .send()
                .await
                .map_err(|e| format!("DescribeCluster {id} failed: {}", DisplayErrorContext(e)))?;
            let tagged = described.cluster().is_some_and(|c| {
                c.tags()
                    .iter()
                    .any(|t| t.key() == Some(tag.0) && t.value() == Some(tag.1))
            });
            if tagged {
                cluster = Some(id.to_string());
                break 'pages;
            }
        }
        marker = page.marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    let cluster =
        cluster.ok_or_else(|| format!("no WAITING EMR cluster is tagged {}={}", tag.0, tag.1))?;
    let mut step_args = vec![tally_path.to_string()];
    step_args.extend(args.iter().cloned());
    let step = StepConfig::builder()
        .name(format!("tally {job_config_id}"))
        .action_on_failure(ActionOnFailure::Continue)
        .hadoop_jar_step(
            HadoopJarStepConfig::builder()
                .jar("command-runner.jar")
                .set_args(Some(step_args))
                .build(),
        )
        .build();
    let added = client
        .add_job_flow_steps()
        .job_flow_id(&cluster)
        .steps(step)
        .send()
        .await
        .map_err(|e| {
            format!(
                "AddJobFlowSteps on {cluster} failed: {}",
                DisplayErrorContext(e)
            )
        })?;
    let step_id = added
        .step_ids()
        .first()
        .ok_or("AddJobFlowSteps returned no step id")?;
    Ok(format!("{cluster}:{step_id}"))
}

/// `tally monitor`: for jobs still RUNNING on an EMR step, asks EMR how the step ended. A run
/// that reported itself has already moved its job out of RUNNING; one that did not (killed with
/// its node, say) gets its outcome from EMR here.
pub async fn monitor(
    store: &StateStore,
    client: &aws_sdk_emr::Client,
) -> Result<Vec<Decision>, StateError> {
    use aws_sdk_emr::types::StepState;
    let mut decisions = Vec::new();
    for job in store.job_configs().await? {
        if job.last_exec_status.as_deref() != Some("RUNNING") {
            continue;
        }
        let id = job.job_config_id.clone();
        let Some((cluster, step)) = job
            .last_exec_stepid
            .as_deref()
            .and_then(|s| s.split_once(':'))
            .filter(|(c, s)| c.starts_with("j-") && s.starts_with("s-"))
        else {
            decisions.push(Decision::new(&id, "skipped", "not an EMR step"));
            continue;
        };
        let described = match client
            .describe_step()
            .cluster_id(cluster)
            .step_id(step)
            .send()
            .await
        {
            Ok(d) => d,
            Err(e) => {
                decisions.push(Decision::new(
                    &id,
                    "failed",
                    format!(
                        "DescribeStep failed: {}",
                        aws_sdk_emr::error::DisplayErrorContext(e)
                    ),
                ));
                continue;
            }
        };
        let status = described.step().and_then(|s| s.status());
        let state = status.and_then(|s| s.state()).cloned();
        match state {
            Some(StepState::Completed) => {
                store.release_job(&id, "COMPLETED").await?;
                decisions.push(Decision::new(
                    &id,
                    "COMPLETED",
                    format!("EMR step {cluster}:{step} completed"),
                ));
            }
            Some(s @ (StepState::Failed | StepState::Cancelled | StepState::Interrupted)) => {
                let reason = status
                    .and_then(|st| st.failure_details())
                    .and_then(|f| f.message())
                    .unwrap_or("no failure details");
                let error = format!("EMR step {cluster}:{step} {}: {reason}", s.as_str());
                store.fail_running_runs_of(&id, &error).await?;
                store.release_job(&id, "FAILED").await?;
                decisions.push(Decision::new(&id, "FAILED", error));
            }
            other => decisions.push(Decision::new(
                &id,
                "running",
                format!(
                    "EMR step {cluster}:{step} is {}",
                    other
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "unknown".into())
                ),
            )),
        }
    }
    Ok(decisions)
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
) -> Result<Result<Vec<String>, String>, StateError> {
    let matcher = match GlobBuilder::new(&job.input_pattern)
        .literal_separator(true)
        .build()
    {
        Ok(glob) => glob.compile_matcher(),
        Err(e) => {
            return Ok(Err(format!(
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
        return Ok(Err(format!(
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
            return Ok(Err(format!(
                "{} files were not validated again since the last run at {last_run} (e.g. {})",
                stale.len(),
                stale[0]
            )));
        }
    }
    if let Some(sql) = job.criteria_sql.as_deref().filter(|s| !s.trim().is_empty()) {
        if !store.criteria_met(sql, options.criteria_timeout).await? {
            return Ok(Err("the extra criteria returned no row".into()));
        }
    }
    Ok(Ok(matching.iter().map(|(url, _)| url.clone()).collect()))
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
        let inputs = match unmet_precondition(store, &job, &files, options).await {
            Ok(Err(reason)) => {
                decisions.push(Decision::new(&id, "skipped", reason));
                continue;
            }
            Ok(Ok(inputs)) => inputs,
            Err(e) => {
                decisions.push(Decision::new(&id, "failed", e.to_string()));
                continue;
            }
        };
        let args = match run_arguments(&job, &options.state_url) {
            Ok(a) => a,
            Err(e) => {
                decisions.push(Decision::new(&id, "failed", e));
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
                "skipped",
                "claimed by another scheduler",
            ));
            continue;
        }
        store.mark_submitted(&inputs, &id).await?;
        match &options.executor {
            Executor::Local { tally } => {
                // The run's own output (its summary, Athena statements) goes to the scheduler's
                // stderr, so the scheduler's stdout stays its decisions.
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
            Executor::Emr {
                client,
                tag_key,
                tag_value,
                tally_path,
            } => {
                match submit_emr_step(client, (tag_key, tag_value), tally_path, &id, &args).await {
                    Ok(step) => {
                        store.set_step_id(&id, &step).await?;
                        decisions.push(Decision::new(&id, "submitted", format!("EMR step {step}")));
                    }
                    Err(e) => {
                        store.release_job(&id, "FAILED").await?;
                        decisions.push(Decision::new(&id, "failed", e));
                    }
                }
            }
        }
    }
    Ok(decisions)
}
