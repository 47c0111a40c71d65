//! Merging: the rows of one file group's new base file.
//!
//! The job's rows are first brought to the table's data schema ([`conform`]) and given Hudi's
//! meta columns ([`with_meta_columns`]). [`merge_group`] then combines a group's latest slice
//! with its incoming rows: an incoming row replaces a stored one only when its precombine value
//! is greater or equal (an older source never overwrites a newer one) *and* some data column
//! differs, so rerunning the same inputs changes nothing. Stored rows keep their commit time and
//! sequence number; rows taken from this instant get its own.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    make_comparator, new_null_array, Array, ArrayRef, AsArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::kernels::interleave::interleave;
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::common::HashMap;

use super::keys::PartitionPaths;
use super::plan::GroupPlan;
use super::schema::META_COLUMNS;
use super::table::TableError;

/// Brings the job's rows to the table's data schema: columns by name, cast to the table's types;
/// table columns the job does not produce are null. A job column the table lacks is an error.
pub fn conform(
    batch: &RecordBatch,
    data: &SchemaRef,
    url: &str,
) -> Result<RecordBatch, TableError> {
    let err = |message: String| TableError::Data {
        url: url.to_string(),
        message,
    };
    for f in batch.schema().fields() {
        if data.index_of(f.name()).is_err() {
            return Err(err(format!(
                "the job produces column `{}`, which the table does not have",
                f.name()
            )));
        }
    }
    let columns = data
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()).map_err(|e| {
                err(format!(
                    "column `{}` is {} in the job but {} in the table: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))
            }),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(data.clone(), columns).map_err(|e| err(e.to_string()))
}

/// [`conform`] over several batches.
pub fn conform_all(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    url: &str,
) -> Result<Vec<RecordBatch>, TableError> {
    batches.iter().map(|b| conform(b, schema, url)).collect()
}

/// The incoming rows with meta columns for this instant (sequence numbers and file names are
/// filled per file group by [`merge_group`]).
pub fn with_meta_columns(
    data: &RecordBatch,
    table_schema: &SchemaRef,
    instant: &str,
    keys: &StringArray,
    partitions: &PartitionPaths,
) -> Result<RecordBatch, ArrowError> {
    let n = data.num_rows();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            instant, n,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", n))),
        Arc::new(keys.clone()),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|row| partitions.of(row)),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", n))),
    ];
    columns.extend(data.columns().iter().cloned());
    RecordBatch::try_new(table_schema.clone(), columns)
}

/// A file group's new base file and what happened to its rows.
#[derive(Debug)]
pub struct Merged {
    pub batch: RecordBatch,
    pub inserts: u64,
    pub updates: u64,
    pub unchanged: u64,
    /// Incoming rows older than the stored ones, ignored.
    pub older: u64,
}

/// The instant a merge writes and the file it writes to.
pub struct MergeTarget<'a> {
    pub instant: &'a str,
    /// This group's number in the instant (part of its sequence numbers).
    pub group_no: usize,
    pub file_name: &'a str,
}

