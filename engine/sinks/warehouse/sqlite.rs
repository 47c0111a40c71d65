//! The SQLite warehouse, the embedded default of local runs: rows upserted through rusqlite on a
//! writer thread of its own.
//!
//! Why a thread: every SQLite call blocks, and a province is about a million of them. On its own
//! thread the load runs beside the Hudi sink's encoding instead of holding an async worker. The
//! thread keeps one `BEGIN IMMEDIATE` transaction open from the first statement to the run's
//! decision: [`stage`] returns once every row is upserted (readers still see the table as it
//! was); publishing commits; discarding the staged write, or dropping it, rolls back.
//!
//! Rows go through a prepared `INSERT ... VALUES (...), (...) ON CONFLICT DO UPDATE ... WHERE`
//! statement of [`ROWS_PER_STATEMENT`] rows (the rule of [`super::dialect`]), with values bound
//! straight from the Arrow arrays, no SQL text per row; a batch's last rows, and the rows of a
//! statement SQLite refused (to name the row at fault), go through its one-row form. Values are
//! bound in place from Arrow arrays, not copied per parameter ([`super::sqlite_rows`]).
//! `updated_at` is the run's one time of writing, as PostgreSQL's `now()` is its transaction's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use rusqlite::{OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::dialect::{Dialect, TableSpec, SQLITE_TIME_FORMAT};
use super::sqlite_rows::{BorrowingStatement, BoundColumn};
use crate::sinks::{SinkError, SinkReport, StagedWrite};

/// Rows upserted by one statement (`VALUES (...), (...), ...`): a statement's run has a fixed cost
/// that a province's million rows would otherwise pay a million times. 64 rows of a dozen columns
/// stay far below SQLite's limit of 32766 parameters.
const ROWS_PER_STATEMENT: usize = 64;

/// Page size of a database file the sink creates.
const NEW_FILE_PAGE_SIZE: i64 = 16 * 1024;

