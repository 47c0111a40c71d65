//! Parquet column chunks for columns whose values come in long runs, encoded per run instead of
//! per value.
//!
//! In a base file several columns hold one value for thousands of rows in a row: a new file
//! group's commit time, partition path and file name, the job's province, the partition's date,
//! a store's id, source file and source time (the query sorts rows by store). arrow-rs's column
//! writer interns, compares and levels every value: about 35 ns a value, 0.13 s of CPU for those
//! eight columns of one 480,000-row file, for chunks of a few hundred bytes. A [`RunsColumn`]
//! keeps a column's runs (value, rows) and makes the chunk a dictionary writer makes from them:
//!
//! - a PLAIN dictionary page of the distinct values, in the order they first appear;
//! - v1 data pages of at most the properties' row count, each holding the RLE definition
//!   levels (a nullable column) and the RLE_DICTIONARY indices, every run one RLE run;
//! - the chunk's statistics (min, max, null count), its column index and offset index, as the
//!   properties ask; values are stored whole (no truncated bounds).
//!
//! The chunk goes into the row group through arrow-rs's own `append_column`, as any encoded chunk.
//!
//! Invariants: a run never spans two data pages; every dictionary value is used by some run (so
//! the chunk's min and max are the dictionary's); pages carry every row of the column, in order.
//! Short runs are still encoded exactly, only less compactly: whether a column is worth it is
//! decided on its row group's first batch ([`RunsColumn::suits`]).

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{ArrowNativeType, DataType, Int32Type, TimeUnit, ToByteSlice};
use datafusion::parquet::basic::{Compression, Encoding, PageType, Type as PhysicalType};
use datafusion::parquet::column::page::{CompressedPage, Page, PageWriter};
use datafusion::parquet::column::writer::ColumnCloseResult;
use datafusion::parquet::data_type::ByteArray;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats,
};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::file::statistics::{Statistics, ValueStatistics};
use datafusion::parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use datafusion::parquet::schema::types::ColumnDescPtr;

/// A row group's first batch must average at least this many rows a run for a column to be
/// encoded by runs (a store's rows, a file group's commit time: thousands); the incoming rows'
/// string columns are gathered by run under the same rule (super::string_runs).
pub(super) const MIN_AVERAGE_RUN: usize = 16;

/// The key of a null run (nulls have no dictionary entry).
const NULL: u32 = u32::MAX;

/// `rows` rows in a row of one value: `key` into the dictionary, or [`NULL`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    key: u32,
    rows: u32,
}

/// How a column's values are stored in Parquet: the physical type's PLAIN bytes of one value
/// (without a byte array's length prefix), and how two of them compare.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int32,
    Int64,
    Bytes,
}

impl Kind {
    /// The kind for an Arrow type written as `physical`, if its Parquet values are the Arrow
    /// values unchanged (a timestamp in seconds is scaled by the writer, a decimal narrowed:
    /// those are left to it).
    fn of(data_type: &DataType, physical: PhysicalType) -> Option<Kind> {
        match (physical, data_type) {
            (PhysicalType::INT32, DataType::Int32 | DataType::Date32) => Some(Kind::Int32),
            (PhysicalType::INT64, DataType::Int64) => Some(Kind::Int64),
            (
                PhysicalType::INT64,
                DataType::Timestamp(
                    TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
                    _,
                ),
            ) => Some(Kind::Int64),
            (PhysicalType::BYTE_ARRAY, DataType::Utf8) => Some(Kind::Bytes),
            (PhysicalType::BYTE_ARRAY, DataType::Dictionary(key, value))
                if **key == DataType::Int32 && **value == DataType::Utf8 =>
            {
                Some(Kind::Bytes)
            }
            _ => None,
        }
    }

