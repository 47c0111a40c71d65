//! Sources: the files a job reads, and how they become one DataFusion table.
//!
//! A job's input is the set of files in one folder whose names match the job's patterns (for the
//! province job, `{province}-*.csv` and `{province}-*.parquet`). They are one [`InputTable`],
//! scanned by an [`InputScanExec`] whose partitions each read a share of the files: every file is
//! read as a stream (bounded memory), parsed strictly against the job's input layout, and every
//! row is tagged with its `source_file` and `source_time`, so the job's SQL can tell which
//! cumulative file is newest.
//!
//! Rows also carry `source_rank`, the file's place among the job's input files when they are
//! ordered oldest first (by `source_time`, then by `source_file`): 1 for the oldest, the number of
//! files for the newest. Ranks are dense and unique, so "newest file wins" is "largest rank wins",
//! an integer comparison instead of one on a 45-byte URL per row (see `newest_sum` in
//! [`crate::job::functions`]). The files themselves, one row each, are the table [`files_table`]
//! (registered as `<input table>_files`: `source_rank`, `source_file`, `source_time`), which a job
//! joins on `source_rank` to name the file a row was taken from.

mod csv_file;
mod file_keys;
mod listing;
mod parquet_file;
mod scan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::datasource::MemTable;

use crate::layout::Layout;

pub use file_keys::{first_keys, FileKey, KeyCheck, KeyRanges, MisplacedRow};
pub use listing::{list_inputs, InputFile, InputFormat, ListingError};
pub use scan::{
    only_child, FileSpec, InputScanExec, InputSpec, InputTable, LayoutSpec, ReadSpec,
    BAD_ROWS_METRIC, INPUT_BYTES_METRIC, INPUT_ROWS_METRIC,
};

/// Name of the lineage column holding the file a row came from.
pub const SOURCE_FILE: &str = "source_file";
/// Name of the lineage column holding that file's time.
pub const SOURCE_TIME: &str = "source_time";
/// Name of the lineage column holding the file's rank, oldest first (see the module docs).
pub const SOURCE_RANK: &str = "source_rank";

/// One refused input row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadRow {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.reason)
    }
}

/// Counters shared by all partitions of one read.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub rows_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bad_rows: AtomicU64,
    /// The first refused rows, for the summary.
    pub bad_samples: Mutex<Vec<BadRow>>,
    /// How many bad rows are tolerated before the read fails.
    pub max_bad_rows: u64,
}

impl SourceStats {
    pub fn new(max_bad_rows: u64) -> SourceStats {
        SourceStats {
            max_bad_rows,
            ..Default::default()
        }
    }

    /// Records a refused row; returns it as an error when the tolerance is exceeded.
    pub(crate) fn refuse(&self, row: BadRow) -> Result<(), BadRow> {
        let count = self.bad_rows.fetch_add(1, Ordering::Relaxed) + 1;
        if count > self.max_bad_rows {
            return Err(row);
        }
        tracing::warn!(file = %row.file, line = row.line, reason = %row.reason, "bad input row skipped");
        let mut samples = self.bad_samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < 20 {
            samples.push(row);
        }
        Ok(())
    }

    pub fn rows_in(&self) -> u64 {
        self.rows_in.load(Ordering::Relaxed)
    }
    pub fn bad_rows(&self) -> u64 {
        self.bad_rows.load(Ordering::Relaxed)
    }
}

/// The schema of the table a job's SQL sees: the layout's columns, then the lineage columns.
pub fn input_schema(layout: &Layout) -> SchemaRef {
    let mut fields: Vec<Field> = layout
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(lineage_fields());
    Arc::new(Schema::new(fields))
}

/// The lineage columns every input row carries, in their order.
fn lineage_fields() -> [Field; 3] {
    [
        Field::new(SOURCE_FILE, DataType::Utf8, false),
        Field::new(
            SOURCE_TIME,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(SOURCE_RANK, DataType::Int64, false),
    ]
}

/// One input file as a reader sees it: the file and its rank among the job's files.
#[derive(Debug, Clone)]
pub struct RankedFile {
    pub file: InputFile,
    pub rank: i64,
}

impl RankedFile {
    /// Lineage column `which` (0: `source_file`, 1: `source_time`, 2: `source_rank`, the order of
    /// [`lineage_fields`]) for a batch of `rows` rows from this file.
    fn lineage_column(&self, which: usize, rows: usize) -> ArrayRef {
        match which {
            0 => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                self.file.url.as_str(),
                rows,
            ))),
            1 => Arc::new(
                TimestampMicrosecondArray::from_value(
                    self.file.source_time.timestamp_micros(),
                    rows,
                )
                .with_timezone("UTC"),
            ),
            _ => Arc::new(Int64Array::from_value(self.rank, rows)),
        }
    }
}

/// The columns a file reader hands on, as the scan keeps them: its projection of the layout's
/// columns and the lineage columns ([`input_schema`]), in the projection's order.
///
/// A reader makes the layout's columns and then [`ScanColumns::batch`] picks the kept ones and
/// makes only the lineage columns kept: `source_file` repeats a file's URL on every row (126 MB
/// of text for a 1.8M-transaction province), and the province job never reads it from the rows
/// (it joins the files table on `source_rank` instead).
#[derive(Debug, Clone)]
pub(crate) struct ScanColumns {
    /// The batches' schema.
    pub schema: SchemaRef,
    /// Each kept column's index in [`input_schema`]: a layout column below `layout_columns`,
    /// a lineage column from there.
    kept: Vec<usize>,
    layout_columns: usize,
}

