//! Warehouses reached over the PostgreSQL wire protocol (sqlx): PostgreSQL, and Redshift on its
//! port 5439. (SQLite has its own writer: [`super::sqlite`].)
//!
//! Staging happens inside one open transaction: create the table if missing, create a temporary
//! staging table, bulk-load the rows (`COPY ... FROM STDIN` on PostgreSQL, batched multi-row
//! inserts on Redshift), merge with the dialect's statements. Publishing commits; discarding (or
//! any error) rolls back, which also drops the staging table.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::arrow::error::ArrowError;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor, Pool, Postgres, QueryBuilder, Transaction};

use super::dialect::{Dialect, RowsInsert, TableError, TableSpec, STAGING};
use crate::sinks::{SinkError, SinkReport, StagedWrite};

/// Why rows could not be staged in a warehouse reached over a connection.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot connect")]
    Connect(#[source] sqlx::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("cannot convert the rows' values for loading")]
    Convert(#[source] ArrowError),
    #[error("cannot encode rows as CSV")]
    Csv(#[source] ArrowError),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Values of one cell as the loaders bind them.
enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// Cell values of one column, converted once per batch.
fn column_cells(col: &ArrayRef) -> Result<Vec<Cell>, LoadError> {
    let n = col.len();
    let texts = |array: &ArrayRef| -> Result<Vec<Cell>, LoadError> {
        let s = cast(array, &DataType::Utf8).map_err(LoadError::Convert)?;
        let s = s.as_string::<i32>();
        Ok((0..n)
            .map(|i| {
                if s.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Text(s.value(i).to_string())
                }
            })
            .collect())
    };
    match col.data_type() {
        t if t.is_integer() => {
            let v = cast(col, &DataType::Int64).map_err(LoadError::Convert)?;
            let v = v.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            Ok((0..n)
                .map(|i| {
                    if v.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Int(v.value(i))
                    }
                })
                .collect())
        }
        DataType::Timestamp(_, _) => {
            let v = cast(
                col,
                &DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    Some("UTC".into()),
                ),
            )
            .map_err(LoadError::Convert)?;
            let v = v.as_primitive::<TimestampMicrosecondType>();
            Ok((0..n)
                .map(|i| {
                    if v.is_null(i) {
                        return Cell::Null;
                    }
                    let t = chrono::DateTime::from_timestamp_micros(v.value(i)).unwrap_or_default();
                    Cell::Text(t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
                })
                .collect())
        }
        DataType::Boolean => {
            let v = col.as_boolean();
            Ok((0..n)
                .map(|i| {
                    if v.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Int(v.value(i) as i64)
                    }
                })
                .collect())
        }
        _ => texts(col),
    }
}

/// A warehouse connected over the PostgreSQL protocol, and which dialect it speaks.
pub struct Connection {
    pool: Pool<Postgres>,
    dialect: Dialect,
}

type Tx = Transaction<'static, Postgres>;

fn db_err(spec: &TableSpec, target: &str, e: impl Into<LoadError>) -> SinkError {
    super::load_error(&spec.name, target, &e.into())
}

impl Connection {
    /// Connects: `postgres://...` or `redshift://...` (Redshift's PostgreSQL protocol).
    pub async fn open(url: &str) -> Result<Connection, LoadError> {
        let (pg_url, dialect) = if let Some(rest) = url.strip_prefix("redshift://") {
            (format!("postgres://{rest}"), Dialect::Redshift)
        } else {
            (url.to_string(), Dialect::Postgres)
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg_url)
            .await
            .map_err(LoadError::Connect)?;
        Ok(Connection { pool, dialect })
    }
}

/// Runs one generated statement; returns the rows it affected.
async fn execute(tx: &mut Tx, sql: &str) -> Result<u64, sqlx::Error> {
    // Statements are generated from quoted identifiers (dialect.rs), never from data.
    Ok(tx.execute(AssertSqlSafe(sql)).await?.rows_affected())
}

