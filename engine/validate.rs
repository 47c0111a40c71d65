//! `tally validate`: the conversion layer. Raw tab-delimited store files (`.tdf`) become clean
//! comma-separated files (`<stem>.csv`, no header) that jobs read.
//!
//! Per file, streamed line by line (multi-GB files run in bounded memory) and files in parallel:
//! - a UTF-8 byte-order mark and CRLF line ends are accepted;
//! - lines starting with `-` are store-system junk and are dropped; so are blank lines;
//! - the first remaining line is dropped as a header only when none of its typed fields (amount,
//!   code, date...) parses. A data row is never mistaken for a header: the reference
//!   implementation's defect of dropping every file's first row is not repeated;
//! - every other line must match the file's [layout](crate::layout); a line that does not (too few
//!   fields, an amount that is not a decimal, ...) goes to `_quarantine/<stem>.csv` beside the
//!   output with its file, line number, reason and raw text, and is counted;
//! - the output keeps the original columns in their original order, quoted as CSV requires, and
//!   carries the raw file's time (file modification time locally, `tally-source-time` metadata on
//!   S3), since jobs use it to tell which cumulative file is newest.
//!
//! Outputs are published atomically (temp file + rename locally, multipart upload on S3), so a
//! reader never sees half a file.

use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter as ObjectWriter;
use object_store::{Attribute, Attributes, ObjectStoreExt};
use serde::Serialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::layout::{Layout, LayoutSet, RowText};
use crate::progress::Progress;
use crate::storage::{set_local_mtime, FileEntry, Location, StorageError, SOURCE_TIME_METADATA};

/// Folder, beside the validated files, that holds the rows validation refused.
pub const QUARANTINE_DIR: &str = "_quarantine";

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no .tdf files in {0}")]
    NoInputFiles(String),
    #[error("{file}: no layout matches this file name (see jobs/layouts.toml)")]
    NoLayout { file: String },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// What to validate and where to put it.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub input: String,
    pub output: String,
    /// A file with more bad rows than this is not published (its quarantine still is).
    pub max_bad_rows: Option<u64>,
    /// Files validated at once.
    pub parallelism: usize,
    pub layouts: LayoutSet,
}

/// The outcome for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub input: String,
    pub output: String,
    pub layout: String,
    pub bytes: u64,
    pub lines: u64,
    pub rows: u64,
    pub junk_lines: u64,
    pub header_lines: u64,
    pub blank_lines: u64,
    pub bad_rows: u64,
    /// Where the refused rows went, when there were any.
    pub quarantine: Option<String>,
    /// `ok`, or why the file was not published.
    pub status: String,
}

impl FileReport {
    pub fn published(&self) -> bool {
        self.status == "ok"
    }
}

/// The outcome of a whole `validate` call.
#[derive(Debug, Clone, Serialize)]
pub struct ValidateReport {
    pub input: String,
    pub output: String,
    pub files: Vec<FileReport>,
    pub seconds: f64,
}

impl ValidateReport {
    pub fn total(&self, field: impl Fn(&FileReport) -> u64) -> u64 {
        self.files.iter().map(field).sum()
    }
    pub fn failed_files(&self) -> usize {
        self.files.iter().filter(|f| !f.published()).count()
    }
}

/// Validates every `.tdf` file directly in `options.input`.
pub async fn validate(
    options: &ValidateOptions,
    progress: &Progress,
) -> Result<ValidateReport, ValidateError> {
    validate_some(options, progress, |_| true).await
}

