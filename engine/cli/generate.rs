//! `tally generate`: a synthetic province for benchmarks and load tests, and `tally demo`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use tally::generate::{generate, Forms, ProvinceShape};
use tally::job::JobCatalog;
use tally::progress::Progress;

use super::parse_count;

pub const GENERATE_HELP: &str = "Examples:\n  tally generate --transactions 1800000 --out bench-data/1.8M\n  \
tally generate --transactions 10M --stores 200 --days 1 --forms validated,parquet --out /data/p10M\n\n\
Each of --stores stores sends --versions cumulative files: version v holds the first v/versions of each\n\
day's lines, so --transactions counts lines over all versions (the rows a job reads). raw/ has junk and\n\
header lines, CRLF files and one malformed row per --bad-row-every lines; validated/ is exactly what\n\
`tally validate` makes of raw/; parquet/ holds the typed columns. The same seed gives the same bytes.";

pub const DEMO_HELP: &str = "Example:\n  tally demo --workdir /tmp/tally-demo\n\n\
Writes the bundled raw files (province WI: four stores, a later cumulative file, junk and header lines,\n\
a CRLF file, a bad row, a file of another province and an item master) under the work folder, validates\n\
them, runs jobs/province_sales.sql and prints the result.";

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the demo's raw, validated and result files.
    #[arg(long, default_value = "tally-demo")]
    workdir: PathBuf,
}

/// `tally demo`.
pub async fn demo(args: DemoArgs, catalog: &JobCatalog, progress: &Progress) -> Result<()> {
    tally::demo::run_demo(&args.workdir, catalog, progress).await
}

#[derive(Args)]
pub struct GenerateArgs {
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

/// `tally generate`.
pub fn generate_province(args: GenerateArgs, progress: &Progress) -> Result<()> {
    let forms = parse_forms(&args.forms)?;
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

fn parse_forms(names: &[String]) -> Result<Forms> {
    let mut forms = Forms {
        raw: false,
        validated: false,
        parquet: false,
    };
    for form in names {
        match form.trim() {
            "raw" => forms.raw = true,
            "validated" => forms.validated = true,
            "parquet" => forms.parquet = true,
            other => bail!("unknown form `{other}` (expected raw, validated or parquet)"),
        }
    }
    Ok(forms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_named_and_checked() {
        let forms = parse_forms(&["raw".into(), " parquet".into()]).unwrap();
        assert!(forms.raw && forms.parquet && !forms.validated);
        assert!(parse_forms(&["csv".into()]).is_err());
    }
}
