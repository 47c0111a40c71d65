//! Rows a SQLite upsert would leave as they are, found by reading the stored rows of a batch's
//! key range in one ordered scan instead of trying each row.
//!
//! A province's cumulative files are delivered again through the day, so most rows of a run
//! into a warehouse that already holds the province are stored and unchanged. Upserted one by
//! one, each such row cost SQLite a key search, the conflict and the `WHERE` of its
//! `DO UPDATE`: 1.13 s of the writer thread for the 781,393 rows of the 1.8M province run again.
//! When a batch's rows ascend by key (the province job orders them so), [`UnchangedRows::find`]
//! reads the stored rows between the batch's first and last key (SQLite walks its primary key's
//! B-tree in order) and walks them beside the batch's rows; the rows found unchanged are not
//! upserted at all.
//!
//! The scan is worth it only when the stored rows of a batch's key range are about the batch's
//! own. A key whose last field is the day (the province job's) puts every stored day of an item
//! between a batch's first and last key: a week's rows into a warehouse holding a year would read
//! fifty stored rows for each one it could spare. So a batch's scan reads at most
//! [`SCAN_ROWS_PER_ROW`] stored rows per row of the batch (and [`SCAN_SLACK`] more); a load whose
//! batch runs past that stops scanning, and its rows go through the upsert as they did before.
//!
//! Invariant (why leaving a row out is safe): a row is marked unchanged only when the stored row
//! with its key holds, in every one of the job's columns, the value the row would bind, of the
//! same SQLite type (`NULL`, `INTEGER` or `TEXT`) and the same bytes. Its upsert would change
//! nothing: the conflict's `WHERE` asks for a column that differs, and `updated_at` is only set
//! with the others. Whatever this walk does not follow (a batch whose keys do not ascend, a key
//! of a type it does not order, a value stored under another type) leaves rows unmarked, and they
//! go through the upsert, which decides as before: the scan can only spare work, never skip a
//! row that would change.

use std::cmp::Ordering;

use rusqlite::types::{Value, ValueRef};

use super::dialect::TableSpec;
use super::sqlite_rows::{BoundColumn, BoundValue};

/// Stored rows a batch's scan may read per row of the batch (see the module docs).
const SCAN_ROWS_PER_ROW: usize = 2;

/// Stored rows a batch's scan may read beyond [`SCAN_ROWS_PER_ROW`] per row.
const SCAN_SLACK: usize = 256;

/// The range scan of one table's stored rows, prepared on the load's connection.
pub struct UnchangedRows<'c> {
    range: rusqlite::Statement<'c>,
    /// Where each key column is among the job's columns (the scan's columns, in order).
    keys: Vec<usize>,
    /// Set when a batch's scan read more stored rows than it was allowed: the load's later
    /// batches are not scanned.
    gave_up: bool,
}

impl<'c> UnchangedRows<'c> {
    /// Prepares the scan of `spec`'s table on `conn`.
    pub fn prepare(
        conn: &'c rusqlite::Connection,
        spec: &TableSpec,
    ) -> rusqlite::Result<UnchangedRows<'c>> {
        let names = spec.column_names();
        let keys = spec
            .key
            .iter()
            .filter_map(|k| names.iter().position(|n| n == k))
            .collect::<Vec<_>>();
        if keys.len() != spec.key.len() {
            return Err(rusqlite::Error::InvalidColumnName(format!(
                "a key column of {} is not among the job's columns",
                spec.name
            )));
        }
        Ok(UnchangedRows {
            range: conn.prepare(&spec.stored_key_range())?,
            keys,
            gave_up: false,
        })
    }

    /// For each of the batch's `rows` rows (its job columns `columns`, in the spec's order):
    /// whether the table already holds it unchanged (see the module's invariant).
    pub fn find(&mut self, columns: &[BoundColumn], rows: usize) -> rusqlite::Result<Vec<bool>> {
        let mut unchanged = vec![false; rows];
        if self.gave_up || rows == 0 || !self.ascending(columns, rows) {
            return Ok(unchanged);
        }
        let bound = |row: usize| {
            self.keys
                .iter()
                .map(move |&k| match columns[k].value(row) {
                    BoundValue::Null => Value::Null,
                    BoundValue::Int(v) => Value::Integer(v),
                    BoundValue::Text(v) => Value::Text(v.to_string()),
                })
                .collect::<Vec<_>>()
        };
        let ends = [bound(0), bound(rows - 1)].concat();
        let mut stored = self.range.query(rusqlite::params_from_iter(ends))?;
        let mut allowed = rows * SCAN_ROWS_PER_ROW + SCAN_SLACK;
        let mut row = 0;
        'stored: while let Some(found) = stored.next()? {
            if allowed == 0 {
                // The stored rows are not this batch's: the rest go through the upsert.
                self.gave_up = true;
                break;
            }
            allowed -= 1;
            while row < rows {
                let order = key_order(&self.keys, |k| {
                    let stored = Plain::stored(found.get_ref(k)?);
                    Ok(stored.and_then(|s| s.order(Plain::bound(columns[k].value(row)))))
                })?;
                match order {
                    // A key this walk cannot place: the rest go through the upsert.
                    None => break 'stored,
                    // A stored row the batch does not have.
                    Some(Ordering::Less) => continue 'stored,
                    // A row the table does not have.
                    Some(Ordering::Greater) => row += 1,
                    Some(Ordering::Equal) => {
                        let mut same = true;
                        for (c, column) in columns.iter().enumerate() {
                            if Plain::stored(found.get_ref(c)?)
                                != Some(Plain::bound(column.value(row)))
                            {
                                same = false;
                                break;
                            }
                        }
                        unchanged[row] = same;
                        row += 1;
                        continue 'stored;
                    }
                }
            }
            break;
        }
        Ok(unchanged)
    }

    /// Whether the batch's keys ascend strictly in the order the scan returns stored rows.
    fn ascending(&self, columns: &[BoundColumn], rows: usize) -> bool {
        (1..rows).all(|row| {
            let order = key_order(&self.keys, |k| {
                let [before, this] = [row - 1, row].map(|r| Plain::bound(columns[k].value(r)));
                Ok(before.order(this))
            });
            matches!(order, Ok(Some(Ordering::Less)))
        })
    }
}

