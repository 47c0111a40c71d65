//! Synthetic provinces for benchmarks and load tests: `tally generate`.
//!
//! A province is `stores` stores, each sending `versions` cumulative files over the day. Version
//! `v` of a store's file holds the first `v/versions` of each day's lines, so the last version is
//! the whole day and every earlier one is a prefix of it, exactly as a store system re-sends its
//! file through the day. `transactions` counts lines over all versions (what a job reads).
//!
//! Each file is written three ways, so every reader can be measured on the same data:
//! - `raw/NAME.tdf`: tab-delimited, with the store systems' junk lines, header lines, CRLF line ends
//!   in some stores and a few malformed rows, as `tally validate` receives them;
//! - `validated/NAME.csv`: what `tally validate` makes of the raw file (the tests check that it is
//!   byte for byte the same), with the raw file's time;
//! - `parquet/NAME.parquet`: the layout's typed columns (decimal amounts, date32 dates).
//!
//! Everything follows from the seed: the same arguments give the same bytes and file times.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Decimal128Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

/// The shape of a generated province.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProvinceShape {
    /// Province code: file names start with it (`IL-101-3.csv`).
    pub province: String,
    /// Lines over all files and versions (the job's input rows), before junk and bad rows.
    pub transactions: u64,
    pub stores: u32,
    /// Distinct items a store sells from (uniformly).
    pub items: u32,
    /// Days each file covers, starting at `first_day`.
    pub days: u32,
    /// Cumulative versions each store sends.
    pub versions: u32,
    /// `YYYY-MM-DD`.
    pub first_day: String,
    /// One malformed raw row (quarantined by validation) per this many lines; 0 for none.
    pub bad_row_every: u64,
    pub seed: u64,
}

impl Default for ProvinceShape {
    /// The benchmark shape: 50 stores, 20,000 items, a week, three versions a store. At 1.8M
    /// transactions this makes about 94 MB of validated CSV and 785k result rows.
    fn default() -> Self {
        ProvinceShape {
            province: "IL".into(),
            transactions: 1_000_000,
            stores: 50,
            items: 20_000,
            days: 7,
            versions: 3,
            first_day: "2026-03-01".into(),
            bad_row_every: 100_000,
            seed: 42,
        }
    }
}

/// Which forms to write.
#[derive(Debug, Clone, Copy)]
pub struct Forms {
    pub raw: bool,
    pub validated: bool,
    pub parquet: bool,
}

/// What was written.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GenerateReport {
    pub files: u64,
    pub transactions: u64,
    pub bad_rows: u64,
    pub raw_bytes: u64,
    pub validated_bytes: u64,
    pub parquet_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("cannot write {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write Parquet {path}: {cause}")]
    Parquet {
        path: PathBuf,
        cause: datafusion::parquet::errors::ParquetError,
    },
}

/// One transaction line of a store's day.
struct Line {
    cents: i64,
    code: u8,
    item: u32,
    day: u32,
    register: u8,
    receipt: u32,
    tender: &'static str,
}