/// Validates the `.tdf` files directly in `options.input` that `wanted` picks (by name): one
/// object an S3 event names, the files a watcher saw change.
pub async fn validate_some(
    options: &ValidateOptions,
    progress: &Progress,
    wanted: impl Fn(&FileEntry) -> bool,
) -> Result<ValidateReport, ValidateError> {
    let started = Instant::now();
    let input = Location::open(&options.input).await?;
    let output = Location::create(&options.output).await?;
    let files: Vec<FileEntry> = input
        .list_files()
        .await?
        .into_iter()
        .filter(|f| f.name.to_ascii_lowercase().ends_with(".tdf") && wanted(f))
        .collect();
    if files.is_empty() {
        return Err(ValidateError::NoInputFiles(input.url.clone()));
    }
    let bar = progress.bytes("validating", files.iter().map(|f| f.size).sum());
    let mut reports: Vec<FileReport> = futures::stream::iter(files.into_iter().map(|file| {
        let layout = options.layouts.for_file(&file.name).cloned();
        let (input, output, bar) = (input.clone(), output.clone(), bar.clone());
        let max_bad_rows = options.max_bad_rows;
        async move {
            let layout = layout.ok_or_else(|| ValidateError::NoLayout {
                file: input.child_url(&file.name),
            })?;
            validate_file(&input, &output, &file, &layout, max_bad_rows, &bar).await
        }
    }))
    .buffer_unordered(options.parallelism.max(1))
    .try_collect()
    .await?;
    bar.finish_and_clear();
    reports.sort_by(|a, b| a.input.cmp(&b.input));
    Ok(ValidateReport {
        input: input.url,
        output: output.url,
        files: reports,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Counters of one file's pass, filled by the blocking line loop.
#[derive(Default)]
struct Counts {
    lines: u64,
    rows: u64,
    junk: u64,
    headers: u64,
    blank: u64,
    bad: u64,
}

/// The output name of a raw file: `IL-101.tdf` → `IL-101.csv`.
pub fn output_name(raw_name: &str) -> String {
    let stem = raw_name
        .rsplit_once('.')
        .map(|(s, _)| s)
        .unwrap_or(raw_name);
    format!("{stem}.csv")
}

async fn validate_file(
    input: &Location,
    output: &Location,
    file: &FileEntry,
    layout: &Layout,
    max_bad_rows: Option<u64>,
    bar: &indicatif::ProgressBar,
) -> Result<FileReport, ValidateError> {
    let input_url = input.child_url(&file.name);
    let out_name = output_name(&file.name);
    let quarantine_name = format!("{QUARANTINE_DIR}/{out_name}");
    let file_err = |message: String| ValidateError::File {
        file: input_url.clone(),
        message,
    };
    let source_time = input.source_time(file).await?;

    // A local file is read straight from disk on the pass's thread: the object store's local
    // stream hands over 8 KiB chunks across threads, which cost more than the parsing.
    let reader: Box<dyn std::io::Read + Send> = match input.local_path(&file.name) {
        Some(path) => {
            Box::new(std::fs::File::open(&path).map_err(|e| file_err(format!("cannot read: {e}")))?)
        }
        None => {
            let body = input
                .store
                .get(&file.path)
                .await
                .map_err(|e| file_err(format!("cannot read: {e}")))?
                .into_stream()
                .map_err(std::io::Error::other);
            Box::new(SyncIoBridge::new(StreamReader::new(body)))
        }
    };
    let mut attributes = Attributes::new();
    if output.local_root.is_none() {
        attributes.insert(
            Attribute::Metadata(SOURCE_TIME_METADATA.into()),
            source_time.to_rfc3339().into(),
        );
    }
    let handle = tokio::runtime::Handle::current();
    let out = CsvSink::new(
        ObjectWriter::with_capacity(output.store.clone(), output.child(&out_name), 8 << 20)
            .with_attributes(attributes),
        handle.clone(),
    );
    let quarantine_target = (output.clone(), output.child(&quarantine_name), handle);

    let task_layout = layout.clone();
    let (file_name, bar) = (input_url.clone(), bar.clone());
    let mut pass = tokio::task::spawn_blocking(move || {
        convert_lines(
            reader,
            out,
            quarantine_target,
            &task_layout,
            &file_name,
            &bar,
        )
    })
    .await
    .map_err(|e| file_err(format!("validation task failed: {e}")))?;

    if let Some(message) = pass.error.take() {
        abort_quietly(pass.out.into_upload()).await;
        if let Some(q) = pass.quarantine {
            abort_quietly(q.into_upload()).await;
        }
        return Err(file_err(message.to_string()));
    }
    let counts = pass.counts;
    let quarantine_url = match pass.quarantine {
        Some(q) => {
            complete(q.into_upload())
                .await
                .map_err(|e| file_err(format!("cannot write {quarantine_name}: {e}")))?;
            Some(output.child_url(&quarantine_name))
        }
        None => {
            output.delete_if_exists(&quarantine_name).await?;
            None
        }
    };
    let status = match max_bad_rows {
        Some(max) if counts.bad > max => {
            abort_quietly(pass.out.into_upload()).await;
            output.delete_if_exists(&out_name).await?;
            format!(
                "not published: {} bad rows, more than --max-bad-rows {max}",
                counts.bad
            )
        }
        _ => {
            complete(pass.out.into_upload())
                .await
                .map_err(|e| file_err(format!("cannot write {out_name}: {e}")))?;
            if let Some(path) = output.local_path(&out_name) {
                set_local_mtime(&path, source_time).map_err(|e| {
                    file_err(format!("cannot set the time of {}: {e}", path.display()))
                })?;
            }
            "ok".to_string()
        }
    };
    Ok(FileReport {
        input: input_url,
        output: output.child_url(&out_name),
        layout: layout.name.clone(),
        bytes: file.size,
        lines: counts.lines,
        rows: counts.rows,
        junk_lines: counts.junk,
        header_lines: counts.headers,
        blank_lines: counts.blank,
        bad_rows: counts.bad,
        quarantine: quarantine_url,
        status,
    })
}

async fn complete(mut upload: ObjectWriter) -> std::io::Result<()> {
    tokio::io::AsyncWriteExt::shutdown(&mut upload).await
}

async fn abort_quietly(mut upload: ObjectWriter) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(error = %e, "could not abort a partial upload");
    }
}

/// CSV written from blocking code into an object-store upload. The CSV is formatted into a
/// memory buffer that is handed to the upload a megabyte at a time, so the upload stays ours to
/// complete or abort whatever happens.
struct CsvSink {
    buffer: Vec<u8>,
    upload: SyncIoBridge<ObjectWriter>,
}

impl CsvSink {
    fn new(upload: ObjectWriter, handle: tokio::runtime::Handle) -> CsvSink {
        CsvSink {
            buffer: Vec::with_capacity(1 << 20),
            upload: SyncIoBridge::new_with_handle(upload, handle),
        }
    }

    /// Writes any record through the csv crate (quoting as it must).
    fn write<I, T>(&mut self, record: I) -> std::io::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_writer(std::mem::take(&mut self.buffer));
        writer.write_record(record)?;
        self.buffer = writer.into_inner().map_err(|e| e.into_error())?;
        self.drain_when_full()
    }

    /// Writes the fields of a row, the first `declared` trimmed. A line with no byte CSV must
    /// quote (`quote`, from [`scan_line`]; almost every line) is copied field by field; any
    /// other goes through [`CsvSink::write`], so the output is what the csv crate writes either
    /// way.
    fn write_row(&mut self, fields: &[&[u8]], declared: usize, quote: bool) -> std::io::Result<()> {
        let field = |i: usize| {
            if i < declared {
                fields[i].trim_ascii()
            } else {
                fields[i]
            }
        };
        let quoted = quote
            // The csv crate writes a lone empty field as `""`, so the row is not a blank line.
            || (fields.len() == 1 && field(0).is_empty());
        if quoted {
            return self.write((0..fields.len()).map(field));
        }
        for i in 0..fields.len() {
            if i > 0 {
                self.buffer.push(b',');
            }
            self.buffer.extend_from_slice(field(i));
        }
        self.buffer.push(b'\n');
        self.drain_when_full()
    }

    fn drain_when_full(&mut self) -> std::io::Result<()> {
        if self.buffer.len() >= 1 << 20 {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> std::io::Result<()> {
        self.upload.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    fn into_upload(self) -> ObjectWriter {
        self.upload.into_inner()
    }
}

/// Why the pass over one file could not finish.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("read failed after line {line}: {source}")]
    Read { line: u64, source: std::io::Error },
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    #[error("cannot write quarantine: {0}")]
    Quarantine(std::io::Error),
}

/// What the blocking pass over one file leaves behind.
struct Pass {
    counts: Counts,
    out: CsvSink,
    quarantine: Option<CsvSink>,
    /// Set when the pass could not finish (read or write failure).
    error: Option<PassError>,
}

/// The blocking line loop: reads `reader`, writes CSV to `out`, refused rows to a quarantine file
/// created at the first one.
fn convert_lines<R: std::io::Read>(
    reader: R,
    out: CsvSink,
    quarantine_target: (Location, object_store::path::Path, tokio::runtime::Handle),
    layout: &Layout,
    file_name: &str,
    bar: &indicatif::ProgressBar,
) -> Pass {
    let mut pass = Pass {
        counts: Counts::default(),
        out,
        quarantine: None,
        error: None,
    };
    let mut lines = BufReader::with_capacity(1 << 20, reader);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut spare_fields: Vec<&[u8]> = Vec::with_capacity(16);
    let mut seen_content = false;
    let mut parsed = Vec::with_capacity(layout.columns.len());
    let mut unreported_bytes = 0u64;
    let n_cols = layout.columns.len();

    let result: Result<(), PassError> =
        (|| {
            loop {
                buf.clear();
                let (n, overlong) = read_line_capped(&mut lines, &mut buf, MAX_LINE_BYTES)
                    .map_err(|source| PassError::Read {
                        line: pass.counts.lines,
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                pass.counts.lines += 1;
                unreported_bytes += n as u64;
                if unreported_bytes >= 1 << 20 {
                    bar.inc(unreported_bytes);
                    unreported_bytes = 0;
                }
                let mut line: &[u8] = &buf;
                if pass.counts.lines == 1 {
                    line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
                }
                while let Some((b'\n' | b'\r', rest)) = line.split_last() {
                    line = rest;
                }
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    pass.counts.blank += 1;
                    continue;
                }
                if line[0] == b'-' && !overlong {
                    pass.counts.junk += 1;
                    continue;
                }
                let mut fields = recycle(std::mem::take(&mut spare_fields));
                // Lines no row could be: too long to hold (a file without newlines), or holding
                // a NUL byte, which no layout allows and PostgreSQL refuses in text.
                let scanned = if overlong {
                    Err(format!(
                        "line longer than {MAX_LINE_BYTES} bytes ({n} bytes; quarantined truncated)"
                    ))
                } else {
                    let scan = scan_line(line, &mut fields);
                    match scan.nul {
                        Some(at) => Err(format!("line contains a NUL byte (byte {})", at + 1)),
                        None => Ok(scan),
                    }
                };
                let scan = match scanned {
                    Ok(scan) => scan,
                    Err(reason) => {
                        seen_content = true;
                        quarantine(&mut pass, &quarantine_target, file_name, &reason, line)?;
                        spare_fields = recycle(fields);
                        continue;
                    }
                };
                if !seen_content {
                    seen_content = true;
                    let text = |i: usize| fields.get(i).and_then(|f| std::str::from_utf8(f).ok());
                    if layout.looks_like_header(text) {
                        pass.counts.headers += 1;
                        continue;
                    }
                }
                let line_text = RowText::new(line);
                let field_text = |i: usize| line_text.field(fields[i]);
                match layout.parse_text_row(fields.len(), field_text, &mut parsed) {
                    Ok(()) => {
                        // Declared columns are written trimmed; extras exactly as they came.
                        pass.out
                            .write_row(&fields, n_cols, scan.quote)
                            .map_err(PassError::Output)?;
                        pass.counts.rows += 1;
                    }
                    Err(reason) => {
                        let reason = reason.to_string();
                        quarantine(&mut pass, &quarantine_target, file_name, &reason, line)?;
                    }
                }
                spare_fields = recycle(fields);
            }
            pass.out.drain().map_err(PassError::Output)?;
            if let Some(q) = pass.quarantine.as_mut() {
                q.drain().map_err(PassError::Quarantine)?;
            }
            Ok(())
        })();
    bar.inc(unreported_bytes);
    pass.error = result.err();
    pass
}

/// The longest line validation holds in memory. A longer one (a file without newlines, say) is
/// read through without being kept and quarantined, truncated to this length.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads one line, through its `\n`, into `buf`, keeping at most `cap` bytes of it; returns the
/// bytes consumed and whether the line was longer than `cap`.
fn read_line_capped<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut overlong = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed, overlong));
        }
        let (done, used) = match memchr::memchr(b'\n', available) {
            Some(i) => (true, i + 1),
            None => (false, available.len()),
        };
        let room = cap.saturating_sub(buf.len());
        if used <= room {
            buf.extend_from_slice(&available[..used]);
        } else {
            buf.extend_from_slice(&available[..room]);
            overlong = true;
        }
        reader.consume(used);
        consumed += used;
        if done {
            return Ok((consumed, overlong));
        }
    }
}