    /// Parquet's order of two values: signed integers, unsigned bytes.
    fn compare(self, a: &[u8], b: &[u8]) -> Ordering {
        match self {
            Kind::Int32 => int32(a).cmp(&int32(b)),
            Kind::Int64 => int64(a).cmp(&int64(b)),
            Kind::Bytes => a.cmp(b),
        }
    }
}

fn int32(bytes: &[u8]) -> i32 {
    i32::from_le_bytes(bytes.try_into().unwrap_or_default())
}

fn int64(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

/// Calls `each` with every run of equal values of `array` (`None`: nulls) and its length.
/// `array` must be of a type [`Kind::of`] accepts.
pub(super) fn for_each_run(array: &dyn Array, mut each: impl FnMut(Option<&[u8]>, usize)) {
    let nulls = array.logical_nulls();
    match array.data_type() {
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            runs(
                array.len(),
                nulls.as_ref(),
                |i, j| strings.value(i).as_bytes() == strings.value(j).as_bytes(),
                |i| strings.value(i).as_bytes(),
                &mut each,
            );
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_dictionary::<Int32Type>();
            let keys = dictionary.keys().values();
            let values = dictionary.values().as_string::<i32>();
            runs(
                array.len(),
                nulls.as_ref(),
                |i, j| keys[i] == keys[j],
                |i| values.value(keys[i] as usize).as_bytes(),
                &mut each,
            );
        }
        DataType::Int32 | DataType::Date32 => native_runs::<i32>(array, nulls.as_ref(), &mut each),
        _ => native_runs::<i64>(array, nulls.as_ref(), &mut each),
    }
}

/// [`for_each_run`] of a column of fixed-width integers (`T` their Arrow native type); a value
/// is its little-endian bytes in place (on a big-endian machine no column is encoded here, see
/// [`RunsColumn::suits`]).
fn native_runs<T: ArrowNativeType>(
    array: &dyn Array,
    nulls: Option<&NullBuffer>,
    each: &mut impl FnMut(Option<&[u8]>, usize),
) {
    let data = array.to_data();
    let values: &[T] = &data.buffer::<T>(0)[..array.len()];
    runs(
        array.len(),
        nulls,
        |i, j| values[i] == values[j],
        |i| values[i].to_byte_slice(),
        each,
    );
}

/// Runs of the `len` rows that `same(i, j)` says are equal (nulls form runs of their own),
/// the value of row `i` given by `value(i)`.
fn runs<'a>(
    len: usize,
    nulls: Option<&NullBuffer>,
    same: impl Fn(usize, usize) -> bool,
    value: impl Fn(usize) -> &'a [u8],
    each: &mut impl FnMut(Option<&[u8]>, usize),
) {
    let valid = |i: usize| nulls.is_none_or(|n| n.is_valid(i));
    let mut start = 0;
    while start < len {
        let is_valid = valid(start);
        let mut end = start + 1;
        while end < len && valid(end) == is_valid && (!is_valid || same(start, end)) {
            end += 1;
        }
        each(is_valid.then(|| value(start)), end - start);
        start = end;
    }
}

/// One column of a row group, kept as runs until the row group closes.
pub struct RunsColumn {
    descr: ColumnDescPtr,
    kind: Kind,
    /// The dictionary: each distinct value's PLAIN bytes, by key.
    values: Vec<Vec<u8>>,
    keys: HashMap<Vec<u8>, u32>,
    runs: Vec<Run>,
}

impl RunsColumn {
    /// Whether the column `descr` of a row group whose first batch holds `first` is worth
    /// encoding by runs under `props`: a flat column of a supported type, dictionary encoding
    /// allowed, a codec this module writes, and long runs in `first`.
    pub fn suits(descr: &ColumnDescPtr, props: &WriterProperties, first: &dyn Array) -> bool {
        let path = descr.path();
        cfg!(target_endian = "little")
            && descr.max_rep_level() == 0
            && descr.max_def_level() <= 1
            && (descr.max_def_level() == 1 || first.logical_null_count() == 0)
            && props.dictionary_enabled(path)
            && matches!(
                props.compression(path),
                Compression::SNAPPY | Compression::UNCOMPRESSED
            )
            && Kind::of(first.data_type(), descr.physical_type()).is_some()
            && {
                let mut runs = 0;
                for_each_run(first, |_, _| runs += 1);
                runs * MIN_AVERAGE_RUN <= first.len()
            }
    }