/// Writes the province under `out` (`raw/`, `validated/`, `parquet/`, as `forms` asks).
pub fn generate(
    shape: &ProvinceShape,
    out: &Path,
    forms: Forms,
    mut on_file: impl FnMut(&GenerateReport),
) -> Result<GenerateReport, GenerateError> {
    let first_day = crate::layout::parse_date(&shape.first_day).ok_or_else(|| {
        GenerateError::Shape(format!("first day `{}` is not YYYY-MM-DD", shape.first_day))
    })?;
    if shape.stores == 0 || shape.items == 0 || shape.days == 0 || shape.versions == 0 {
        return Err(GenerateError::Shape(
            "stores, items, days and versions must be at least 1".into(),
        ));
    }
    // Version v holds v/V of each day, so all versions together hold (V+1)/2 days' worth.
    let store_days = u64::from(shape.stores) * u64::from(shape.days);
    let day_lines = (shape.transactions * 2)
        .div_ceil(store_days * u64::from(shape.versions + 1))
        .max(1);
    let dates: Vec<String> = (0..shape.days)
        .map(|d| crate::layout::format_date(first_day + d as i32))
        .collect();
    for (form, wanted) in [
        ("raw", forms.raw),
        ("validated", forms.validated),
        ("parquet", forms.parquet),
    ] {
        if wanted {
            let dir = out.join(form);
            std::fs::create_dir_all(&dir)
                .map_err(|cause| GenerateError::Io { path: dir, cause })?;
        }
    }
    // Files are stamped from a fixed base so that reruns give identical times.
    let base_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_323_200); // 2026-03-01
    let mut report = GenerateReport::default();
    for store in 0..shape.stores {
        let store_id = format!("s{}", 101 + store);
        let mut rng = fastrand::Rng::with_seed(shape.seed ^ (u64::from(store) << 32));
        let days: Vec<Vec<Line>> = (0..shape.days)
            .map(|day| {
                (0..day_lines)
                    .map(|_| random_line(&mut rng, shape, day))
                    .collect()
            })
            .collect();
        // Store systems differ: some send CRLF, some a header line, some junk first.
        let crlf = store % 7 == 3;
        for version in 1..=shape.versions {
            let name = format!("{}-{}-{version}", shape.province, 101 + store);
            let take =
                (day_lines * u64::from(version)).div_ceil(u64::from(shape.versions)) as usize;
            let lines = days.iter().flat_map(|day| &day[..take]);
            let time =
                base_time + Duration::from_secs(3600 * u64::from(version) + u64::from(store));
            let mut files = FileSet::create(out, &name, forms, crlf)?;
            if version % 2 == 1 {
                files.raw_text("------ additional invalid data")?;
            }
            if store % 3 == 0 {
                files.raw_text("store\tamount\tcode\titem\tdate\tregister\treceipt\ttender")?;
            }
            for line in lines {
                report.transactions += 1;
                if shape.bad_row_every > 0 && report.transactions % shape.bad_row_every == 0 {
                    // An amount the layout refuses: quarantined by validation, absent downstream.
                    files.raw_text(&format!(
                        "{store_id}\t{}.5x\t{}\ti{:05}\t{}\tr00\t000000000\tcash",
                        line.cents / 100,
                        line.code,
                        line.item,
                        dates[line.day as usize]
                    ))?;
                    report.bad_rows += 1;
                }
                files.line(&store_id, line, &dates[line.day as usize], first_day)?;
                if line.receipt % 4096 == 0 {
                    files.raw_text("------ additional invalid data")?;
                }
            }
            let sizes = files.finish(time)?;
            report.files += 1;
            report.raw_bytes += sizes[0];
            report.validated_bytes += sizes[1];
            report.parquet_bytes += sizes[2];
            on_file(&report);
        }
    }
    Ok(report)
}

fn random_line(rng: &mut fastrand::Rng, shape: &ProvinceShape, day: u32) -> Line {
    // Mostly sales and their taxes, some discounts, and other codes the job must ignore.
    let (code, cents) = match rng.u32(0..100) {
        0..=54 => (4, rng.i64(50..15_000)),
        55..=82 => (5, rng.i64(1..1_200)),
        83..=91 => (6, rng.i64(10..2_000)),
        n => ([1, 7, 13][n as usize % 3], rng.i64(0..5_000)),
    };
    // About one line in a hundred is a refund.
    let cents = if rng.u32(0..100) == 0 { -cents } else { cents };
    Line {
        cents,
        code,
        item: rng.u32(0..shape.items),
        day,
        register: rng.u8(1..13),
        receipt: rng.u32(0..1_000_000_000),
        tender: ["cash", "credit", "debit", "giftcard"][rng.usize(0..4)],
    }
}

/// The open files of one version of one store's file.
struct FileSet {
    raw: Option<(PathBuf, BufWriter<File>)>,
    validated: Option<(PathBuf, BufWriter<File>)>,
    parquet: Option<(PathBuf, ParquetColumns)>,
    crlf: bool,
    text: String,
}

impl FileSet {
    fn create(out: &Path, name: &str, forms: Forms, crlf: bool) -> Result<FileSet, GenerateError> {
        let open = |form: &str, ext: &str| -> Result<(PathBuf, BufWriter<File>), GenerateError> {
            let path = out.join(form).join(format!("{name}.{ext}"));
            let file = File::create(&path).map_err(|cause| GenerateError::Io {
                path: path.clone(),
                cause,
            })?;
            Ok((path, BufWriter::with_capacity(1 << 20, file)))
        };
        Ok(FileSet {
            raw: forms.raw.then(|| open("raw", "tdf")).transpose()?,
            validated: forms
                .validated
                .then(|| open("validated", "csv"))
                .transpose()?,
            parquet: forms
                .parquet
                .then(|| {
                    let path = out.join("parquet").join(format!("{name}.parquet"));
                    ParquetColumns::create(&path).map(|columns| (path, columns))
                })
                .transpose()?,
            crlf,
            text: String::with_capacity(128),
        })
    }

