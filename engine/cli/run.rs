//! `tally run`: one job over one folder of validated files, into its sinks, reported to the state
//! store.
//!
//! The run itself is the library's [`Run`] operation (which reports RUNNING, COMPLETED or FAILED
//! and keeps sinks all-or-nothing); this file merges the command line with the configuration
//! row, builds the operation, and prints what it did.
//!
//! Invariants:
//! - a run that is not a dry run reports to the state store (`--state`); a dry run writes
//!   nothing but `--output`;
//! - no secret leaves the process: the URLs' passwords are masked in everything printed and
//!   stored (summary, errors, `job_runs.error`) by one [`Scrubber`] that knows the run's URLs;
//! - `--job-config-id ID` alone is a complete run: job, input, parameters and sinks come from the
//!   configuration row (`tally jobs register`), so a scheduler never passes a URL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tally::cluster::ClusterTarget;
use tally::job::{JobCatalog, RunRequest};
use tally::output::{write_rows, OutputFormat};
use tally::progress::Progress;
use tally::run::{describe_params, Run, RunOutcome};
use tally::secrets::{resolve_url, Scrubber};
use tally::sinks::target::SinkTarget;
use tally::state::{JobParams, StateStore};

use super::hudi_args::HudiArgs;
use super::{parse_bytes, parse_duration, parse_param};

pub const AFTER_HELP: &str = "Examples:\n  tally run --job jobs/province_sales.sql --province IL --input validated/ --dry-run --format csv\n  \
tally run --job province_sales --province CA --input s3://pos-raw/validated --dry-run --format table\n\n\
Input files are those directly under --input matching the job's patterns (province_sales: CODE-*.csv and\n\
CODE-*.parquet). S3 access uses the standard AWS configuration: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,\n\
AWS_PROFILE, AWS_REGION, the instance profile on EMR, and AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for\n\
S3-compatible servers. The rows go to stdout; the summary goes to stderr.";

#[derive(Args)]
pub struct RunArgs {
    /// The job: a path to a .sql file or the name of a job in the jobs folder (read from the
    /// configuration row when --job-config-id is given without it).
    #[arg(long, required_unless_present = "job_config_id")]
    job: Option<String>,
    /// Province code; sets the job's `province` parameter.
    #[arg(long)]
    province: Option<String>,
    /// Other job parameters, NAME=VALUE (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Folder of validated input files: a path, file:// or s3:// URL.
    #[arg(long, required_unless_present = "job_config_id")]
    input: Option<String>,
    /// Compute and print the rows; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the rows to this local file (in --format).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Upsert the rows into the Hudi copy-on-write table at this URL (created on first write).
    #[arg(long)]
    table: Option<String>,
    /// Upsert the rows into the job's warehouse table: sqlite://PATH, postgres://...,
    /// redshift://... (wire protocol) or redshift-data://CLUSTER/DB?db_user=..&iam_role=..&staging=s3://...;
    /// or where that URL is: env:NAME, or a Secrets Manager ARN (arn:aws:secretsmanager:...).
    #[arg(long, env = "TALLY_WAREHOUSE")]
    warehouse: Option<String>,
    /// Do not create the warehouse table when it is missing (fail instead).
    #[arg(long)]
    no_create_table: bool,
    #[command(flatten)]
    hudi: HudiArgs,
    /// How rows are printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Csv)]
    format: OutputFormat,
    /// Bad input rows to skip (and report) before the run fails.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: u64,
    /// Memory the query may use for hash tables and sorts (e.g. 512M, 4G); beyond it, it spills
    /// to temporary files (TMPDIR). Default: 2G.
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<u64>,
    /// Run the query on the Ballista cluster whose scheduler is at df://HOST:PORT (`tally cluster
    /// scheduler`) instead of in this process; the sinks and the state store are still written
    /// from here. Needs a tally built with `--features distributed`.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
    /// With --cluster: the longest the job may go without finishing a stage (no executor
    /// registered, executors lost) before it is cancelled and the run fails: 90s, 5m.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    cluster_timeout: std::time::Duration,
    /// With --cluster: the partitions the plan is cut into, the tasks of each stage.
    #[arg(long, default_value_t = 8)]
    cluster_partitions: usize,
    /// Print the query's operators with their metrics (rows, time, memory, spills) to stderr,
    /// as DataFusion's EXPLAIN ANALYZE shows them.
    #[arg(long)]
    profile: bool,
    /// Write the run summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// State store that records the run (sqlite://PATH, mysql://..., postgres://...), or where
    /// its URL is: env:NAME, or a Secrets Manager ARN.
    #[arg(long, env = "TALLY_STATE", default_value = "sqlite://.tally/state.db")]
    state: String,
    /// The aggr_job_configuration row this run belongs to (`tally schedule` passes only this).
    /// Without --job or --input, the job, input, parameters, table and warehouse are read from
    /// it (values given here still win).
    #[arg(long)]
    job_config_id: Option<String>,
}

