//! The driver's side of a cluster run: send the job's physical plan to the Ballista scheduler,
//! follow the job, fetch its rows, and add up what the executors read.
//!
//! Invariants:
//! - the run never waits on the cluster without a bound: the scheduler must answer within the
//!   connect timeout, and the job must finish a stage (or the whole job) within
//!   [`ClusterTarget::timeout`]; otherwise the job is cancelled and the run fails with a message
//!   that says what was waited for (a cluster with no executor never starts a stage);
//! - the rows are those of the plan's single output partition, fetched from the executor that
//!   holds them, in order;
//! - the reading figures (rows, bytes, bad rows) are the sums of the input scans' metrics over the
//!   job's stages, as the scheduler reports them once the job has succeeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_core::client::BallistaClient;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    execute_query_params::Query, execute_query_result, job_status, operator_metric,
    CancelJobParams, ExecuteQueryParams, GetJobMetricsParams, GetJobStatusParams, KeyValuePair,
    PartitionLocation, SuccessfulJob,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use super::codec::TallyCodec;
use super::{ClusterError, ClusterTarget, ReadFigures};
use crate::sources::{InputScanExec, BAD_ROWS_METRIC, INPUT_BYTES_METRIC, INPUT_ROWS_METRIC};

/// The largest gRPC message the driver sends or takes (plans, job metrics).
const MAX_MESSAGE: usize = 64 << 20;
/// How often the job's status is asked for.
const POLL: Duration = Duration::from_millis(100);

/// Runs `plan` on the cluster and returns its rows and what its scans read.
pub async fn execute(
    plan: Arc<dyn ExecutionPlan>,
    config: &SessionConfig,
    job_name: &str,
    target: &ClusterTarget,
) -> Result<(Vec<RecordBatch>, ReadFigures), ClusterError> {
    let mut scheduler = connect(target).await?;
    let codec = TallyCodec::default();
    let mut bytes = Vec::new();
    PhysicalPlanNode::try_from_physical_plan(plan.clone(), &codec)
        .and_then(|node| node.try_encode(&mut bytes))
        .map_err(|source| ClusterError::Plan { source })?;

    let mut settings: Vec<KeyValuePair> = config
        .options()
        .entries()
        .into_iter()
        .map(|entry| KeyValuePair {
            key: entry.key,
            value: entry.value,
        })
        .collect();
    settings.push(KeyValuePair {
        key: "ballista.job.name".into(),
        value: Some(job_name.to_string()),
    });
    let mut request = tonic::Request::new(ExecuteQueryParams {
        session_id: uuid::Uuid::new_v4().to_string(),
        settings,
        operation_id: uuid::Uuid::new_v4().to_string(),
        query: Some(Query::PhysicalPlan(bytes)),
    });
    ballista_core::version::insert_version_header(request.metadata_mut());
    let submitted = scheduler
        .execute_query(request)
        .await
        .map_err(|status| target.unreachable(status.to_string()))?
        .into_inner();
    let job_id = match submitted.result {
        Some(execute_query_result::Result::Success(success)) => success.job_id,
        Some(execute_query_result::Result::Failure(failure)) => {
            return Err(ClusterError::Refused {
                scheduler: target.url(),
                reason: format!("{:?}", failure.failure),
            })
        }
        None => {
            return Err(ClusterError::Refused {
                scheduler: target.url(),
                reason: "an empty answer".into(),
            })
        }
    };
    tracing::info!(job_id = %job_id, scheduler = %target.url(), "job submitted to the cluster");

    let done = match follow(&mut scheduler, &job_id, target).await {
        Ok(done) => done,
        Err(e) => {
            // Nothing will read this job's rows: do not leave it holding the cluster.
            let _ = scheduler
                .cancel_job(CancelJobParams {
                    job_id: job_id.clone(),
                })
                .await;
            return Err(e);
        }
    };
    let figures = read_figures(&mut scheduler, &job_id, target).await?;
    let mut batches = Vec::new();
    for location in done.partition_location {
        batches.extend(fetch(location, &job_id).await?);
    }
    Ok((batches, figures))
}