    /// An empty column; `first` (the batch [`RunsColumn::suits`] was asked about) gives its type.
    pub fn new(descr: ColumnDescPtr, first: &dyn Array) -> Result<RunsColumn, ParquetError> {
        let kind = Kind::of(first.data_type(), descr.physical_type()).ok_or_else(|| {
            ParquetError::General(format!(
                "column {} of type {} cannot be encoded by runs",
                descr.path(),
                first.data_type()
            ))
        })?;
        Ok(RunsColumn {
            descr,
            kind,
            values: Vec::new(),
            keys: HashMap::new(),
            runs: Vec::new(),
        })
    }

    /// Appends a batch's values (of the type the column was made for).
    pub fn push(&mut self, array: &dyn Array) -> Result<(), ParquetError> {
        if Kind::of(array.data_type(), self.descr.physical_type()) != Some(self.kind) {
            return Err(ParquetError::General(format!(
                "column {}: a batch of type {} after batches of another",
                self.descr.path(),
                array.data_type()
            )));
        }
        if self.descr.max_def_level() == 0 && array.logical_null_count() > 0 {
            return Err(ParquetError::General(format!(
                "column {} is required, and a batch has nulls in it",
                self.descr.path()
            )));
        }
        let mut failed = None;
        for_each_run(array, |value, rows| {
            let key = match value {
                None => NULL,
                Some(value) => self.key_of(value),
            };
            let Ok(rows) = u32::try_from(rows) else {
                failed = Some(rows);
                return;
            };
            match self.runs.last_mut() {
                Some(last) if last.key == key && last.rows.checked_add(rows).is_some() => {
                    last.rows += rows
                }
                _ => self.runs.push(Run { key, rows }),
            }
        });
        match failed {
            Some(rows) => Err(ParquetError::General(format!(
                "column {}: a run of {rows} equal values, more than a Parquet page counts",
                self.descr.path()
            ))),
            None => Ok(()),
        }
    }

    /// The dictionary key of `value`, added if new (once a run, not once a row).
    fn key_of(&mut self, value: &[u8]) -> u32 {
        if let Some(&key) = self.keys.get(value) {
            return key;
        }
        let key = self.values.len() as u32;
        self.values.push(value.to_vec());
        self.keys.insert(value.to_vec(), key);
        key
    }