/// Merges one file group's latest slice with its incoming rows (rows of `incoming` named by the
/// plan; `keys` are the incoming rows' record keys).
pub fn merge_group(
    existing: Option<&RecordBatch>,
    incoming: &RecordBatch,
    plan: &GroupPlan,
    keys: &StringArray,
    precombine_idx: usize,
    target: &MergeTarget<'_>,
) -> Result<Merged, ArrowError> {
    const EXISTING: usize = 0;
    const INCOMING: usize = 1;
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let (mut updates, mut unchanged, mut older) = (0u64, 0u64, 0u64);
    let empty = RecordBatch::new_empty(incoming.schema());
    let existing = existing.unwrap_or(&empty);
    let mut wanted: HashMap<&str, usize> =
        plan.updates.iter().map(|&r| (keys.value(r), r)).collect();
    if existing.num_rows() > 0 {
        let newer_or_equal = make_comparator(
            incoming.column(precombine_idx).as_ref(),
            existing.column(precombine_idx).as_ref(),
            SortOptions::default(),
        )?;
        let data_cols: Vec<_> = (META_COLUMNS.len()..incoming.num_columns())
            .map(|i| {
                make_comparator(
                    incoming.column(i).as_ref(),
                    existing.column(i).as_ref(),
                    SortOptions::default(),
                )
                .ok()
            })
            .collect();
        let existing_keys = existing.column(2).as_string::<i32>();
        for e in 0..existing.num_rows() {
            let incoming_row = existing_keys
                .is_valid(e)
                .then(|| wanted.remove(existing_keys.value(e)))
                .flatten();
            match incoming_row {
                None => picks.push((EXISTING, e)),
                Some(i) if newer_or_equal(i, e) == Ordering::Less => {
                    older += 1;
                    picks.push((EXISTING, e));
                }
                Some(i) => {
                    let same = data_cols
                        .iter()
                        .all(|c| c.as_ref().is_some_and(|cmp| cmp(i, e) == Ordering::Equal));
                    if same {
                        unchanged += 1;
                        picks.push((EXISTING, e));
                    } else {
                        updates += 1;
                        picks.push((INCOMING, i));
                    }
                }
            }
        }
    }
    // Keys the plan expected here but the slice no longer holds are inserted, like new keys.
    let mut leftovers: Vec<usize> = wanted.into_values().collect();
    leftovers.sort_unstable();
    let mut inserts = 0u64;
    for row in plan.inserts.iter().copied().chain(leftovers) {
        picks.push((INCOMING, row));
        inserts += 1;
    }
    let sources = [existing, incoming];
    let mut columns: Vec<ArrayRef> = (0..incoming.num_columns())
        .map(|c| {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, &picks)
        })
        .collect::<Result<_, _>>()?;
    // Rows taken from this instant get its sequence numbers; every row names the new file.
    let existing_seqno = existing.column(1).as_string::<i32>();
    let mut n = 0usize;
    let seqno: StringArray = picks
        .iter()
        .map(|&(src, row)| {
            if src == EXISTING {
                existing_seqno
                    .is_valid(row)
                    .then(|| existing_seqno.value(row).to_string())
            } else {
                n += 1;
                Some(format!("{}_{}_{}", target.instant, target.group_no, n - 1))
            }
        })
        .collect();
    columns[1] = Arc::new(seqno);
    columns[4] = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        target.file_name,
        picks.len(),
    )));
    Ok(Merged {
        batch: RecordBatch::try_new(incoming.schema(), columns)?,
        inserts,
        updates,
        unchanged,
        older,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn data_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
            Field::new("seen", DataType::Int64, true),
        ]))
    }

    /// Rows `(key, amount, seen)` with meta columns of `instant`.
    fn rows(instant: &str, rows: &[(&str, i64, i64)]) -> RecordBatch {
        let data = RecordBatch::try_new(
            data_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let keys = StringArray::from_iter_values(rows.iter().map(|r| r.0));
        let table = super::super::schema::table_schema(&data_schema());
        let parts = PartitionPaths {
            paths: vec![String::new()],
            of_row: vec![0; rows.len()],
        };
        with_meta_columns(&data, &table, instant, &keys, &parts).unwrap()
    }

    fn plan(updates: Vec<usize>, inserts: Vec<usize>) -> GroupPlan {
        GroupPlan {
            partition: String::new(),
            file_id: "g-0".into(),
            base: None,
            updates,
            inserts,
        }
    }

    #[test]
    fn newer_rows_replace_equal_ones_stay_older_ones_are_ignored() {
        let stored = rows(
            "1",
            &[("a", 10, 5), ("b", 20, 5), ("c", 30, 5), ("d", 40, 5)],
        );
        // a: newer and different; b: the same row again; c: older; e: new.
        let incoming = rows(
            "2",
            &[("a", 11, 6), ("b", 20, 5), ("c", 99, 4), ("e", 50, 6)],
        );
        let keys = StringArray::from(vec!["a", "b", "c", "e"]);
        let target = MergeTarget {
            instant: "2",
            group_no: 7,
            file_name: "g-0_7-0-0_2.parquet",
        };
        // "seen" is the precombine column: meta columns, then k, amount, seen.
        let merged = merge_group(
            Some(&stored),
            &incoming,
            &plan(vec![0, 1, 2], vec![3]),
            &keys,
            7,
            &target,
        )
        .unwrap();
        assert_eq!(
            (
                merged.updates,
                merged.unchanged,
                merged.older,
                merged.inserts
            ),
            (1, 1, 1, 1)
        );
        let b = &merged.batch;
        let col = |i: usize| b.column(i).as_string::<i32>();
        let amounts = b
            .column(6)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let got: Vec<(&str, i64, &str, &str)> = (0..b.num_rows())
            .map(|r| {
                (
                    col(2).value(r),
                    amounts.value(r),
                    col(0).value(r),
                    col(1).value(r),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 11, "2", "2_7_0"),
                ("b", 20, "1", ""),
                ("c", 30, "1", ""),
                ("d", 40, "1", ""),
                ("e", 50, "2", "2_7_1"),
            ]
        );
        assert!((0..b.num_rows()).all(|r| col(4).value(r) == "g-0_7-0-0_2.parquet"));
    }

    #[test]
    fn job_columns_the_table_lacks_are_refused_and_missing_ones_are_null() {
        let table = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("extra", DataType::Int64, true),
        ]));
        let job = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        let conformed = conform(&job, &table, "t").unwrap();
        assert!(conformed.column(1).is_null(0));
        let e = conform(&conformed, &data_schema(), "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("`extra`, which the table does not have"),
            "{e}"
        );
    }
}
