//! The SQLite warehouse, the embedded default of local runs: rows upserted through rusqlite on a
//! writer thread of its own.
//!
//! Why a thread: every SQLite call blocks, and a province is about a million of them. On its own
//! thread the load runs beside the query and the Hudi sink's encoding instead of holding an
//! async worker. Rows reach the thread through a feed ([`SqliteWriter`]): in a run, as the query
//! makes them ([`super::WarehouseSink`] observes the query), otherwise all at once from
//! [`stage`]. The thread keeps one `BEGIN IMMEDIATE` transaction open from the first row to the
//! run's decision: staging returns once every row is upserted and written through to the file
//! (still uncommitted: readers see the table as it was, the COMMIT only has to sync the last
//! pages); publishing commits; discarding the staged write, a run that fails before staging (its
//! key check, too many bad rows), or a dropped write, rolls back. A query that reads its input
//! again begins the load again. The file is opened at the first row: a run that fails before
//! one does not create it (one that fails later may leave it empty, as a failed stage could).
//!
//! Rows go through a prepared `INSERT ... VALUES (...), (...) ON CONFLICT DO UPDATE ... WHERE`
//! statement of [`ROWS_PER_STATEMENT`] rows (the rule of [`super::dialect`]; into a table that is
//! empty when the load begins, `INSERT OR FAIL` instead, see [`Write`]), with values bound
//! straight from the Arrow arrays, no SQL text per row; a batch's last rows, and the rows of a
//! statement SQLite refused (to name the row at fault), go through its one-row form. Values are
//! bound in place from Arrow arrays, not copied per parameter ([`super::sqlite_rows`]).
//! `updated_at` is the run's one time of writing, as PostgreSQL's `now()` is its transaction's.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use rusqlite::OpenFlags;
use tokio::sync::oneshot;

use super::dialect::{ident, Dialect, TableSpec, SQLITE_TIME_FORMAT};
use super::sqlite_rows::{write_through, BorrowingStatement, BoundColumn};
use super::sqlite_unchanged::UnchangedRows;
use super::writeback::EarlyWriteback;
use crate::sinks::{SinkError, SinkReport, StagedWrite};

/// Rows upserted by one statement (`VALUES (...), (...), ...`): a statement's run has a fixed cost
/// that a province's million rows would otherwise pay a million times. 256 rows of a dozen
/// columns (about 3,000 parameters) stay far below SQLite's limit of 32766. Measured on the
/// warehouse-only run at 1.8M: 16 rows 1.07× the wall time of 64, 256 rows 0.97×, 1024 no
/// better than 256.
const ROWS_PER_STATEMENT: usize = 256;

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
    #[error(
        "rows {first} to {last} of the job's output repeat a key (one row per key is expected)"
    )]
    RepeatedKey {
        first: u64,
        last: u64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot convert the rows' values for loading")]
    Convert(#[source] datafusion::arrow::error::ArrowError),
    #[error("the SQLite writer thread ended before it answered")]
    WriterGone,
    #[error("the writer was given {given} rows, but {staged} were staged")]
    RowsMissing { given: u64, staged: u64 },
    #[error("the rows have no column `{0}`")]
    MissingColumn(String),
    #[error("cannot start the SQLite writer thread")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Table(#[from] super::dialect::TableError),
}

/// What the writer thread is told, in this order: `Begin`, any number of `Rows`, `Staged`, then
/// `Decide`. A `Begin` after rows starts the load over (the query read its input again); the
/// thread ending without a commit (its senders dropped, an error) rolls the transaction back.
enum Feed {
    /// A load starts: roll back any rows loaded so far, begin a transaction, create the table
    /// if asked. The error of a table the rows cannot go into waits for `Staged`.
    Begin(Result<TableSpec, SqliteError>),
    Rows(RecordBatch),
    /// Every row was sent (`rows` of them): answer the rows changed, or the load's first error.
    Staged {
        rows: u64,
        reply: oneshot::Sender<Result<u64, SqliteError>>,
    },
    Decide(Decision),
}

/// What the writer thread is asked to do once the rows are staged.
struct Decision {
    commit: bool,
    reply: oneshot::Sender<Result<(), SqliteError>>,
}

/// A SQLite writer thread and its feed: rows can reach it while the query still makes them
/// (see [`crate::sinks::Sink::observe`]), and [`SqliteWriter::stage`] waits for the last one.
#[derive(Clone)]
pub struct SqliteWriter {
    feed: mpsc::Sender<Feed>,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteWriter")
    }
}

