//! The `tally` command line. Each subcommand is a thin edge over the library: parse arguments,
//! call into `tally::*`, print results to stdout and summaries to stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod cli;

use cli::run::RunArgs;
use cli::{connect_state, parse_count, parse_param, StateArgs};
use tally::job::{explain_job, output_schema, JobCatalog};
use tally::layout::LayoutSet;
use tally::output::{write_rows, OutputFormat};
use tally::progress::Progress;
use tally::validate::{summary_line, validate, ValidateOptions};

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

#[derive(Args)]
struct GlobalArgs {
    /// Folder of job definitions (*.sql); jobs built into tally are used when absent.
    #[arg(long, global = true, env = "TALLY_JOBS_DIR", default_value = "jobs")]
    jobs_dir: PathBuf,
    /// File layouts to use instead of the built-in jobs/layouts.toml.
    #[arg(long, global = true, env = "TALLY_LAYOUTS")]
    layouts: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More logging (-v info, -vv debug); TALLY_LOG=<filter> sets it precisely.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Convert raw tab-delimited store files (.tdf) into validated CSV.
    #[command(
        after_help = "Example:\n  tally validate --input s3://pos-raw/incoming --output s3://pos-raw/validated --max-bad-rows 100\n\n\
Every `NAME.tdf` directly under the input becomes `NAME.csv` under the output: comma-separated, no header,\n\
original columns in order. Lines starting with `-` are dropped as junk; a first line that is not data is\n\
dropped as a header. Rows that do not fit the file's layout (jobs/layouts.toml; files named Item* are the\n\
item master) go to OUTPUT/_quarantine/NAME.csv with file, line, reason and raw text. The raw file's time\n\
is carried to the output (jobs use it to find the newest cumulative file)."
    )]
    Validate(ValidateArgs),
    /// Run a SQL job over a province's validated files.
    #[command(
        after_help = "Examples:\n  tally run --job jobs/province_sales.sql --province IL --input validated/ --dry-run --format csv\n  \
tally run --job province_sales --province CA --input s3://pos-raw/validated --dry-run --format table\n\n\
Input files are those directly under --input matching the job's patterns (province_sales: CODE-*.csv and\n\
CODE-*.parquet). S3 access uses the standard AWS configuration: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,\n\
AWS_PROFILE, AWS_REGION, the instance profile on EMR, and AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for\n\
S3-compatible servers. The rows go to stdout; the summary goes to stderr."
    )]
    Run(RunArgs),
    /// List, show and explain the SQL-defined jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Record validated files in the state store (what the scheduler's preconditions read).
    #[command(
        after_help = "Examples:\n  tally track --file s3://pos/validated/IL-101.csv --file s3://pos/validated/IL-111.csv\n  \
aws s3api ... | tally track --s3-event -\n\n\
Each file's validation time is set (now, or the event's time) and its submitted_jobs reset, since a new\n\
version of a cumulative file has not been submitted anywhere yet."
    )]
    Track(TrackArgs),
    /// Submit every job whose files are complete (min file count, freshness, extra criteria).
    #[command(
        after_help = "Example:\n  tally schedule --executor local --state sqlite://.tally/state.db\n\n\
For each job in aggr_job_configuration that is not RUNNING: at least job_min_file_count tracked files must\n\
match its pattern, all validated after its last run, and its extra criteria (one read-only SELECT, with a\n\
timeout) must return a row. The job is then claimed atomically (never submitted twice) and run."
    )]
    Schedule(ScheduleArgs),
    /// Settle jobs whose EMR step ended without the run reporting itself (DescribeStep).
    #[command(
        after_help = "Example:\n  tally monitor --state mysql://tally@state-db/aggr\n\n\
Runs report their own outcome; this catches the ones that could not (a lost node, a killed step)."
    )]
    Monitor(MonitorArgs),
    /// Every job's state from the state store: last status, whether it would run now and why not,
    /// the last run's counts or error, recent runs, files validated since.
    #[command(
        after_help = "Examples:\n  tally status --state sqlite://.tally/state.db\n  \
tally status --json --job IL-sales\n\n\
Read-only: the preconditions are the ones `tally schedule` checks, evaluated without claiming anything."
    )]
    Status(cli::status::StatusArgs),
    /// Serve the status view as a read-only page that reloads itself, and as JSON at /api/status.
    #[command(
        after_help = "Example:\n  tally serve --state sqlite://.tally/state.db --bind 127.0.0.1:8080\n\n\
GET only; nothing is written. Bound to loopback by default: the page has no login."
    )]
    Serve(cli::status::ServeArgs),
    /// Run SQL over the latest snapshot of a Hudi table (the local stand-in for Athena).
    #[command(
        after_help = "Examples:\n  tally query --table tables/sales \"SELECT trans_date, SUM(sale_amount) FROM store_item_daily_sales GROUP BY 1\"\n  \
tally query --table s3://lake/sales --format json \"SELECT COUNT(*) AS n FROM store_item_daily_sales\"\n\n\
The table is registered under its Hudi name (hoodie.table.name). Only completed commits are read, and only\n\
the latest version of each file group, as Athena does."
    )]
    Query(QueryArgs),
    /// Athena statements for a job's Hudi table.
    #[command(subcommand)]
    Athena(AthenaCommand),
    /// Warehouse statements for a job's table.
    #[command(subcommand)]
    Warehouse(WarehouseCommand),
    /// Validate and run the province job over bundled sample files, showing every output.
    #[command(after_help = "Example:\n  tally demo --workdir /tmp/tally-demo\n\n\
