//! `tally query`: SQL over a Hudi table's latest snapshot (the local stand-in for Athena).

use std::io::Write;

use anyhow::Result;
use clap::Args;
use tally::output::{write_rows, OutputFormat};

pub const AFTER_HELP: &str = "Examples:\n  tally query --table tables/sales \"SELECT trans_date, SUM(sale_amount) FROM store_item_daily_sales GROUP BY 1\"\n  \
tally query --table s3://lake/sales --format json \"SELECT COUNT(*) AS n FROM store_item_daily_sales\"\n\n\
The table is registered under its Hudi name (hoodie.table.name). Only completed commits are read, and only\n\
the latest version of each file group, as Athena does.";

#[derive(Args)]
pub struct QueryArgs {
    /// The Hudi table: a path, file:// or s3:// URL.
    #[arg(long)]
    table: String,
    /// The SQL (DataFusion dialect).
    sql: String,
    /// How rows are printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub async fn run(args: QueryArgs) -> Result<()> {
    let (schema, batches) = tally::query::query_table(&args.table, &args.sql).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_rows(args.format, &schema, &batches, &mut out)?;
    out.flush()?;
    Ok(())
}