    /// The encoded chunk (its bytes start at offset 0) and what the row group needs to splice it.
    pub fn finish(
        self,
        props: &WriterProperties,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let path = self.descr.path().clone();
        let compression = props.compression(&path);
        let statistics = props.statistics_enabled(&path);
        let nullable = self.descr.max_def_level() == 1;
        let bit_width = bit_width(self.values.len().saturating_sub(1) as u64);
        let page_rows = props
            .data_page_row_count_limit()
            .clamp(1, u32::MAX as usize) as u32;

        let mut sink = TrackedWrite::new(Vec::new());
        let mut pages = SerializedPageWriter::new(&mut sink);
        let (mut compressed_size, mut uncompressed_size) = (0u64, 0u64);

        // The dictionary page.
        let mut dictionary = Vec::new();
        for value in &self.values {
            if self.kind == Kind::Bytes {
                dictionary.extend_from_slice(&(value.len() as u32).to_le_bytes());
            }
            dictionary.extend_from_slice(value);
        }
        let spec = pages.write_page(compressed(compression, dictionary, |buf| {
            Page::DictionaryPage {
                buf,
                num_values: self.values.len() as u32,
                encoding: props.dictionary_page_encoding(),
                is_sorted: false,
            }
        })?)?;
        compressed_size += spec.compressed_size as u64;
        uncompressed_size += spec.uncompressed_size as u64;

        // The data pages, each of whole runs (a run longer than a page is cut in two).
        let mut column_index = ColumnIndexBuilder::new(self.descr.physical_type());
        let mut offset_index = OffsetIndexBuilder::new();
        let mut data_pages = 0;
        let mut first_data_page = None;
        let mut rows = 0u64;
        let mut nulls = 0u64;
        let mut runs = self.runs.iter().copied().peekable();
        let mut carried: Option<Run> = None;
        while carried.is_some() || runs.peek().is_some() {
            let mut page: Vec<Run> = Vec::new();
            let mut in_page = 0u32;
            while in_page < page_rows {
                let Some(run) = carried.take().or_else(|| runs.next()) else {
                    break;
                };
                let take = run.rows.min(page_rows - in_page);
                page.push(Run {
                    key: run.key,
                    rows: take,
                });
                in_page += take;
                if take < run.rows {
                    carried = Some(Run {
                        key: run.key,
                        rows: run.rows - take,
                    });
                }
            }
            let page_nulls: u64 = page
                .iter()
                .filter(|r| r.key == NULL)
                .map(|r| r.rows as u64)
                .sum();
            let mut buf = Vec::new();
            if nullable {
                let mut levels = Vec::new();
                for run in merged(page.iter().map(|r| (u32::from(r.key != NULL), r.rows))) {
                    rle_run(&mut levels, run.0, run.1, 1);
                }
                buf.extend_from_slice(&(levels.len() as u32).to_le_bytes());
                buf.extend_from_slice(&levels);
            }
            buf.push(bit_width);
            for (key, rows) in merged(
                page.iter()
                    .filter(|r| r.key != NULL)
                    .map(|r| (r.key, r.rows)),
            ) {
                rle_run(&mut buf, key, rows, bit_width);
            }
            let spec = pages.write_page(compressed(compression, buf, |buf| Page::DataPage {
                buf,
                num_values: in_page,
                encoding: props.dictionary_data_page_encoding(),
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            })?)?;
            first_data_page.get_or_insert(spec.offset);
            compressed_size += spec.compressed_size as u64;
            uncompressed_size += spec.uncompressed_size as u64;
            offset_index.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            offset_index.append_row_count(in_page as i64);
            let (min, max) = self.bounds(page.iter().map(|r| r.key));
            column_index.append(
                min.is_none(),
                min.map(<[u8]>::to_vec).unwrap_or_default(),
                max.map(<[u8]>::to_vec).unwrap_or_default(),
                page_nulls as i64,
            );
            data_pages += 1;
            rows += in_page as u64;
            nulls += page_nulls;
        }
        pages.close()?;
        let bytes = Bytes::from(sink.into_inner()?);

        let (min, max) = self.bounds(0..self.values.len() as u32);
        let mut metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(compression)
            .set_encodings(vec![
                props.dictionary_page_encoding(),
                Encoding::RLE,
                props.dictionary_data_page_encoding(),
            ])
            .set_page_encoding_stats(vec![
                PageEncodingStats {
                    page_type: PageType::DICTIONARY_PAGE,
                    encoding: props.dictionary_page_encoding(),
                    count: 1,
                },
                PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding: props.dictionary_data_page_encoding(),
                    count: data_pages,
                },
            ])
            .set_num_values(rows as i64)
            .set_total_compressed_size(compressed_size as i64)
            .set_total_uncompressed_size(uncompressed_size as i64)
            .set_dictionary_page_offset(Some(0))
            .set_data_page_offset(first_data_page.unwrap_or_default() as i64);
        if statistics != EnabledStatistics::None {
            metadata = metadata.set_statistics(self.statistics(min, max, nulls));
        }
        let column_index = (statistics == EnabledStatistics::Page)
            .then(|| column_index.build())
            .transpose()?;
        let offset_index = (column_index.is_some() || !props.offset_index_disabled())
            .then(|| offset_index.build());
        Ok((
            bytes.clone(),
            ColumnCloseResult {
                bytes_written: bytes.len() as u64,
                rows_written: rows,
                metadata: metadata.build()?,
                bloom_filter: None,
                column_index,
                offset_index,
            },
        ))
    }

    /// The smallest and largest of the values the (non-null) keys name.
    fn bounds(&self, keys: impl Iterator<Item = u32>) -> (Option<&[u8]>, Option<&[u8]>) {
        let mut bounds: (Option<&[u8]>, Option<&[u8]>) = (None, None);
        for key in keys.filter(|&k| k != NULL) {
            let value = self.values[key as usize].as_slice();
            if bounds
                .0
                .is_none_or(|min| self.kind.compare(value, min) == Ordering::Less)
            {
                bounds.0 = Some(value);
            }
            if bounds
                .1
                .is_none_or(|max| self.kind.compare(value, max) == Ordering::Greater)
            {
                bounds.1 = Some(value);
            }
        }
        bounds
    }

    /// The chunk's statistics, as the column writer makes them (old min/max fields too for a
    /// signed order).
    fn statistics(&self, min: Option<&[u8]>, max: Option<&[u8]>, nulls: u64) -> Statistics {
        let signed = self.descr.sort_order().is_signed();
        match self.kind {
            Kind::Int32 => Statistics::Int32(
                ValueStatistics::new(min.map(int32), max.map(int32), None, Some(nulls), false)
                    .with_backwards_compatible_min_max(signed),
            ),
            Kind::Int64 => Statistics::Int64(
                ValueStatistics::new(min.map(int64), max.map(int64), None, Some(nulls), false)
                    .with_backwards_compatible_min_max(signed),
            ),
            Kind::Bytes => Statistics::ByteArray(
                ValueStatistics::new(
                    min.map(|v| ByteArray::from(v.to_vec())),
                    max.map(|v| ByteArray::from(v.to_vec())),
                    None,
                    Some(nulls),
                    false,
                )
                .with_backwards_compatible_min_max(signed),
            ),
        }
    }
}

