//! Record keys and partition paths, as Hudi's key generators make them from a row's values.
//!
//! The table's own key generator (`hoodie.table.keygenerator.class`) decides the form: `value`
//! for a simple key, `f1:v1,f2:v2` for a complex one. Keys that Hudi would make ambiguous are
//! refused rather than written.
//!
//! Every row's key is checked once, up front ([`HudiTable::key_rows`]); it is kept
//! ([`IncomingKeys::Kept`]) only when the plan must read it, and otherwise made again where a
//! base file's key column is written ([`KeyMaker`]), from the same values by the same rule.
//! Invariant: a kept key and a made key of one row are the same text (unit tests compare them).

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericStringArray, Int32Array, LargeStringArray, OffsetSizeTrait,
    RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{max, min};
use datafusion::arrow::datatypes::{DataType, Date32Type, Int32Type};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::HashMap as FastHashMap;

use super::parts::PartStarts;
use super::table::{HudiTable, TableError};
use crate::layout::format_date;

impl HudiTable {
    /// Whether keys are written `field:value,...` (ComplexKeyGenerator and friends) or as the bare
    /// value (SimpleKeyGenerator). The table's own key generator decides.
    fn complex_keys(&self) -> bool {
        let class = self
            .properties
            .get("hoodie.table.keygenerator.class")
            .map(String::as_str)
            .unwrap_or_else(|| self.config.key_generator());
        !class.ends_with(".SimpleKeyGenerator")
    }

