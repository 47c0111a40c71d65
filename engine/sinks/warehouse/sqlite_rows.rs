//! Arrow rows bound to SQLite statements without copying a value per parameter.
//!
//! rusqlite binds every text parameter as `SQLITE_TRANSIENT`: SQLite allocates and copies each
//! value, then frees it at the next bind. A province is about ten million such values, and the
//! allocations (each behind SQLite's allocator mutex) cost more than the B-tree inserts. Here a
//! batch's columns are first turned into Arrow arrays SQLite can read in place ([`BoundColumn`]:
//! integers, or UTF-8 text with decimals and timestamps formatted once per batch), and
//! [`BorrowingStatement`] binds them as `SQLITE_STATIC`.
//!
//! Invariant (why the `unsafe` is sound): a bound pointer never outlives the borrow it came
//! from. [`BorrowingStatement::execute`] takes the rows by reference, binds, steps, resets and
//! clears every binding before it returns, so no later step can read a freed buffer; the
//! statement borrows its connection, so it is finalized before the connection can close.
//!
//! Also here, as the other call rusqlite does not offer: [`write_through`], which makes a
//! transaction's pages durable in the database file before its COMMIT.

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;
use std::ops::Range;
use std::ptr::NonNull;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::error::ArrowError;
use rusqlite::ffi;

use super::dialect::SQLITE_TIME_FORMAT;
use crate::values::write_decimal;

/// One column of a batch as SQLite binds it: integers and booleans as INTEGER, everything else
/// as text (decimals as Arrow prints them, timestamps as ISO text in UTC).
pub enum BoundColumn {
    Int(Int64Array),
    Text(StringArray),
}

impl BoundColumn {
    /// Converts one Arrow column.
    pub fn new(col: &ArrayRef) -> Result<BoundColumn, ArrowError> {
        Ok(match col.data_type() {
            t if t.is_integer() || *t == DataType::Boolean => BoundColumn::Int(
                cast(col, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            DataType::Timestamp(_, _) => BoundColumn::Text(timestamp_text(col)?),
            DataType::Date32 => BoundColumn::Text(date_text(col)?),
            DataType::Decimal128(_, scale) if *scale > 0 => {
                BoundColumn::Text(decimal_text(col.as_primitive::<Decimal128Type>(), *scale))
            }
            _ => BoundColumn::Text(cast(col, &DataType::Utf8)?.as_string::<i32>().clone()),
        })
    }

    /// Row `row`'s value.
    pub fn value(&self, row: usize) -> BoundValue<'_> {
        match self {
            BoundColumn::Int(a) if a.is_null(row) => BoundValue::Null,
            BoundColumn::Int(a) => BoundValue::Int(a.value(row)),
            BoundColumn::Text(a) if a.is_null(row) => BoundValue::Null,
            BoundColumn::Text(a) => BoundValue::Text(a.value(row)),
        }
    }

    /// The rows `rows` (indices into this column), in that order.
    pub fn take(&self, rows: &UInt32Array) -> Result<BoundColumn, ArrowError> {
        Ok(match self {
            BoundColumn::Int(a) => BoundColumn::Int(take(a, rows, None)?.as_primitive().clone()),
            BoundColumn::Text(a) => BoundColumn::Text(take(a, rows, None)?.as_string().clone()),
        })
    }
}

/// One value of a [`BoundColumn`], as it is bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoundValue<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

/// Timestamps as [`SQLITE_TIME_FORMAT`] text in UTC; a run of equal times (a file's rows share
/// their source time) is formatted once.
fn timestamp_text(col: &ArrayRef) -> Result<StringArray, ArrowError> {
    let micros = cast(
        col,
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 27);
    let mut last: Option<(i64, String)> = None;
    for value in micros.iter() {
        let Some(value) = value else {
            out.append_null();
            continue;
        };
        if last.as_ref().is_none_or(|(m, _)| *m != value) {
            let time = chrono::DateTime::from_timestamp_micros(value).unwrap_or_default();
            last = Some((value, time.format(SQLITE_TIME_FORMAT).to_string()));
        }
        out.append_value(last.as_ref().map(|(_, t)| t.as_str()).unwrap_or_default());
    }
    Ok(out.finish())
}

/// Dates as Arrow's cast prints them, each distinct day formatted once (a province's rows
/// span a few days).
fn date_text(col: &ArrayRef) -> Result<StringArray, ArrowError> {
    let days = col.as_primitive::<Date32Type>();
    // foldhash, not std's SipHash: this is a lookup per row.
    let mut texts: datafusion::common::HashMap<i32, String> = Default::default();
    let mut out = StringBuilder::with_capacity(days.len(), days.len() * 10);
    for (row, day) in days.iter().enumerate() {
        let Some(day) = day else {
            out.append_null();
            continue;
        };
        if !texts.contains_key(&day) {
            let one = cast(&col.slice(row, 1), &DataType::Utf8)?;
            texts.insert(day, one.as_string::<i32>().value(0).to_string());
        }
        out.append_value(&texts[&day]);
    }
    Ok(out.finish())
}

/// Decimals of a positive scale as Arrow's cast prints them (`-0.05`, `123.45`), written
/// straight into the column ([`crate::values::write_decimal`]), without a `format!` per value.
fn decimal_text(
    values: &datafusion::arrow::array::PrimitiveArray<Decimal128Type>,
    scale: i8,
) -> StringArray {
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 8);
    for value in values.iter() {
        match value {
            Some(value) => {
                write_decimal(&mut out, value, scale).expect("writing to a string builder");
                out.append_value("");
            }
            None => out.append_null(),
        }
    }
    out.finish()
}