impl ScanColumns {
    /// The columns of `projection` (indices into [`input_schema`]; `None`: all of them).
    pub fn new(layout: &Layout, projection: Option<&[usize]>) -> Result<ScanColumns, ArrowError> {
        let full = input_schema(layout);
        let kept: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..full.fields().len()).collect(),
        };
        Ok(ScanColumns {
            schema: Arc::new(full.project(&kept)?),
            kept,
            layout_columns: layout.columns.len(),
        })
    }

    /// A batch of the kept columns of `layout_columns` (every layout column, in order, each of
    /// the same length) and of `file`'s lineage.
    pub fn batch(
        &self,
        layout_columns: &[ArrayRef],
        file: &RankedFile,
    ) -> Result<RecordBatch, ArrowError> {
        if layout_columns.len() != self.layout_columns {
            return Err(ArrowError::InvalidArgumentError(format!(
                "{}: a reader made {} columns of a layout of {}",
                file.file.url,
                layout_columns.len(),
                self.layout_columns
            )));
        }
        let rows = layout_columns.first().map_or(0, |c| c.len());
        let columns = self
            .kept
            .iter()
            .map(|&i| match i.checked_sub(self.layout_columns) {
                None => layout_columns[i].clone(),
                Some(lineage) => file.lineage_column(lineage, rows),
            })
            .collect();
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }
}

/// `files` with their ranks, in rank order, oldest first: by source time, then by URL (byte order, as SQL compares
/// strings), so the last one is the one whose rows win.
pub fn ranked(files: &[InputFile]) -> Vec<RankedFile> {
    let mut by_age: Vec<&InputFile> = files.iter().collect();
    by_age.sort_by(|a, b| {
        a.source_time
            .cmp(&b.source_time)
            .then_with(|| a.url.cmp(&b.url))
    });
    by_age
        .into_iter()
        .zip(1..)
        .map(|(file, rank)| RankedFile {
            file: file.clone(),
            rank,
        })
        .collect()
}

/// The table of a job's input files, one row each: `source_rank`, `source_file`, `source_time`
/// (the same values the input rows carry), in rank order.
pub fn files_table(ranked: &[RankedFile]) -> datafusion::error::Result<MemTable> {
    let [file, time, rank] = lineage_fields();
    let schema = Arc::new(Schema::new(vec![rank, file, time]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ranked.iter().map(|r| r.rank))),
        Arc::new(StringArray::from_iter_values(
            ranked.iter().map(|r| r.file.url.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                ranked.iter().map(|r| r.file.source_time.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

/// Rows per record batch produced by the readers.
pub const BATCH_ROWS: usize = 8192;

/// A CSV input file for unit tests: `file:///in/NAME`, `size` bytes, rank `rank` (its time grows
/// with the rank), in a store of its own holding nothing.
#[cfg(test)]
pub(crate) fn test_file(name: &str, size: u64, rank: i64) -> RankedFile {
    RankedFile {
        file: InputFile {
            name: name.into(),
            url: format!("file:///in/{name}"),
            folder: "file:///in".into(),
            store: Arc::new(object_store::memory::InMemory::new()),
            path: name.into(),
            local_path: None,
            size,
            source_time: chrono::DateTime::<chrono::Utc>::from_timestamp_micros(
                1_700_000_000_000_000 + rank,
            )
            .expect("a time in range"),
            format: InputFormat::Csv,
        },
        rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;

    fn file(rank: i64) -> RankedFile {
        let url = "file:///in/IL-101-3.csv".to_string();
        RankedFile {
            file: InputFile {
                name: "IL-101-3.csv".into(),
                url: url.clone(),
                folder: "file:///in/".into(),
                store: Arc::new(object_store::memory::InMemory::new()),
                path: "IL-101-3.csv".into(),
                local_path: None,
                size: 0,
                source_time: chrono::DateTime::from_timestamp(1_772_334_000, 0).unwrap(),
                format: InputFormat::Csv,
            },
            rank,
        }
    }

    #[test]
    fn a_batch_holds_the_kept_columns_in_the_projections_order() {
        let layouts = crate::layout::LayoutSet::embedded();
        let layout = layouts.by_name("pos_transactions").unwrap();
        let full = input_schema(layout);
        let width = layout.columns.len();
        // The rank, then the first layout column, then the source file: not in schema order.
        let columns = ScanColumns::new(layout, Some(&[width + 2, 0, width])).unwrap();
        let names: Vec<&str> = columns
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [SOURCE_RANK, full.field(0).name().as_str(), SOURCE_FILE]
        );

        let made: Vec<ArrayRef> = full.fields()[..width]
            .iter()
            .map(|f| {
                datafusion::common::ScalarValue::new_default(f.data_type())
                    .and_then(|v| v.to_array_of_size(3))
                    .unwrap()
            })
            .collect();
        let batch = columns.batch(&made, &file(7)).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().values(),
            &[7, 7, 7]
        );
        assert!(
            Arc::ptr_eq(batch.column(1), &made[0]),
            "a layout column is kept as made"
        );
        assert_eq!(
            batch.column(2).as_string::<i32>().value(2),
            "file:///in/IL-101-3.csv"
        );

        // Only lineage kept (a count of rows): the batch still has the rows.
        let counted = ScanColumns::new(layout, Some(&[width + 2])).unwrap();
        assert_eq!(counted.batch(&made, &file(1)).unwrap().num_rows(), 3);
        // A reader that made too few columns is an error, not a panic.
        let err = columns.batch(&made[1..], &file(7)).unwrap_err().to_string();
        assert!(err.contains("IL-101-3.csv"), "{err}");
    }
}