/// Inserts the batches' rows with multi-row `INSERT` statements shaped by `insert`. Statements
/// of a full chunk have the same text, so the connection prepares them once. Returns the rows the
/// statements changed.
async fn insert_rows(
    tx: &mut Tx,
    spec: &TableSpec,
    dialect: Dialect,
    batches: &[RecordBatch],
    insert: &RowsInsert,
) -> Result<u64, LoadError> {
    let cols = spec.column_names();
    // Stay under PostgreSQL's bind-parameter limit.
    let rows_per_statement = (30_000 / cols.len().max(1)).max(1);
    // Over the PostgreSQL protocol, text values are cast to the typed staging columns.
    let casts: Vec<String> = spec
        .columns
        .iter()
        .map(|(_, ty)| spec.column_type(dialect, ty).map(|ty| format!(" AS {ty})")))
        .collect::<Result<_, _>>()?;
    let mut changed = 0;
    for batch in batches {
        let cells: Vec<Vec<Cell>> = cols
            .iter()
            .map(|c| {
                let col = batch
                    .column_by_name(c)
                    .expect("spec comes from this schema");
                column_cells(col)
            })
            .collect::<Result<_, _>>()?;
        let mut cells: Vec<std::vec::IntoIter<Cell>> =
            cells.into_iter().map(Vec::into_iter).collect();
        let mut start = 0;
        while start < batch.num_rows() {
            let end = (start + rows_per_statement).min(batch.num_rows());
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(&insert.head);
            q.push("VALUES ");
            for row in start..end {
                if row > start {
                    q.push(", ");
                }
                q.push("(");
                for (c, col) in cells.iter_mut().enumerate() {
                    if c > 0 {
                        q.push(", ");
                    }
                    q.push("CAST(");
                    match col.next().unwrap_or(Cell::Null) {
                        Cell::Null => q.push_bind(None::<String>),
                        Cell::Int(v) => q.push_bind(v),
                        Cell::Text(v) => q.push_bind(v),
                    };
                    q.push(&casts[c]);
                }
                q.push(&insert.row_end);
                q.push(")");
            }
            q.push(&insert.tail);
            changed += q.build().execute(&mut **tx).await?.rows_affected();
            start = end;
        }
    }
    Ok(changed)
}

/// Loads batches into the staging table with `COPY ... FROM STDIN` (PostgreSQL).
async fn copy_rows(
    tx: &mut Transaction<'static, Postgres>,
    spec: &TableSpec,
    batches: &[RecordBatch],
) -> Result<(), LoadError> {
    let statement = format!(
        "COPY {STAGING} ({}) FROM STDIN WITH (FORMAT csv)",
        spec.column_list()
    );
    let mut copy = tx.copy_in_raw(&statement).await?;
    let mut buffer = Vec::with_capacity(4 << 20);
    for batch in batches {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(false)
            .with_timestamp_tz_format("%Y-%m-%d %H:%M:%S%.6f%:z".to_string())
            .build(&mut buffer);
        writer.write(batch).map_err(LoadError::Csv)?;
        drop(writer);
        if buffer.len() >= 4 << 20 {
            copy.send(std::mem::take(&mut buffer)).await?;
        }
    }
    if !buffer.is_empty() {
        copy.send(buffer).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// Stages rows in a warehouse reached over a connection; see the module docs.
pub async fn stage(
    url: &str,
    target: &str,
    spec: &TableSpec,
    batches: &[RecordBatch],
    create_table: bool,
) -> Result<Box<dyn StagedWrite>, SinkError> {
    let connection = Connection::open(url)
        .await
        .map_err(|e| db_err(spec, target, e))?;
    let dialect = connection.dialect;
    let mut tx = connection
        .pool
        .begin()
        .await
        .map_err(|e| db_err(spec, target, e))?;
    let staged = async {
        if create_table {
            let ddl = spec.create_table(dialect)?;
            execute(&mut tx, &ddl).await?;
        }
        execute(&mut tx, &spec.create_staging(dialect)?).await?;
        let now = if dialect == Dialect::Redshift {
            insert_rows(&mut tx, spec, dialect, batches, &spec.into_staging()).await?;
            "GETDATE()"
        } else {
            copy_rows(&mut tx, spec, batches).await?;
            "now()"
        };
        let mut changed = 0u64;
        let statements = spec.merge_statements(dialect, now);
        let last = statements.len() - 1;
        for (i, sql) in statements.iter().enumerate() {
            let n = execute(&mut tx, sql).await?;
            // Redshift's delete+insert: the insert's count is the number of rows written.
            if i == last || dialect != Dialect::Redshift {
                changed += n;
            }
        }
        execute(&mut tx, &format!("DROP TABLE {STAGING}")).await?;
        Ok::<u64, LoadError>(changed)
    }
    .await;
    match staged {
        Ok(changed) => Ok(Box::new(StagedSql {
            tx: Some(tx),
            report: super::load_report(target, spec, batches, changed),
            spec: spec.clone(),
        })),
        Err(e) => {
            let _ = tx.rollback().await;
            Err(db_err(spec, target, e))
        }
    }
}

/// An open transaction holding the merged rows.
struct StagedSql {
    tx: Option<Tx>,
    report: SinkReport,
    spec: TableSpec,
}

#[async_trait]
impl StagedWrite for StagedSql {
    async fn publish(mut self: Box<Self>) -> Result<SinkReport, SinkError> {
        if let Some(tx) = self.tx.take() {
            tx.commit()
                .await
                .map_err(|e| db_err(&self.spec, &self.report.target, e))?;
        }
        Ok(self.report)
    }

    async fn discard(mut self: Box<Self>) -> Result<(), SinkError> {
        if let Some(tx) = self.tx.take() {
            tx.rollback()
                .await
                .map_err(|e| db_err(&self.spec, &self.report.target, e))?;
        }
        Ok(())
    }
}
