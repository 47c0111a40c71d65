//! The `tally` command line: a short dispatch. Each command's arguments and its `run` live in a
//! file of their own under `cli/`; everything they do is a call into the `tally` library.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

use cli::global::{init_logging, GlobalArgs};
use cli::{cluster, ddl, generate, jobs, query, run, schedule, status, track, validate, watch};
use tally::job::JobCatalog;
use tally::layout::LayoutSet;
use tally::progress::Progress;

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Batch aggregation for retail point-of-sale files: validate, run SQL jobs, load sinks",
    long_about = "tally turns stores' cumulative point-of-sale files into exactly one row per \
store, item and day.\n\nThe flow: `tally validate` converts raw .tdf files into clean CSV, \
`tally run` executes a SQL job (jobs/*.sql) over a province's validated files on Apache \
DataFusion, and `tally demo` does both over bundled sample files.",
    after_help = "Examples:\n  tally demo\n  tally validate --input raw/ --output validated/\n  \
tally run --job jobs/province_sales.sql --province IL --input validated/ --dry-run --format table\n  \
tally jobs list"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Convert raw tab-delimited store files (.tdf) into validated CSV.
    #[command(after_help = validate::AFTER_HELP)]
    Validate(validate::ValidateArgs),
    /// Run a SQL job over a province's validated files.
    #[command(after_help = run::AFTER_HELP)]
    Run(Box<run::RunArgs>),
    /// List, show and explain the SQL-defined jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Record validated files in the state store (what the scheduler's preconditions read).
    #[command(after_help = track::AFTER_HELP)]
    Track(track::TrackArgs),
    /// Submit every job whose files are complete (min file count, freshness, extra criteria).
    #[command(after_help = schedule::SCHEDULE_HELP)]
    Schedule(schedule::ScheduleArgs),
    /// Settle jobs whose EMR step ended without the run reporting itself (DescribeStep).
    #[command(after_help = schedule::MONITOR_HELP)]
    Monitor(schedule::MonitorArgs),
    /// Every job's state from the state store: last status, whether it would run now and why not,
    /// the last run's counts or error, recent runs, files validated since.
    #[command(after_help = status::STATUS_HELP)]
    Status(status::StatusArgs),
    /// Serve the status view as a read-only page that reloads itself, and as JSON at /api/status.
    #[command(after_help = status::SERVE_HELP)]
    Serve(status::ServeArgs),
    /// Validate, track and run jobs as raw files arrive in a folder: the event-driven flow here.
    #[command(after_help = watch::AFTER_HELP)]
    Watch(watch::WatchArgs),
    /// Run SQL over the latest snapshot of a Hudi table (the local stand-in for Athena).
    #[command(after_help = query::AFTER_HELP)]
    Query(query::QueryArgs),
    /// Athena statements for a job's Hudi table.
    #[command(subcommand)]
    Athena(ddl::AthenaCommand),
    /// Warehouse statements for a job's table.
    #[command(subcommand)]
    Warehouse(ddl::WarehouseCommand),
    /// Validate and run the province job over bundled sample files, showing every output.
    #[command(after_help = generate::DEMO_HELP)]
    Demo(generate::DemoArgs),
    /// Run a Ballista cluster's scheduler or executor, for `tally run --cluster`.
    #[command(subcommand, after_help = cluster::AFTER_HELP)]
    Cluster(cluster::ClusterCommand),
    /// Write a synthetic province (raw, validated CSV and Parquet) for benchmarks and load tests.
    #[command(after_help = generate::GENERATE_HELP)]
    Generate(generate::GenerateArgs),
}

// DataFusion allocates and frees many small buffers; glibc's allocator spent a fifth of a province
// run in malloc and free, mimalloc a fraction of that. Built without transparent huge pages
// (feature `no_thp`): with them, every fresh 2 MiB page mimalloc took from the OS was zeroed by
// the kernel, 40% of the CPU of a run writing a Hudi table (benches/HISTORY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Freed memory goes back to the OS after tally's delay, not mimalloc's (tally::memory).
    tally::memory::start();
    let cli = Cli::parse();
    init_logging(&cli.global);
    tally::run::panic_report::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // The work is done: what is freed from here on (the runtime's threads, what they hold) is
    // handed back by the process's end, not range by range.
    tally::memory::exiting();
    drop(runtime);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let layouts = match &cli.global.layouts {
        Some(path) => LayoutSet::load(path)?,
        None => LayoutSet::embedded(),
    };
    let progress = Progress::for_terminal(cli.global.quiet);
    let catalog = JobCatalog::new(&cli.global.jobs_dir, layouts.clone());
    match cli.command {
        Command::Validate(args) => validate::run(args, layouts, &progress).await,
        Command::Run(args) => run::run(*args, &catalog, &progress).await,
        Command::Jobs(cmd) => jobs::run(cmd, &catalog).await,
        Command::Track(args) => track::run(args).await,
        Command::Schedule(args) => schedule::schedule(args).await,
        Command::Monitor(args) => schedule::monitor(args).await,
        Command::Status(args) => status::run_status(&args).await,
        Command::Serve(args) => status::run_serve(&args).await,
        Command::Watch(args) => watch::run(args, layouts, &progress).await,
        Command::Query(args) => query::run(args).await,
        Command::Athena(cmd) => ddl::athena(cmd, &catalog).await,
        Command::Warehouse(cmd) => ddl::warehouse(cmd, &catalog).await,
        Command::Demo(args) => generate::demo(args, &catalog, &progress).await,
        Command::Generate(args) => generate::generate_province(args, &progress),
        Command::Cluster(cmd) => cluster::run(cmd).await,
    }
}