/// Bits needed to write `max`.
fn bit_width(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

/// Consecutive runs of one value joined.
fn merged(runs: impl Iterator<Item = (u32, u32)>) -> impl Iterator<Item = (u32, u64)> {
    let mut runs = runs.peekable();
    std::iter::from_fn(move || {
        let (value, rows) = runs.next()?;
        let mut rows = rows as u64;
        while let Some(&(next, more)) = runs.peek() {
            if next != value {
                break;
            }
            rows += more as u64;
            runs.next();
        }
        Some((value, rows))
    })
}

/// One run of the RLE / bit-packing hybrid: its length shifted left once (the low bit 0 says
/// "RLE run") as a ULEB128 varint, then the value in `ceil(bit_width / 8)` little-endian bytes.
fn rle_run(out: &mut Vec<u8>, value: u32, rows: u64, bit_width: u8) {
    let mut header = rows << 1;
    loop {
        let byte = (header & 0x7f) as u8;
        header >>= 7;
        if header == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    let bytes = (bit_width as usize).div_ceil(8);
    out.extend_from_slice(&value.to_le_bytes()[..bytes]);
}

/// A page of `buf` (uncompressed) compressed with `compression` (Snappy or none).
fn compressed(
    compression: Compression,
    buf: Vec<u8>,
    page: impl FnOnce(Bytes) -> Page,
) -> Result<CompressedPage, ParquetError> {
    let uncompressed = buf.len();
    let buf = match compression {
        Compression::SNAPPY => snap::raw::Encoder::new()
            .compress_vec(&buf)
            .map_err(|e| ParquetError::External(Box::new(e)))?,
        Compression::UNCOMPRESSED => buf,
        other => {
            return Err(ParquetError::General(format!(
                "runs are not written with {other}"
            )))
        }
    };
    Ok(CompressedPage::new(page(Bytes::from(buf)), uncompressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_runs_are_varint_lengths_then_the_value_in_whole_bytes() {
        let mut out = Vec::new();
        rle_run(&mut out, 1, 3, 1);
        assert_eq!(out, [6, 1]);
        out.clear();
        rle_run(&mut out, 0x0102, 200, 9);
        assert_eq!(out, [0x90, 0x03, 0x02, 0x01]);
        out.clear();
        rle_run(&mut out, 0, 20_000, 0);
        assert_eq!(out, [0xc0, 0xb8, 0x02]);
    }

    #[test]
    fn runs_of_nulls_and_values_are_found_in_each_type() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let strings =
            StringArray::from(vec![Some("a"), Some("a"), None, None, Some("b"), Some("a")]);
        let mut seen = Vec::new();
        for_each_run(&strings, |v, n| seen.push((v.map(<[u8]>::to_vec), n)));
        assert_eq!(
            seen,
            [
                (Some(b"a".to_vec()), 2),
                (None, 2),
                (Some(b"b".to_vec()), 1),
                (Some(b"a".to_vec()), 1)
            ]
        );
        let ints = Int64Array::from(vec![7, 7, 7, -1]);
        let mut seen = Vec::new();
        for_each_run(&ints, |v, n| seen.push((v.map(int64), n)));
        assert_eq!(seen, [(Some(7), 3), (Some(-1), 1)]);
    }

    /// Chunks made here alone, spliced into a file by arrow-rs's row group writer, read back
    /// by arrow-rs as the values pushed (runs cut by pages, nulls, one batch after another).
    #[test]
    fn a_file_of_chunks_made_by_runs_reads_back_as_the_values_pushed() {
        use std::sync::Arc;

        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        use datafusion::parquet::arrow::ArrowSchemaConverter;
        use datafusion::parquet::file::writer::SerializedFileWriter;

        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let strings: ArrayRef = Arc::new(StringArray::from_iter((0..1_000).map(|r| match r {
            100..250 => None,
            r => Some(["x", "yy", "x", "zzz"][r / 300]),
        })));
        let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (0..1_000).map(|r| (r / 70) as i64 - 3),
        ));
        let batch = RecordBatch::try_new(schema.clone(), vec![strings, numbers]).unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_data_page_row_count_limit(128)
            .build();
        let descriptors = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let mut file = SerializedFileWriter::new(
            Vec::new(),
            descriptors.root_schema_ptr(),
            Arc::new(props.clone()),
        )
        .unwrap();
        let mut group = file.next_row_group().unwrap();
        for c in 0..2 {
            let column = batch.column(c);
            let mut runs = RunsColumn::new(descriptors.column(c), column.as_ref()).unwrap();
            runs.push(column.slice(0, 333).as_ref()).unwrap();
            runs.push(column.slice(333, 667).as_ref()).unwrap();
            let (chunk, close) = runs.finish(&props).unwrap();
            group.append_column(&chunk, close).unwrap();
        }
        group.close().unwrap();
        let file = Bytes::from(file.into_inner().unwrap());
        let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let read = datafusion::arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
        assert_eq!(read.columns(), batch.columns());
    }

    #[test]
    fn nulls_in_a_required_column_are_refused() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{Field, Schema};
        use datafusion::parquet::arrow::ArrowSchemaConverter;

        let schema = Schema::new(vec![Field::new("s", DataType::Utf8, false)]);
        let descriptors = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let values = StringArray::from(vec!["a", "a"]);
        let mut runs = RunsColumn::new(descriptors.column(0), &values).unwrap();
        runs.push(&values).unwrap();
        let error = runs
            .push(&StringArray::from(vec![Some("a"), None]))
            .unwrap_err();
        assert!(error.to_string().contains("required"), "{error}");
    }
}