/// What a run does once its arguments and configuration are merged.
struct Plan {
    job: String,
    input: String,
    params: BTreeMap<String, String>,
    table: Option<String>,
    /// As given: a URL or a reference, resolved inside the reported part of the run.
    warehouse: Option<String>,
}

impl Plan {
    /// The command line's values, completed from the configuration row's `job_params`.
    fn merge(args: &RunArgs, config: Option<JobParams>) -> Result<Plan> {
        let config = config.unwrap_or(JobParams {
            job: String::new(),
            params: BTreeMap::new(),
            input: String::new(),
            table: None,
            warehouse: None,
            retry: Default::default(),
        });
        let mut params = config.params;
        params.extend(args.params.iter().cloned());
        if let Some(p) = &args.province {
            params.insert("province".into(), p.clone());
        }
        let job = args.job.clone().unwrap_or(config.job);
        let input = args.input.clone().unwrap_or(config.input);
        if job.is_empty() || input.is_empty() {
            bail!("the job configuration names no job or input: pass --job and --input");
        }
        Ok(Plan {
            job,
            input,
            params,
            table: args.table.clone().or(config.table),
            warehouse: args.warehouse.clone().or(config.warehouse),
        })
    }
}

/// `tally run`.
pub async fn run(args: RunArgs, catalog: &JobCatalog, progress: &Progress) -> Result<()> {
    let mut scrub = Scrubber::default();
    let outcome = run_scrubbed(&args, catalog, progress, &mut scrub).await;
    // Whatever failed, the message shown carries no secret of the run's URLs.
    outcome.map_err(|e| anyhow!("{}", scrub.scrub(&format!("{e:#}"))))
}

async fn run_scrubbed(
    args: &RunArgs,
    catalog: &JobCatalog,
    progress: &Progress,
    scrub: &mut Scrubber,
) -> Result<()> {
    // The configuration row completes a run that names no job or input (what `tally schedule`
    // starts); a run given both on the command line takes its sinks from there too.
    let needs_config = args.job_config_id.is_some() && (args.job.is_none() || args.input.is_none());
    let mut state: Option<(StateStore, String)> = None;
    if needs_config || !args.dry_run {
        let url = resolve_url(&args.state)
            .await
            .context("cannot find the state store URL")?;
        scrub.add_url(&url);
        state = Some((StateStore::connect(&url).await?, url));
    }
    let config =
        match (&args.job_config_id, &state) {
            (Some(id), Some((store, _))) if needs_config => {
                let row = store.job_config(id).await?;
                Some(JobParams::parse(row.params.as_deref()).with_context(|| {
                    format!("job configuration `{id}`: job_params is not valid")
                })?)
            }
            _ => None,
        };
    let plan = Plan::merge(args, config)?;
    if let Some(w) = &plan.warehouse {
        scrub.add_url(w);
    }
    let job = catalog.find(&plan.job)?;
    if !args.dry_run && args.output.is_none() && plan.table.is_none() && plan.warehouse.is_none() {
        bail!(
            "nothing to write to: pass --table URL, --warehouse URL, --output FILE, or --dry-run to print the rows"
        );
    }
    let request = RunRequest {
        job,
        params: plan.params.clone(),
        input: plan.input.clone(),
        max_bad_rows: args.max_bad_rows,
        memory_limit: args.memory_limit,
        cluster: args
            .cluster
            .as_deref()
            .map(|url| ClusterTarget::parse(url, args.cluster_timeout, args.cluster_partitions))
            .transpose()
            .map_err(|e| anyhow!("--cluster: {e}"))?,
    };
    let mut run = Run::new(request)
        .with_progress(*progress)
        .with_scrubber(scrub.clone());
    if !args.dry_run {
        if let Some(url) = &plan.table {
            run = run.with_sink(SinkTarget::Hudi {
                url: url.clone(),
                options: args.hudi.upsert_options(),
            });
        }
        if let Some(reference) = &plan.warehouse {
            run = run.with_sink(SinkTarget::Warehouse {
                reference: reference.clone(),
                create_table: !args.no_create_table,
            });
        }
    }
    if let Some(path) = &args.output {
        run = run.with_sink(SinkTarget::File {
            path: path.clone(),
            format: args.format,
        });
    }
    // A dry run writes nothing, the state store included.
    if let Some((store, url)) = state.filter(|_| !args.dry_run) {
        run = run.report_to(store, &url, args.job_config_id.as_deref());
    }
    let outcome = run.await?;
    report(args, &plan, &outcome)?;
    // The command ends here, and the process with it: handing the run's rows (a province's are
    // hundreds of MB in thousands of buffers) back to the allocator one by one only delayed the
    // exit (0.15 s at 10M transactions).
    std::mem::forget(outcome);
    Ok(())
}

