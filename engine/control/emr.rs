//! The EMR side of the control plane: submitting a run as a step on a tagged WAITING cluster, and
//! `tally monitor`, which asks EMR how steps ended whose run could not report itself.
//!
//! A step's arguments are visible to anyone who can call DescribeStep and in EMR's step logs on
//! S3, so they never carry a secret: the step runs `tally run --job-config-id ID` and reads the
//! rest of its configuration from the state store (see [`super::run_arguments`]).

use super::{Decision, Outcome};
use crate::state::runs::is_emr_step;
use crate::state::{RunStatus, StateError, StateStore};

/// Why an EMR call failed (the SDK's message with its context).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmrError(pub String);

/// Finds a WAITING cluster with the tag and adds one step running `tally` with `args`; returns
/// `clusterId:stepId`.
pub(crate) async fn submit_emr_step(
    client: &aws_sdk_emr::Client,
    tag: (&str, &str),
    tally_path: &str,
    job_config_id: &str,
    args: &[String],
) -> Result<String, EmrError> {
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
            .map_err(|e| EmrError(format!("ListClusters failed: {}", DisplayErrorContext(e))))?;
        for summary in page.clusters() {
            let Some(id) = summary.id() else { continue };
            let described = client
                .describe_cluster()
                .cluster_id(id)
                .send()
                .await
                .map_err(|e| {
                    EmrError(format!(
                        "DescribeCluster {id} failed: {}",
                        DisplayErrorContext(e)
                    ))
                })?;
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
    let cluster = cluster.ok_or_else(|| {
        EmrError(format!(
            "no WAITING EMR cluster is tagged {}={}",
            tag.0, tag.1
        ))
    })?;
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
            EmrError(format!(
                "AddJobFlowSteps on {cluster} failed: {}",
                DisplayErrorContext(e)
            ))
        })?;
    let step_id = added
        .step_ids()
        .first()
        .ok_or_else(|| EmrError("AddJobFlowSteps returned no step id".into()))?;
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
        if job.status() != Some(RunStatus::Running) {
            continue;
        }
        let id = job.job_config_id.clone();
        let Some((cluster, step)) = job
            .last_exec_stepid
            .as_deref()
            .filter(|s| is_emr_step(s))
            .and_then(|s| s.split_once(':'))
        else {
            decisions.push(Decision::new(&id, Outcome::Skipped, "not an EMR step"));
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
                    Outcome::Failed,
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
                store.release_job_completed(&id).await?;
                decisions.push(Decision::new(
                    &id,
                    Outcome::StepCompleted,
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
                store.release_job_failed(&id).await?;
                decisions.push(Decision::new(&id, Outcome::StepFailed, error));
            }
            other => decisions.push(Decision::new(
                &id,
                Outcome::StepRunning,
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
