//! Printing result rows: CSV with a header, JSON (one array of objects), or an aligned table.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// Comma-separated with a header line.
    #[default]
    Csv,
    /// A JSON array of objects; decimals keep their exact digits.
    Json,
    /// An aligned text table for reading on a terminal.
    Table,
}

/// JSON numbers are floating point to most readers: decimals are written as strings that keep
/// every digit (`"1234567.90"`).
fn decimals_as_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Decimal128(..)) {
            columns.push(datafusion::arrow::compute::cast(column, &DataType::Utf8)?);
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
        } else {
            columns.push(column.clone());
            fields.push(field.as_ref().clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
}

/// The CSV form of a UTC timestamp.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// UTC microsecond timestamps as text, formatted once per distinct run of values: a job's
/// `source_time` repeats for every row of a file, and formatting each row anew was a tenth of a
/// province run.
fn timestamps_as_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    use datafusion::arrow::array::{Array, AsArray, StringBuilder};
    use datafusion::arrow::datatypes::{
        DataType, Field, Schema, TimeUnit, TimestampMicrosecondType,
    };
    let is_utc_micros = |t: &DataType| matches!(t, DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC");
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| is_utc_micros(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !is_utc_micros(field.data_type()) {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let values = column.as_primitive::<TimestampMicrosecondType>();
        let mut text = StringBuilder::with_capacity(values.len(), values.len() * 27);
        let mut last: Option<(i64, String)> = None;
        for i in 0..values.len() {
            if values.is_null(i) {
                text.append_null();
                continue;
            }
            let v = values.value(i);
            match &last {
                Some((seen, formatted)) if *seen == v => text.append_value(formatted),
                _ => {
                    let formatted = chrono::DateTime::from_timestamp_micros(v)
                        .ok_or_else(|| {
                            ArrowError::CastError(format!("timestamp {v} is out of range"))
                        })?
                        .format(TIMESTAMP_FORMAT)
                        .to_string();
                    text.append_value(&formatted);
                    last = Some((v, formatted));
                }
            }
        }
        fields.push(Field::new(
            field.name(),
            DataType::Utf8,
            field.is_nullable(),
        ));
        columns.push(std::sync::Arc::new(text.finish()));
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
}

/// `batches` as CSV text (arrow's writer), with the header line first when `header`.
fn csv_text(batches: &[RecordBatch], header: bool) -> Result<Vec<u8>, ArrowError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut text = Vec::with_capacity(rows * 96);
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(header)
        .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_string())
        .build(&mut text);
    for batch in batches {
        writer.write(&timestamps_as_text(batch)?)?;
    }
    drop(writer);
    Ok(text)
}

/// Writes `batches` to `out` in `format`.
pub fn write_rows(
    format: OutputFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut dyn Write,
) -> Result<(), ArrowError> {
    match format {
        OutputFormat::Csv => {
            if batches.is_empty() {
                out.write_all(&csv_text(&[RecordBatch::new_empty(schema.clone())], true)?)?;
            }
            // Formatting is most of the cost of printing (about half a second for a province's
            // 781K rows on one core): each window of batches is formatted on all cores at once,
            // then written in order. Windows keep the formatted text in memory small.
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            let per_worker = 2;
            for (w, window) in batches.chunks(workers * per_worker).enumerate() {
                let texts: Vec<Result<Vec<u8>, ArrowError>> = std::thread::scope(|scope| {
                    let parts: Vec<_> = window
                        .chunks(per_worker)
                        .enumerate()
                        .map(|(p, part)| scope.spawn(move || csv_text(part, w == 0 && p == 0)))
                        .collect();
                    parts
                        .into_iter()
                        .map(|part| {
                            part.join().unwrap_or_else(|_| {
                                Err(ArrowError::ComputeError("CSV formatting failed".into()))
                            })
                        })
                        .collect()
                });
                for text in texts {
                    out.write_all(&text?)?;
                }
            }
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(out);
            for batch in batches {
                writer.write(&decimals_as_text(batch)?)?;
            }
            writer.finish()?;
            writer.into_inner().write_all(b"\n")?;
        }
        OutputFormat::Table => {
            let table = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{table}")?;
        }
    }
    Ok(())
}
