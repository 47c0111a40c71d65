//! `tally validate`: raw `.tdf` files into validated CSV, bad rows quarantined.

use anyhow::{bail, Result};
use clap::Args;
use tally::layout::LayoutSet;
use tally::progress::Progress;
use tally::validate::{summary_line, validate, ValidateOptions};

pub const AFTER_HELP: &str = "Example:\n  tally validate --input s3://pos-raw/incoming --output s3://pos-raw/validated --max-bad-rows 100\n\n\
Every `NAME.tdf` directly under the input becomes `NAME.csv` under the output: comma-separated, no header,\n\
original columns in order. Lines starting with `-` are dropped as junk; a first line that is not data is\n\
dropped as a header. Rows that do not fit the file's layout (jobs/layouts.toml; files named Item* are the\n\
item master) go to OUTPUT/_quarantine/NAME.csv with file, line, reason and raw text. The raw file's time\n\
is carried to the output (jobs use it to find the newest cumulative file).";

#[derive(Args)]
pub struct ValidateArgs {
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

pub async fn run(args: ValidateArgs, layouts: LayoutSet, progress: &Progress) -> Result<()> {
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

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
