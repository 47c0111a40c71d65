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

/// `batches` as CSV text, with the header line first when `header`: arrow's writer, or for the
/// types jobs make, [`fast_csv`]'s, which writes the same bytes in a fraction of the time.
fn csv_text(batches: &[RecordBatch], header: bool) -> Result<Vec<u8>, ArrowError> {
    // Sized for the text up front: a buffer that grows copies what it holds each time.
    let mut text = Vec::with_capacity(batches.iter().map(csv_text_room).sum::<usize>() + 4096);
    if header {
        if let Some(first) = batches.first() {
            arrow_csv(&RecordBatch::new_empty(first.schema()), true, &mut text)?;
        }
    }
    for batch in batches {
        if !fast_csv::write(batch, &mut text) {
            arrow_csv(batch, false, &mut text)?;
        }
    }
    Ok(text)
}

/// Bytes enough for most batches' CSV text: each text column's bytes, and per row a comma and the
/// widest usual form of every other field (a larger text only grows the buffer).
fn csv_text_room(batch: &RecordBatch) -> usize {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::DataType;
    let rows = batch.num_rows();
    let per_column = |column: &datafusion::arrow::array::ArrayRef| match column.data_type() {
        DataType::Utf8 => {
            let offsets = column.as_string::<i32>().value_offsets();
            let bytes = offsets[offsets.len() - 1] - offsets[0];
            bytes as usize + rows
        }
        DataType::Date32 => rows * 11,
        DataType::Timestamp(..) => rows * 28,
        _ => rows * 21,
    };
    batch.columns().iter().map(per_column).sum::<usize>() + rows
}

/// Writes `batches` as CSV, the header line first, to `out`, in order. Formatting is most of the
/// cost of printing (a 10M-transaction province's 3.4M rows take about a core-second): texts of a
/// few batches each are formatted on rayon's pool, a few ahead of the one the calling thread
/// writes, so neither the writes (a copy into the page cache) nor a slow text leave a core
/// waiting. The texts ahead bound the formatted text held in memory.
fn write_csv_in_order(batches: &[RecordBatch], out: &mut dyn Write) -> Result<(), ArrowError> {
    /// Batches formatted as one text, by one task.
    const BATCHES_PER_TEXT: usize = 2;
    let ahead = 2 * rayon::current_num_threads().max(1) + 1;
    let mut parts = batches.chunks(BATCHES_PER_TEXT).enumerate();
    let mut pending = std::collections::VecDeque::with_capacity(ahead);
    let failed = || ArrowError::ComputeError("CSV formatting failed".into());
    loop {
        while pending.len() < ahead {
            let Some((i, part)) = parts.next() else {
                break;
            };
            // A task of rayon's pool owns what it formats: the batches' arrays are shared, not
            // copied.
            let part = part.to_vec();
            let (send, text) = std::sync::mpsc::sync_channel(1);
            rayon::spawn(move || {
                let formatted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    csv_text(&part, i == 0)
                }));
                // The writer gone (it stopped at an error) wants nothing more.
                let _ = send.send(formatted);
            });
            pending.push_back(text);
        }
        let Some(text) = pending.pop_front() else {
            return Ok(());
        };
        let text = text.recv().map_err(|_| failed())?.map_err(|_| failed())??;
        out.write_all(&text)?;
    }
}

/// One batch as CSV through arrow's writer, appended to `text`.
fn arrow_csv(batch: &RecordBatch, header: bool, text: &mut Vec<u8>) -> Result<(), ArrowError> {
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(header)
        .with_timestamp_tz_format(TIMESTAMP_FORMAT.to_string())
        .build(text);
    writer.write(&timestamps_as_text(batch)?)
}