/// A statement prepared on a rusqlite connection's handle, whose parameters borrow the values
/// they are bound to (see the module's invariant).
pub struct BorrowingStatement<'conn> {
    statement: NonNull<ffi::sqlite3_stmt>,
    db: *mut ffi::sqlite3,
    _connection: PhantomData<&'conn rusqlite::Connection>,
}

impl<'conn> BorrowingStatement<'conn> {
    pub fn prepare(
        connection: &'conn rusqlite::Connection,
        sql: &str,
    ) -> rusqlite::Result<BorrowingStatement<'conn>> {
        // SAFETY: the handle is the open connection's, used on this thread only while the
        // statement (which borrows the connection) lives.
        let db = unsafe { connection.handle() };
        let mut statement = std::ptr::null_mut();
        let length = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        // SAFETY: `sql` is valid for `length` bytes; SQLite copies what it keeps.
        let code = unsafe {
            ffi::sqlite3_prepare_v2(
                db,
                sql.as_ptr().cast::<c_char>(),
                length,
                &mut statement,
                std::ptr::null_mut(),
            )
        };
        if code != ffi::SQLITE_OK {
            return Err(last_error(db, code));
        }
        let statement = NonNull::new(statement).ok_or(rusqlite::Error::InvalidQuery)?;
        Ok(BorrowingStatement {
            statement,
            db,
            _connection: PhantomData,
        })
    }

    /// Binds `first` (parameter 1, the same for every row) and then `rows` of `columns`, row `r`'s
    /// column `c` as parameter `2 + r * columns + c`; runs the statement once and returns the
    /// rows it changed. Every binding is cleared before it returns.
    pub fn execute(
        &mut self,
        first: &str,
        columns: &[BoundColumn],
        rows: Range<usize>,
    ) -> rusqlite::Result<usize> {
        let result = self.bind_and_step(first, columns, rows);
        // SAFETY: the statement is live; after these calls it holds no pointer to the values.
        unsafe {
            ffi::sqlite3_reset(self.statement.as_ptr());
            ffi::sqlite3_clear_bindings(self.statement.as_ptr());
        }
        result
    }

    fn bind_and_step(
        &mut self,
        first: &str,
        columns: &[BoundColumn],
        rows: Range<usize>,
    ) -> rusqlite::Result<usize> {
        let stmt = self.statement.as_ptr();
        self.bind_text(1, first)?;
        let width = columns.len();
        for (slot, row) in rows.enumerate() {
            for (c, column) in columns.iter().enumerate() {
                let index = 2 + slot * width + c;
                let bound = match column.value(row) {
                    BoundValue::Null => self.bind_null(index),
                    BoundValue::Int(v) => self.bind_int(index, v),
                    BoundValue::Text(v) => self.bind_text(index, v),
                };
                bound?;
            }
        }
        // SAFETY: the statement is live and every parameter points into `columns`, borrowed
        // for this call.
        let code = unsafe { ffi::sqlite3_step(stmt) };
        match code {
            ffi::SQLITE_DONE | ffi::SQLITE_ROW => {
                // SAFETY: the connection is open.
                Ok(unsafe { ffi::sqlite3_changes(self.db) } as usize)
            }
            code => Err(last_error(self.db, code)),
        }
    }

    fn bind_null(&mut self, index: usize) -> rusqlite::Result<()> {
        // SAFETY: the statement is live; SQLite checks the index.
        self.check(unsafe { ffi::sqlite3_bind_null(self.statement.as_ptr(), index as c_int) })
    }

    fn bind_int(&mut self, index: usize, value: i64) -> rusqlite::Result<()> {
        // SAFETY: as for `bind_null`.
        self.check(unsafe {
            ffi::sqlite3_bind_int64(self.statement.as_ptr(), index as c_int, value)
        })
    }

    fn bind_text(&mut self, index: usize, value: &str) -> rusqlite::Result<()> {
        // SAFETY: `value` stays borrowed until `execute` clears the bindings (the module's
        // invariant), so SQLITE_STATIC's "the caller keeps it alive" holds.
        self.check(unsafe {
            ffi::sqlite3_bind_text64(
                self.statement.as_ptr(),
                index as c_int,
                value.as_ptr().cast::<c_char>(),
                value.len() as ffi::sqlite3_uint64,
                ffi::SQLITE_STATIC(),
                ffi::SQLITE_UTF8 as _,
            )
        })
    }

    fn check(&self, code: c_int) -> rusqlite::Result<()> {
        if code == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(last_error(self.db, code))
        }
    }
}

