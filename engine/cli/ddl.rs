//! `tally athena ddl` and `tally warehouse ddl`: the statements that create a job's tables.

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use tally::job::{output_schema, JobCatalog};
use tally::sinks::hudi::TableConfig;
use tally::sinks::warehouse::dialect::{Dialect, TableSpec};

#[derive(Subcommand)]
pub enum AthenaCommand {
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
pub enum WarehouseCommand {
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
pub enum DialectArg {
    Sqlite,
    Postgres,
    Redshift,
}

/// `tally athena ddl`.
pub async fn athena(cmd: AthenaCommand, catalog: &JobCatalog) -> Result<()> {
    let AthenaCommand::Ddl {
        job,
        table,
        database,
    } = cmd;
    let job = catalog.find(&job)?;
    let schema = output_schema(&job).await?;
    let config = TableConfig {
        database,
        name: job.sinks.hudi_table.clone(),
        record_key: job.output.record_key.clone(),
        partition_fields: vec![job.output.partition_field.clone()],
        precombine_field: job.output.precombine_field.clone(),
        hive_style: job.sinks.hive_style_partitioning,
    };
    let ddl =
        tally::sinks::hudi::athena::create_table(&config, &schema, table.trim_end_matches('/'))?;
    print!("{ddl}");
    Ok(())
}

/// `tally warehouse ddl`.
pub async fn warehouse(cmd: WarehouseCommand, catalog: &JobCatalog) -> Result<()> {
    let WarehouseCommand::Ddl { job, dialect } = cmd;
    let job = catalog.find(&job)?;
    let schema = output_schema(&job).await?;
    let spec = TableSpec::new(
        &job.sinks.warehouse_table,
        &schema,
        &job.output.record_key,
        &job.output.precombine_field,
        &job.output.partition_field,
    )?;
    let dialect = match dialect {
        DialectArg::Sqlite => Dialect::Sqlite,
        DialectArg::Postgres => Dialect::Postgres,
        DialectArg::Redshift => Dialect::Redshift,
    };
    println!("{}", spec.create_table(dialect)?);
    Ok(())
}