/// CSV rows written field by field for the column types jobs make (text, integers, decimals,
/// dates, UTC timestamps), byte for byte as arrow's writer writes them: fields quoted only when
/// they hold a comma, a quote or a line break, nulls empty, decimals with all their scale digits,
/// dates as `YYYY-MM-DD`. Arrow formats each value through `fmt` into a new string; printing a
/// 10M-transaction province's 3.4M rows was a fifth of its dry run.
mod fast_csv {
    use datafusion::arrow::array::{
        Array, AsArray, Date32Array, Decimal128Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{
        DataType, Date32Type, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    };
    use datafusion::arrow::record_batch::RecordBatch;

    use crate::values::{decimal_bytes, NUMBER_ROOM};

    enum Column<'a> {
        /// Text, and whether any of the batch's values may need quotes: when none of the
        /// column's bytes is a comma, quote or line break (one search over its values' buffer),
        /// no value is looked at again.
        Text(&'a StringArray, bool),
        Integer(&'a Int64Array),
        Decimal(&'a Decimal128Array, u32),
        /// Dates formatted so far: a province covers a few days, which the result's order
        /// (store, item, date) visits in turn.
        Date(&'a Date32Array, Box<DateTexts>),
        /// The last value and its field's bytes, kept: a job's `source_time` repeats for a whole
        /// file.
        UtcMicros(&'a TimestampMicrosecondArray, Option<(i64, Vec<u8>)>),
    }

    /// Texts of recent dates, one slot per day modulo 8, so a week of days never evicts itself.
    type DateTexts = [Option<(i32, [u8; 10])>; 8];

    /// Appends `batch`'s rows to `out`; false (and nothing appended) when a column's type is not
    /// one written here.
    pub fn write(batch: &RecordBatch, out: &mut Vec<u8>) -> bool {
        // A record of one empty field is written `""` by arrow's writer: left to it.
        if batch.num_columns() < 2 {
            return false;
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for column in batch.columns() {
            columns.push(match column.data_type() {
                DataType::Utf8 => {
                    let strings = column.as_string::<i32>();
                    Column::Text(strings, may_need_quotes(strings))
                }
                DataType::Int64 => Column::Integer(column.as_primitive::<Int64Type>()),
                // Decimal128's scale is at most 38 (its precision); anything else goes to arrow.
                DataType::Decimal128(_, scale) if (0..=38).contains(scale) => {
                    Column::Decimal(column.as_primitive::<Decimal128Type>(), *scale as u32)
                }
                DataType::Date32 => {
                    Column::Date(column.as_primitive::<Date32Type>(), Box::new([None; 8]))
                }
                DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
                    Column::UtcMicros(column.as_primitive::<TimestampMicrosecondType>(), None)
                }
                _ => return false,
            });
        }
        let start = out.len();
        for row in 0..batch.num_rows() {
            for (i, column) in columns.iter_mut().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !field(column, row, out) {
                    out.truncate(start);
                    return false;
                }
            }
            out.push(b'\n');
        }
        true
    }

    /// Appends one field; false when the value is one arrow writes differently (a date outside
    /// years 0 to 9999, a timestamp out of range).
    fn field(column: &mut Column<'_>, row: usize, out: &mut Vec<u8>) -> bool {
        match column {
            Column::Text(a, false) if a.is_valid(row) => {
                out.extend_from_slice(a.value(row).as_bytes())
            }
            Column::Text(a, true) if a.is_valid(row) => text(a.value(row).as_bytes(), out),
            Column::Integer(a) if a.is_valid(row) => integer(a.value(row) as i128, out),
            Column::Decimal(a, scale) if a.is_valid(row) => decimal(a.value(row), *scale, out),
            Column::Date(a, seen) if a.is_valid(row) => {
                let days = a.value(row);
                let slot = &mut seen[(days & 7) as usize];
                match slot {
                    Some((known, text)) if *known == days => out.extend_from_slice(text),
                    _ => {
                        let mut text = [0u8; 10];
                        if !date(days, &mut text) {
                            return false;
                        }
                        out.extend_from_slice(&text);
                        *slot = Some((days, text));
                    }
                }
            }
            Column::UtcMicros(a, last) if a.is_valid(row) => {
                let v = a.value(row);
                if last.as_ref().is_none_or(|(seen, _)| *seen != v) {
                    let Some(time) = chrono::DateTime::from_timestamp_micros(v) else {
                        return false;
                    };
                    let mut field = Vec::new();
                    text(
                        time.format(super::TIMESTAMP_FORMAT).to_string().as_bytes(),
                        &mut field,
                    );
                    *last = Some((v, field));
                }
                if let Some((_, field)) = last {
                    out.extend_from_slice(field);
                }
            }
            // A null is an empty field.
            _ => {}
        }
        true
    }

    /// Whether `bytes` hold a byte that makes CSV quote a field: a comma, a quote, CR or LF.
    fn needs_quotes(bytes: &[u8]) -> bool {
        memchr::memchr3(b',', b'"', b'\n', bytes).is_some()
            || memchr::memchr(b'\r', bytes).is_some()
    }

    /// Whether any value of `strings` holds a byte that makes CSV quote a field.
    fn may_need_quotes(strings: &StringArray) -> bool {
        let offsets = strings.value_offsets();
        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
            return false;
        };
        // The bytes the array's values span (a slice of an array may have more around them).
        needs_quotes(&strings.value_data()[first as usize..last as usize])
    }

    fn text(value: &[u8], out: &mut Vec<u8>) {
        if !needs_quotes(value) {
            out.extend_from_slice(value);
            return;
        }
        out.push(b'"');
        for &b in value {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }

    fn integer(value: i128, out: &mut Vec<u8>) {
        decimal(value, 0, out);
    }

    /// `123` at scale 2 is `1.23`; `-5` is `-0.05`; scale 0 has no point.
    fn decimal(value: i128, scale: u32, out: &mut Vec<u8>) {
        let mut buf = [0u8; NUMBER_ROOM];
        out.extend_from_slice(decimal_bytes(value, scale, &mut buf));
    }

    /// Days since 1970-01-01 as `YYYY-MM-DD`, for years 0 to 9999.
    fn date(days: i32, text: &mut [u8; 10]) -> bool {
        let Some(date) = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(days.into())))
        else {
            return false;
        };
        use chrono::Datelike;
        let year = date.year();
        if !(0..=9999).contains(&year) {
            return false;
        }
        let (year, month, day) = (year as u32, date.month(), date.day());
        *text = [
            b'0' + (year / 1000) as u8,
            b'0' + (year / 100 % 10) as u8,
            b'0' + (year / 10 % 10) as u8,
            b'0' + (year % 10) as u8,
            b'-',
            b'0' + (month / 10) as u8,
            b'0' + (month % 10) as u8,
            b'-',
            b'0' + (day / 10) as u8,
            b'0' + (day % 10) as u8,
        ];
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use datafusion::arrow::array::ArrayRef;
        use std::sync::Arc;

        fn arrow_text(batch: &RecordBatch) -> Vec<u8> {
            let mut text = Vec::new();
            super::super::arrow_csv(batch, false, &mut text).unwrap();
            text
        }

        #[test]
        fn rows_are_written_as_arrows_writer_writes_them() {
            let amounts: Vec<Option<i128>> = vec![
                Some(0),
                Some(5),
                Some(-5),
                Some(-(10i128.pow(30)) - 7),
                Some(123_456_789),
                Some(-99_999_999_999_999_999),
                None,
                Some(i128::from(i64::MAX)),
            ];
            let n = amounts.len();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![
                    Some("plain"),
                    Some("a,b"),
                    Some("say \"hi\""),
                    Some("two\nlines"),
                    Some(""),
                    None,
                    Some(" padded "),
                    Some("crlf\r\n"),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(0),
                    Some(-1),
                    Some(i64::MIN),
                    Some(i64::MAX),
                    None,
                    Some(42),
                    Some(7),
                    Some(-42),
                ])),
                Arc::new(
                    Decimal128Array::from(amounts.clone())
                        .with_precision_and_scale(38, 2)
                        .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from(amounts)
                        .with_precision_and_scale(38, 0)
                        .unwrap(),
                ),
                Arc::new(Date32Array::from(vec![
                    Some(0),
                    Some(-1),
                    Some(20_000),
                    None,
                    Some(-719_528),
                    Some(2_932_896),
                    Some(19_723),
                    Some(1),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(0),
                        Some(0),
                        Some(1_700_000_000_123_456),
                        None,
                        Some(-1),
                        Some(1_700_000_000_123_456),
                        Some(1_700_000_000_123_456),
                        Some(1),
                    ])
                    .with_timezone("UTC"),
                ),
            ];
            let batch = RecordBatch::try_from_iter(
                ["s", "i", "d2", "d0", "day", "at"].into_iter().zip(columns),
            )
            .unwrap();
            assert_eq!(batch.num_rows(), n);
            let mut fast = Vec::new();
            assert!(write(&batch, &mut fast));
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(arrow_text(&batch)).unwrap()
            );
        }

        #[test]
        fn a_slice_is_quoted_by_its_own_values_not_its_arrays() {
            // The array's buffer holds quoted values around a slice that needs none, and the
            // other way round; each slice is written as arrow writes it.
            let text: ArrayRef = Arc::new(StringArray::from(vec![
                Some("a,b"),
                Some("plain"),
                None,
                Some("x"),
                Some("say \"q\""),
                Some("cr\r"),
            ]));
            let n: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6]));
            let batch = RecordBatch::try_from_iter([("s", text), ("n", n)]).unwrap();
            for (offset, len) in [(1, 3), (0, 2), (3, 2), (5, 1), (0, 6), (2, 1)] {
                let slice = batch.slice(offset, len);
                let mut fast = Vec::new();
                assert!(write(&slice, &mut fast));
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(arrow_text(&slice)).unwrap(),
                    "rows {offset}..{}",
                    offset + len
                );
            }
        }

        #[test]
        fn numbers_print_as_rust_prints_them() {
            let mut values: Vec<i128> = (-1000..=100_000).collect();
            for power in 0..39 {
                let p = 10i128.pow(power);
                values.extend([p - 1, p, p + 1, -p]);
                values.extend(p.checked_mul(7));
            }
            values.extend([
                i64::MAX.into(),
                i64::MIN.into(),
                u64::MAX.into(),
                i128::MAX,
                i128::MIN + 1,
            ]);
            for v in values {
                let mut out = Vec::new();
                integer(v, &mut out);
                assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
                for scale in [1u32, 2, 5, 19, 20] {
                    let mut out = Vec::new();
                    decimal(v, scale, &mut out);
                    let unit = 10u128.pow(scale);
                    let m = v.unsigned_abs();
                    let sign = if v < 0 { "-" } else { "" };
                    let want = format!(
                        "{sign}{}.{:0width$}",
                        m / unit,
                        m % unit,
                        width = scale as usize
                    );
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        want,
                        "{v} at scale {scale}"
                    );
                }
            }
        }

        #[test]
        fn dates_sharing_a_remembered_slot_are_each_written_right() {
            // Days 8 apart share a slot; a week's days each have their own; negative days too.
            let days: Vec<i32> = [
                0, 8, 0, 16, -8, -1, 7, 1, 2, 3, 4, 5, 6, 7, 8, 20_000, -719_528,
            ]
            .repeat(3);
            let n = days.len();
            let batch = RecordBatch::try_from_iter([
                ("day", Arc::new(Date32Array::from(days)) as ArrayRef),
                ("n", Arc::new(Int64Array::from(vec![0; n])) as ArrayRef),
            ])
            .unwrap();
            let mut fast = Vec::new();
            assert!(write(&batch, &mut fast));
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(arrow_text(&batch)).unwrap()
            );
        }

        #[test]
        fn dates_past_year_9999_and_other_types_are_left_to_arrow() {
            let far: ArrayRef = Arc::new(Date32Array::from(vec![3_000_000]));
            let text: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
            let batch = RecordBatch::try_from_iter([("s", text.clone()), ("day", far)]).unwrap();
            let mut out = b"kept".to_vec();
            assert!(!write(&batch, &mut out));
            assert_eq!(out, b"kept");
            let flag: ArrayRef = Arc::new(datafusion::arrow::array::BooleanArray::from(vec![true]));
            let batch = RecordBatch::try_from_iter([("s", text), ("flag", flag)]).unwrap();
            assert!(!write(&batch, &mut Vec::new()));
        }
    }
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
            write_csv_in_order(batches, out)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn csv_of_many_batches_comes_out_whole_and_in_order() {
        // More texts than are formatted ahead, of uneven sizes (one empty), so texts finish out
        // of order on the pool.
        let batches: Vec<RecordBatch> = (0..41usize)
            .map(|b| {
                let rows = (b * 37) % 500;
                let n: ArrayRef = Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|r| (b * 1000 + r) as i64),
                ));
                let s: ArrayRef = Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|r| format!("batch {b}, row {r}")),
                ));
                RecordBatch::try_from_iter([("n", n), ("s", s)]).unwrap()
            })
            .collect();
        let mut written = Vec::new();
        write_rows(
            OutputFormat::Csv,
            &batches[0].schema(),
            &batches,
            &mut written,
        )
        .unwrap();
        let mut expected = b"n,s\n".to_vec();
        for batch in &batches {
            arrow_csv(batch, false, &mut expected).unwrap();
        }
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn a_failed_write_is_an_error_not_a_hang() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "disk full",
                ))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let n: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
        let s: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..100).map(|r| r.to_string()),
        ));
        let batch = RecordBatch::try_from_iter([("n", n), ("s", s)]).unwrap();
        let batches = vec![batch; 30];
        let err =
            write_rows(OutputFormat::Csv, &batches[0].schema(), &batches, &mut Full).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