impl SqliteWriter {
    /// Starts the writer thread for the database at `location` (the URL without `sqlite://`).
    pub fn spawn(location: &str, create_table: bool) -> Result<SqliteWriter, SqliteError> {
        let (feed, fed) = mpsc::channel();
        let writer = Writer {
            location: location.to_string(),
            create_table,
            updated_at: chrono::Utc::now().format(SQLITE_TIME_FORMAT).to_string(),
        };
        std::thread::Builder::new()
            .name("tally-sqlite".into())
            .spawn(move || writer.run(fed))
            .map_err(SqliteError::Spawn)?;
        Ok(SqliteWriter { feed })
    }

    /// Starts (or starts over) a load into `spec`'s table.
    pub fn begin(&self, spec: Result<TableSpec, SqliteError>) {
        // A thread that is gone answers `Staged` with `WriterGone`.
        let _ = self.feed.send(Feed::Begin(spec));
    }

    /// Upserts these rows after the ones before.
    pub fn rows(&self, batch: &RecordBatch) {
        let _ = self.feed.send(Feed::Rows(batch.clone()));
    }

    /// Waits until every row of `batches`, which the writer must have been given, is upserted;
    /// the transaction then stays open until the returned write is published or discarded.
    pub async fn stage(
        &self,
        target: &str,
        spec: &TableSpec,
        batches: &[RecordBatch],
    ) -> Result<Box<dyn StagedWrite>, SinkError> {
        let err = |e: SqliteError| super::load_error(&spec.name, target, &e);
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let (reply, answer) = oneshot::channel();
        self.feed
            .send(Feed::Staged { rows, reply })
            .map_err(|_| err(SqliteError::WriterGone))?;
        let changed = answer
            .await
            .map_err(|_| err(SqliteError::WriterGone))?
            .map_err(err)?;
        Ok(Box::new(StagedSqlite {
            feed: Some(self.feed.clone()),
            report: super::load_report(target, spec, batches, changed),
            table: spec.name.clone(),
        }))
    }
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
    let writer = SqliteWriter::spawn(location, create_table)
        .map_err(|e| super::load_error(&spec.name, target, &e))?;
    writer.begin(Ok(spec.clone()));
    for batch in batches {
        writer.rows(batch);
    }
    writer.stage(target, spec, batches).await
}

/// What the writer thread owns.
struct Writer {
    location: String,
    create_table: bool,
    /// The run's one time of writing.
    updated_at: String,
}

impl Writer {
    /// The writer thread: follows its feed (see [`Feed`]).
    fn run(self, feed: mpsc::Receiver<Feed>) {
        // Nothing touches the file before there is a row to write or a result to stage: a run
        // that fails before its first row does not even create the file.
        let mut pending = Vec::new();
        loop {
            match feed.recv() {
                Ok(begin @ Feed::Begin(_)) => pending = vec![begin],
                Ok(first) => {
                    pending.push(first);
                    break;
                }
                Err(_) => return,
            }
        }
        let mut messages = pending
            .into_iter()
            .chain(std::iter::from_fn(|| feed.recv().ok()));
        match open(&self.location) {
            // A load that is not committed rolls back when the connection closes. A file it
            // created stays, empty: removing it could pull it from under another writer that
            // opened the same path meanwhile.
            Ok(conn) => self.follow(&conn, &mut messages),
            Err(e) => answer_staged_with(&mut messages, e),
        }
    }

