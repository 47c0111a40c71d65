//! Reading one validated CSV file (no header, the layout's columns first) as a partition.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Decimal128Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{BadRow, KeyCheck, RankedFile, SourceStats, BATCH_ROWS};
use crate::layout::{trim_field, ColumnType, Layout, Parsed, RowText};

#[derive(Debug)]
pub(crate) struct CsvPartition {
    pub file: RankedFile,
    pub layout: Layout,
    pub schema: SchemaRef,
    pub stats: Arc<SourceStats>,
    /// Set when the file is read in a key range: every row's key is checked against it.
    pub key_check: Option<KeyCheck>,
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // Parsing is CPU work on a blocking thread; batches flow back through a small channel,
        // which also bounds how far the parser runs ahead of the query.
        let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(2);
        let reader = CsvReader {
            ranked: self.file.clone(),
            layout: self.layout.clone(),
            schema: self.schema.clone(),
            stats: self.stats.clone(),
            key_check: self.key_check.clone(),
        };
        tokio::spawn(async move {
            let error_tx = tx.clone();
            let file = reader.ranked.file.clone();
            let url = file.url.clone();
            let joined = match file.local_path.clone() {
                // A local file is read with plain blocking reads on the parsing thread: going
                // through the object store would cost a thread hand-off per small chunk.
                Some(path) => {
                    tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
                        Ok(file) => reader.read(file, &tx),
                        Err(e) => {
                            let _ = tx.blocking_send(Err(DataFusionError::Execution(format!(
                                "cannot read {}: {e}",
                                file.url
                            ))));
                        }
                    })
                    .await
                }
                None => {
                    let body = match file.store.get(&file.path).await {
                        Ok(body) => body.into_stream().map_err(std::io::Error::other),
                        Err(e) => {
                            let _ = tx
                                .send(Err(DataFusionError::Execution(format!(
                                    "cannot read {}: {e}",
                                    file.url
                                ))))
                                .await;
                            return;
                        }
                    };
                    let body = SyncIoBridge::new(StreamReader::new(body));
                    tokio::task::spawn_blocking(move || reader.read(body, &tx)).await
                }
            };
            if let Err(e) = joined {
                let _ = error_tx
                    .send(Err(DataFusionError::Execution(format!(
                        "reading {url} failed: {e}"
                    ))))
                    .await;
            }
        });
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// Column builders for the layout's declared columns.
enum ColumnBuilder {
    String(StringBuilder),
    Decimal(Decimal128Builder, u8, i8),
    Integer(Int64Builder),
    Date(Date32Builder),
}

impl ColumnBuilder {
    fn new(ty: ColumnType) -> ColumnBuilder {
        match ty {
            ColumnType::String => {
                ColumnBuilder::String(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8))
            }
            ColumnType::Decimal { precision, scale } => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(BATCH_ROWS),
                precision,
                scale,
            ),
            ColumnType::Integer => ColumnBuilder::Integer(Int64Builder::with_capacity(BATCH_ROWS)),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(BATCH_ROWS)),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnBuilder::String(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(*p, *s)?)
            }
            ColumnBuilder::Integer(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
        })
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuilder::String(b) => b.len(),
            ColumnBuilder::Decimal(b, ..) => b.len(),
            ColumnBuilder::Integer(b) => b.len(),
            ColumnBuilder::Date(b) => b.len(),
        }
    }
}

/// What reading one CSV file needs, moved onto its parsing thread.
struct CsvReader {
    ranked: RankedFile,
    layout: Layout,
    schema: SchemaRef,
    stats: Arc<SourceStats>,
    key_check: Option<KeyCheck>,
}

/// How job inputs are read as CSV: no header, and rows may carry more fields than the layout's
/// columns (free-form extras, ignored). The readers and the key-range planner's first-row look
/// ([`super::file_keys`]) must see the same rows.
pub(super) fn csv_reader_builder() -> csv::ReaderBuilder {
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true);
    builder
}

