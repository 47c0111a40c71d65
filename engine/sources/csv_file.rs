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

use super::{BadRow, KeyCheck, RankedFile, ScanColumns, SourceStats, BATCH_ROWS};
use crate::layout::{trim_field, ColumnType, Layout, Parsed, RowText};

#[derive(Debug)]
pub(crate) struct CsvPartition {
    pub file: RankedFile,
    pub layout: Layout,
    pub columns: ScanColumns,
    pub stats: Arc<SourceStats>,
    /// Set when the file is read in a key range: every row's key is checked against it.
    pub key_check: Option<KeyCheck>,
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        &self.columns.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // Parsing is CPU work on a blocking thread; batches flow back through a small channel,
        // which also bounds how far the parser runs ahead of the query.
        let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(2);
        let reader = CsvReader {
            ranked: self.file.clone(),
            layout: self.layout.clone(),
            columns: self.columns.clone(),
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
        Box::pin(RecordBatchStreamAdapter::new(
            self.columns.schema.clone(),
            batches,
        ))
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
    columns: ScanColumns,
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
    ///
    /// Lines are split where they lie ([`split_lines`]; CRLF line ends too) until a block of the
    /// file holds a quote or a lone carriage return; from the first line not yet split, the csv
    /// crate reads the rest (quoted fields, line breaks inside them, CR line ends), its lines and
    /// bytes counted on from there, so errors name the file's own line numbers either way.
    fn read<R: Read>(self, reader: R, tx: &mpsc::Sender<Result<RecordBatch>>) {
        let mut rows = RowSink::new(&self, tx);
        let file = &self.ranked.file;
        let (rest, first_line, first_byte) =
            match split_lines(reader, SPLIT_BLOCK, |row, fields, line, end| {
                rows.row(row, fields.len(), |i| fields[i], || line) && rows.after_row(end)
            }) {
                Ok(Split::Done { bytes }) => return rows.finish(bytes),
                Ok(Split::Stopped) => return,
                Ok(Split::Csv { rest, line, byte }) => (rest, line, byte),
                Err(e) => return rows.fail(format!("cannot read {}: {e}", file.url)),
            };
        // Positions of the csv crate count from the handed-over line (its line 1).
        let line_of = |position: Option<&csv::Position>| {
            first_line + position.map(|p| p.line()).unwrap_or(1) - 1
        };
        let mut csv = csv_reader_builder()
            .buffer_capacity(1 << 20)
            .from_reader(rest);
        let mut record = csv::ByteRecord::new();
        loop {
            match csv.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = line_of(e.position());
                    return rows.fail(format!("{} line {line}: not valid CSV: {e}", file.url));
                }
            }
            let line = || line_of(record.position());
            if !rows.row(record.as_slice(), record.len(), |i| &record[i], line)
                || !rows.after_row(first_byte + csv.position().byte())
            {
                return;
            }
        }
        rows.finish(first_byte + csv.position().byte());
    }
}

/// Bytes read from a file at a time by [`split_lines`].
const SPLIT_BLOCK: usize = 1 << 20;

/// Room [`split_lines`] keeps for the unsplit end of a block, a part of a line.
const LINE_SLACK: usize = 64 << 10;

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Eight commas and eight line breaks, to XOR a word of eight bytes with.
const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
const BREAKS: u64 = u64::from_ne_bytes([b'\n'; 8]);

/// The high bit of each byte of `word` that is zero, and no other bit.
fn zero_bytes(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((word & LOW7) + LOW7) | word | LOW7)
}

/// Whether `bytes`, the unsplit part of the buffer, hold what only a CSV reader reads right: a
/// quote, or a carriage return that is not the first half of a CRLF line end (a lone CR ends a
/// line for the csv crate). A CR at the very end is decided with the next block, or at the end of
/// the file.
fn needs_csv(bytes: &[u8], eof: bool) -> bool {
    // One search for both bytes: a file with LF line ends is looked at once.
    let mut from = 0;
    while let Some(at) = memchr::memchr2(b'"', b'\r', &bytes[from..]) {
        let at = from + at;
        match (bytes[at], bytes.get(at + 1)) {
            (b'\r', Some(b'\n')) => from = at + 2,
            (b'\r', None) => return eof,
            _ => return true,
        }
    }
    false
}