    /// Follows the feed on an open connection.
    fn follow(&self, conn: &rusqlite::Connection, messages: &mut impl Iterator<Item = Feed>) {
        let mut load: Option<Result<Load<'_>, SqliteError>> = None;
        while let Some(message) = messages.next() {
            match message {
                Feed::Begin(spec) => {
                    // The statements go before the rollback that ends their transaction.
                    drop(load.take());
                    let restart = if conn.is_autocommit() {
                        Ok(())
                    } else {
                        conn.execute_batch("ROLLBACK").map_err(SqliteError::from)
                    };
                    load = Some(restart.and(spec).and_then(|spec| self.begin(conn, spec)));
                }
                Feed::Rows(batch) => {
                    if let Some(Ok(loading)) = &mut load {
                        if let Err(e) = loading.upsert(&batch, &self.updated_at) {
                            load = Some(Err(e));
                        }
                    }
                }
                Feed::Staged { rows, reply } => {
                    let result = match load.take() {
                        Some(Ok(loading)) if loading.rows == rows => {
                            tracing::debug!(
                                rows,
                                changed = loading.changed,
                                secs = loading.began.elapsed().as_secs_f64(),
                                "sqlite warehouse: every row upserted"
                            );
                            // Made durable now, while the other sinks still stage: the COMMIT
                            // that publishes is then quick.
                            write_through(conn)
                                .map(|()| loading.changed)
                                .map_err(SqliteError::from)
                        }
                        Some(Ok(loading)) => Err(SqliteError::RowsMissing {
                            given: loading.rows,
                            staged: rows,
                        }),
                        Some(Err(e)) => Err(e),
                        None => Err(SqliteError::RowsMissing {
                            given: 0,
                            staged: rows,
                        }),
                    };
                    let loaded = result.is_ok();
                    // Nothing more to do after an error, or for a run that stopped waiting:
                    // the connection's close rolls the transaction back.
                    if reply.send(result).is_err() || !loaded {
                        return;
                    }
                    if let Some(Feed::Decide(Decision { commit, reply })) = messages.next() {
                        let end = if commit { "COMMIT" } else { "ROLLBACK" };
                        let _ = reply.send(conn.execute_batch(end).map_err(SqliteError::from));
                    }
                    return;
                }
                // A decision before `Staged` does not happen; the rollback is the safe answer.
                Feed::Decide(Decision { reply, .. }) => {
                    let _ = reply.send(Err(SqliteError::WriterGone));
                    return;
                }
            }
        }
        // Every sender is gone: the run gave up on this write, and the close rolls back.
    }

    /// Begins the transaction, creates the table if asked and prepares the upserts.
    fn begin<'c>(
        &self,
        conn: &'c rusqlite::Connection,
        spec: TableSpec,
    ) -> Result<Load<'c>, SqliteError> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        if self.create_table {
            conn.execute_batch(&spec.create_table(Dialect::Sqlite)?)?;
        }
        let many_write = if table_is_empty(conn, &spec)? {
            Write::Insert
        } else {
            Write::Upsert
        };
        Ok(Load {
            writeback: EarlyWriteback::find(database_path(&self.location)),
            one: BorrowingStatement::prepare(conn, &statement(&spec, 1, Write::Upsert))?,
            many: BorrowingStatement::prepare(
                conn,
                &statement(&spec, ROWS_PER_STATEMENT, many_write),
            )?,
            unchanged: match many_write {
                Write::Upsert => Some(UnchangedRows::prepare(conn, &spec)?),
                Write::Insert => None,
            },
            many_write,
            spec,
            rows: 0,
            changed: 0,
            began: std::time::Instant::now(),
        })
    }
}

/// A writer whose database did not open answers the load with that error (a load that never
/// reaches `Staged` needs no answer).
fn answer_staged_with(messages: &mut impl Iterator<Item = Feed>, error: SqliteError) {
    for message in messages {
        if let Feed::Staged { reply, .. } = message {
            let _ = reply.send(Err(error));
            return;
        }
    }
}

