//! The warehouse sink: one row per record key in a relational table, upserted in one transaction.
//!
//! | URL | where | how rows get there |
//! |---|---|---|
//! | `sqlite://PATH` | embedded SQLite file (the default for local runs) | one prepared upsert, values bound from Arrow, on a writer thread ([`sqlite`]) |
//! | `postgres://...` | PostgreSQL | `COPY ... FROM STDIN` into a temp table, then `INSERT ... ON CONFLICT` |
//! | `redshift://...` | Redshift over its PostgreSQL wire protocol (port 5439) | bound inserts into a temp table, then delete+insert |
//! | `redshift-data://...` | Redshift through the Data API | Parquet under an S3 prefix, `COPY`, delete+insert in one `BatchExecuteStatement` |
//!
//! Whatever the URL, an incoming row replaces a stored one only when its source is newer or
//! equal and something differs; see [`dialect`].

pub mod dialect;
pub mod redshift_data;
pub mod sql;
pub mod sqlite;
mod sqlite_rows;
mod sqlite_unchanged;
mod writeback;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::{JobRows, Sink, SinkDetails, SinkError, SinkReport, StagedWrite};
use crate::job::{JobDefinition, RowObserver};
use dialect::TableSpec;

/// Upserts a job's rows into its warehouse table.
#[derive(Debug, Clone)]
pub struct WarehouseSink {
    pub url: String,
    /// Create the table when missing (`--no-create-table` turns this off).
    pub create_table: bool,
    /// Data API polling (tests shorten it).
    pub polling: redshift_data::Polling,
    /// The SQLite writer that has been loading the rows while the query made them
    /// ([`Sink::observe`]), for `stage` to finish.
    early: Arc<Mutex<Option<sqlite::SqliteWriter>>>,
}

impl WarehouseSink {
    pub fn new(url: &str, create_table: bool) -> WarehouseSink {
        WarehouseSink {
            url: url.to_string(),
            create_table,
            polling: Default::default(),
            early: Default::default(),
        }
    }

    /// The URL without its secrets, for messages and summaries (a Data API URL without its
    /// query, which names roles and buckets).
    pub fn display_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "redshift-data" => {
                u.as_str().split('?').next().unwrap_or_default().to_string()
            }
            _ => crate::secrets::redact_url(&self.url),
        }
    }

    /// The job's table: its declared name, key and precombine field.
    pub fn table_spec(rows: &JobRows<'_>) -> Result<TableSpec, dialect::TableError> {
        dialect::supported(&rows.schema)?;
        TableSpec::new(
            &rows.job.sinks.warehouse_table,
            &rows.schema,
            &rows.job.output.record_key,
            &rows.job.output.precombine_field,
            &rows.job.output.partition_field,
        )
    }
}

/// A load's failure as a sink error: `table NAME:` and the cause's chain.
fn load_error(table: &str, target: &str, cause: &(dyn std::error::Error + 'static)) -> SinkError {
    let context = format!("table {table}");
    SinkError::caused_by("warehouse", target, Some(&context), cause)
}

/// The report of a load over a connection: `changed` of the batches' rows inserted or replaced.
fn load_report(
    target: &str,
    spec: &TableSpec,
    batches: &[datafusion::arrow::array::RecordBatch],
    changed: u64,
) -> SinkReport {
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    SinkReport {
        sink: "warehouse".into(),
        target: target.to_string(),
        summary: format!(
            "table {}: {changed} rows inserted or replaced, {} unchanged or older",
            spec.name,
            rows - changed.min(rows)
        ),
        details: SinkDetails::Warehouse {
            table: spec.name.clone(),
            rows,
            changed: Some(changed),
            statement_id: None,
        },
    }
}

#[async_trait]
impl Sink for WarehouseSink {
    async fn stage(&self, rows: &JobRows<'_>) -> Result<Box<dyn StagedWrite>, SinkError> {
        let target = self.display_url();
        let spec = Self::table_spec(rows)
            .map_err(|e| SinkError::caused_by("warehouse", target.clone(), None, &e))?;
        if self.url.starts_with("redshift-data://") {
            let data_api = redshift_data::DataApiTarget::parse(&self.url)
                .map_err(|e| SinkError::caused_by("warehouse", target.clone(), None, &e))?;
            let client = data_api.client().await;
            return redshift_data::stage(
                client,
                data_api,
                &spec,
                &rows.schema,
                rows.batches,
                self.create_table,
                self.polling,
            )
            .await;
        }
        if let Some(location) = self.url.strip_prefix("sqlite://") {
            let early = self.early.lock().ok().and_then(|mut early| early.take());
            return match early {
                Some(writer) => writer.stage(&target, &spec, rows.batches).await,
                None => {
                    sqlite::stage(location, &target, &spec, rows.batches, self.create_table).await
                }
            };
        }
        let known = ["postgres://", "postgresql://", "redshift://"];
        if !known.iter().any(|p| self.url.starts_with(p)) {
            return Err(SinkError {
                sink: "warehouse",
                target,
                message: "unsupported URL: use sqlite://PATH, postgres://..., redshift://... or redshift-data://...".into(),
            });
        }
        sql::stage(&self.url, &target, &spec, rows.batches, self.create_table).await
    }

    /// A SQLite warehouse loads the rows as the query makes them, on its writer thread, in the
    /// transaction `stage` leaves open: the query and the load share the machine's cores instead
    /// of taking turns. Other warehouses load in `stage`.
    fn observe(&self, job: &JobDefinition) -> Option<Box<dyn RowObserver>> {
        let location = self.url.strip_prefix("sqlite://")?;
        // A writer thread that cannot start leaves the load to `stage`, which says why.
        let writer = sqlite::SqliteWriter::spawn(location, self.create_table).ok()?;
        *self.early.lock().ok()? = Some(writer.clone());
        Some(Box::new(SqliteObserver {
            writer,
            job: job.clone(),
        }))
    }
}

/// Shows the query's rows to an early SQLite writer.
struct SqliteObserver {
    writer: sqlite::SqliteWriter,
    job: JobDefinition,
}

impl RowObserver for SqliteObserver {
    fn begin(&self, schema: &SchemaRef) {
        let rows = JobRows {
            job: &self.job,
            schema: schema.clone(),
            batches: &[],
        };
        let spec = WarehouseSink::table_spec(&rows).map_err(sqlite::SqliteError::from);
        self.writer.begin(spec);
    }

    fn rows(&self, batch: &RecordBatch) {
        self.writer.rows(batch);
    }
}
