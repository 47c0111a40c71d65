//! `tally demo`: the whole flow over bundled sample files, on embedded defaults.
//!
//! The sample province (`samples/raw/`, compiled into the binary) is written under a work folder
//! with the file times a store system would have given it, validated, and run through the
//! province job into every local sink with the same [`Run`] operation `tally run` uses. Every
//! output's location is printed.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::job::{JobCatalog, RunRequest};
use crate::output::{write_rows, OutputFormat};
use crate::progress::Progress;
use crate::run::Run;
use crate::sinks::hudi::UpsertOptions;
use crate::sinks::target::SinkTarget;
use crate::validate::{summary_line, validate, ValidateOptions, ValidateReport};

/// The bundled raw files and the times their stores sent them.
pub const SAMPLE_FILES: &[(&str, &[u8], &str)] = &[
    (
        "WI-201.tdf",
        include_bytes!("../samples/raw/WI-201.tdf"),
        "2026-03-01T09:00:00Z",
    ),
    (
        "WI-201-1500.tdf",
        include_bytes!("../samples/raw/WI-201-1500.tdf"),
        "2026-03-01T15:00:00Z",
    ),
    (
        "WI-202.tdf",
        include_bytes!("../samples/raw/WI-202.tdf"),
        "2026-03-01T12:00:00Z",
    ),
    (
        "WI-203.tdf",
        include_bytes!("../samples/raw/WI-203.tdf"),
        "2026-03-01T12:05:00Z",
    ),
    (
        "WI-204.tdf",
        include_bytes!("../samples/raw/WI-204.tdf"),
        "2026-03-01T12:10:00Z",
    ),
    (
        "IL-999.tdf",
        include_bytes!("../samples/raw/IL-999.tdf"),
        "2026-03-01T12:00:00Z",
    ),
    (
        "Item-Master-Data.tdf",
        include_bytes!("../samples/raw/Item-Master-Data.tdf"),
        "2026-03-01T06:00:00Z",
    ),
];

/// The sample's province code.
pub const SAMPLE_PROVINCE: &str = "WI";

/// Writes the bundled raw files into `dir` with their store times.
pub fn write_sample_files(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes, time) in SAMPLE_FILES {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        let time: DateTime<Utc> = time.parse().expect("bundled times are RFC 3339");
        crate::storage::set_local_mtime(&path, time)
            .with_context(|| format!("cannot set the time of {}", path.display()))?;
    }
    Ok(())
}

/// Runs the demo under `workdir`.
pub async fn run_demo(workdir: &Path, catalog: &JobCatalog, progress: &Progress) -> Result<()> {
    let raw = workdir.join("raw");
    let validated = workdir.join("validated");
    let result_csv = workdir.join("result.csv");
    let table = workdir.join("store_item_daily_sales");
    let warehouse = format!("sqlite://{}", workdir.join("warehouse.db").display());
    write_sample_files(&raw)?;
    println!(
        "tally demo: province {SAMPLE_PROVINCE}, work folder {}\n",
        workdir.display()
    );

    println!("1. validate {} -> {}", raw.display(), validated.display());
    let report = validate(
        &ValidateOptions {
            input: raw.display().to_string(),
            output: validated.display().to_string(),
            max_bad_rows: None,
            parallelism: 2,
            layouts: catalog.layouts().clone(),
        },
        progress,
    )
    .await?;
    print_validate_report(&report, &mut std::io::stdout())?;
    println!("   {}\n", summary_line(&report));

    let job = catalog.find("province_sales")?;
    println!(
        "2. run job {} ({}) for province {SAMPLE_PROVINCE} into the Hudi table, the SQLite warehouse \
         and a CSV file (each staged, then published)",
        job.name, job.origin
    );
    let request = RunRequest {
        job,
        params: [("province".to_string(), SAMPLE_PROVINCE.to_string())].into(),
        input: validated.display().to_string(),
        max_bad_rows: 0,
        memory_limit: None,
        cluster: None,
    };
    let outcome = Run::new(request)
        .with_progress(*progress)
        .with_sink(SinkTarget::Hudi {
            url: table.display().to_string(),
            options: UpsertOptions::default(),
        })
        .with_sink(SinkTarget::Warehouse {
            reference: warehouse.clone(),
            create_table: true,
        })
        .with_sink(SinkTarget::File {
            path: result_csv.clone(),
            format: OutputFormat::Csv,
        })
        .await?;
    let rows = &outcome.rows;
    write_rows(
        OutputFormat::Table,
        &rows.schema,
        &rows.batches,
        &mut std::io::stdout(),
    )?;
    println!("   {}", rows.summary.line());
    for report in &outcome.sinks {
        println!("   {} {}: {}", report.sink, report.target, report.summary);
    }
    println!();

    println!("Where everything went:");
    println!("  raw files        {}", raw.display());
    println!("  validated CSV    {}", validated.display());
    let quarantined: Vec<_> = report
        .files
        .iter()
        .filter_map(|f| f.quarantine.as_ref())
        .collect();
    for q in quarantined {
        println!("  quarantined rows {q}");
    }
    println!("  result rows      {}", result_csv.display());
    println!(
        "  Hudi table       {} (tally query --table {} \"SELECT * FROM store_item_daily_sales\")",
        table.display(),
        table.display()
    );
    println!("  warehouse        {warehouse} (table store_item_daily_sales)");
    Ok(())
}

/// Prints a validation report as a table, one line per file.
pub fn print_validate_report(report: &ValidateReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "   {:<28} {:<17} {:>8} {:>8} {:>5} {:>6} {:>5}  STATUS",
        "FILE", "LAYOUT", "LINES", "ROWS", "JUNK", "HEADER", "BAD"
    )?;
    for f in &report.files {
        let name = f.input.rsplit('/').next().unwrap_or(&f.input);
        writeln!(
            out,
            "   {:<28} {:<17} {:>8} {:>8} {:>5} {:>6} {:>5}  {}",
            name, f.layout, f.lines, f.rows, f.junk_lines, f.header_lines, f.bad_rows, f.status
        )?;
    }
    Ok(())
}