/// A load in progress in the writer's open transaction.
struct Load<'c> {
    spec: TableSpec,
    one: BorrowingStatement<'c>,
    many: BorrowingStatement<'c>,
    /// What `many` does.
    many_write: Write,
    /// The stored rows' scan that spares unchanged rows their upsert (a table that held rows
    /// when the load began).
    unchanged: Option<UnchangedRows<'c>>,
    /// Rows upserted so far (the job's output row number of the next batch's first row, less 1).
    rows: u64,
    /// Rows inserted or changed so far.
    changed: u64,
    /// When the transaction began.
    began: std::time::Instant,
    /// The database file's descriptor, to start writing its pages as the load goes.
    writeback: Option<EarlyWriteback>,
}

impl Load<'_> {
    /// Upserts one batch's rows; into a table that held rows, those it holds unchanged are
    /// left out ([`UnchangedRows`]).
    fn upsert(&mut self, batch: &RecordBatch, updated_at: &str) -> Result<(), SqliteError> {
        let columns: Vec<BoundColumn> = self
            .spec
            .column_names()
            .iter()
            .map(|c| {
                let col = batch
                    .column_by_name(c)
                    .ok_or_else(|| SqliteError::MissingColumn(c.to_string()))?;
                BoundColumn::new(col).map_err(SqliteError::Convert)
            })
            .collect::<Result<_, _>>()?;
        let rows = batch.num_rows();
        let unchanged = match &mut self.unchanged {
            Some(scan) => scan.find(&columns, rows)?,
            None => Vec::new(),
        };
        if unchanged.iter().any(|&u| u) {
            // The rows to write, by where each was in the batch (to name it in an error).
            let kept =
                UInt32Array::from_iter_values((0..rows as u32).filter(|&r| !unchanged[r as usize]));
            let kept_columns = columns
                .iter()
                .map(|c| c.take(&kept))
                .collect::<Result<Vec<_>, _>>()
                .map_err(SqliteError::Convert)?;
            self.write(&kept_columns, kept.len(), updated_at, |r| {
                kept.value(r) as usize
            })?;
        } else {
            self.write(&columns, rows, updated_at, |r| r)?;
        }
        self.rows += rows as u64;
        if let Some(writeback) = &mut self.writeback {
            writeback.nudge();
        }
        Ok(())
    }

    /// Upserts (or inserts, see [`Write`]) `rows` rows of `columns`, whose row `r` is row
    /// `in_batch(r)` of the batch being loaded.
    fn write(
        &mut self,
        columns: &[BoundColumn],
        rows: usize,
        updated_at: &str,
        in_batch: impl Fn(usize) -> usize,
    ) -> Result<(), SqliteError> {
        let first_row_no = self.rows + 1;
        let row_no = |r: usize| first_row_no + in_batch(r) as u64;
        let one = &mut self.one;
        // Upserts one row through the one-row statement, naming it if SQLite refuses it.
        let mut upsert_one = |row: usize| -> Result<u64, SqliteError> {
            one.execute(updated_at, columns, row..row + 1)
                .map(|n| n as u64)
                .map_err(|source| SqliteError::Row {
                    row: row_no(row),
                    source,
                })
        };
        let mut row = 0;
        while row + ROWS_PER_STATEMENT <= rows {
            match self
                .many
                .execute(updated_at, columns, row..row + ROWS_PER_STATEMENT)
            {
                Ok(n) => self.changed += n as u64,
                // The failed statement's rows go again one by one, so the error names the row.
                // An upsert's were undone together (the transaction stays); an insert's before
                // the failing one stay, and their upserts change nothing.
                Err(source) => {
                    for r in row..row + ROWS_PER_STATEMENT {
                        self.changed += upsert_one(r)?;
                    }
                    if self.many_write == Write::Insert {
                        // Every row went in on its own: the insert failed on a key that two
                        // of its rows share, which the job's rows must not have.
                        return Err(SqliteError::RepeatedKey {
                            first: row_no(row),
                            last: row_no(row + ROWS_PER_STATEMENT - 1),
                            source,
                        });
                    }
                }
            }
            row += ROWS_PER_STATEMENT;
        }
        for r in row..rows {
            self.changed += upsert_one(r)?;
        }
        Ok(())
    }
}