/// Prints what a run did: the rows (dry run), the summary and each sink's line on stderr, the
/// statements to run next on stdout, the summary JSON where asked.
fn report(args: &RunArgs, plan: &Plan, outcome: &RunOutcome) -> Result<()> {
    let rows = &outcome.rows;
    if args.dry_run {
        let printed = print_rows(args.format, rows);
        // `tally run --dry-run | head`: the reader has what it wanted, and a dry run has nothing
        // else to finish; the summary still goes to stderr.
        if !printed.as_ref().is_err_and(reader_gone) {
            printed?;
        }
    }
    let s = &rows.summary;
    eprintln!(
        "tally run: job {} {}: {}",
        s.job,
        describe_params(&s.params),
        s.line()
    );
    if args.profile && args.cluster.is_some() {
        eprintln!(
            "tally run: the plan sent to the cluster (its operators' metrics are the executors'; the scheduler's job metrics hold them):\n{}",
            rows.profile()
        );
    } else if args.profile {
        eprintln!(
            "tally run: the query's operators, with their metrics:\n{}",
            rows.profile()
        );
    }
    if args.dry_run && (plan.table.is_some() || plan.warehouse.is_some()) {
        eprintln!("tally run: --dry-run: nothing was written to the sinks");
    }
    // The --output file is the user's own: it has no line of its own, nor a place in the JSON.
    let sinks: Vec<_> = outcome.sinks.iter().filter(|r| r.sink != "file").collect();
    for r in &sinks {
        eprintln!("tally run: {} {}: {}", r.sink, r.target, r.summary);
    }
    // After the sinks published: a reader gone from stdout loses these lines, not the run.
    let statements: Vec<&str> = outcome.follow_up_sql().collect();
    if !statements.is_empty() {
        if let Err(e) = writeln!(std::io::stdout().lock(), "{}", statements.join("\n")) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(
                    anyhow::Error::from(e).context("cannot print the statements to run next")
                );
            }
        }
    }
    for bad in &s.bad_row_samples {
        eprintln!("  skipped bad row: {bad}");
    }
    if let Some(path) = &args.summary_json {
        let summary = serde_json::json!({ "run": s, "sinks": sinks });
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, outcome.scrub.scrub(&text).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The rows on stdout, in `format`.
fn print_rows(format: OutputFormat, rows: &tally::job::RunResult) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_rows(format, &rows.schema, &rows.batches, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Whether `e` is, at bottom, a write to a pipe whose reader has closed it (`| head`).
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap()
            .run
    }

    fn config() -> JobParams {
        JobParams::parse(Some(
            r#"{"job":"province_sales","input":"s3://pos/validated","params":{"province":"IL"},"warehouse":"env:WH"}"#,
        ))
        .unwrap()
    }

    #[test]
    fn a_configuration_id_alone_makes_a_run() {
        let args = parse(&["--job-config-id", "il-daily"]);
        let plan = Plan::merge(&args, Some(config())).unwrap();
        assert_eq!(
            (plan.job.as_str(), plan.input.as_str()),
            ("province_sales", "s3://pos/validated")
        );
        assert_eq!(plan.params["province"], "IL");
        assert_eq!(plan.warehouse.as_deref(), Some("env:WH"));
    }

    #[test]
    fn the_command_line_wins_over_the_configuration() {
        let args = parse(&[
            "--job-config-id",
            "il-daily",
            "--province",
            "CA",
            "--input",
            "local/",
        ]);
        let plan = Plan::merge(&args, Some(config())).unwrap();
        assert_eq!(plan.params["province"], "CA");
        assert_eq!(plan.input, "local/");
    }

    #[test]
    fn without_a_configuration_job_and_input_are_required() {
        assert!(Cli::try_parse_from(["run", "--input", "x"]).is_err());
        assert!(Cli::try_parse_from(["run", "--job", "j", "--input", "x"]).is_ok());
    }
}