Writes the bundled raw files (province WI: four stores, a later cumulative file, junk and header lines,\n\
a CRLF file, a bad row, a file of another province and an item master) under the work folder, validates\n\
them, runs jobs/province_sales.sql and prints the result.")]
    Demo(DemoArgs),
    /// Write a synthetic province (raw, validated CSV and Parquet) for benchmarks and load tests.
    #[command(
        after_help = "Examples:\n  tally generate --transactions 1800000 --out bench-data/1.8M\n  \
tally generate --transactions 10M --stores 200 --days 1 --forms validated,parquet --out /data/p10M\n\n\
Each of --stores stores sends --versions cumulative files: version v holds the first v/versions of each\n\
day's lines, so --transactions counts lines over all versions (the rows a job reads). raw/ has junk and\n\
header lines, CRLF files and one malformed row per --bad-row-every lines; validated/ is exactly what\n\
`tally validate` makes of raw/; parquet/ holds the typed columns. The same seed gives the same bytes."
    )]
    Generate(GenerateArgs),
}

#[derive(Args)]
struct ValidateArgs {
    /// Folder of raw .tdf files: a path, file:// or s3:// URL.
    #[arg(long)]
    input: String,
    /// Folder for the validated .csv files (created if missing).
    #[arg(long)]
    output: String,
    /// A file with more bad rows than this is not published and the command fails.
    #[arg(long)]
    max_bad_rows: Option<u64>,
    /// Files validated at once (default: the number of cores).
    #[arg(long)]
    parallel: Option<usize>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List the jobs (folder and built-in).
    #[command(after_help = "Example:\n  tally jobs list --jobs-dir jobs/")]
    List,
    /// Show a job's metadata and SQL.
    #[command(after_help = "Example:\n  tally jobs show province_sales")]
    Show {
        /// Job name or path to a .sql file.
        name: String,
    },
    /// Write a job's configuration row (aggr_job_configuration) into the state store.
    #[command(
        after_help = "Example:\n  tally jobs register province_sales --config-id il-daily --province IL --input s3://pos/validated \\\n    \
--min-files 13 --table s3://lake/store_item_daily_sales --state mysql://tally@state-db/aggr\n\n\
The row's input pattern is the job's file patterns under --input; its params say how `tally schedule`\n\
runs the job."
    )]
    Register(Box<RegisterArgs>),
    /// Print the DataFusion logical and physical plans of a job.
    #[command(after_help = "Example:\n  tally jobs explain province_sales")]
    Explain {
        /// Job name or path to a .sql file.
        name: String,
    },
}

#[derive(Args)]
struct TrackArgs {
    /// A validated file's URL (repeatable).
    #[arg(long = "file")]
    files: Vec<String>,
    /// S3 event notification JSON: a file path, or - for standard input.
    #[arg(long)]
    s3_event: Option<String>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Args)]
