//! Reading one Parquet file as a partition: the layout's columns are taken by name and converted
//! exactly to the declared types (strings are parsed with the same strict rules as CSV; floating
//! point amounts are refused, since money must stay exact).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Int64Array, StringArray,
};
use datafusion::arrow::compute::{cast_with_options, filter, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt};

use super::{BadRow, KeyCheck, RankedFile, ScanColumns, SourceStats, BATCH_ROWS};
use crate::layout::{ColumnType, FieldRef, Layout};
use crate::storage::ObjectFileReader;

#[derive(Debug)]
pub(crate) struct ParquetPartition {
    pub file: RankedFile,
    pub layout: Layout,
    pub columns: ScanColumns,
    pub stats: Arc<SourceStats>,
    /// Set when the file is read in a key range: every row's key is checked against it.
    pub key_check: Option<KeyCheck>,
}

impl PartitionStream for ParquetPartition {
    fn schema(&self) -> &SchemaRef {
        &self.columns.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (ranked, layout, scan_columns, stats, key_check) = (
            self.file.clone(),
            self.layout.clone(),
            self.columns.clone(),
            self.stats.clone(),
            self.key_check.clone(),
        );
        let batches = futures::stream::once(async move {
            let file = ranked.file.clone();
            let reader = ObjectFileReader::new(file.store.clone(), file.path.clone(), file.size);
            let url = file.url.clone();
            let fail = move |e: &dyn std::fmt::Display| {
                DataFusionError::Execution(format!("{url}: cannot read Parquet: {e}"))
            };
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|e| fail(&e))?;
            let file_schema = builder.schema().clone();
            let mut roots = Vec::new();
            for col in &layout.columns {
                let idx = file_schema.index_of(&col.name).map_err(|_| {
                    DataFusionError::Execution(format!(
                        "{}: schema mismatch: no column `{}` (the file has: {})",
                        file.url,
                        col.name,
                        file_schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                check_convertible(
                    &file.url,
                    &col.name,
                    col.ty,
                    file_schema.field(idx).data_type(),
                )?;
                roots.push(idx);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            let stream = builder
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| fail(&e))?;
            let mut rows_before = 0u64;
            Ok::<_, DataFusionError>(stream.map(move |batch| {
                crate::failpoint("parquet-batch");
                let batch = batch.map_err(|e| fail(&e))?;
                let first_row = rows_before;
                rows_before += batch.num_rows() as u64;
                let check = key_check.as_ref();
                convert(
                    batch,
                    first_row,
                    &ranked,
                    &layout,
                    &scan_columns,
                    &stats,
                    check,
                )
            }))
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(
            self.columns.schema.clone(),
            batches,
        ))
    }
}

/// Refuses, up front, column types that cannot become the declared type exactly.
fn check_convertible(url: &str, name: &str, want: ColumnType, have: &DataType) -> Result<()> {
    let ok = match (want, have) {
        (_, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => true,
        (ColumnType::String, _) => false,
        (
            ColumnType::Decimal { scale, .. },
            DataType::Decimal128(_, s) | DataType::Decimal64(_, s) | DataType::Decimal32(_, s),
        ) => *s <= scale,
        (ColumnType::Decimal { .. } | ColumnType::Integer, t) => t.is_integer(),
        (ColumnType::Date, DataType::Date32 | DataType::Date64) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(DataFusionError::Execution(format!(
            "{url}: schema mismatch: column `{name}` is {have}, which cannot be read exactly as {want}"
        )))
    }
}

/// Converts one batch (its first row is the file's row `first_row + 1`) to the declared types,
/// refusing (and dropping) rows with nulls or values that do not parse, checks the kept rows' keys
/// when the file is read in a key range, then keeps the scan's columns ([`ScanColumns`]).
fn convert(
    batch: RecordBatch,
    first_row: u64,
    ranked: &RankedFile,
    layout: &Layout,
    scan_columns: &ScanColumns,
    stats: &SourceStats,
    key_check: Option<&KeyCheck>,
) -> Result<RecordBatch> {
    let file = &ranked.file;
    let rows = batch.num_rows();
    let mut keep = vec![true; rows];
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.columns.len());
    for col in &layout.columns {
        let source = batch
            .column_by_name(&col.name)
            .expect("projected above")
            .clone();
        let target = col.ty.arrow_type();
        let converted: ArrayRef = match source.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                if target != DataType::Utf8 =>
            {
                parse_strings(
                    &cast_with_options(&source, &DataType::Utf8, &CastOptions::default())?,
                    col.ty,
                    &mut keep,
                )
            }
            _ => cast_with_options(
                &source,
                &target,
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )?,
        };
        for (row, k) in keep.iter_mut().enumerate() {
            if converted.is_null(row) {
                *k = false;
            }
        }
        columns.push(converted);
    }
    for (row, k) in keep.iter().enumerate() {
        if !k {
            let bad = BadRow {
                file: file.url.clone(),
                line: first_row + row as u64 + 1,
                reason: "a declared column is null or does not parse".into(),
            };
            if let Err(bad) = stats.refuse(bad) {
                return Err(DataFusionError::Execution(format!(
                    "{bad} (row number in the Parquet file; raise --max-bad-rows to skip such rows)"
                )));
            }
        }
    }
    if let Some(check) = key_check {
        let keys = columns[check.column].as_string::<i32>();
        for (row, key) in keys.iter().enumerate() {
            let key = key.unwrap_or_default();
            if keep[row] && !check.admits(key) {
                let row = format!("row {}", first_row + row as u64 + 1);
                return Err(check.misplaced(&file.url, row, key));
            }
        }
    }
    let dropped = keep.iter().filter(|k| !**k).count();
    if dropped > 0 {
        let mask = BooleanArray::from(keep);
        columns = columns
            .iter()
            .map(|c| filter(c, &mask))
            .collect::<std::result::Result<_, _>>()?;
    }
    let kept = rows - dropped;
    stats
        .rows_in
        .fetch_add(kept as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(scan_columns.batch(&columns, ranked)?)
}

/// Parses a string column with the declared type's strict rules; unparsable values become nulls
/// (and their rows are marked not to keep).
fn parse_strings(source: &ArrayRef, ty: ColumnType, keep: &mut [bool]) -> ArrayRef {
    let strings = source.as_string::<i32>();
    let values = strings.iter().enumerate().map(|(row, v)| {
        let parsed = v.and_then(|text| ty.parse_ref(text).ok());
        if parsed.is_none() {
            keep[row] = false;
        }
        parsed
    });
    match ty {
        ColumnType::Decimal { precision, scale } => Arc::new(
            values
                .map(|v| match v {
                    Some(FieldRef::Decimal(d)) => Some(d),
                    _ => None,
                })
                .collect::<Decimal128Array>()
                .with_precision_and_scale(precision, scale)
                .expect("declared precision and scale are valid"),
        ),
        ColumnType::Integer => Arc::new(
            values
                .map(|v| match v {
                    Some(FieldRef::Integer(i)) => Some(i),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        ColumnType::Date => Arc::new(
            values
                .map(|v| match v {
                    Some(FieldRef::Date(d)) => Some(d),
                    _ => None,
                })
                .collect::<Date32Array>(),
        ),
        ColumnType::String => Arc::new(
            values
                .map(|v| match v {
                    Some(FieldRef::String(s)) => Some(s.to_string()),
                    _ => None,
                })
                .collect::<StringArray>(),
        ),
    }
}