/// How [`split_lines`] ended.
enum Split<R> {
    /// Every line was split; the file's size.
    Done { bytes: u64 },
    /// The row handler asked to stop.
    Stopped,
    /// A block held a quote or a lone carriage return: the rest of the file from the first line
    /// not split (its line number and byte offset), for a reader that knows CSV's quoting.
    Csv {
        rest: std::io::Chain<std::io::Cursor<Vec<u8>>, R>,
        line: u64,
        byte: u64,
    },
}

/// Splits lines into comma-separated fields, `block` bytes read at a time, and gives each row
/// to `on_row(row, fields, line, end)`: the line's bytes, its fields (slices of them), its line
/// number and the byte offset after it. A line may end in CRLF. Empty lines are skipped, as the
/// csv crate skips them; on a file without quotes and lone carriage returns the rows are the
/// csv crate's (unit-tested), and so are their line numbers, except that a row after blank
/// lines or after a CRLF line has its own line's number (the csv crate counts such a row from
/// where the row before ended, before the blank lines or the LF). Commas and line breaks are
/// found eight bytes at a time: a fraction of the csv crate's byte-by-byte state machine and
/// its copy of every field into a record.
fn split_lines<R: Read>(
    mut reader: R,
    block: usize,
    mut on_row: impl FnMut(&[u8], &[&[u8]], u64, u64) -> bool,
) -> std::io::Result<Split<R>> {
    // Room for a block after the line left over from the last one: reading a block then never
    // grows the buffer (a line longer than the slack does, once).
    let mut buf: Vec<u8> = Vec::with_capacity(block + LINE_SLACK);
    // buf[..start] is split; `line` is the number of the line at `start`, `base` the file offset
    // of buf[0].
    let (mut start, mut line, mut base) = (0usize, 1u64, 0u64);
    loop {
        if start > 0 {
            // Keep the line not yet complete at the front.
            buf.drain(..start);
            base += start as u64;
            start = 0;
        }
        let eof = (&mut reader).take(block as u64).read_to_end(&mut buf)? == 0;
        if base == 0 && start == 0 {
            // A UTF-8 byte order mark before the first row is dropped, as the csv crate drops
            // it; its three bytes are awaited before anything is split.
            if buf.len() < UTF8_BOM.len() && !eof {
                continue;
            }
            if buf.starts_with(UTF8_BOM) {
                start = UTF8_BOM.len();
            }
        }
        // From the first line not split: its front may have come with an earlier block.
        if needs_csv(&buf[start..], eof) {
            let rest = std::io::Cursor::new(buf.split_off(start));
            return Ok(Split::Csv {
                rest: rest.chain(reader),
                line,
                byte: base + start as u64,
            });
        }
        // Whole lines only, unless the file ended.
        let end = match memchr::memrchr(b'\n', &buf[start..]) {
            _ if eof => buf.len(),
            Some(at) => start + at + 1,
            None => continue,
        };
        // Lines and fields of buf[start..end] in one pass, eight bytes at a time: commas and
        // line breaks are found as the zero bytes of the word XORed with each (exactly: no
        // borrow between bytes), in the order they come.
        let lines = &buf[start..end];
        let mut fields: Vec<&[u8]> = Vec::with_capacity(16);
        let (mut row_start, mut field_start) = (0usize, 0usize);
        let mut at = 0;
        while at < lines.len() {
            let (commas, breaks) = match lines.get(at..at + 8) {
                Some(word) => {
                    let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
                    (zero_bytes(word ^ COMMAS), zero_bytes(word ^ BREAKS))
                }
                // The last bytes, one at a time, marked as a word's bits would be.
                None => lines[at..]
                    .iter()
                    .enumerate()
                    .fold((0, 0), |(c, b), (i, &byte)| {
                        let bit = 0x80u64 << (8 * i);
                        (
                            c | (bit * u64::from(byte == b',')),
                            b | (bit * u64::from(byte == b'\n')),
                        )
                    }),
            };
            let mut marks = commas | breaks;
            while marks != 0 {
                let bit = marks & marks.wrapping_neg();
                let pos = at + bit.trailing_zeros() as usize / 8;
                if breaks & bit == 0 {
                    fields.push(&lines[field_start..pos]);
                } else {
                    // A CR before the line break ends the line with it.
                    let row_end = match pos.checked_sub(1) {
                        Some(cr) if cr >= row_start && lines[cr] == b'\r' => cr,
                        _ => pos,
                    };
                    if row_end > row_start {
                        fields.push(&lines[field_start..row_end]);
                        let after = base + (start + pos + 1) as u64;
                        if !on_row(&lines[row_start..row_end], &fields, line, after) {
                            return Ok(Split::Stopped);
                        }
                    }
                    fields.clear();
                    line += 1;
                    row_start = pos + 1;
                }
                field_start = pos + 1;
                marks ^= bit;
            }
            at += 8;
        }
        // A last line without a line break (the file ended).
        if row_start < lines.len() {
            fields.push(&lines[field_start..]);
            let after = base + end as u64;
            if !on_row(&lines[row_start..], &fields, line, after) {
                return Ok(Split::Stopped);
            }
            line += 1;
        }
        start = end;
        if eof {
            return Ok(Split::Done {
                bytes: base + buf.len() as u64,
            });
        }
    }
}