/// How a statement of many rows puts them into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `INSERT ... ON CONFLICT DO UPDATE`: a stored row with the key is replaced by a newer one.
    Upsert,
    /// `INSERT OR FAIL`, for a table that held no row when the load began. Nothing stored can
    /// conflict (the write transaction keeps other writers out) and the job makes one row per
    /// key (a run whose rows repeat a key fails before staging), so the table ends as with
    /// upserts. The gain is SQLite's statement journal: an upsert may abort halfway (its
    /// `DO UPDATE` checks `NOT NULL` with `ABORT`), so SQLite copies every page a statement is
    /// about to change, the B-tree's right edge, to a journal that undoes the statement: a
    /// temporary file written about 16,700 times per 781,393 rows. `OR FAIL` never undoes a
    /// statement, so it needs none. A statement that fails keeps its rows before the failing
    /// one; the rows then go again one by one as upserts (which leave those unchanged) to name
    /// the row at fault, and the load fails with it.
    Insert,
}

/// Whether the table holds no row (asked inside the load's write transaction).
fn table_is_empty(conn: &rusqlite::Connection, spec: &TableSpec) -> Result<bool, SqliteError> {
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", ident(&spec.name));
    Ok(conn.query_row(&sql, [], |r| r.get(0))?)
}

/// The upsert (or insert, see [`Write`]) of `rows` rows in one statement: parameter 1 is
/// `updated_at`, the same for every row; row `r`'s column `c` is parameter `2 + r * columns + c`.
fn statement(spec: &TableSpec, rows: usize, write: Write) -> String {
    let insert = match write {
        Write::Upsert => spec.direct_upsert("?1"),
        Write::Insert => spec.direct_insert_or_fail("?1"),
    };
    let width = spec.column_names().len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (0..width)
                .map(|c| format!("?{}", 2 + r * width + c))
                .collect();
            format!("({}{})", params.join(", "), insert.row_end)
        })
        .collect();
    format!("{}VALUES {}{}", insert.head, values.join(", "), insert.tail)
}

/// The database file of a location (which may carry URI parameters after `?`).
fn database_path(location: &str) -> &Path {
    Path::new(location.split('?').next().unwrap_or_default())
}

/// Opens (creating if missing) the database file; `location` may carry SQLite URI parameters
/// after `?` (`wh.db?mode=rwc`).
fn open(location: &str) -> Result<rusqlite::Connection, SqliteError> {
    let path = database_path(location);
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
    /// The writer's feed, for the decision; dropped without one (with the run's other senders),
    /// the writer rolls back.
    feed: Option<mpsc::Sender<Feed>>,
    report: SinkReport,
    table: String,
}

