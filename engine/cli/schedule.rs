//! `tally schedule` and `tally monitor`: the control plane's two passes.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tally::control::{Decision, Executor, ScheduleOptions};

use super::{connect_state, parse_param, StateArgs};

pub const SCHEDULE_HELP: &str = "Example:\n  tally schedule --executor local --state sqlite://.tally/state.db\n\n\
For each job in aggr_job_configuration that is not RUNNING: at least job_min_file_count tracked files must\n\
match its pattern, all validated after its last run, and its extra criteria (one read-only SELECT, with a\n\
timeout) must return a row. The job is then claimed atomically (never submitted twice) and run.";

pub const MONITOR_HELP: &str = "Example:\n  tally monitor --state mysql://tally@state-db/aggr\n\n\
Runs report their own outcome; this catches the ones that could not (a lost node, a killed step).";

#[derive(Args)]
pub struct ScheduleArgs {
    /// Where submitted jobs run: `local` (`tally run` here) or `emr` (a step on a WAITING cluster).
    #[arg(long, value_enum, default_value_t = ExecutorArg::Local)]
    executor: ExecutorArg,
    /// EMR: the tag that marks clusters tally may submit to.
    #[arg(long, default_value = "edba=true", value_parser = parse_param)]
    emr_tag: (String, String),
    /// EMR: where the bootstrap action installed tally on the nodes.
    #[arg(long, default_value = "/usr/local/bin/tally")]
    emr_tally_path: String,
    #[command(flatten)]
    state: StateArgs,
    /// Seconds without a heartbeat after which a RUNNING run counts as failed (and a claim that
    /// never became a run is released).
    #[arg(long, default_value_t = 300)]
    lease_secs: u64,
    /// EMR: how the step's run finds the state store, when --state carries a password (which
    /// the step's arguments would show): env:NAME or a Secrets Manager ARN, as the nodes see it.
    #[arg(long)]
    step_state: Option<String>,
    /// Seconds a job's extra criteria may take.
    #[arg(long, default_value_t = 30)]
    criteria_timeout_secs: u64,
    /// Print the decisions as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExecutorArg {
    Local,
    Emr,
}

#[derive(Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print the decisions as JSON.
    #[arg(long)]
    json: bool,
}

/// `tally schedule`.
pub async fn schedule(args: ScheduleArgs) -> Result<()> {
    let (state, state_url) = connect_state(&args.state.state).await?;
    let executor = match args.executor {
        ExecutorArg::Local => Executor::Local {
            tally: std::env::current_exe().context("cannot find the tally binary")?,
        },
        ExecutorArg::Emr => Executor::Emr {
            client: emr_client().await,
            tag_key: args.emr_tag.0,
            tag_value: args.emr_tag.1,
            tally_path: args.emr_tally_path,
        },
    };
    let options = ScheduleOptions {
        executor,
        state_url,
        step_state: args.step_state,
        lease: Duration::from_secs(args.lease_secs),
        criteria_timeout: Duration::from_secs(args.criteria_timeout_secs),
    };
    let decisions = tally::control::schedule(&state, &options).await?;
    state.close().await;
    print_decisions(&decisions, args.json)
}

/// `tally monitor`.
pub async fn monitor(args: MonitorArgs) -> Result<()> {
    let (state, _) = connect_state(&args.state.state).await?;
    let decisions = tally::control::monitor(&state, &emr_client().await).await?;
    state.close().await;
    print_decisions(&decisions, args.json)
}

/// One line per job configuration, or the decisions as JSON.
fn print_decisions(decisions: &[Decision], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(decisions)?);
    } else {
        for d in decisions {
            println!("{:<24} {:<10} {}", d.job_config_id, d.outcome, d.detail);
        }
    }
    Ok(())
}

/// An EMR client from the standard AWS configuration.
async fn emr_client() -> aws_sdk_emr::Client {
    aws_sdk_emr::Client::new(&tally::aws::config_loader().load().await)
}