    /// A raw-only line (junk, header, malformed row).
    fn raw_text(&mut self, text: &str) -> Result<(), GenerateError> {
        if let Some((path, w)) = &mut self.raw {
            let end: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
            w.write_all(text.as_bytes())
                .and_then(|()| w.write_all(end))
                .map_err(|cause| GenerateError::Io {
                    path: path.clone(),
                    cause,
                })?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        store_id: &str,
        line: &Line,
        date: &str,
        first_day: i32,
    ) -> Result<(), GenerateError> {
        use std::fmt::Write as _;
        let amount = crate::layout::format_decimal(i128::from(line.cents), 2);
        for (sep, target) in [('\t', 0), (',', 1)] {
            let writer = match target {
                0 => self.raw.as_mut(),
                _ => self.validated.as_mut(),
            };
            let Some((path, w)) = writer else { continue };
            self.text.clear();
            let _ = write!(
                self.text,
                "{store_id}{sep}{amount}{sep}{}{sep}i{:05}{sep}{date}{sep}r{:02}{sep}{:09}{sep}{}",
                line.code, line.item, line.register, line.receipt, line.tender
            );
            // Validated files always end lines with LF; raw ones as the store system does.
            self.text.push_str(if target == 0 && self.crlf {
                "\r\n"
            } else {
                "\n"
            });
            w.write_all(self.text.as_bytes())
                .map_err(|cause| GenerateError::Io {
                    path: path.clone(),
                    cause,
                })?;
        }
        if let Some((path, columns)) = &mut self.parquet {
            columns.push(store_id, line, first_day, path)?;
        }
        Ok(())
    }

    /// Flushes and closes every file, stamps them with `time`; returns their sizes.
    fn finish(self, time: SystemTime) -> Result<[u64; 3], GenerateError> {
        let mut sizes = [0u64; 3];
        let close = |path: PathBuf, file: File| -> Result<u64, GenerateError> {
            let io = |cause| GenerateError::Io {
                path: path.clone(),
                cause,
            };
            file.set_modified(time).map_err(io)?;
            Ok(file.metadata().map_err(io)?.len())
        };
        for (slot, writer) in [(0, self.raw), (1, self.validated)] {
            if let Some((path, w)) = writer {
                let file = w.into_inner().map_err(|e| GenerateError::Io {
                    path: path.clone(),
                    cause: e.into_error(),
                })?;
                sizes[slot] = close(path, file)?;
            }
        }
        if let Some((path, columns)) = self.parquet {
            let file = columns.finish(&path)?;
            sizes[2] = close(path, file)?;
        }
        Ok(sizes)
    }
}

/// Column builders feeding a Parquet writer, a row group at a time.
struct ParquetColumns {
    writer: ArrowWriter<File>,
    store: StringBuilder,
    amount: Decimal128Builder,
    code: Int64Builder,
    item: StringBuilder,
    date: Date32Builder,
    item_text: String,
}

const PARQUET_BATCH: usize = 65_536;

impl ParquetColumns {
    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("store_id", DataType::Utf8, false),
            Field::new("amount", DataType::Decimal128(18, 2), false),
            Field::new("code", DataType::Int64, false),
            Field::new("item_id", DataType::Utf8, false),
            Field::new("trans_date", DataType::Date32, false),
        ]))
    }

    fn create(path: &Path) -> Result<ParquetColumns, GenerateError> {
        let file = File::create(path).map_err(|cause| GenerateError::Io {
            path: path.to_owned(),
            cause,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, Self::schema(), Some(props)).map_err(|cause| {
            GenerateError::Parquet {
                path: path.to_owned(),
                cause,
            }
        })?;
        Ok(ParquetColumns {
            writer,
            store: StringBuilder::new(),
            amount: Decimal128Builder::new(),
            code: Int64Builder::new(),
            item: StringBuilder::new(),
            date: Date32Builder::new(),
            item_text: String::new(),
        })
    }

    fn push(
        &mut self,
        store_id: &str,
        line: &Line,
        first_day: i32,
        path: &Path,
    ) -> Result<(), GenerateError> {
        use std::fmt::Write as _;
        self.store.append_value(store_id);
        self.amount.append_value(i128::from(line.cents));
        self.code.append_value(i64::from(line.code));
        self.item_text.clear();
        let _ = write!(self.item_text, "i{:05}", line.item);
        self.item.append_value(&self.item_text);
        self.date.append_value(first_day + line.day as i32);
        if self.code.len() >= PARQUET_BATCH {
            self.flush(path)?;
        }
        Ok(())
    }

    fn flush(&mut self, path: &Path) -> Result<(), GenerateError> {
        if self.code.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.store.finish()),
            Arc::new(
                self.amount
                    .finish()
                    .with_precision_and_scale(18, 2)
                    .expect("18,2 is a valid decimal type"),
            ),
            Arc::new(self.code.finish()),
            Arc::new(self.item.finish()),
            Arc::new(self.date.finish()),
        ];
        let batch =
            RecordBatch::try_new(Self::schema(), columns).expect("columns match the schema");
        self.writer
            .write(&batch)
            .map_err(|cause| GenerateError::Parquet {
                path: path.to_owned(),
                cause,
            })
    }

    fn finish(mut self, path: &Path) -> Result<File, GenerateError> {
        self.flush(path)?;
        self.writer
            .into_inner()
            .map_err(|cause| GenerateError::Parquet {
                path: path.to_owned(),
                cause,
            })
    }
}