/// Counts a refused line and writes it to the file's quarantine (created at the first one).
fn quarantine(
    pass: &mut Pass,
    target: &(Location, object_store::path::Path, tokio::runtime::Handle),
    file_name: &str,
    reason: &str,
    line: &[u8],
) -> Result<(), PassError> {
    pass.counts.bad += 1;
    let q = pass.quarantine.get_or_insert_with(|| {
        let (location, path, handle) = target.clone();
        CsvSink::new(ObjectWriter::new(location.store, path), handle)
    });
    if pass.counts.bad == 1 {
        q.write(["file", "line", "reason", "raw"])
            .map_err(PassError::Quarantine)?;
    }
    let line_no = pass.counts.lines.to_string();
    q.write([
        file_name.as_bytes(),
        line_no.as_bytes(),
        reason.as_bytes(),
        line,
    ])
    .map_err(PassError::Quarantine)
}

/// What one pass over a line's bytes finds besides its tab-separated fields.
#[derive(Debug, PartialEq, Eq)]
struct LineScan {
    /// Where its first NUL byte is (the fields are then cut short: the line is refused).
    nul: Option<usize>,
    /// Whether it holds a byte CSV must quote: `,`, `"`, CR or LF.
    quote: bool,
}

/// How [`scan_line`] treats each byte value.
const PLAIN: u8 = 0;
const TAB: u8 = 1;
const QUOTED: u8 = 2;
const NUL: u8 = 3;
const BYTE_CLASS: [u8; 256] = {
    let mut class = [PLAIN; 256];
    class[b'\t' as usize] = TAB;
    class[b',' as usize] = QUOTED;
    class[b'"' as usize] = QUOTED;
    class[b'\r' as usize] = QUOTED;
    class[b'\n' as usize] = QUOTED;
    class[0] = NUL;
    class
};