/// The builders a file's rows go into, and the batches they make.
struct RowSink<'a> {
    reader: &'a CsvReader,
    tx: &'a mpsc::Sender<Result<RecordBatch>>,
    builders: Vec<ColumnBuilder>,
    parsed: Vec<Parsed>,
    bytes_reported: u64,
}

impl<'a> RowSink<'a> {
    fn new(reader: &'a CsvReader, tx: &'a mpsc::Sender<Result<RecordBatch>>) -> RowSink<'a> {
        RowSink {
            builders: reader
                .layout
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(c.ty))
                .collect(),
            parsed: Vec::with_capacity(reader.layout.columns.len()),
            reader,
            tx,
            bytes_reported: 0,
        }
    }

    /// Sends `message` as the read's error.
    fn fail(&self, message: String) {
        let _ = self
            .tx
            .blocking_send(Err(DataFusionError::Execution(message)));
    }

    /// Parses one row (`row` its bytes, `field(i)` a slice of them) into the builders, or
    /// refuses it as a bad row; false when the read must stop (its error is sent).
    fn row<'r>(
        &mut self,
        row: &'r [u8],
        n_fields: usize,
        field: impl Fn(usize) -> &'r [u8],
        line: impl Fn() -> u64,
    ) -> bool {
        let CsvReader {
            ranked,
            layout,
            stats,
            key_check,
            ..
        } = self.reader;
        let file = &ranked.file;
        let row_text = RowText::new(row);
        let text = |i: usize| row_text.field(field(i));
        match layout.parse_text_row(n_fields, text, &mut self.parsed) {
            Ok(()) => {
                for (builder, value) in self.builders.iter_mut().zip(&self.parsed) {
                    match (builder, *value) {
                        (ColumnBuilder::String(b), Parsed::String(i)) => {
                            // Checked as UTF-8 by parse_text_row.
                            let text = trim_field(text(i).unwrap_or_default());
                            if let Some(check) = key_check.as_ref().filter(|c| c.column == i) {
                                if !check.admits(text) {
                                    let misplaced = check.misplaced(
                                        &file.url,
                                        format!("line {}", line()),
                                        text,
                                    );
                                    let _ = self.tx.blocking_send(Err(misplaced));
                                    return false;
                                }
                            }
                            b.append_value(text);
                        }
                        (ColumnBuilder::Decimal(b, ..), Parsed::Decimal(v)) => b.append_value(v),
                        (ColumnBuilder::Integer(b), Parsed::Integer(v)) => b.append_value(v),
                        (ColumnBuilder::Date(b), Parsed::Date(v)) => b.append_value(v),
                        _ => unreachable!("builders are made from the same layout"),
                    }
                }
                true
            }
            Err(reason) => match stats.refuse(BadRow {
                file: file.url.clone(),
                line: line(),
                reason: reason.to_string(),
            }) {
                Ok(()) => true,
                Err(row) => {
                    self.fail(format!(
                        "{row} (a job's input must be validated rows; raise --max-bad-rows to skip such rows)"
                    ));
                    false
                }
            },
        }
    }

    /// After a row ending at byte `end` of the file: sends a full batch; false when the read
    /// must stop.
    fn after_row(&mut self, end: u64) -> bool {
        if self.builders[0].len() < BATCH_ROWS {
            return true;
        }
        self.count_bytes(end);
        self.send()
    }

    /// The file's `bytes` are read: counts them and sends the last rows.
    fn finish(mut self, bytes: u64) {
        self.count_bytes(bytes);
        if self.builders[0].len() > 0 {
            self.send();
        }
    }

    /// Sends the builders' rows as a batch; false when the read should stop.
    fn send(&mut self) -> bool {
        let CsvReader {
            ranked,
            columns,
            stats,
            ..
        } = self.reader;
        send_batch(&mut self.builders, ranked, columns, stats, self.tx)
    }

    fn count_bytes(&mut self, upto: u64) {
        self.reader
            .stats
            .bytes_in
            .fetch_add(upto.saturating_sub(self.bytes_reported), Ordering::Relaxed);
        self.bytes_reported = self.bytes_reported.max(upto);
    }
}

