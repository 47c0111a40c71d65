//! `tally cluster scheduler|executor`: the processes of a Ballista cluster that runs tally's jobs
//! (`tally run --cluster df://HOST:PORT`). See `tally::cluster`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::parse_bytes;

pub const AFTER_HELP: &str = "Example, on one machine:\n  \
tally cluster scheduler --bind 127.0.0.1:50050 &\n  \
tally cluster executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50051 &\n  \
tally cluster executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50061 &\n  \
tally run --job jobs/province_sales.sql --province IL --input validated/ --cluster df://127.0.0.1:50050 --dry-run\n\n\
On EMR, bootstrap/ starts the scheduler on the primary node and an executor on every core and task\n\
node. Executors read the job's input folders themselves (S3 credentials from the node, as for a\n\
local run), so a cluster spanning machines needs inputs on S3. Needs a tally built with\n\
`--features distributed`.";

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Run a Ballista scheduler: it takes jobs from `tally run --cluster` and hands their tasks to
    /// executors.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor: it asks the scheduler for tasks and runs them.
    Executor(ExecutorArgs),
}

#[derive(Args)]
pub struct SchedulerArgs {
    /// Address to listen on, HOST:PORT (0.0.0.0:50050 on a cluster's primary node).
    #[arg(long, default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
}

#[derive(Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT.
    #[arg(long)]
    scheduler: String,
    /// Address of this executor's data service (where results are fetched), HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:50051")]
    bind: SocketAddr,
    /// The host name or address others reach this executor at (default: the --bind address, or
    /// the address the scheduler sees when binding 0.0.0.0).
    #[arg(long)]
    advertise: Option<String>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    slots: Option<usize>,
    /// Folder for shuffle files (default: a temporary folder).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Memory this executor's tasks share (e.g. 4G); beyond it they spill.
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<u64>,
}

pub async fn run(command: ClusterCommand) -> Result<()> {
    imp::run(command).await
}

#[cfg(feature = "distributed")]
mod imp {
    use super::*;
    use tally::cluster::{run_executor, run_scheduler, ExecutorSettings};

    pub async fn run(command: ClusterCommand) -> Result<()> {
        match command {
            ClusterCommand::Scheduler(args) => Ok(run_scheduler(args.bind).await?),
            ClusterCommand::Executor(args) => {
                tally::cluster::split_host_port(&args.scheduler)
                    .map_err(|e| anyhow::anyhow!("--scheduler: {e}"))?;
                let slots = args.slots.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                });
                Ok(run_executor(ExecutorSettings {
                    scheduler: args.scheduler,
                    bind: args.bind,
                    advertise: args.advertise,
                    slots: slots.max(1),
                    work_dir: args.work_dir,
                    memory_limit: args.memory_limit,
                })
                .await?)
            }
        }
    }
}

#[cfg(not(feature = "distributed"))]
mod imp {
    use super::*;
    use tally::cluster::ClusterError;

    pub async fn run(command: ClusterCommand) -> Result<()> {
        let what = match command {
            ClusterCommand::Scheduler(_) => "run a cluster scheduler",
            ClusterCommand::Executor(_) => "run a cluster executor",
        };
        Err(ClusterError::NotBuilt { what }.into())
    }
}
