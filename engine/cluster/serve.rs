//! The cluster's processes, played by the tally binary: Ballista's scheduler and executor,
//! started in-process with tally's codec so that they can run tally's plans.
//!
//! Both use pull scheduling: executors ask the scheduler for work, so an executor needs only its
//! Arrow Flight port (where the driver and other executors fetch its outputs) and no port of its
//! own for the scheduler to call. Executors send a heartbeat every [`HEARTBEAT`]; the scheduler
//! drops an executor silent for [`EXECUTOR_TIMEOUT`] and reschedules its tasks, and fails the
//! running jobs when no executor is left after the same grace, so a dead executor costs a job
//! at most about a minute rather than Ballista's default three.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;

use super::codec::TallyCodec;
use super::ClusterError;

/// How often an executor tells the scheduler it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an executor may be silent before the scheduler counts it lost.
pub const EXECUTOR_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a scheduler listening on `bind` until the process ends.
pub async fn run_scheduler(bind: SocketAddr) -> Result<(), ClusterError> {
    let mut config = SchedulerConfig::default()
        .with_hostname(bind.ip().to_string())
        .with_port(bind.port())
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged)
        .with_no_executors_grace_period_seconds(EXECUTOR_TIMEOUT.as_secs());
    config.bind_host = bind.ip().to_string();
    config.executor_timeout_seconds = EXECUTOR_TIMEOUT.as_secs();
    config.expire_dead_executor_interval_seconds = HEARTBEAT.as_secs();
    config.override_physical_codec = Some(Arc::new(TallyCodec::default()));
    let serve_err = |e: ballista_core::error::BallistaError| ClusterError::Serve {
        role: "scheduler",
        address: bind.to_string(),
        reason: e.to_string(),
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(serve_err)?;
    tracing::info!(address = %bind, "Ballista scheduler starting");
    start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(serve_err)
}

/// What an executor needs to know.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler, `HOST:PORT`.
    pub scheduler: String,
    /// Where this executor's Arrow Flight service listens.
    pub bind: SocketAddr,
    /// The host other processes reach this executor at; `None`: the address the scheduler sees.
    pub advertise: Option<String>,
    /// Tasks run at once.
    pub slots: usize,
    /// Folder for shuffle files; `None`: a temporary folder.
    pub work_dir: Option<PathBuf>,
    /// Memory the executor's tasks share; `None`: Ballista's default share of the machine.
    pub memory_limit: Option<u64>,
}

/// Runs an executor until the process ends.
pub async fn run_executor(settings: ExecutorSettings) -> Result<(), ClusterError> {
    let (host, port) =
        super::split_host_port(&settings.scheduler).map_err(|reason| ClusterError::Serve {
            role: "executor",
            address: settings.bind.to_string(),
            reason,
        })?;
    let advertise = settings
        .advertise
        .clone()
        .or_else(|| (!settings.bind.ip().is_unspecified()).then(|| settings.bind.ip().to_string()));
    let config = ExecutorProcessConfig {
        bind_host: settings.bind.ip().to_string(),
        external_host: advertise,
        port: settings.bind.port(),
        scheduler_host: host,
        scheduler_port: port,
        // Executors may start before the scheduler (a cluster's nodes boot in any order).
        scheduler_connect_timeout_seconds: 120,
        vcores: settings.slots,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: settings.work_dir.as_ref().map(|p| p.display().to_string()),
        executor_heartbeat_interval_seconds: HEARTBEAT.as_secs(),
        memory_pool_size: settings.memory_limit,
        override_physical_codec: Some(Arc::new(TallyCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(address = %settings.bind, scheduler = %settings.scheduler, slots = settings.slots, "Ballista executor starting");
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ClusterError::Serve {
            role: "executor",
            address: settings.bind.to_string(),
            reason: e.to_string(),
        })
}