/// Finishes the builders into a batch and sends it; false when the reader should stop.
fn send_batch(
    builders: &mut [ColumnBuilder],
    file: &RankedFile,
    columns: &ScanColumns,
    stats: &SourceStats,
    tx: &mpsc::Sender<Result<RecordBatch>>,
) -> bool {
    let rows = builders[0].len();
    let batch = builders
        .iter_mut()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<_>>>()
        .and_then(|made| Ok(columns.batch(&made, file)?));
    let ok = batch.is_ok();
    stats.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    tx.blocking_send(batch).is_ok() && ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line, fields) of each row.
    type Rows = Vec<(u64, Vec<Vec<u8>>)>;

    fn csv_crate_rows(data: &[u8], first_line: u64) -> Rows {
        let mut csv = csv_reader_builder().from_reader(data);
        let mut record = csv::ByteRecord::new();
        let mut rows = Rows::new();
        while csv.read_byte_record(&mut record).unwrap() {
            let line = first_line + record.position().unwrap().line() - 1;
            rows.push((line, record.iter().map(<[u8]>::to_vec).collect()));
        }
        rows
    }

    /// Rows as `read` makes them: split, then the csv crate from where a block needed it.
    fn rows_read(data: &[u8], block: usize) -> Rows {
        let mut rows = Rows::new();
        let mut last_end = 0;
        let split = split_lines(data, block, |row, fields, line, end| {
            assert!(end > last_end && end as usize <= data.len());
            // `end` is just past the row and its line break (LF or CRLF).
            let mut end_of_row = end as usize - usize::from(data[end as usize - 1] == b'\n');
            if end_of_row < end as usize && data[..end_of_row].ends_with(b"\r") {
                end_of_row -= 1;
            }
            assert_eq!(&data[end_of_row - row.len()..end_of_row], row);
            last_end = end;
            rows.push((line, fields.iter().map(|f| f.to_vec()).collect()));
            true
        })
        .unwrap();
        match split {
            Split::Done { bytes } => assert_eq!(bytes, data.len() as u64),
            Split::Stopped => panic!("never asked to stop"),
            Split::Csv {
                mut rest,
                line,
                byte,
            } => {
                let mut tail = Vec::new();
                rest.read_to_end(&mut tail).unwrap();
                assert_eq!(&data[byte as usize..], &tail[..]);
                rows.extend(csv_crate_rows(&tail, line));
            }
        }
        rows
    }

    #[test]
    fn rows_are_the_csv_crates_split_or_handed_over() {
        let long = format!("{},{}\nz\n", "x".repeat(100), "y".repeat(50));
        let inputs: Vec<&[u8]> = vec![
            b"a,b,c\n",
            b"a,b,c",
            b"",
            b"\n",
            b"\n\na,b\n\n\nc\n\n",
            b",\n,,\n",
            b" x , y \n\t,\n",
            b"a,b,c,d,e,f\nshort\n",
            "\u{feff}é,ü\nß\n".as_bytes(),
            long.as_bytes(),
            // CRLF line ends, split here.
            b"s1,1\ns2,2\r\ns3,3\r\n",
            b"a,b\r\n\r\n,\r\nc\r\n\r\n",
            b"\r\n",
            // Handed to the csv crate: quotes, quoted commas and line breaks, lone CRs.
            b"s1,1\ns2,\"a,b\"\ns3,3\n",
            b"s1,1\r\ns2,2\r",
            b"a\r\rb\n",
            b"a\rb\nc\n",
            b"a,\"b\nc\"\nd\n\ne,\"\"\"\"\n",
            b"a\n\n\"unclosed,b\n",
        ];
        for data in inputs {
            let want = csv_crate_rows(data, 1);
            let fields = |rows: &Rows| rows.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>();
            // The csv crate numbers a row after blank lines or a CRLF line from the end of the
            // row before; split rows have their own line's number. Without either, they agree.
            let blank_lines = data.windows(2).any(|w| w == b"\n\n")
                || data.starts_with(b"\n")
                || data.contains(&b'\r');
            for block in [1, 2, 3, 7, 64, 1 << 20] {
                let read = rows_read(data, block);
                let context = format!("{:?} in blocks of {block}", String::from_utf8_lossy(data));
                assert_eq!(fields(&read), fields(&want), "{context}");
                if !blank_lines {
                    assert_eq!(read, want, "{context}");
                }
            }
        }
    }

    #[test]
    fn commas_and_line_breaks_are_found_among_their_neighbour_bytes() {
        // Bytes one bit from a comma or a line break, and with the high bit added, where a
        // word-at-a-time search could go wrong; rows of every length around a word's eight.
        let alphabet = [
            b'a',
            b',',
            b'\n',
            b'-',
            b'+',
            b'.',
            0x0b,
            0x0a ^ 0x80,
            b',' ^ 0x80,
            0x00,
            0xff,
            b'\r',
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let len = rng.usize(0..40);
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let want = csv_crate_rows(&data, 1);
            for block in [1, 5, 8, 64] {
                let read = rows_read(&data, block);
                let fields = |rows: &Rows| rows.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>();
                assert_eq!(
                    fields(&read),
                    fields(&want),
                    "{data:?} in blocks of {block}"
                );
            }
        }
    }

    #[test]
    fn a_split_row_is_numbered_by_its_own_line() {
        let mut lines = Vec::new();
        let data = b"\n\na,b\n\n\nc\n\n\nd";
        for block in [1, 3, 64] {
            lines.clear();
            split_lines(&data[..], block, |_, _, line, _| {
                lines.push(line);
                true
            })
            .unwrap();
            assert_eq!(lines, [3, 6, 9], "blocks of {block}");
        }
    }

    #[test]
    fn a_crlf_row_is_numbered_by_its_own_line() {
        let mut lines = Vec::new();
        let mut rows = Vec::new();
        let data = b"a,b\r\nc\r\n\r\nd,e,\r\n";
        for block in [1, 2, 64] {
            lines.clear();
            rows.clear();
            let split = split_lines(&data[..], block, |row, fields, line, _| {
                lines.push(line);
                rows.push((row.to_vec(), fields.len()));
                true
            })
            .unwrap();
            assert!(
                matches!(split, Split::Done { bytes: 16 }),
                "blocks of {block}"
            );
            assert_eq!(lines, [1, 2, 4], "blocks of {block}");
            assert_eq!(
                rows,
                [
                    (b"a,b".to_vec(), 2),
                    (b"c".to_vec(), 1),
                    (b"d,e,".to_vec(), 3)
                ]
            );
        }
    }

    #[test]
    fn a_row_handler_stops_the_split() {
        let mut seen = 0;
        let split = split_lines(&b"a\nb\nc\n"[..], 2, |_, _, _, _| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert!(matches!(split, Split::Stopped));
        assert_eq!(seen, 2);
    }
}