struct ScheduleArgs {
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
struct MonitorArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print the decisions as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct QueryArgs {
    /// The Hudi table: a path, file:// or s3:// URL.
    #[arg(long)]
    table: String,
    /// The SQL (DataFusion dialect).
    sql: String,
    /// How rows are printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(Args)]
struct RegisterArgs {
    /// Job name or path to a .sql file.
    name: String,
    /// The configuration row's id.
    #[arg(long)]
    config_id: String,
    /// Province code (the job's `province` parameter).
    #[arg(long)]
    province: Option<String>,
    /// Other job parameters, NAME=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Folder of the job's validated input files.
    #[arg(long)]
    input: String,
    /// Run only when at least this many matching files are tracked.
    #[arg(long, default_value_t = 1)]
    min_files: i64,
    /// Extra precondition: one read-only SELECT on the state store that must return a row.
    #[arg(long)]
    criteria: Option<String>,
    /// Hudi table the scheduled run upserts into.
    #[arg(long)]
    table: Option<String>,
    /// Warehouse the scheduled run upserts into: a URL (kept in the state store), or where it is:
    /// env:NAME (as the run sees its environment) or a Secrets Manager ARN.
    #[arg(long)]
    warehouse: Option<String>,
    /// Retries of a failed run, over the same files, before the job waits for new files.
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    /// Seconds before the second retry; each further retry waits twice as long.
    #[arg(long, default_value_t = 60)]
    retry_backoff_secs: u64,
    /// The longest wait between two retries, in seconds.
    #[arg(long, default_value_t = 3600)]
    max_retry_backoff_secs: u64,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Subcommand)]
enum AthenaCommand {
    /// Print the CREATE EXTERNAL TABLE for a job's Hudi table.
    #[command(
        after_help = "Example:\n  tally athena ddl --job province_sales --table s3://lake/store_item_daily_sales\n\n\
New partitions must then be added with ALTER TABLE ... ADD IF NOT EXISTS PARTITION (Athena cannot\n\
MSCK REPAIR Hudi tables): `tally run --table` prints those statements for the partitions it creates."
    )]
    Ddl {
        /// Job name or path to a .sql file.
        #[arg(long)]
        job: String,
        /// The table's location (an s3:// URL for Athena).
        #[arg(long)]
        table: String,
        /// Glue/Athena database.
        #[arg(long, default_value = "default")]
        database: String,
    },
}

#[derive(Subcommand)]
enum WarehouseCommand {
    /// Print the CREATE TABLE tally runs for a job's warehouse table.
    #[command(
        after_help = "Example:\n  tally warehouse ddl --job province_sales --dialect redshift\n\n\
tally creates the table when it is missing (unless --no-create-table); sql/warehouse/ holds the\n\
province job's DDL for each dialect, for review or for creating the table by hand."
    )]
    Ddl {
        /// Job name or path to a .sql file.
        #[arg(long)]
        job: String,
        #[arg(long, value_enum)]
        dialect: DialectArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DialectArg {
    Sqlite,
    Postgres,
    Redshift,
}

#[derive(Args)]
struct DemoArgs {
    /// Folder for the demo's raw, validated and result files.
    #[arg(long, default_value = "tally-demo")]
    workdir: PathBuf,
}

#[derive(Args)]
struct GenerateArgs {
    /// Output folder (raw/, validated/, parquet/ are made under it).
    #[arg(long)]
    out: PathBuf,
    /// Lines over all files and versions; K and M suffixes allowed (1.8M).
    #[arg(long, default_value = "1M", value_parser = parse_count)]
    transactions: u64,
    #[arg(long, default_value = "IL")]
    province: String,
    #[arg(long, default_value_t = 50)]
    stores: u32,
    /// Distinct items each store sells from.
    #[arg(long, default_value_t = 20_000)]
    items: u32,
    /// Days each file covers.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Cumulative versions each store sends.
    #[arg(long, default_value_t = 3)]
    versions: u32,
    #[arg(long, default_value = "2026-03-01")]
    first_day: String,
    /// One malformed raw row per this many lines (0: none).
    #[arg(long, default_value_t = 100_000)]
    bad_row_every: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Which forms to write: raw, validated, parquet (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "raw,validated,parquet")]
    forms: Vec<String>,
}

fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match global.verbose {
        0 => "warn",
        1 => "info,tally=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

// DataFusion allocates and frees many small buffers; glibc's allocator spent a fifth of a province
// run in malloc and free, mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
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
    match runtime.block_on(dispatch(cli)) {
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
        Command::Validate(args) => cmd_validate(args, layouts, &progress).await,
        Command::Run(args) => cli::run::run(args, &catalog, &progress).await,
        Command::Jobs(cmd) => cmd_jobs(cmd, &catalog).await,
        Command::Warehouse(WarehouseCommand::Ddl { job, dialect }) => {
            use tally::sinks::warehouse::dialect::{Dialect, TableSpec};
            let job = catalog.find(&job)?;
            let schema = output_schema(&job).await?;
            let spec = TableSpec::new(
                &job.sinks.warehouse_table,
                &schema,
                &job.output.record_key,
                &job.output.precombine_field,
                &job.output.partition_field,
            )
            .map_err(anyhow::Error::msg)?;
            let dialect = match dialect {
                DialectArg::Sqlite => Dialect::Sqlite,
                DialectArg::Postgres => Dialect::Postgres,
                DialectArg::Redshift => Dialect::Redshift,
            };
            println!(
                "{}",
                spec.create_table(dialect).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        Command::Schedule(args) => {
            let (state, state_url) = connect_state(&args.state.state).await?;
            let executor = match args.executor {
                ExecutorArg::Local => tally::control::Executor::Local {
                    tally: std::env::current_exe().context("cannot find the tally binary")?,
                },
                ExecutorArg::Emr => tally::control::Executor::Emr {
                    client: emr_client().await,
                    tag_key: args.emr_tag.0.clone(),
                    tag_value: args.emr_tag.1.clone(),
                    tally_path: args.emr_tally_path.clone(),
                },
            };
            let options = tally::control::ScheduleOptions {
                executor,
                state_url: state_url.clone(),
                step_state: args.step_state.clone(),
                lease: std::time::Duration::from_secs(args.lease_secs),
                criteria_timeout: std::time::Duration::from_secs(args.criteria_timeout_secs),
            };
            let decisions = tally::control::schedule(&state, &options).await?;
            state.close().await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&decisions)?);
            } else {
                for d in &decisions {
                    println!("{:<24} {:<10} {}", d.job_config_id, d.outcome, d.detail);
                }
            }
            Ok(())
        }
        Command::Monitor(args) => {
            let (state, _) = connect_state(&args.state.state).await?;
            let decisions = tally::control::monitor(&state, &emr_client().await).await?;
            state.close().await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&decisions)?);
            } else {
                for d in &decisions {
                    println!("{:<24} {:<10} {}", d.job_config_id, d.outcome, d.detail);
                }
            }
            Ok(())
        }
        Command::Track(args) => {
            let mut files: Vec<(String, chrono::DateTime<chrono::Utc>)> = args
                .files
                .iter()
                .map(|f| (f.clone(), chrono::Utc::now()))
                .collect();
            if let Some(source) = &args.s3_event {
                let text = if source == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(source)
                        .with_context(|| format!("cannot read {source}"))?
                };
                files.extend(tally::state::files_from_s3_event(&text)?);
            }
            if files.is_empty() {
                bail!("nothing to track: pass --file URL or --s3-event FILE");
            }
            let (state, _) = connect_state(&args.state.state).await?;
            let n = state.track_files(&files).await?;
            state.close().await;
            eprintln!("tally track: {n} files recorded as validated");
            Ok(())
        }
        Command::Query(args) => {
            let (schema, batches) = tally::query::query_table(&args.table, &args.sql).await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            write_rows(args.format, &schema, &batches, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Athena(AthenaCommand::Ddl {
            job,
            table,
            database,
        }) => {
            let job = catalog.find(&job)?;
            let schema = output_schema(&job).await?;
            let config = tally::sinks::hudi::TableConfig {
                database,
                name: job.sinks.hudi_table.clone(),
                record_key: job.output.record_key.clone(),
                partition_fields: vec![job.output.partition_field.clone()],
                precombine_field: job.output.precombine_field.clone(),
                hive_style: job.sinks.hive_style_partitioning,
            };
            let ddl = tally::sinks::hudi::athena::create_table(
                &config,
                &schema,
                table.trim_end_matches('/'),
            )?;
            print!("{ddl}");
            Ok(())
        }
        Command::Status(args) => cli::status::run_status(&args).await,
        Command::Serve(args) => cli::status::run_serve(&args).await,
        Command::Generate(args) => cmd_generate(args, &progress),
        Command::Demo(args) => {
            tally::demo::run_demo(&args.workdir, &catalog, &progress).await?;
            Ok(())
        }
    }
}

fn cmd_generate(args: GenerateArgs, progress: &Progress) -> Result<()> {
    use tally::generate::{generate, Forms, ProvinceShape};
    let mut forms = Forms {
        raw: false,
        validated: false,
        parquet: false,
    };
    for form in &args.forms {
        match form.trim() {
            "raw" => forms.raw = true,
            "validated" => forms.validated = true,
            "parquet" => forms.parquet = true,
            other => bail!("unknown form `{other}` (expected raw, validated or parquet)"),
        }
    }
    let shape = ProvinceShape {
        province: args.province,
        transactions: args.transactions,
        stores: args.stores,
        items: args.items,
        days: args.days,
        versions: args.versions,
        first_day: args.first_day,
        bad_row_every: args.bad_row_every,
        seed: args.seed,
    };
    let bar = progress.count("generating lines", shape.transactions);
    let report = generate(&shape, &args.out, forms, |r| {
        bar.set_position(r.transactions)
    })?;
    bar.finish_and_clear();
    eprintln!(
        "generated {} files, {} transactions ({} malformed raw rows) under {}: raw {:.1} MB, validated {:.1} MB, parquet {:.1} MB",
        report.files,
        report.transactions,
        report.bad_rows,
        args.out.display(),
        report.raw_bytes as f64 / 1e6,
        report.validated_bytes as f64 / 1e6,
        report.parquet_bytes as f64 / 1e6,
    );
    Ok(())
}

