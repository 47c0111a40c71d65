//! String columns of the incoming rows whose values come in long runs, taken by run.
//!
//! The job's rows arrive ordered by their record key, and a file group takes the rows of one
//! partition: every few rows of the query's order (one day of seven, for the province job). A
//! slice gathering a string column row by row copies each row's text from a cache line it has
//! not touched yet. For columns that hold one value over thousands of rows (the province, a
//! store's id, its source file), [`StringRuns`] keeps where each run starts in each batch (a few
//! numbers a batch, found once), and [`StringRuns::gather`] makes a slice's column as a
//! dictionary: one key a row, one value a run. The Parquet writer writes a dictionary column as
//! the strings it stands for (engine/sinks/hudi/table.rs).
//!
//! Invariants: a run is a maximal stretch of equal values or of nulls within one batch; a
//! gathered column's consecutive equal values share one key (so a column kept as runs by the
//! Parquet encoder sees the runs a plain column would show); nulls are null keys.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, DictionaryArray, PrimitiveBuilder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Int32Type};
use rayon::prelude::*;

use super::runs_chunk::{for_each_run, MIN_AVERAGE_RUN};

/// A string column's runs: for each batch, the row where each run starts.
#[derive(Debug)]
pub struct StringRuns {
    starts: Vec<Vec<usize>>,
}

impl StringRuns {
    /// The runs of column `column` of `batches`, if it is a string column whose every batch
    /// averages [`MIN_AVERAGE_RUN`] rows a run (found on rayon's pool, a batch a task).
    pub fn find(batches: &[RecordBatch], column: usize) -> Option<StringRuns> {
        let first = batches.first()?.column(column);
        if first.data_type() != &DataType::Utf8 {
            return None;
        }
        // The first batch alone first: a column of short runs is refused after one batch.
        let first = run_starts(first.as_ref())?;
        let rest = batches[1..]
            .par_iter()
            .map(|b| run_starts(b.column(column).as_ref()))
            .collect::<Option<Vec<_>>>()?;
        let mut starts = Vec::with_capacity(batches.len());
        starts.push(first);
        starts.extend(rest);
        Some(StringRuns { starts })
    }

    /// The column's values at `sources` (a batch's index and a row in it, rows of one batch in
    /// ascending order, as a file group takes them), as a dictionary of the runs they fall in.
    pub fn gather(
        &self,
        batches: &[RecordBatch],
        column: usize,
        sources: impl ExactSizeIterator<Item = (usize, usize)>,
    ) -> ArrayRef {
        let mut keys = PrimitiveBuilder::<Int32Type>::with_capacity(sources.len());
        let mut values = StringBuilder::new();
        // The run of the row before: its batch, its index, and its key (None: a null run).
        let mut last: Option<(usize, usize, Option<i32>)> = None;
        for (batch, row) in sources {
            let starts = &self.starts[batch];
            let run = match last {
                // Rows of a batch come in order: the run is the last one or a later one.
                Some((b, run, _)) if b == batch && starts[run] <= row => {
                    run + starts[run + 1..].partition_point(|&s| s <= row)
                }
                _ => starts.partition_point(|&s| s <= row) - 1,
            };
            let key = match last {
                Some((b, r, key)) if b == batch && r == run => key,
                _ => {
                    let strings = batches[batch].column(column).as_string::<i32>();
                    let start = starts[run];
                    strings.is_valid(start).then(|| {
                        let value = strings.value(start);
                        // A run equal to the one before (across batches) keeps its key.
                        let previous = last.and_then(|(_, _, key)| key);
                        match previous {
                            Some(key) if value_bytes(&values, key) == value.as_bytes() => key,
                            _ => {
                                values.append_value(value);
                                (values.len() - 1) as i32
                            }
                        }
                    })
                }
            };
            keys.append_option(key);
            last = Some((batch, run, key));
        }
        Arc::new(DictionaryArray::new(
            keys.finish(),
            Arc::new(values.finish()),
        ))
    }
}

/// The bytes of the value `key` of a dictionary being built.
fn value_bytes(values: &StringBuilder, key: i32) -> &[u8] {
    let offsets = values.offsets_slice();
    let (start, end) = (offsets[key as usize], offsets[key as usize + 1]);
    &values.values_slice()[start as usize..end as usize]
}

/// Where each run of a string column's values starts (runs as the Parquet encoder keeps them:
/// equal values, or nulls), if they average at least [`MIN_AVERAGE_RUN`] rows.
fn run_starts(strings: &dyn Array) -> Option<Vec<usize>> {
    let mut starts = Vec::new();
    let mut row = 0;
    for_each_run(strings, |_, rows| {
        starts.push(row);
        row += rows;
    });
    (starts.len() * MIN_AVERAGE_RUN <= strings.len()).then_some(starts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn batch(values: Vec<Option<&str>>) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(values)) as ArrayRef],
        )
        .unwrap()
    }

    /// `n` rows of `value`.
    fn run(value: Option<&'static str>, n: usize) -> Vec<Option<&'static str>> {
        vec![value; n]
    }

    #[test]
    fn a_column_of_long_runs_is_gathered_as_the_values_it_holds() {
        let first = batch([run(Some("a"), 20), run(None, 20), run(Some("b"), 20)].concat());
        let second = batch([run(Some("b"), 30), run(Some("c"), 30)].concat());
        let batches = [first, second];
        let runs = StringRuns::find(&batches, 0).expect("long runs");
        // Every third row, across both batches, and some rows of the second again.
        let sources: Vec<(usize, usize)> = (0..60)
            .step_by(3)
            .map(|r| (0, r))
            .chain((0..60).step_by(7).map(|r| (1, r)))
            .chain([(1, 5), (1, 59)])
            .collect();
        let gathered = runs.gather(&batches, 0, sources.iter().copied());
        let expected: Vec<Option<&str>> = sources
            .iter()
            .map(|&(b, r)| {
                let s = batches[b].column(0).as_string::<i32>();
                s.is_valid(r).then(|| s.value(r))
            })
            .collect();
        let dictionary = gathered.as_dictionary::<Int32Type>();
        let texts = dictionary.values().as_string::<i32>();
        let got: Vec<Option<&str>> = dictionary
            .keys()
            .iter()
            .map(|k| k.map(|k| texts.value(k as usize)))
            .collect();
        assert_eq!(got, expected);
        // The `b` run of the first batch and the one the second begins with share a key; the
        // dictionary holds a value per run met: `b` and `c` again for the last two rows.
        assert_eq!(
            texts.iter().flatten().collect::<Vec<_>>(),
            ["a", "b", "c", "b", "c"]
        );
    }

    #[test]
    fn short_runs_and_other_types_are_not_kept() {
        let short: Vec<Option<&str>> = (0..64).map(|i| Some(["x", "y"][i % 2])).collect();
        assert!(StringRuns::find(&[batch(short)], 0).is_none());
        let ints = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("i", DataType::Int32, false)])),
            vec![Arc::new(datafusion::arrow::array::Int32Array::from(vec![1; 64])) as ArrayRef],
        )
        .unwrap();
        assert!(StringRuns::find(&[ints], 0).is_none());
        assert!(StringRuns::find(&[], 0).is_none());
    }
}
