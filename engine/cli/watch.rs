//! `tally watch`: the event-driven flow on one machine, over local (or S3) folders.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tally::control::events::Folders;
use tally::control::watch::{event_lines, WatchOptions, Watcher};
use tally::control::{Executor, ScheduleOptions};
use tally::layout::LayoutSet;
use tally::progress::Progress;

use super::{connect_state, StateArgs};

pub const AFTER_HELP: &str = "Example:\n  tally jobs register province_sales --config-id wi --province WI --input validated/ \\\n    \
--min-files 5 --warehouse sqlite://warehouse.db --state sqlite://state.db\n  \
tally watch --raw raw/ --validated validated/ --state sqlite://state.db\n\n\
Then copy a province's .tdf files into raw/: each is validated once it has stopped changing for one\n\
interval, its validated file is tracked, and every job whose preconditions hold runs here (as\n\
`tally schedule --executor local` would), into its registered sinks. Register the job with the same\n\
--input spelling as --validated. Stop with Ctrl-C.";

#[derive(Args)]
pub struct WatchArgs {
    /// Folder where raw .tdf files arrive: a path, file:// or s3:// URL.
    #[arg(long)]
    raw: String,
    /// Folder for the validated .csv files; tracked under this spelling.
    #[arg(long)]
    validated: String,
    #[command(flatten)]
    state: StateArgs,
    /// How often the raw folder is listed, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// A file with more bad rows than this is not published.
    #[arg(long)]
    max_bad_rows: Option<u64>,
    /// Seconds without a heartbeat after which a RUNNING run counts as failed.
    #[arg(long, default_value_t = 300)]
    lease_secs: u64,
    /// Seconds a job's extra criteria may take.
    #[arg(long, default_value_t = 30)]
    criteria_timeout_secs: u64,
}

pub async fn run(args: WatchArgs, layouts: LayoutSet, progress: &Progress) -> Result<()> {
    let (store, state_url) = connect_state(&args.state.state).await?;
    let interval = Duration::from_millis(args.interval_ms.max(50));
    let options = WatchOptions {
        folders: Folders {
            raw: args.raw.clone(),
            validated: args.validated,
            layouts,
            max_bad_rows: args.max_bad_rows,
        },
        schedule: ScheduleOptions {
            executor: Executor::Local {
                tally: std::env::current_exe().context("cannot find the tally binary")?,
            },
            state_url,
            step_state: None,
            lease: Duration::from_secs(args.lease_secs),
            criteria_timeout: Duration::from_secs(args.criteria_timeout_secs),
        },
        interval,
        schedule_every: Duration::from_secs(30),
    };
    let mut watcher = Watcher::new(options, store);
    let status = progress.status_line("watching");
    let (mut files, mut runs) = (0usize, 0usize);
    let show = |line: &str| {
        if status.is_hidden() {
            eprintln!("tally watch: {line}");
        } else {
            status.println(format!("tally watch: {line}"));
        }
    };
    show(&format!(
        "watching {} (every {} ms)",
        args.raw,
        interval.as_millis()
    ));
    loop {
        match watcher.pass(progress).await {
            Ok(report) => {
                files += report.validated.len();
                runs += report
                    .decisions
                    .iter()
                    .filter(|d| d.outcome == tally::control::Outcome::Submitted)
                    .count();
                for line in event_lines(&report) {
                    show(&line);
                }
            }
            // A pass that fails (a store briefly unreachable) is retried at the next tick.
            Err(e) => show(&format!("pass failed, retrying: {e}")),
        }
        status.set_message(format!(
            "{}: {files} files validated, {runs} runs",
            args.raw
        ));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => {
                status.finish_and_clear();
                show("stopped");
                return Ok(());
            }
        }
    }
}