async fn cmd_validate(args: ValidateArgs, layouts: LayoutSet, progress: &Progress) -> Result<()> {
    let options = ValidateOptions {
        input: args.input,
        output: args.output,
        max_bad_rows: args.max_bad_rows,
        parallelism: args.parallel.unwrap_or_else(default_parallelism),
        layouts,
    };
    let report = validate(&options, progress).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        tally::demo::print_validate_report(&report, &mut std::io::stdout())?;
    }
    eprintln!("tally validate: {}", summary_line(&report));
    if report.failed_files() > 0 {
        bail!(
            "{} file(s) not published: more bad rows than --max-bad-rows (see {}/_quarantine)",
            report.failed_files(),
            report.output
        );
    }
    Ok(())
}

/// An EMR client from the standard AWS configuration.
async fn emr_client() -> aws_sdk_emr::Client {
    aws_sdk_emr::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await,
    )
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

async fn cmd_jobs(cmd: JobsCommand, catalog: &JobCatalog) -> Result<()> {
    match cmd {
        JobsCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<24} {:<34} DESCRIPTION", "NAME", "SOURCE")?;
            for job in catalog.list() {
                match job {
                    Ok(job) => writeln!(
                        out,
                        "{:<24} {:<34} {}",
                        job.name, job.origin, job.description
                    )?,
                    Err(e) => writeln!(out, "{:<24} {:<34} {e}", "(invalid)", "")?,
                }
            }
        }
        JobsCommand::Show { name } => {
            let job = catalog.find(&name)?;
            println!("name:        {}", job.name);
            println!("source:      {}", job.origin);
            println!("description: {}", job.description);
            println!("params:      {}", job.params.join(", "));
            println!(
                "input:       table `{}` from files {}",
                job.input.table,
                job.input.files.join(", ")
            );
            println!("layout:      {}", job.input.layout.name);
            for c in &job.input.layout.columns {
                println!("               {:<14} {}", c.name, c.ty);
            }
            println!(
                "               {:<14} string (lineage)",
                tally::sources::SOURCE_FILE
            );
            println!(
                "               {:<14} timestamp (lineage)",
                tally::sources::SOURCE_TIME
            );
            println!("record key:  {}", job.output.record_key.join(", "));
            println!("partition:   {}", job.output.partition_field);
            println!("precombine:  {}", job.output.precombine_field);
            println!(
                "hudi table:  {} (hive-style partitions: {})",
                job.sinks.hudi_table, job.sinks.hive_style_partitioning
            );
            println!("warehouse:   {}", job.sinks.warehouse_table);
            println!("\n{}", job.sql);
        }
        JobsCommand::Register(args) => {
            let job = catalog.find(&args.name)?;
            let mut params: BTreeMap<String, String> = args.params.iter().cloned().collect();
            if let Some(p) = &args.province {
                params.insert("province".into(), p.clone());
            }
            let borrowed: BTreeMap<&str, &str> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let patterns = job.input_patterns(&borrowed)?;
            let folder = args.input.trim_end_matches('/');
            let input_pattern = match patterns.as_slice() {
                [one] => format!("{folder}/{one}"),
                many => format!("{folder}/{{{}}}", many.join(",")),
            };
            let config = tally::state::JobConfig {
                job_config_id: args.config_id.clone(),
                input_pattern,
                min_file_count: args.min_files,
                criteria_sql: args.criteria.clone(),
                params: tally::state::JobParams {
                    job: job.name.clone(),
                    params,
                    input: args.input.clone(),
                    table: args.table.clone(),
                    warehouse: args.warehouse.clone(),
                    retry: tally::state::RetryPolicy {
                        max_retries: args.max_retries,
                        backoff_secs: args.retry_backoff_secs,
                        max_backoff_secs: args.max_retry_backoff_secs,
                    },
                },
            };
            let (state, _) = connect_state(&args.state.state).await?;
            state.register_job(&config).await?;
            state.close().await;
            println!(
                "registered {}: {} (at least {} files)",
                config.job_config_id, config.input_pattern, config.min_file_count
            );
        }
        JobsCommand::Explain { name } => {
            let job = catalog.find(&name)?;
            print!("{}", explain_job(&job).await?);
        }
    }
    Ok(())
}