/// A value as the walk compares it: SQLite's storage class and the value's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plain<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
}

impl<'a> Plain<'a> {
    /// A stored value; `None` for a storage class no row binds (`REAL`, `BLOB`).
    fn stored(value: ValueRef<'a>) -> Option<Plain<'a>> {
        match value {
            ValueRef::Null => Some(Plain::Null),
            ValueRef::Integer(v) => Some(Plain::Int(v)),
            ValueRef::Text(v) => Some(Plain::Text(v)),
            ValueRef::Real(_) | ValueRef::Blob(_) => None,
        }
    }

    fn bound(value: BoundValue<'a>) -> Plain<'a> {
        match value {
            BoundValue::Null => Plain::Null,
            BoundValue::Int(v) => Plain::Int(v),
            BoundValue::Text(v) => Plain::Text(v.as_bytes()),
        }
    }

    /// How two key values compare in SQLite's order (integers by value, text by its bytes, the
    /// `BINARY` collation); `None` for pairs this walk does not order.
    fn order(self, other: Plain<'_>) -> Option<Ordering> {
        match (self, other) {
            (Plain::Int(a), Plain::Int(b)) => Some(a.cmp(&b)),
            (Plain::Text(a), Plain::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Two keys' order, field by field (`field(k)`: the order of the key column `k`'s values), the
/// first field that differs deciding; `None` when a field cannot be ordered.
fn key_order(
    keys: &[usize],
    mut field: impl FnMut(usize) -> rusqlite::Result<Option<Ordering>>,
) -> rusqlite::Result<Option<Ordering>> {
    for &k in keys {
        match field(k)? {
            Some(Ordering::Equal) => continue,
            decided => return Ok(decided),
        }
    }
    Ok(Some(Ordering::Equal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;

    /// A table keyed by (store, day) with an amount and a count, holding `stored`.
    fn table(stored: &[(&str, i64, &str, Option<i64>)]) -> (rusqlite::Connection, TableSpec) {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (store TEXT NOT NULL, day INTEGER NOT NULL, amount TEXT, n INTEGER, \
             updated_at TEXT, PRIMARY KEY (store, day)) WITHOUT ROWID",
        )
        .unwrap();
        for (store, day, amount, n) in stored {
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, 'then')",
                rusqlite::params![store, day, amount, n],
            )
            .unwrap();
        }
        let spec = TableSpec {
            name: "t".into(),
            columns: vec![
                ("store".into(), DataType::Utf8),
                ("day".into(), DataType::Int64),
                ("amount".into(), DataType::Utf8),
                ("n".into(), DataType::Int64),
            ],
            key: vec!["store".into(), "day".into()],
            precombine: "n".into(),
            sort_first: "day".into(),
        };
        (conn, spec)
    }

    fn batch(rows: &[(&str, i64, &str, Option<i64>)]) -> Vec<BoundColumn> {
        vec![
            BoundColumn::Text(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            BoundColumn::Int(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            BoundColumn::Text(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            BoundColumn::Int(rows.iter().map(|r| r.3).collect()),
        ]
    }

    fn find(
        stored: &[(&str, i64, &str, Option<i64>)],
        rows: &[(&str, i64, &str, Option<i64>)],
    ) -> Vec<bool> {
        let (conn, spec) = table(stored);
        let mut scan = UnchangedRows::prepare(&conn, &spec).unwrap();
        scan.find(&batch(rows), rows.len()).unwrap()
    }

    #[test]
    fn only_rows_stored_with_every_value_equal_are_unchanged() {
        let stored = [
            ("s1", 1, "1.00", Some(7)),
            ("s1", 2, "2.00", None),
            ("s1", 3, "3.00", Some(7)),
            ("s2", 1, "4.00", Some(7)),
            ("s3", 1, "5.00", Some(7)),
        ];
        let rows = [
            ("s0", 9, "0.00", Some(7)), // before every stored key
            ("s1", 1, "1.00", Some(7)), // unchanged
            ("s1", 2, "2.00", None),    // unchanged, a null included
            ("s1", 3, "3.01", Some(7)), // an amount differs
            ("s1", 4, "9.00", Some(7)), // new, between stored keys
            ("s2", 1, "4.00", Some(8)), // the precombine differs
            ("s3", 1, "5.00", Some(7)), // unchanged, the last
        ];
        assert_eq!(
            find(&stored, &rows),
            [false, true, true, false, false, false, true]
        );
        // The same rows into an empty table: none.
        assert_eq!(find(&[], &rows), [false; 7]);
    }

    #[test]
    fn a_value_stored_as_another_type_is_not_the_same() {
        // `amount` is TEXT in the row and INTEGER in the table (no affinity on a plain TEXT
        // column turns it back): the upsert decides.
        let (conn, spec) = table(&[]);
        conn.execute("INSERT INTO t VALUES ('s1', 1, 5, 7, 'then')", [])
            .unwrap();
        let mut scan = UnchangedRows::prepare(&conn, &spec).unwrap();
        let stored_type: String = conn
            .query_row("SELECT typeof(amount) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            stored_type, "text",
            "TEXT affinity stores the integer as text"
        );
        // Stored as the text '5': the same as a row binding the text "5", not as one binding 5.
        assert_eq!(
            scan.find(&batch(&[("s1", 1, "5", Some(7))]), 1).unwrap(),
            [true]
        );
        let as_integer = vec![
            BoundColumn::Text(StringArray::from(vec!["s1"])),
            BoundColumn::Int(Int64Array::from(vec![1])),
            BoundColumn::Int(Int64Array::from(vec![5])),
            BoundColumn::Int(Int64Array::from(vec![7])),
        ];
        assert_eq!(scan.find(&as_integer, 1).unwrap(), [false]);
    }

    #[test]
    fn a_scan_that_reads_far_more_stored_rows_than_its_batch_has_stops_the_load_scanning() {
        // Forty stored days of 20 items; the batch brings each item's next day: its key range
        // holds every stored day of its items.
        let amounts: Vec<String> = (0..40).map(|d| format!("{d}.00")).collect();
        let items: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
        let mut stored = Vec::new();
        for item in &items {
            for (day, amount) in amounts.iter().enumerate() {
                stored.push((item.as_str(), day as i64, amount.as_str(), Some(7)));
            }
        }
        let (conn, spec) = table(&stored);
        let mut scan = UnchangedRows::prepare(&conn, &spec).unwrap();
        let new_days: Vec<_> = items
            .iter()
            .map(|i| (i.as_str(), 40, "1.00", Some(7)))
            .collect();
        assert_eq!(scan.find(&batch(&new_days), 20).unwrap(), [false; 20]);
        assert!(scan.gave_up, "760 stored rows in the range of 20 new ones");
        // Later batches are not scanned, even rows stored unchanged.
        assert_eq!(scan.find(&batch(&stored[..3]), 3).unwrap(), [false; 3]);
        // A new load scans again (a batch of 3 rows may read 262 stored rows; these 3 are the
        // first of their range).
        let mut scan = UnchangedRows::prepare(&conn, &spec).unwrap();
        assert_eq!(scan.find(&batch(&stored[..3]), 3).unwrap(), [true; 3]);
        assert!(!scan.gave_up);
    }

    #[test]
    fn rows_out_of_key_order_are_all_left_to_the_upsert() {
        let stored = [("s1", 1, "1.00", Some(7)), ("s2", 1, "2.00", Some(7))];
        let descending = [("s2", 1, "2.00", Some(7)), ("s1", 1, "1.00", Some(7))];
        assert_eq!(find(&stored, &descending), [false, false]);
        let repeated = [("s1", 1, "1.00", Some(7)), ("s1", 1, "1.00", Some(7))];
        assert_eq!(find(&stored, &repeated), [false, false]);
        assert_eq!(find(&stored, &stored), [true, true]);
    }
}