impl StagedSqlite {
    async fn decide(&mut self, commit: bool) -> Result<(), SinkError> {
        let err = |e: SqliteError| super::load_error(&self.table, &self.report.target, &e);
        let Some(feed) = self.feed.take() else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        feed.send(Feed::Decide(Decision { commit, reply }))
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

    #[tokio::test]
    async fn a_staged_load_is_in_the_file_before_its_commit_and_a_discard_still_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, batch) = rows(&[(Some("s1"), 20513, 100, 1), (Some("s2"), 20513, 200, 1)]);
        let staged = stage(db.to_str().unwrap(), "t", &spec, &[batch], true)
            .await
            .unwrap();
        // Two rows fit SQLite's page cache: only the early write puts them in the file.
        let length = std::fs::metadata(&db).unwrap().len();
        assert!(length >= NEW_FILE_PAGE_SIZE as u64, "{length} bytes");
        assert!(dir.path().join("wh.db-journal").exists());
        staged.discard().await.unwrap();
        assert_eq!(
            tables_named_sales(&db),
            0,
            "the discard rolled the pages back"
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

    #[tokio::test]
    async fn a_table_holding_rows_gets_upserts_after_a_new_ones_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let n = ROWS_PER_STATEMENT + 3;
        let first = many(n, None);
        let (spec, batch) = rows(&borrowed(&first));
        load(db.to_str().unwrap(), &spec, batch).await;
        // The same keys again, across a statement of many rows and the rest: the even rows
        // (from 0) newer with other cents, the odd ones older.
        let second: Vec<_> = first
            .iter()
            .enumerate()
            .map(|(i, (s, d, c, t))| match i % 2 {
                0 => (s.clone(), *d, c + 1000, t + 1),
                _ => (s.clone(), *d, c + 2000, t - 1),
            })
            .collect();
        let (_, batch) = rows(&borrowed(&second));
        let report = load(db.to_str().unwrap(), &spec, batch).await;
        let newer = n.div_ceil(2);
        assert!(
            report.summary.contains(&format!(
                "{newer} rows inserted or replaced, {} unchanged or older",
                n - newer
            )),
            "{}",
            report.summary
        );
        let stored = stored(&db);
        assert_eq!(stored.len(), n);
        for (i, row) in stored.iter().enumerate() {
            let cents = (i + 1) + if i % 2 == 0 { 1000 } else { 0 };
            assert_eq!(
                row.2,
                format!("{}.{:02}", cents / 100, cents % 100),
                "row {i}"
            );
        }
    }

    #[tokio::test]
    async fn rows_stored_unchanged_are_left_out_and_a_refused_row_is_still_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let location = db.to_str().unwrap();
        // Every third key of a statement and a half is stored first.
        let n = ROWS_PER_STATEMENT + ROWS_PER_STATEMENT / 2;
        let all = many(n, None);
        let first: Vec<_> = all.iter().step_by(3).cloned().collect();
        let (spec, batch) = rows(&borrowed(&first));
        load(location, &spec, batch).await;
        // Then every key, in key order: the stored ones unchanged but one, whose cents and
        // source are newer.
        let mut second = all.clone();
        second[3].2 += 1000;
        second[3].3 += 1;
        let (_, batch) = rows(&borrowed(&second));
        let report = load(location, &spec, batch).await;
        let stored_before = first.len();
        assert!(
            report.summary.contains(&format!(
                "{} rows inserted or replaced, {} unchanged or older",
                n - stored_before + 1,
                stored_before - 1
            )),
            "{}",
            report.summary
        );
        let stored = stored(&db);
        assert_eq!(stored.len(), n);
        assert_eq!(stored[3].2, "10.04");
        assert_eq!(stored[4].2, "0.05");