async fn connect(target: &ClusterTarget) -> Result<SchedulerGrpcClient<Channel>, ClusterError> {
    let endpoint = Endpoint::from_shared(format!("http://{}", target.scheduler))
        .map_err(|e| target.unreachable(e.to_string()))?
        .connect_timeout(target.connect_timeout())
        // A scheduler that accepts a request and never answers must not hold the run either.
        .timeout(target.timeout.max(Duration::from_secs(30)))
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(target.connect_timeout(), endpoint.connect())
        .await
        .map_err(|_| {
            target.unreachable(format!("no answer within {:?}", target.connect_timeout()))
        })?
        .map_err(|e| target.unreachable(crate::error_chain(&e)))?;
    Ok(SchedulerGrpcClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Follows the job until it succeeds or fails, or until it finishes no stage within the timeout.
async fn follow(
    scheduler: &mut SchedulerGrpcClient<Channel>,
    job_id: &str,
    target: &ClusterTarget,
) -> Result<SuccessfulJob, ClusterError> {
    let mut last_progress = Instant::now();
    let mut stages_done = 0usize;
    let mut last_stage_check = Instant::now();
    loop {
        let status = scheduler
            .get_job_status(GetJobStatusParams {
                job_id: job_id.to_string(),
            })
            .await
            .map_err(|status| target.unreachable(status.to_string()))?
            .into_inner()
            .status
            .and_then(|s| s.status);
        match status {
            Some(job_status::Status::Successful(done)) => return Ok(done),
            Some(job_status::Status::Failed(failed)) => {
                return Err(ClusterError::JobFailed {
                    job_id: job_id.to_string(),
                    reason: failed.error,
                })
            }
            _ => {}
        }
        // A stage finished is progress; the scheduler reports finished stages with their metrics.
        if last_stage_check.elapsed() >= Duration::from_secs(1) {
            last_stage_check = Instant::now();
            if let Ok(metrics) = scheduler
                .get_job_metrics(GetJobMetricsParams {
                    job_id: job_id.to_string(),
                })
                .await
            {
                let finished = metrics.into_inner().stages.len();
                if finished > stages_done {
                    stages_done = finished;
                    last_progress = Instant::now();
                }
            }
        }
        if last_progress.elapsed() >= target.timeout {
            return Err(ClusterError::NoProgress {
                scheduler: target.url(),
                job_id: job_id.to_string(),
                waited: target.timeout,
                stages_done,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The input scans' figures, summed over the job's stages.
async fn read_figures(
    scheduler: &mut SchedulerGrpcClient<Channel>,
    job_id: &str,
    target: &ClusterTarget,
) -> Result<ReadFigures, ClusterError> {
    let metrics = scheduler
        .get_job_metrics(GetJobMetricsParams {
            job_id: job_id.to_string(),
        })
        .await
        .map_err(|status| target.unreachable(status.to_string()))?
        .into_inner();
    let mut figures = ReadFigures::default();
    let counts = metrics
        .stages
        .iter()
        .flat_map(|stage| &stage.operators)
        .filter(|op| op.operator_type == InputScanExec::NAME)
        .flat_map(|op| &op.metrics)
        .filter_map(|m| match &m.metric {
            Some(operator_metric::Metric::Count(named)) => Some(named),
            _ => None,
        });
    for count in counts {
        match count.name.as_str() {
            INPUT_ROWS_METRIC => figures.rows_in += count.value,
            INPUT_BYTES_METRIC => figures.bytes_in += count.value,
            BAD_ROWS_METRIC => figures.bad_rows += count.value,
            _ => {}
        }
    }
    Ok(figures)
}

/// The rows of one output partition, from the executor that holds them.
async fn fetch(
    location: PartitionLocation,
    job_id: &str,
) -> Result<Vec<RecordBatch>, ClusterError> {
    let layout = location.layout();
    let (Some(executor), Some(partition)) = (location.executor_meta, location.partition_id) else {
        return Err(ClusterError::JobFailed {
            job_id: job_id.to_string(),
            reason: "the scheduler named an output partition without its executor".into(),
        });
    };
    let fetch_err = |reason: String| ClusterError::Fetch {
        job_id: job_id.to_string(),
        executor: format!("{}:{}", executor.host, executor.port),
        reason,
    };
    let mut client = BallistaClient::try_new(
        &executor.host,
        executor.port as u16,
        MAX_MESSAGE,
        false,
        None,
        3,
        250,
        0,
        0,
    )
    .await
    .map_err(|e| fetch_err(e.to_string()))?;
    let stream = client
        .fetch_partition(
            &executor.id,
            &partition.into(),
            location.file_id,
            layout,
            true,
        )
        .await
        .map_err(|e| fetch_err(e.to_string()))?;
    stream
        .try_collect()
        .await
        .map_err(|e| fetch_err(e.to_string()))
}