impl CsvReader {
    /// Parses the file from `reader` into batches sent on `tx`; the first error is sent instead
    /// and ends the read.
    fn read<R: Read>(self, reader: R, tx: &mpsc::Sender<Result<RecordBatch>>) {
        let CsvReader {
            ranked,
            layout,
            schema,
            stats,
            key_check,
        } = &self;
        let key_check = key_check.as_ref();
        let file = &ranked.file;
        let fail = |message: String| {
            let _ = tx.blocking_send(Err(DataFusionError::Execution(message)));
        };
        let mut csv = csv_reader_builder()
            .buffer_capacity(1 << 20)
            .from_reader(reader);
        let mut record = csv::ByteRecord::new();
        let mut builders: Vec<ColumnBuilder> = layout
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty))
            .collect();
        let mut parsed: Vec<Parsed> = Vec::with_capacity(layout.columns.len());
        let mut bytes_reported = 0u64;
        loop {
            match csv.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    return fail(format!("{} line {line}: not valid CSV: {e}", file.url));
                }
            }
            let row_text = RowText::new(record.as_slice());
            let field = |i: usize| row_text.field(&record[i]);
            match layout.parse_text_row(record.len(), field, &mut parsed) {
                Ok(()) => {
                    for (builder, value) in builders.iter_mut().zip(&parsed) {
                        match (builder, *value) {
                            (ColumnBuilder::String(b), Parsed::String(i)) => {
                                // Checked as UTF-8 by parse_text_row.
                                let text = trim_field(field(i).unwrap_or_default());
                                if let Some(check) = key_check.filter(|c| c.column == i) {
                                    if !check.admits(text) {
                                        let line = record.position().map(|p| p.line()).unwrap_or(0);
                                        let misplaced = check.misplaced(
                                            &file.url,
                                            format!("line {line}"),
                                            text,
                                        );
                                        let _ = tx.blocking_send(Err(misplaced));
                                        return;
                                    }
                                }
                                b.append_value(text);
                            }
                            (ColumnBuilder::Decimal(b, ..), Parsed::Decimal(v)) => {
                                b.append_value(v)
                            }
                            (ColumnBuilder::Integer(b), Parsed::Integer(v)) => b.append_value(v),
                            (ColumnBuilder::Date(b), Parsed::Date(v)) => b.append_value(v),
                            _ => unreachable!("builders are made from the same layout"),
                        }
                    }
                }
                Err(reason) => {
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    if let Err(row) = stats.refuse(BadRow {
                        file: file.url.clone(),
                        line,
                        reason: reason.to_string(),
                    }) {
                        return fail(format!(
                        "{row} (a job's input must be validated rows; raise --max-bad-rows to skip such rows)"
                    ));
                    }
                }
            }
            if builders[0].len() >= BATCH_ROWS {
                let pos = csv.position().byte();
                stats
                    .bytes_in
                    .fetch_add(pos - bytes_reported, Ordering::Relaxed);
                bytes_reported = pos;
                if !send_batch(&mut builders, ranked, schema, stats, tx) {
                    return;
                }
            }
        }
        stats
            .bytes_in
            .fetch_add(csv.position().byte() - bytes_reported, Ordering::Relaxed);
        if builders[0].len() > 0 {
            send_batch(&mut builders, ranked, schema, stats, tx);
        }
    }
}

/// Finishes the builders into a batch and sends it; false when the reader should stop.
fn send_batch(
    builders: &mut [ColumnBuilder],
    file: &RankedFile,
    schema: &SchemaRef,
    stats: &SourceStats,
    tx: &mpsc::Sender<Result<RecordBatch>>,
) -> bool {
    let rows = builders[0].len();
    let batch = builders
        .iter_mut()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<_>>>()
        .and_then(|mut columns| {
            columns.extend(file.lineage_columns(rows));
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        });
    let ok = batch.is_ok();
    stats.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    tx.blocking_send(batch).is_ok() && ok
}
