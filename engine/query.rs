//! `tally query`: SQL over the latest snapshot of a Hudi table, the local stand-in for Athena.
//!
//! The snapshot is read from the timeline: completed commits only, and the latest file slice of
//! each file group. The table is registered under its Hudi table name.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};

use crate::sinks::hudi::HudiTable;
use crate::storage::Location;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Table(String),
    #[error("query failed: {0}")]
    Sql(#[from] datafusion::error::DataFusionError),
}

/// Runs `sql` over the snapshot of the table at `url`; returns the result rows.
pub async fn query_table(
    url: &str,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    let location = Location::open(url)
        .await
        .map_err(|e| QueryError::Table(e.to_string()))?;
    let table = HudiTable::open(&location)
        .await
        .map_err(|e| QueryError::Table(e.to_string()))?
        .ok_or_else(|| {
            QueryError::Table(format!(
                "{}: no Hudi table here (no .hoodie/hoodie.properties)",
                location.url
            ))
        })?;
    let files = table
        .snapshot()
        .await
        .map_err(|e| QueryError::Table(e.to_string()))?;
    if files.is_empty() {
        return Err(QueryError::Table(format!(
            "{}: the table has no committed data yet",
            location.url
        )));
    }
    let ctx = crate::job::execute::session();
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(format!("{}/{}", location.url, f.relative_path())))
        .collect::<Result<Vec<_>, _>>()?;
    if location.local_root.is_none() {
        let bucket =
            url::Url::parse(&location.url).map_err(|e| QueryError::Table(e.to_string()))?;
        let root = url::Url::parse(&format!("s3://{}", bucket.host_str().unwrap_or_default()))
            .map_err(|e| QueryError::Table(e.to_string()))?;
        ctx.register_object_store(&root, location.store.clone());
    }
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    ctx.register_table(
        table.config.name.as_str(),
        Arc::new(ListingTable::try_new(config)?),
    )?;
    let frame = ctx.sql(sql).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    Ok((schema, batches))
}