    /// What goes before each key field's value: `f1:`, `,f2:`, ... for a complex key, `,`
    /// between the values of a simple one. Written as one piece, not three.
    fn key_prefixes(&self) -> Vec<String> {
        let complex = self.complex_keys();
        self.config
            .record_key
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sep = if i > 0 { "," } else { "" };
                match complex {
                    true => format!("{sep}{name}:"),
                    false => sep.to_string(),
                }
            })
            .collect()
    }

    /// Record key text per row, as Hudi's key generators make it: `value` for a simple key,
    /// `f1:v1,f2:v2` for a complex one, with `__null__` / `__empty__` for a null or empty field.
    ///
    /// Refused, naming the row and the value, rather than risking two rows with one key: a
    /// complex-key value holding `,` or `:` (Hudi does not escape them, so `s="A,item_id:B"` could
    /// read as another row's key), a simple key that is null or empty, and a complex key whose
    /// fields are all null or empty (Hudi's own generators refuse both).
    ///
    /// The keys come as one string array over all the batches' rows in order (the
    /// `_hoodie_record_key` column as written), not a string per row: a province has millions of
    /// keys. Row numbers in errors count across the batches, from 1, the first batch's first row
    /// being row `first_row` (0-based) of the run: [`Self::key_rows`] keys a run's batches in
    /// parts.
    pub fn record_keys(
        &self,
        batches: &[RecordBatch],
        first_row: usize,
    ) -> Result<StringArray, TableError> {
        let run = self.key_run(batches, first_row, true)?;
        Ok(run
            .kept
            .unwrap_or_else(|| StringArray::from(Vec::<&str>::new())))
    }

    /// Checks every row's record key (see [`Self::record_keys`]) and whether each key is greater
    /// than the one before it, keeping the keys only when asked (`keep`): each key is made in a
    /// buffer and compared with the one before while both are in cache.
    fn key_run(
        &self,
        batches: &[RecordBatch],
        first_row: usize,
        keep: bool,
    ) -> Result<KeyRun, TableError> {
        let complex = self.complex_keys();
        let bad = |row: usize, reason: String| TableError::Data {
            url: self.location.url.clone(),
            message: format!("row {}: {reason}", row + 1),
        };
        let fields = &self.config.record_key;
        let prefixes = self.key_prefixes();
        let width: usize = fields.iter().map(|n| n.len() + 16).sum();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut kept = keep.then(|| StringBuilder::with_capacity(rows, rows * width));
        // This row's key and the one before it, swapped after each row.
        let (mut key, mut previous) = (String::with_capacity(width), String::with_capacity(width));
        let mut first: Option<String> = None;
        let (mut ascending, mut longest) = (true, 0);
        let mut row_no = first_row;
        for batch in batches {
            let columns = self.key_texts(batch, fields, "record key")?;
            // A column none of whose values holds `,` or `:` needs no look at each value.
            let check: Vec<bool> = columns
                .iter()
                .map(|(_, col)| complex && col.may_hold_separators())
                .collect();
            for row in 0..batch.num_rows() {
                key.clear();
                let mut present = 0;
                for (i, (name, col)) in columns.iter().enumerate() {
                    let value = col.value(row);
                    let text = key_value_text(value);
                    if value.is_some_and(|v| !v.is_empty()) {
                        present += 1;
                    }
                    // Bytes, not chars: both are ASCII, which no other UTF-8 byte equals.
                    if check[i] && text.bytes().any(|b| matches!(b, b',' | b':')) {
                        return Err(bad(
                            row_no,
                            format!(
                                "record key field `{name}` is `{text}`: a `,` or `:` in a key \
                                 value makes Hudi's complex key ambiguous"
                            ),
                        ));
                    }
                    if !complex && value.is_none_or(str::is_empty) {
                        return Err(bad(
                            row_no,
                            format!("record key field `{name}` is null or empty"),
                        ));
                    }
                    write_field(&mut key, &prefixes[i], value);
                }
                if complex && present == 0 {
                    return Err(bad(
                        row_no,
                        format!(
                            "every record key field ({}) is null or empty",
                            fields.join(", ")
                        ),
                    ));
                }
                match &first {
                    None => first = Some(key.clone()),
                    Some(_) => ascending = ascending && previous < key,
                }
                longest = longest.max(key.len());
                if let Some(kept) = &mut kept {
                    kept.append_value(&key);
                }
                std::mem::swap(&mut key, &mut previous);
                row_no += 1;
            }
        }
        Ok(KeyRun {
            kept: kept.map(|mut keys| keys.finish()),
            ascending,
            // After the last swap, `previous` is the last row's key.
            ends: first.map(|first| (first, previous)),
            longest,
        })
    }

    /// Every row's record key checked (see [`Self::record_keys`]) on rayon's pool, one run of
    /// contiguous batches per core (a province's 3.4M keys took half a second on one core while
    /// the other had nothing to do), and whether the keys ascend strictly in row order.
    ///
    /// With `keep`, the keys are kept, as [`Self::record_keys`] makes them over all the batches
    /// (runs joined in order); without, they are made again where they are written
    /// ([`KeyMaker`]): a province's keys held from the plan to the last base file were 170 MB
    /// at 10M transactions, copied once more, out of memory order, into each file's key column.
    pub fn key_rows(&self, batches: &[RecordBatch], keep: bool) -> Result<KeyedRows, TableError> {
        let made = on_runs(batches, |run, first_row| self.key_run(run, first_row, keep))?;
        Ok(KeyedRows::join(made, self.key_maker(batches)?, keep))
    }

    /// The maker of the keys of `batches`' rows (their longest key yet unknown).
    fn key_maker(&self, batches: &[RecordBatch]) -> Result<KeyMaker, TableError> {
        let fields = &self.config.record_key;
        // Where the key fields are among the columns; the same in every batch.
        let fields = match batches.first() {
            Some(batch) => {
                self.columns(batch, fields, "record key")?;
                let schema = batch.schema();
                fields
                    .iter()
                    .filter_map(|name| schema.index_of(name).ok())
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(KeyMaker {
            prefixes: self.key_prefixes(),
            fields,
            longest: 0,
        })
    }

    /// Each row's partition path, made on rayon's pool one run of contiguous batches per core,
    /// as [`Self::partition_paths`] makes it over all the batches: runs are joined in order,
    /// and their paths renumbered by first appearance.
    pub fn partition_rows(&self, batches: &[RecordBatch]) -> Result<PartitionPaths, TableError> {
        let made = on_runs(batches, |run, _| self.partition_paths(run))?;
        Ok(PartitionPaths::join(made))
    }

    /// The partition path of every row of the batches, in order (`2026-03-01`, or
    /// `trans_date=2026-03-01` hive-style).
    pub fn partition_paths(&self, batches: &[RecordBatch]) -> Result<PartitionPaths, TableError> {
        let mut paths = PartitionPaths::default();
        // Sized once: grown a row at a time, a province's row numbers were copied as it doubled.
        paths
            .of_row
            .reserve_exact(batches.iter().map(RecordBatch::num_rows).sum());
        // A run's rows fall in a few partitions: each path is made once per batch and value, and
        // numbered by the path itself, so values that make one path (a null and an empty
        // string both make the default partition) share its index.
        let mut index_of: std::collections::HashMap<String, u32> = Default::default();
        let mut number = |path: String, paths: &mut PartitionPaths| {
            *index_of.entry(path).or_insert_with_key(|path| {
                paths.paths.push(path.clone());
                (paths.paths.len() - 1) as u32
            })
        };
        for batch in batches {
            let columns =
                self.key_texts(batch, &self.config.partition_fields, "partition field")?;
            // One field of a few values formatted once (a date): each value's path is found
            // once, and each row's by the value's index, with no hashing per row.
            if let [(name, KeyText::Distinct { texts, of_row })] = columns.as_slice() {
                let mut index_of_text: Vec<Option<u32>> = vec![None; texts.len() + 1];
                for value in of_row {
                    // Slot `texts.len()` is the null value's.
                    let slot = &mut index_of_text[value.map_or(texts.len(), |i| i as usize)];
                    let index = match *slot {
                        Some(index) => index,
                        None => {
                            let text = value.map(|i| texts[i as usize].as_str());
                            *slot.insert(number(self.partition_path(&[(name, text)]), &mut paths))
                        }
                    };
                    paths.of_row.push(index);
                }
                continue;
            }
            let mut in_batch: FastHashMap<Vec<Option<&str>>, u32> = FastHashMap::default();
            let mut values: Vec<Option<&str>> = Vec::with_capacity(columns.len());
            for row in 0..batch.num_rows() {
                values.clear();
                values.extend(columns.iter().map(|(_, col)| col.value(row)));
                if let Some(&index) = in_batch.get(values.as_slice()) {
                    paths.of_row.push(index);
                    continue;
                }
                let named: Vec<(&str, Option<&str>)> = columns
                    .iter()
                    .zip(&values)
                    .map(|((name, _), value)| (*name, *value))
                    .collect();
                let index = number(self.partition_path(&named), &mut paths);
                in_batch.insert(values.clone(), index);
                paths.of_row.push(index);
            }
        }
        Ok(paths)
    }

    /// The partition path of one row's partition field values (`2026-03-01`, or
    /// `trans_date=2026-03-01` hive-style; an empty or null value is the default partition).
    fn partition_path(&self, values: &[(&str, Option<&str>)]) -> String {
        values
            .iter()
            .map(|(name, value)| {
                let value = value
                    .filter(|v| !v.is_empty())
                    .unwrap_or("__HIVE_DEFAULT_PARTITION__");
                if self.config.hive_style {
                    format!("{name}={value}")
                } else {
                    value.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The columns `names` of `batch` as the text key generators use.
    fn key_texts<'a>(
        &self,
        batch: &'a RecordBatch,
        names: &'a [String],
        role: &str,
    ) -> Result<Vec<(&'a str, KeyText)>, TableError> {
        Ok(self
            .columns(batch, names, role)?
            .into_iter()
            .map(|(name, col)| (name, KeyText::new(col)))
            .collect())
    }

    fn columns<'a>(
        &self,
        batch: &'a RecordBatch,
        names: &'a [String],
        role: &str,
    ) -> Result<Vec<(&'a str, &'a ArrayRef)>, TableError> {
        names
            .iter()
            .map(|n| {
                batch
                    .column_by_name(n)
                    .map(|c| (n.as_str(), c))
                    .ok_or_else(|| TableError::Data {
                        url: self.location.url.clone(),
                        message: format!("the rows have no {role} column `{n}`"),
                    })
            })
            .collect()
    }
}

/// Writes one key field to a key being made: what goes before it, then its value's text. The
/// one rule both the check ([`HudiTable::key_rows`]) and [`KeyMaker`] make keys by.
fn write_field(out: &mut impl std::fmt::Write, prefix: &str, value: Option<&str>) {
    let _ = out.write_str(prefix);
    let _ = out.write_str(key_value_text(value));
}

/// The text a key field's value stands as in a record key.
fn key_value_text(value: Option<&str>) -> &str {
    match value {
        None => "__null__",
        Some("") => "__empty__",
        Some(v) => v,
    }
}

/// One thread's part of [`HudiTable::key_rows`]: consecutive batches keyed.
struct KeyRun {
    /// The keys, when kept.
    kept: Option<StringArray>,
    /// Each key is greater than the one before it.
    ascending: bool,
    /// The run's first and last keys, to compare across runs; none for a run without rows.
    ends: Option<(String, String)>,
    /// The longest key's bytes.
    longest: usize,
}

/// Every row's record key ([`HudiTable::key_rows`]).
#[derive(Debug)]
pub struct KeyedRows {
    pub keys: IncomingKeys,
    /// Each key is greater than the one before it, so no key repeats (the province job's rows
    /// come ordered by their key): the plan need not look for repeats.
    pub ascending: bool,
}

impl KeyedRows {
    /// The keys of consecutive runs of `batches`, as one. Runs without rows are left out of the
    /// order check, so each boundary compares the last key of one run with the first of the
    /// next.
    fn join(runs: Vec<KeyRun>, mut maker: KeyMaker, keep: bool) -> KeyedRows {
        let mut kept = RecordKeys::default();
        let mut ascending = true;
        let mut last: Option<String> = None;
        for run in runs {
            if let Some((first, run_last)) = run.ends {
                let boundary = last.as_ref().is_none_or(|last| *last < first);
                ascending &= run.ascending && boundary;
                last = Some(run_last);
            }
            maker.longest = maker.longest.max(run.longest);
            if let Some(keys) = run.kept {
                kept.extend(keys.into());
            }
        }
        let keys = match keep {
            true => IncomingKeys::Kept(kept),
            false => IncomingKeys::Made(maker),
        };
        KeyedRows { keys, ascending }
    }
}

/// The incoming rows' record keys: kept since they were checked, or made again from the key
/// columns where they are needed.
#[derive(Debug)]
pub enum IncomingKeys {
    /// Every key, made once: the plan looks stored keys up, or looks for repeats.
    Kept(RecordKeys),
    /// No key kept: every touched partition is new and the keys ascend, so the plan reads none
    /// and only the base files' key columns (and their key ranges) need them.
    Made(KeyMaker),
}

impl IncomingKeys {
    /// The keys, when kept.
    pub fn kept(&self) -> Option<&RecordKeys> {
        match self {
            IncomingKeys::Kept(keys) => Some(keys),
            IncomingKeys::Made(_) => None,
        }
    }
}

/// Makes record keys again from the key columns, as [`HudiTable::record_keys`] made them when it
/// checked them: the same values as text, the same prefixes. A new file group's slice makes its
/// key column from its own gathered columns, in order, instead of copying each row's key out of
/// a province's keys held in memory.
#[derive(Debug)]
pub struct KeyMaker {
    /// What goes before each field's value ([`HudiTable::key_prefixes`]).
    prefixes: Vec<String>,
    /// Each key field's column among the rows' columns (the table's data columns).
    fields: Vec<usize>,
    /// The longest key's bytes.
    longest: usize,
}

impl KeyMaker {
    /// The keys of every row of `columns` (the table's data columns), as a key column sized for
    /// the longest key, so it never grows.
    pub fn column(&self, columns: &[ArrayRef]) -> StringArray {
        let rows = columns.first().map_or(0, |c| c.len());
        let texts: Vec<KeyText> = self
            .fields
            .iter()
            .map(|&f| KeyText::new(&columns[f]))
            .collect();
        let mut keys = StringBuilder::with_capacity(rows, rows * self.longest);
        for row in 0..rows {
            self.write(&texts, row, &mut keys);
            keys.append_value("");
        }
        keys.finish()
    }

    /// The key of row `row` of `batch` (the table's data columns).
    pub fn key(&self, batch: &RecordBatch, row: usize) -> String {
        let texts: Vec<KeyText> = self
            .fields
            .iter()
            .map(|&f| KeyText::new(&batch.column(f).slice(row, 1)))
            .collect();
        let mut key = String::with_capacity(self.longest);
        self.write(&texts, 0, &mut key);
        key
    }

    fn write(&self, texts: &[KeyText], row: usize, out: &mut impl std::fmt::Write) {
        for (prefix, text) in self.prefixes.iter().zip(texts) {
            write_field(out, prefix, text.value(row));
        }
    }
}

/// Every row's record key, in row order, kept in the arrays they were made in (one per thread
/// of [`HudiTable::key_rows`]): joining them into one would copy a province's keys, 170 MB at
/// 10M transactions, once more.
#[derive(Debug, Clone, Default)]
pub struct RecordKeys {
    parts: Vec<StringArray>,
    starts: PartStarts,
}

impl RecordKeys {
    /// The number of keys.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The key of row `row` (rows count across the parts, from 0).
    pub fn value(&self, row: usize) -> &str {
        let (part, index) = self.starts.locate(row);
        self.parts[part].value(index)
    }

    /// The last key, if any.
    pub fn last(&self) -> Option<&str> {
        self.len().checked_sub(1).map(|row| self.value(row))
    }

    /// Appends the keys of `next`, which follow these.
    fn extend(&mut self, next: RecordKeys) {
        for part in next.parts {
            self.starts.push(part.len());
            self.parts.push(part);
        }
    }

    /// Every key, in row order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .flat_map(|part| part.iter().map(Option::unwrap_or_default))
    }
}

impl From<StringArray> for RecordKeys {
    /// Keys of one array (it holds no nulls: keys have none).
    fn from(keys: StringArray) -> RecordKeys {
        RecordKeys {
            starts: PartStarts::new([keys.len()]),
            parts: vec![keys],
        }
    }
}

/// `work` done on each run of `batches` (with its first row's number) on rayon's pool, one run
/// per thread (its threads outlive the call), the results in run order.
fn on_runs<T: Send>(
    batches: &[RecordBatch],
    work: impl Fn(&[RecordBatch], usize) -> Result<T, TableError> + Sync,
) -> Result<Vec<T>, TableError> {
    use rayon::prelude::*;
    runs_of_batches(batches, rayon::current_num_threads())
        .par_iter()
        .map(|&(run, first_row)| work(run, first_row))
        .collect()
}

/// `batches` cut into at most `runs` consecutive runs of about equal rows, each with the number
/// of its first row.
fn runs_of_batches(batches: &[RecordBatch], runs: usize) -> Vec<(&[RecordBatch], usize)> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let per_run = total.div_ceil(runs.max(1)).max(1);
    let mut out = Vec::with_capacity(runs);
    let (mut start, mut first_row, mut rows) = (0, 0, 0);
    for (i, batch) in batches.iter().enumerate() {
        rows += batch.num_rows();
        if rows >= per_run * (out.len() + 1) || i + 1 == batches.len() {
            out.push((&batches[start..=i], first_row));
            first_row = rows;
            start = i + 1;
        }
    }
    out
}

/// Each row's partition path, as an index into the distinct paths (a run touches a few).
#[derive(Debug, Default, Clone)]
pub struct PartitionPaths {
    /// The distinct paths, in order of first appearance.
    pub paths: Vec<String>,
    /// Per row, the index of its path in `paths`.
    pub of_row: Vec<u32>,
}

impl PartitionPaths {
    /// The path of row `row`.
    pub fn of(&self, row: usize) -> &str {
        &self.paths[self.of_row[row] as usize]
    }

    /// The paths of consecutive runs of rows, as one.
    fn join(runs: Vec<PartitionPaths>) -> PartitionPaths {
        let mut joined = PartitionPaths::default();
        for run in runs {
            joined.append(run);
        }
        joined
    }

    /// Appends the rows of `next`, which follow these: its paths are numbered on after these,
    /// a path both share keeping this one's index.
    fn append(&mut self, next: PartitionPaths) {
        let index: Vec<u32> = next
            .paths
            .into_iter()
            .map(|path| match self.paths.iter().position(|p| *p == path) {
                Some(i) => i as u32,
                None => {
                    self.paths.push(path);
                    (self.paths.len() - 1) as u32
                }
            })
            .collect();
        self.of_row
            .extend(next.of_row.iter().map(|&i| index[i as usize]));
    }
}

/// The bytes of every value of `strings`, back to back.
fn values_bytes<O: OffsetSizeTrait>(strings: &GenericStringArray<O>) -> &[u8] {
    let offsets = strings.value_offsets();
    let (first, last) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    &strings.value_data()[first..last]
}

/// Dates a batch's key column may span and still be looked up in a table by day (a day's slot
/// is 4 bytes): wider spans are hashed.
const DAYS_INDEXED: i64 = 1 << 16;

/// A key or partition column as the text Hudi's key generators use for its values: strings as
/// they are, dates as `YYYY-MM-DD`, anything else as Arrow displays it (numbers as digits).
#[derive(Debug)]
enum KeyText {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    /// Values turned to text once, up front.
    Texts(Vec<Option<String>>),
    /// A dictionary of strings (a column gathered by runs, engine/sinks/hudi/string_runs.rs).
    Dictionary {
        keys: Int32Array,
        values: StringArray,
    },
    /// A few distinct values turned to text once; each row's index into them.
    Distinct {
        texts: Vec<String>,
        of_row: Vec<Option<u32>>,
    },
}

impl KeyText {
    fn new(col: &ArrayRef) -> KeyText {
        match col.data_type() {
            // Clones share the column's buffers.
            DataType::Utf8 => KeyText::Utf8(col.as_string::<i32>().clone()),
            DataType::LargeUtf8 => KeyText::LargeUtf8(col.as_string::<i64>().clone()),
            DataType::Dictionary(key, value)
                if **key == DataType::Int32 && **value == DataType::Utf8 =>
            {
                let dictionary = col.as_dictionary::<Int32Type>();
                KeyText::Dictionary {
                    keys: dictionary.keys().clone(),
                    values: dictionary.values().as_string::<i32>().clone(),
                }
            }
            DataType::Date32 => {
                // Few distinct dates: each is formatted once, and rows point at its text. A
                // batch's dates span a few days: a table by day finds each row's text without
                // hashing the date (a map per row was a tenth of keying a province).
                let dates = col.as_primitive::<Date32Type>();
                let mut texts: Vec<String> = Vec::new();
                let mut text_index = |slot: &mut u32, d: i32| {
                    if *slot == u32::MAX {
                        texts.push(format_date(d));
                        *slot = (texts.len() - 1) as u32;
                    }
                    *slot
                };
                let span = min(dates)
                    .zip(max(dates))
                    .map(|(lo, hi)| (lo, hi as i64 - lo as i64));
                let of_row = match span {
                    Some((lo, span)) if span < DAYS_INDEXED => {
                        let mut index_of = vec![u32::MAX; span as usize + 1];
                        dates
                            .iter()
                            .map(|d| d.map(|d| text_index(&mut index_of[(d - lo) as usize], d)))
                            .collect()
                    }
                    _ => {
                        let mut index_of: FastHashMap<i32, u32> = FastHashMap::default();
                        dates
                            .iter()
                            .map(|d| {
                                d.map(|d| text_index(index_of.entry(d).or_insert(u32::MAX), d))
                            })
                            .collect()
                    }
                };
                KeyText::Distinct { texts, of_row }
            }
            _ => KeyText::Texts(
                (0..col.len())
                    .map(|row| {
                        if col.is_null(row) {
                            None
                        } else {
                            array_value_to_string(col, row).ok()
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// Whether a value may hold `,` or `:` (false only when none does): a complex key's values
    /// are then checked one by one.
    fn may_hold_separators(&self) -> bool {
        let holds = |bytes: &[u8]| bytes.contains(&b',') || bytes.contains(&b':');
        match self {
            KeyText::Utf8(a) => holds(values_bytes(a)),
            KeyText::LargeUtf8(a) => holds(values_bytes(a)),
            KeyText::Dictionary { values, .. } => holds(values_bytes(values)),
            KeyText::Texts(texts) => texts.iter().flatten().any(|t| holds(t.as_bytes())),
            KeyText::Distinct { texts, .. } => texts.iter().any(|t| holds(t.as_bytes())),
        }
    }

    fn value(&self, row: usize) -> Option<&str> {
        match self {
            KeyText::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            KeyText::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
            KeyText::Dictionary { keys, values } => keys
                .is_valid(row)
                .then(|| values.value(keys.value(row) as usize)),
            KeyText::Texts(t) => t[row].as_deref(),
            KeyText::Distinct { texts, of_row } => of_row[row].map(|i| texts[i as usize].as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn table(keys: &[&str], keygen: &str) -> HudiTable {
        let class = format!("org.apache.hudi.keygen.{keygen}");
        HudiTable::in_memory(
            keys,
            [("hoodie.table.keygenerator.class".to_string(), class)].into(),
        )
    }

    fn batch(columns: &[(&str, Vec<Option<&str>>)]) -> RecordBatch {
        let schema = Schema::new(
            columns
                .iter()
                .map(|(n, _)| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            Arc::new(schema),
            columns
                .iter()
                .map(|(_, v)| Arc::new(StringArray::from(v.clone())) as ArrayRef)
                .collect(),
        )
        .unwrap()
    }

    /// One batch of `columns`, as the slice the key functions take.
    fn batches(columns: &[(&str, Vec<Option<&str>>)]) -> [RecordBatch; 1] {
        [batch(columns)]
    }

    fn texts(keys: &StringArray) -> Vec<&str> {
        keys.iter().map(Option::unwrap_or_default).collect()
    }

    #[test]
    fn complex_keys_are_written_as_hudi_does_and_ambiguous_ones_refused() {
        let t = table(&["s", "i"], "ComplexKeyGenerator");
        let keys = t
            .record_keys(
                &batches(&[
                    ("s", vec![Some("a"), None]),
                    ("i", vec![Some("b"), Some("")]),
                ]),
                0,
            )
            .unwrap_err();
        // Row 2 has every key field null or empty.
        assert!(keys.to_string().contains("row 2"), "{keys}");
        let keys = t
            .record_keys(
                &batches(&[
                    ("s", vec![Some("a"), None]),
                    ("i", vec![Some("b"), Some("c")]),
                ]),
                0,
            )
            .unwrap();
        assert_eq!(texts(&keys), ["s:a,i:b", "s:__null__,i:c"]);
        for hostile in ["a,i:b", "a:b"] {
            let err = t
                .record_keys(
                    &batches(&[("s", vec![Some(hostile)]), ("i", vec![Some("x")])]),
                    0,
                )
                .unwrap_err();
            assert!(err.to_string().contains("ambiguous"), "{err}");
        }
    }

    #[test]
    fn values_that_make_one_partition_path_share_it_across_batches() {
        let t = table(&["s"], "SimpleKeyGenerator");
        let first = batch(&[("d", vec![Some("2026-03-01"), None, Some("2026-03-02")])]);
        let second = batch(&[("d", vec![Some(""), Some("2026-03-01")])]);
        let paths = t.partition_paths(&[first, second]).unwrap();
        assert_eq!(
            paths.paths,
            ["2026-03-01", "__HIVE_DEFAULT_PARTITION__", "2026-03-02"]
        );
        // The empty string of the second batch lands in the null's partition, the date in the
        // first batch's.
        assert_eq!(paths.of_row, [0, 1, 2, 1, 0]);
    }

    /// Keys and paths made over runs of the batches, as [`HudiTable::key_rows`] makes them on
    /// its threads, then joined.
    /// One batch of a string column `s` and a date column `d`.
    fn dated(stores: &[&str], days: &[Option<i32>]) -> RecordBatch {
        use datafusion::arrow::array::Date32Array;
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Date32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(stores.to_vec())),
                Arc::new(Date32Array::from(days.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn dates_make_the_same_keys_and_paths_whether_looked_up_by_day_or_hashed() {
        let t = table(&["s", "d"], "ComplexKeyGenerator");
        // 2026-03-01.
        let day = 20_513;
        // The first batch spans a few days (looked up by day); the second spans more than
        // DAYS_INDEXED (hashed), and holds a null.
        let narrow = dated(&["b", "a", "c"], &[Some(day + 1), Some(day), Some(day + 1)]);
        let wide = dated(
            &["d", "e", "f"],
            &[Some(day), None, Some(day + DAYS_INDEXED as i32)],
        );
        let batches = [narrow, wide];
        let far = format_date(day + DAYS_INDEXED as i32);
        let keys = t.record_keys(&batches, 0).unwrap();
        assert_eq!(
            texts(&keys),
            [
                "s:b,d:2026-03-02".to_string(),
                "s:a,d:2026-03-01".into(),
                "s:c,d:2026-03-02".into(),
                "s:d,d:2026-03-01".into(),
                "s:e,d:__null__".into(),
                format!("s:f,d:{far}"),
            ]
        );
        let paths = t.partition_paths(&batches).unwrap();
        assert_eq!(
            paths.paths,
            [
                "2026-03-02".to_string(),
                "2026-03-01".into(),
                "__HIVE_DEFAULT_PARTITION__".into(),
                far
            ]
        );
        assert_eq!(paths.of_row, [0, 1, 0, 1, 2, 3]);
        // Keys out of order (the first two) are seen as each is written.
        assert!(!t.key_rows(&batches, true).unwrap().ascending);
        assert!(!t.key_rows(&batches, false).unwrap().ascending);
        let ordered = dated(&["a", "a", "b"], &[Some(day), Some(day + 1), Some(day)]);
        assert!(t.key_rows(&[ordered], false).unwrap().ascending);
        // Keys not kept are made again, from the same columns, as the same text.
        let maker = t.key_maker(&batches).unwrap();
        let made: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                maker
                    .column(b.columns())
                    .iter()
                    .flatten()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(made, texts(&keys));
        assert_eq!(maker.key(&batches[1], 1), "s:e,d:__null__");
    }

    /// Keys and paths made over runs of the batches, as [`HudiTable::key_rows`] and
    /// [`HudiTable::partition_rows`] make them on their threads, then joined.
    fn keyed_in_runs(t: &HudiTable, batches: &[RecordBatch], runs: usize) -> KeyedRows {
        let made = runs_of_batches(batches, runs)
            .into_iter()
            .map(|(batches, first_row)| t.key_run(batches, first_row, true).unwrap())
            .collect();
        KeyedRows::join(made, t.key_maker(batches).unwrap(), true)
    }

    fn paths_in_runs(t: &HudiTable, batches: &[RecordBatch], runs: usize) -> PartitionPaths {
        let made = runs_of_batches(batches, runs)
            .into_iter()
            .map(|(batches, _)| t.partition_paths(batches).unwrap())
            .collect();
        PartitionPaths::join(made)
    }

    #[test]
    fn keys_made_in_runs_of_batches_are_the_keys_made_in_one() {
        let t = table(&["s", "d"], "ComplexKeyGenerator");
        // Five batches of 1, 3, 0, 2 and 4 rows; days 1 and 2 alternate, the null day last.
        let days = ["2026-03-02", "2026-03-01"];
        let mut row = 0;
        let batches: Vec<RecordBatch> = [1, 3, 0, 2, 4]
            .iter()
            .map(|&n| {
                let stores: Vec<String> = (row..row + n).map(|r| format!("s{r:02}")).collect();
                let dates: Vec<Option<&str>> = (row..row + n)
                    .map(|r| (r < 9).then_some(days[r % 2]))
                    .collect();
                row += n;
                batch(&[
                    ("s", stores.iter().map(|s| Some(s.as_str())).collect()),
                    ("d", dates),
                ])
            })
            .collect();
        let keys = t.record_keys(&batches, 0).unwrap();
        let paths = t.partition_paths(&batches).unwrap();
        for runs in 1..=6 {
            let made = keyed_in_runs(&t, &batches, runs);
            let kept = made.keys.kept().unwrap();
            assert_eq!(kept.iter().collect::<Vec<_>>(), texts(&keys), "{runs} runs");
            let by_row: Vec<&str> = (0..kept.len()).map(|r| kept.value(r)).collect();
            assert_eq!(by_row, texts(&keys), "{runs} runs, row by row");
            assert_eq!(kept.last(), Some("s:s09,d:__null__"), "{runs} runs");
            let made_paths = paths_in_runs(&t, &batches, runs);
            assert_eq!(made_paths.paths, paths.paths, "{runs} runs");
            assert_eq!(made_paths.of_row, paths.of_row, "{runs} runs");
            assert!(made.ascending, "{runs} runs");
        }
        assert_eq!(
            paths.paths,
            ["2026-03-02", "2026-03-01", "__HIVE_DEFAULT_PARTITION__"]
        );
        let kept = t.key_rows(&batches, true).unwrap();
        assert_eq!(kept.keys.kept().map(RecordKeys::len), Some(10));
        let made = t.key_rows(&batches, false).unwrap();
        assert!(made.keys.kept().is_none() && made.ascending);
        assert_eq!(t.partition_rows(&batches).unwrap().of_row, paths.of_row);
        let none = keyed_in_runs(&t, &[], 2);
        assert_eq!(none.keys.kept().map(RecordKeys::len), Some(0));
    }

    #[test]
    fn keys_out_of_order_within_a_run_or_across_runs_are_not_ascending() {
        let t = table(&["s"], "SimpleKeyGenerator");
        let one = |values: &[&str]| {
            batch(&[
                ("s", values.iter().map(|v| Some(*v)).collect()),
                ("d", vec![Some("2026-03-01"); values.len()]),
            ])
        };
        let within = [one(&["a", "c", "b"]), one(&["d", "e"])];
        let across = [one(&["a", "b", "c"]), one(&["c", "d"])];
        for runs in 1..=3 {
            assert!(!keyed_in_runs(&t, &within, runs).ascending, "{runs} runs");
            assert!(!keyed_in_runs(&t, &across, runs).ascending, "{runs} runs");
        }
        // A run without rows between two others: the boundary is the other two runs' keys.
        let apart = [one(&["a"]), one(&[]), one(&["a"])];
        for keep in [true, false] {
            let made = apart
                .iter()
                .map(|b| t.key_run(std::slice::from_ref(b), 0, keep).unwrap())
                .collect();
            let maker = t.key_maker(&apart).unwrap();
            assert!(!KeyedRows::join(made, maker, keep).ascending, "keep {keep}");
        }
        // A run's errors count rows from the run's first row: the empty key is the third.
        let err = keyed_in_runs_err(&t, &[one(&["a"]), one(&["b", ""])]);
        assert!(err.contains("row 3"), "{err}");
    }

    fn keyed_in_runs_err(t: &HudiTable, batches: &[RecordBatch]) -> String {
        runs_of_batches(batches, 2)
            .into_iter()
            .find_map(|(batches, first_row)| t.key_run(batches, first_row, false).err())
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_simple_key_must_be_present() {
        let t = table(&["s"], "SimpleKeyGenerator");
        assert_eq!(
            texts(
                &t.record_keys(&batches(&[("s", vec![Some("a,b:c")])]), 0)
                    .unwrap()
            ),
            ["a,b:c"]
        );
        for missing in [None, Some("")] {
            let err = t
                .record_keys(&batches(&[("s", vec![missing])]), 0)
                .unwrap_err();
            assert!(err.to_string().contains("null or empty"), "{err}");
        }
    }
}