/// Cuts `line` into its tab-separated fields (pushed on `fields`, as `split` would cut them) and
/// finds its first NUL byte and any byte CSV must quote, in one pass over its bytes: a row is a
/// few dozen bytes, and a search per question (NUL, each tab, the quoting bytes) cost more in
/// setting up than in searching.
fn scan_line<'a>(line: &'a [u8], fields: &mut Vec<&'a [u8]>) -> LineScan {
    let mut scan = LineScan {
        nul: None,
        quote: false,
    };
    let mut start = 0;
    for (i, &byte) in line.iter().enumerate() {
        match BYTE_CLASS[byte as usize] {
            PLAIN => {}
            TAB => {
                fields.push(&line[start..i]);
                start = i + 1;
            }
            QUOTED => scan.quote = true,
            _ => {
                scan.nul = Some(i);
                break;
            }
        }
    }
    fields.push(&line[start..]);
    scan
}

/// Empties a vector of borrowed slices so its allocation can hold slices of the next line.
fn recycle<'a>(mut v: Vec<&[u8]>) -> Vec<&'a [u8]> {
    v.clear();
    v.into_iter().map(|_| -> &'a [u8] { &[] }).collect()
}

/// One line summing up a report.
pub fn summary_line(report: &ValidateReport) -> String {
    format!(
        "{} files, {} rows written, {} junk lines, {} header lines, {} bad rows quarantined, {} not published, {:.2}s",
        report.files.len(),
        report.total(|f| f.rows),
        report.total(|f| f.junk_lines),
        report.total(|f| f.header_lines),
        report.total(|f| f.bad_rows),
        report.failed_files(),
        report.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_cut_at_tabs_and_its_nul_and_quoting_bytes_found_in_one_pass() {
        for line in [
            &b""[..],
            b"s1",
            b"s1\t1.00\t4\ti1\t2026-01-01",
            b"\t\t",
            b"a,b\tc",
            b"say \"hi\"\tx",
            b"a\rb",
            b"a\nb\t",
            b"ok\tnul\0here\tmore",
            b"\0",
            "caf\u{e9}\t\u{3000}".as_bytes(),
        ] {
            let mut fields = Vec::new();
            let scan = scan_line(line, &mut fields);
            let nul = memchr::memchr(0, line);
            assert_eq!(scan.nul, nul, "{line:?}");
            if nul.is_none() {
                let quote = memchr::memchr3(b',', b'"', b'\r', line).is_some()
                    || memchr::memchr(b'\n', line).is_some();
                assert_eq!(scan.quote, quote, "{line:?}");
                let split: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                assert_eq!(fields, split, "{line:?}");
            }
        }
    }
}