impl Drop for BorrowingStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: prepared by `prepare`, finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.statement.as_ptr());
        }
    }
}

/// Writes every page the open transaction changed to the main database file and waits until
/// the disk holds them, leaving the transaction open: its COMMIT then has a few pages to write
/// and sync, not the whole load (a province's 640 MB took 0.84 s to sync at COMMIT here, after
/// every other sink had finished). Nothing about atomicity changes: SQLite syncs its rollback
/// journal before it writes a changed page to the database file ([`ffi::sqlite3_db_cacheflush`]
/// too), so a crash after this and before COMMIT still rolls the pages back; this only moves
/// the file's own sync (the VFS's `xSync`, as COMMIT calls it) earlier.
pub fn write_through(connection: &rusqlite::Connection) -> rusqlite::Result<()> {
    // SAFETY: the handle is the open connection's, used on the connection's thread for the
    // length of this call.
    let db = unsafe { connection.handle() };
    // SAFETY: `db` is open; the call writes dirty pages of the open write transaction.
    let code = unsafe { ffi::sqlite3_db_cacheflush(db) };
    if code != ffi::SQLITE_OK {
        return Err(last_error(db, code));
    }
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: SQLITE_FCNTL_FILE_POINTER writes the main database's `sqlite3_file *` (owned by
    // the connection, valid while it is open) into `file`.
    let code = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    if code != ffi::SQLITE_OK {
        return Err(last_error(db, code));
    }
    // SAFETY: a non-null file has the methods of its VFS (null when it is not open: nothing to
    // sync); `xSync` is what the pager calls on it at COMMIT.
    let code = unsafe {
        match file.as_ref().and_then(|f| f.pMethods.as_ref()) {
            Some(methods) => match methods.xSync {
                Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
                None => ffi::SQLITE_OK,
            },
            None => ffi::SQLITE_OK,
        }
    };
    if code != ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(code),
            Some("cannot sync the database file".into()),
        ));
    }
    Ok(())
}

