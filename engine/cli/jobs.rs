//! `tally jobs`: list, show, explain and register the SQL-defined jobs.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};
use tally::job::{explain_job, JobCatalog, JobDefinition};
use tally::state::{JobConfig, JobParams, RetryPolicy};

use super::{connect_state, parse_param, StateArgs};

#[derive(Subcommand)]
pub enum JobsCommand {
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
pub struct RegisterArgs {
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

pub async fn run(cmd: JobsCommand, catalog: &JobCatalog) -> Result<()> {
    match cmd {
        JobsCommand::List => list(catalog),
        JobsCommand::Show { name } => {
            show(&catalog.find(&name)?);
            Ok(())
        }
        JobsCommand::Register(args) => register(*args, catalog).await,
        JobsCommand::Explain { name } => {
            print!("{}", explain_job(&catalog.find(&name)?).await?);
            Ok(())
        }
    }
}

fn list(catalog: &JobCatalog) -> Result<()> {
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
    Ok(())
}

fn show(job: &JobDefinition) {
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

/// Writes the configuration row `tally schedule` reads: the same [`JobParams`] a scheduled
/// `tally run --job-config-id` parses back.
async fn register(args: RegisterArgs, catalog: &JobCatalog) -> Result<()> {
    let job = catalog.find(&args.name)?;
    let mut params: BTreeMap<String, String> = args.params.into_iter().collect();
    if let Some(p) = args.province {
        params.insert("province".into(), p);
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
    let config = JobConfig {
        job_config_id: args.config_id,
        input_pattern,
        min_file_count: args.min_files,
        criteria_sql: args.criteria,
        params: JobParams {
            job: job.name.clone(),
            params,
            input: args.input,
            table: args.table,
            warehouse: args.warehouse,
            retry: RetryPolicy {
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
    Ok(())
}