        // Unchanged rows before a refused one (a NULL source time, which the table's NOT NULL
        // refuses) are left out; the error names the refused row by its place in the job's
        // output all the same.
        let (_, batch) = rows(&borrowed(&second));
        let times: TimestampMicrosecondArray = (0..n as i64)
            .map(|i| (i != 200).then_some(i + 1 + i64::from(i == 3)))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        let mut columns = batch.columns().to_vec();
        columns[3] = Arc::new(times);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
            columns,
        )
        .unwrap();
        let err = match stage(location, "t", &spec, &[batch], true).await {
            Ok(_) => panic!("a NULL key was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("row 201 of the job's output"), "{err}");
    }

    #[tokio::test]
    async fn a_key_repeated_in_a_new_tables_rows_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let mut repeated = many(ROWS_PER_STATEMENT + 3, None);
        repeated[99].0 = repeated[49].0.clone();
        let (spec, batch) = rows(&borrowed(&repeated));
        let err = match stage(db.to_str().unwrap(), "t", &spec, &[batch], true).await {
            Ok(_) => panic!("a repeated key was accepted"),
            Err(e) => e.to_string(),
        };
        let last = ROWS_PER_STATEMENT;
        assert!(
            err.contains(&format!(
                "rows 1 to {last} of the job's output repeat a key"
            )),
            "{err}"
        );
        assert_eq!(tables_named_sales(&db), 0, "the failed load rolled back");
    }

    #[test]
    fn a_statement_for_a_new_table_inserts_and_one_for_a_table_with_rows_upserts() {
        let (spec, _) = rows(&[(Some("s1"), 20513, 100, 1)]);
        let insert = statement(&spec, 2, Write::Insert);
        assert!(insert.starts_with("INSERT OR FAIL INTO"), "{insert}");
        assert!(!insert.contains("ON CONFLICT"), "{insert}");
        assert!(insert.ends_with("(?6, ?7, ?8, ?9, ?1)"), "{insert}");
        let upsert = statement(&spec, 2, Write::Upsert);
        assert!(upsert.starts_with("INSERT INTO"), "{upsert}");
        assert!(upsert.contains("ON CONFLICT"), "{upsert}");
    }

    /// A writer on `db` that began a load into `spec`'s table and was given `batches`.
    fn writer_given(db: &Path, spec: &TableSpec, batches: &[&RecordBatch]) -> SqliteWriter {
        let writer = SqliteWriter::spawn(db.to_str().unwrap(), true).unwrap();
        writer.begin(Ok(spec.clone()));
        for batch in batches {
            writer.rows(batch);
        }
        writer
    }

    #[tokio::test]
    async fn a_run_that_fails_before_its_first_row_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, _) = rows(&[(Some("s1"), 20513, 100, 1)]);
        drop(writer_given(&db, &spec, &[]));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!db.exists());
    }

    #[tokio::test]
    async fn a_load_begun_again_keeps_only_the_last_attempts_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, first) = rows(&[(Some("s1"), 20513, 100, 1), (Some("s2"), 20513, 200, 1)]);
        let (_, second) = rows(&[(Some("s3"), 20513, 300, 1)]);
        let writer = writer_given(&db, &spec, &[&first]);
        // The query read its input again: the first attempt's rows are void.
        writer.begin(Ok(spec.clone()));
        writer.rows(&second);
        let report = writer
            .stage("t", &spec, std::slice::from_ref(&second))
            .await
            .unwrap()
            .publish()
            .await
            .unwrap();
        assert!(
            report.summary.contains("1 rows inserted"),
            "{}",
            report.summary
        );
        let stored: Vec<String> = stored(&db).into_iter().map(|r| r.0).collect();
        assert_eq!(stored, ["s3"]);
    }

    #[tokio::test]
    async fn rows_given_but_not_staged_are_refused_and_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, two) = rows(&[(Some("s1"), 20513, 100, 1), (Some("s2"), 20513, 200, 1)]);
        let (_, one) = rows(&[(Some("s1"), 20513, 100, 1)]);
        let writer = writer_given(&db, &spec, &[&two]);
        let err = match writer.stage("t", &spec, &[one]).await {
            Ok(_) => panic!("a load of other rows than the staged ones was staged"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("given 2 rows, but 1 were staged"), "{err}");
        assert_eq!(tables_named_sales(&db), 0);
    }

    #[tokio::test]
    async fn a_load_the_run_gave_up_on_leaves_no_table_and_frees_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wh.db");
        let (spec, batch) = rows(&[(Some("s1"), 20513, 100, 1)]);
        let writer = writer_given(&db, &spec, &[&batch]);
        // The run failed after the query (a key check): its senders are dropped, never staged.
        drop(writer);
        assert_eq!(tables_named_sales(&db), 0);
        // The writer rolls back and lets go of the file: the next load takes it.
        load(db.to_str().unwrap(), &spec, batch).await;
        assert_eq!(stored(&db).len(), 1);
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