/// How long a writer waits for another process's write lock on the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the SQLite writer failed.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("cannot create {}", path.display())]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {location}")]
    Open {
        location: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Database(#[from] rusqlite::Error),
    #[error("row {row} of the job's output")]
    Row {
        row: u64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot convert the rows' values for loading")]
    Convert(#[source] datafusion::arrow::error::ArrowError),
    #[error("the SQLite writer thread ended before it answered")]
    WriterGone,
    #[error("cannot start the SQLite writer thread")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Table(#[from] super::dialect::TableError),
}

/// What the writer thread is asked to do once the rows are staged.
struct Decision {
    commit: bool,
    reply: oneshot::Sender<Result<(), SqliteError>>,
}

/// Upserts `batches` into the SQLite database at `location` (the URL without `sqlite://`) in a
/// transaction left open until the returned write is published or discarded.
pub async fn stage(
    location: &str,
    target: &str,
    spec: &TableSpec,
    batches: &[RecordBatch],
    create_table: bool,
) -> Result<Box<dyn StagedWrite>, SinkError> {
    let err = |e: SqliteError| super::load_error(&spec.name, target, &e);
    let load = Load {
        location: location.to_string(),
        spec: spec.clone(),
        batches: batches.to_vec(),
        create_table,
        updated_at: chrono::Utc::now().format(SQLITE_TIME_FORMAT).to_string(),
    };
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let (decision_tx, decision_rx) = oneshot::channel::<Decision>();
    std::thread::Builder::new()
        .name("tally-sqlite".into())
        .spawn(move || load.run(loaded_tx, decision_rx))
        .map_err(|e| err(SqliteError::Spawn(e)))?;
    let changed = loaded_rx
        .await
        .map_err(|_| err(SqliteError::WriterGone))?
        .map_err(err)?;
    Ok(Box::new(StagedSqlite {
        decision: Some(decision_tx),
        report: super::load_report(target, spec, batches, changed),
        table: spec.name.clone(),
    }))
}

/// Everything the writer thread needs, owned (record batches share their buffers).
struct Load {
    location: String,
    spec: TableSpec,
    batches: Vec<RecordBatch>,
    create_table: bool,
    updated_at: String,
}

impl Load {
    /// The writer thread: open, upsert every row, answer, then wait for the decision. Whatever
    /// ends the thread before a commit (an error, a dropped decision) rolls the transaction back.
    fn run(
        self,
        loaded: oneshot::Sender<Result<u64, SqliteError>>,
        decision: oneshot::Receiver<Decision>,
    ) {
        let mut conn = match open(&self.location) {
            Ok(conn) => conn,
            Err(e) => {
                let _ = loaded.send(Err(e));
                return;
            }
        };
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let _ = loaded.send(Err(e.into()));
                return;
            }
        };
        match self.upsert_all(&tx) {
            Ok(changed) => {
                if loaded.send(Ok(changed)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = loaded.send(Err(e));
                return;
            }
        }
        // A dropped sender (the run gave up on this write) rolls back as the transaction drops.
        if let Ok(Decision { commit, reply }) = decision.blocking_recv() {
            let result = if commit { tx.commit() } else { tx.rollback() };
            let _ = reply.send(result.map_err(SqliteError::from));
        }
    }

    /// Creates the table if asked, then upserts every row; returns the rows inserted or changed.
    fn upsert_all(&self, tx: &rusqlite::Transaction<'_>) -> Result<u64, SqliteError> {
        if self.create_table {
            tx.execute_batch(&self.spec.create_table(Dialect::Sqlite)?)?;
        }
        let mut one = BorrowingStatement::prepare(tx, &self.statement(1))?;
        let mut many = BorrowingStatement::prepare(tx, &self.statement(ROWS_PER_STATEMENT))?;
        let mut changed = 0u64;
        // The job's output row number of the batch's first row, from 1.
        let mut first_row_no = 1u64;
        for batch in &self.batches {
            let columns: Vec<BoundColumn> = self
                .spec
                .column_names()
                .iter()
                .map(|c| {
                    let col = batch
                        .column_by_name(c)
                        .expect("the table spec comes from this schema");
                    BoundColumn::new(col).map_err(SqliteError::Convert)
                })
                .collect::<Result<_, _>>()?;
            // Upserts one row through the one-row statement, naming it if SQLite refuses it.
            let mut upsert_one = |row: usize| -> Result<u64, SqliteError> {
                one.execute(&self.updated_at, &columns, row..row + 1)
                    .map(|n| n as u64)
                    .map_err(|source| SqliteError::Row {
                        row: first_row_no + row as u64,
                        source,
                    })
            };
            let mut row = 0;
            while row + ROWS_PER_STATEMENT <= batch.num_rows() {
                match many.execute(&self.updated_at, &columns, row..row + ROWS_PER_STATEMENT) {
                    Ok(n) => changed += n as u64,
                    // SQLite undid the failed statement's rows together (and kept the
                    // transaction): they go again one by one, so the error names the row.
                    Err(_) => {
                        for r in row..row + ROWS_PER_STATEMENT {
                            changed += upsert_one(r)?;
                        }
                    }
                }
                row += ROWS_PER_STATEMENT;
            }
            for r in row..batch.num_rows() {
                changed += upsert_one(r)?;
            }
            first_row_no += batch.num_rows() as u64;
        }
        Ok(changed)
    }

    /// The upsert of `rows` rows in one statement: parameter 1 is `updated_at`, the same for every
    /// row; row `r`'s column `c` is parameter `2 + r * columns + c`.
    fn statement(&self, rows: usize) -> String {
        let upsert = self.spec.direct_upsert("?1");
        let width = self.spec.column_names().len();
        let values: Vec<String> = (0..rows)
            .map(|r| {
                let params: Vec<String> = (0..width)
                    .map(|c| format!("?{}", 2 + r * width + c))
                    .collect();
                format!("({}{})", params.join(", "), upsert.row_end)
            })
            .collect();
        format!("{}VALUES {}{}", upsert.head, values.join(", "), upsert.tail)
    }
}

/// Opens (creating if missing) the database file; `location` may carry SQLite URI parameters
/// after `?` (`wh.db?mode=rwc`).
fn open(location: &str) -> Result<rusqlite::Connection, SqliteError> {
    let path = Path::new(location.split('?').next().unwrap_or_default());
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|source| SqliteError::CreateFolder {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    let opened = if location.contains('?') {
        rusqlite::Connection::open_with_flags(
            format!("file:{location}"),
            OpenFlags::default() | OpenFlags::SQLITE_OPEN_URI,
        )
    } else {
        rusqlite::Connection::open(path)
    };
    let conn = opened.map_err(|source| SqliteError::Open {
        location: location.to_string(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A new file gets bigger pages than SQLite's 4 KiB: a province's rows split and rebalance a
    // quarter as many B-tree pages (the size is fixed by the first table). A bigger page cache
    // than the default 2 MB was measured too, and gained nothing.
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if pages == 0 {
        conn.pragma_update(None, "page_size", NEW_FILE_PAGE_SIZE)?;
    }
    Ok(conn)
}

/// Rows upserted in the writer thread's open transaction.
struct StagedSqlite {
    decision: Option<oneshot::Sender<Decision>>,
    report: SinkReport,
    table: String,
}

impl StagedSqlite {
    async fn decide(&mut self, commit: bool) -> Result<(), SinkError> {
        let err = |e: SqliteError| super::load_error(&self.table, &self.report.target, &e);
        let Some(decision) = self.decision.take() else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        decision
            .send(Decision { commit, reply })
            .map_err(|_| err(SqliteError::WriterGone))?;
        answer
            .await
            .map_err(|_| err(SqliteError::WriterGone))?
            .map_err(err)
    }
}

#[async_trait]
impl StagedWrite for StagedSqlite {
    async fn publish(mut self: Box<Self>) -> Result<SinkReport, SinkError> {
        self.decide(true).await?;
        Ok(self.report)
    }

    async fn discard(mut self: Box<Self>) -> Result<(), SinkError> {
        self.decide(false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, Decimal128Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    /// A spec and one batch of `(store, day, cents, source micros)` rows, the store nullable so
    /// a test can break the key's NOT NULL.
    fn rows(values: &[(Option<&str>, i32, i128, i64)]) -> (TableSpec, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("store_id", DataType::Utf8, true),
            Field::new("trans_date", DataType::Date32, false),
            Field::new("sale_amount", DataType::Decimal128(18, 2), false),
            Field::new(
                "source_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    values.iter().map(|v| v.0).collect::<Vec<_>>(),
                )),
                Arc::new(Date32Array::from_iter_values(values.iter().map(|v| v.1))),
                Arc::new(
                    Decimal128Array::from_iter_values(values.iter().map(|v| v.2))
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(values.iter().map(|v| v.3))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let spec = TableSpec::new(
            "sales",
            &schema,
            &["store_id".into(), "trans_date".into()],
            "source_time",
            "trans_date",
        )
        .unwrap();
        (spec, batch)
    }

    fn stored(db: &Path) -> Vec<(String, String, String, String)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut q = conn
            .prepare(
                "SELECT store_id, trans_date, sale_amount, source_time FROM sales \
                 ORDER BY store_id, trans_date",
            )
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn tables_named_sales(db: &Path) -> i64 {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sales'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn rows_are_visible_only_after_publish_and_a_discard_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let location = db.to_str().unwrap();
        let (spec, batch) = rows(&[
            (Some("s1"), 20513, 12345, 1_772_334_000_000_000),
            (Some("s2"), 20514, -5, 1_772_334_000_000_001),
        ]);

        // Discarded: the table the transaction created is gone too.
        let staged = stage(location, "t", &spec, std::slice::from_ref(&batch), true)
            .await
            .unwrap();
        staged.discard().await.unwrap();
        let tables = tables_named_sales(&db);
        assert_eq!(tables, 0, "a discarded write leaves no table");

        // Dropped without a decision (a run that gave up): rolled back as well.
        let staged = stage(location, "t", &spec, std::slice::from_ref(&batch), true)
            .await
            .unwrap();
        drop(staged);
        // The writer thread rolls back when the decision channel closes; a new writer then
        // gets the lock and sees an empty file.
        let staged = stage(location, "t", &spec, std::slice::from_ref(&batch), true)
            .await
            .unwrap();
        let report = staged.publish().await.unwrap();
        assert!(
            report.summary.contains("2 rows inserted or replaced"),
            "{}",
            report.summary
        );
        assert_eq!(
            stored(&db),
            vec![
                (
                    "s1".into(),
                    "2026-03-01".into(),
                    "123.45".into(),
                    "2026-03-01T03:00:00.000000Z".into()
                ),
                (
                    "s2".into(),
                    "2026-03-02".into(),
                    "-0.05".into(),
                    "2026-03-01T03:00:00.000001Z".into()
                ),
            ]
        );

        // The same rows again change nothing.
        let again = load(location, &spec, batch).await;
        assert!(
            again
                .summary
                .contains("0 rows inserted or replaced, 2 unchanged"),
            "{}",
            again.summary
        );
    }

    /// Stages and publishes `batch`, creating the table if missing.
    async fn load(location: &str, spec: &TableSpec, batch: RecordBatch) -> SinkReport {
        stage(location, "t", spec, &[batch], true)
            .await
            .unwrap()
            .publish()
            .await
            .unwrap()
    }

    /// `n` rows `(s<i>, day, i cents, i micros)`, with row `null_at` (from 1) a NULL store.
    fn many(n: usize, null_at: Option<usize>) -> Vec<(Option<String>, i32, i128, i64)> {
        (1..=n)
            .map(|i| {
                let store = (Some(i) != null_at).then(|| format!("s{i:04}"));
                (store, 20513, i as i128, i as i64)
            })
            .collect()
    }

    fn borrowed(rows: &[(Option<String>, i32, i128, i64)]) -> Vec<(Option<&str>, i32, i128, i64)> {
        rows.iter()
            .map(|(s, d, c, t)| (s.as_deref(), *d, *c, *t))
            .collect()
    }

    #[tokio::test]
    async fn rows_beyond_one_statement_are_all_loaded_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        // Two full statements and a rest of 5 rows.
        let n = 2 * ROWS_PER_STATEMENT + 5;
        let (spec, batch) = rows(&borrowed(&many(n, None)));
        let report = load(db.to_str().unwrap(), &spec, batch).await;
        assert!(
            report
                .summary
                .contains(&format!("{n} rows inserted or replaced")),
            "{}",
            report.summary
        );
        let stored = stored(&db);
        assert_eq!(stored.len(), n);
        assert_eq!(stored[n - 1].0, format!("s{n:04}"));
        assert_eq!(stored[n - 1].2, format!("{}.{:02}", n / 100, n % 100));
    }

    fn page_size(db: &Path) -> i64 {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_new_file_gets_big_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, batch) = rows(&[(Some("s1"), 20513, 100, 1)]);
        let new = dir.path().join("new.db");
        load(new.to_str().unwrap(), &spec, batch.clone()).await;
        assert_eq!(page_size(&new), NEW_FILE_PAGE_SIZE);

        let existing = dir.path().join("existing.db");
        rusqlite::Connection::open(&existing)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE other (x)")
            .unwrap();
        load(existing.to_str().unwrap(), &spec, batch).await;
        assert_eq!(page_size(&existing), 4096);
        assert_eq!(stored(&existing).len(), 1);
    }

    #[tokio::test]
    async fn a_refused_row_inside_a_statement_of_many_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, batch) = rows(&borrowed(&many(ROWS_PER_STATEMENT + 3, Some(40))));
        let err = match stage(db.to_str().unwrap(), "t", &spec, &[batch], true).await {
            Ok(_) => panic!("a NULL key was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("row 40 of the job's output"), "{err}");
        assert_eq!(tables_named_sales(&db), 0, "the failed load rolled back");
    }

    #[tokio::test]
    async fn a_row_the_table_refuses_is_named_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, batch) = rows(&[(Some("s1"), 20513, 100, 1), (None, 20513, 100, 1)]);
        let err = match stage(db.to_str().unwrap(), "t", &spec, &[batch], true).await {
            Ok(_) => panic!("a NULL key was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("table sales") && err.contains("row 2 of the job's output"),
            "{err}"
        );
        assert!(err.contains("NOT NULL"), "{err}");
        let tables = tables_named_sales(&db);
        assert_eq!(tables, 0, "the failed load rolled back");
    }
}