/// The connection's last error as rusqlite reports it.
fn last_error(db: *mut ffi::sqlite3, code: c_int) -> rusqlite::Error {
    // SAFETY: the connection is open; SQLite's message is copied before the next call.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(db);
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    // SAFETY: as above.
    let extended = unsafe { ffi::sqlite3_extended_errcode(db) };
    let code = if extended & 0xff == code & 0xff {
        extended
    } else {
        code
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Date32Array, Decimal128Array, Int32Array};
    use std::sync::Arc;

    fn decimals(values: &[Option<i128>], scale: i8) -> Vec<Option<String>> {
        let array = Decimal128Array::from(values.to_vec())
            .with_precision_and_scale(38, scale)
            .unwrap();
        decimal_text(&array, scale)
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    /// Binds two rows of `(id INTEGER, flag INTEGER, name TEXT)` plus the first parameter into
    /// an in-memory table and reads them back with their SQLite types.
    #[test]
    fn integers_booleans_text_and_nulls_are_stored_as_bound() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (first TEXT, id INTEGER, flag INTEGER, name TEXT)")
            .unwrap();
        let columns: Vec<BoundColumn> = [
            Arc::new(Int32Array::from(vec![Some(7), None])) as ArrayRef,
            Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
            Arc::new(StringArray::from(vec![None, Some("b\u{e9}")])),
        ]
        .iter()
        .map(|c| BoundColumn::new(c).unwrap())
        .collect();
        let mut insert = BorrowingStatement::prepare(
            &conn,
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4), (?1, ?5, ?6, ?7)",
        )
        .unwrap();
        let first = String::from("run");
        assert_eq!(insert.execute(&first, &columns, 0..2).unwrap(), 2);
        drop(columns);
        drop(first);
        type Stored = (String, Option<i64>, i64, Option<String>, String);
        let rows: Vec<Stored> = conn
            .prepare("SELECT first, id, flag, name, typeof(flag) FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("run".into(), Some(7), 1, None, "integer".into()),
                (
                    "run".into(),
                    None,
                    0,
                    Some("b\u{e9}".into()),
                    "integer".into()
                ),
            ]
        );
    }

    #[test]
    fn sqlites_errors_keep_their_code_and_message() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let bad = match BorrowingStatement::prepare(&conn, "INSERT INTO missing VALUES (?1)") {
            Ok(_) => panic!("a statement on a missing table was prepared"),
            Err(e) => e.to_string(),
        };
        assert!(bad.contains("no such table: missing"), "{bad}");

        conn.execute_batch("CREATE TABLE t (first TEXT, k TEXT NOT NULL)")
            .unwrap();
        let mut insert =
            BorrowingStatement::prepare(&conn, "INSERT INTO t VALUES (?1, ?2)").unwrap();
        let columns =
            [
                BoundColumn::new(&(Arc::new(StringArray::from(vec![None::<&str>])) as ArrayRef))
                    .unwrap(),
            ];
        match insert.execute("x", &columns, 0..1) {
            Err(rusqlite::Error::SqliteFailure(e, Some(message))) => {
                assert_eq!(e.extended_code, ffi::SQLITE_CONSTRAINT_NOTNULL);
                assert!(
                    message.contains("NOT NULL constraint failed: t.k"),
                    "{message}"
                );
            }
            other => panic!("a NULL key was accepted or misreported: {other:?}"),
        }
        // The statement is usable again after the failure.
        let columns =
            [BoundColumn::new(&(Arc::new(StringArray::from(vec!["k1"])) as ArrayRef)).unwrap()];
        assert_eq!(insert.execute("x", &columns, 0..1).unwrap(), 1);
    }

    #[test]
    fn dates_print_as_arrows_cast_does() {
        let days: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(20513),
            Some(20514),
            None,
            Some(20513),
            Some(-1),
            Some(3_000_000),
        ]));
        let arrow = cast(&days, &DataType::Utf8).unwrap();
        assert_eq!(&date_text(&days).unwrap(), arrow.as_string::<i32>());
    }

    #[test]
    fn decimals_print_as_arrows_cast_does() {
        let values: Vec<Option<i128>> = [
            0,
            5,
            -5,
            10,
            99,
            100,
            -100,
            12345,
            -12345,
            1,
            -1,
            1_000_000,
            i64::MAX as i128,
            -(i64::MAX as i128),
            10i128.pow(37),
            -(10i128.pow(37)) + 1,
        ]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
        for scale in [1i8, 2, 3, 6, 18] {
            let array: ArrayRef = Arc::new(
                Decimal128Array::from(values.clone())
                    .with_precision_and_scale(38, scale)
                    .unwrap(),
            );
            let arrow: Vec<Option<String>> = cast(&array, &DataType::Utf8)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect();
            assert_eq!(decimals(&values, scale), arrow, "scale {scale}");
        }
        assert_eq!(
            decimals(&[Some(-5), Some(12345)], 2),
            vec![Some("-0.05".to_string()), Some("123.45".to_string())]
        );
    }
}
