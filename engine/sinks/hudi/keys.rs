//! Record keys and partition paths, as Hudi's key generators make them from a row's values.
//!
//! The table's own key generator (`hoodie.table.keygenerator.class`) decides the form: `value`
//! for a simple key, `f1:v1,f2:v2` for a complex one. Keys that Hudi would make ambiguous are
//! refused rather than written.

use std::fmt::Write as _;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericStringArray, LargeStringArray, OffsetSizeTrait, RecordBatch,
    StringArray, StringBuilder,
};
use datafusion::arrow::compute::{max, min};
use datafusion::arrow::datatypes::{DataType, Date32Type};
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
        Ok(self.ordered_record_keys(batches, first_row)?.0)
    }

    /// [`Self::record_keys`], and whether each key is greater than the one before it: checked as
    /// each key is written, while the two are in cache (a second pass over a province's keys
    /// read 170 MB again).
    fn ordered_record_keys(
        &self,
        batches: &[RecordBatch],
        first_row: usize,
    ) -> Result<(StringArray, bool), TableError> {
        let complex = self.complex_keys();
        let bad = |row: usize, reason: String| TableError::Data {
            url: self.location.url.clone(),
            message: format!("row {}: {reason}", row + 1),
        };
        let fields = &self.config.record_key;
        // What goes before each field's value: `f1:`, `,f2:`, ... for a complex key, `,` between
        // the values of a simple one. Written as one piece, not three.
        let prefixes: Vec<String> = fields
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sep = if i > 0 { "," } else { "" };
                match complex {
                    true => format!("{sep}{name}:"),
                    false => sep.to_string(),
                }
            })
            .collect();
        let width: usize = fields.iter().map(|n| n.len() + 16).sum();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // Each key is written straight into the column (`write_str`), then closed by
        // `append_value("")`.
        let mut keys = StringBuilder::with_capacity(rows, rows * width);
        let mut ascending = true;
        let mut row_no = first_row;
        for batch in batches {
            let columns = self.key_texts(batch, fields, "record key")?;
            // A column none of whose values holds `,` or `:` needs no look at each value.
            let check: Vec<bool> = columns
                .iter()
                .map(|(_, col)| complex && col.may_hold_separators())
                .collect();
            for row in 0..batch.num_rows() {
                let mut present = 0;
                for (i, (name, col)) in columns.iter().enumerate() {
                    let value = col.value(row);
                    let text = match value {
                        None => "__null__",
                        Some("") => "__empty__",
                        Some(v) => {
                            present += 1;
                            v
                        }
                    };
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
                    let _ = keys.write_str(&prefixes[i]);
                    let _ = keys.write_str(text);
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
                keys.append_value("");
                ascending = ascending && last_two_ascend(&keys);
                row_no += 1;
            }
        }
        Ok((keys.finish(), ascending))
    }

    /// Each row's record key and partition path, made on rayon's pool, one run of contiguous
    /// batches per core (a province's 3.4M keys took half a second on one core while the
    /// other had nothing to do), and whether the keys ascend strictly in row order.
    ///
    /// The result is the one [`Self::record_keys`] and [`Self::partition_paths`] make over all
    /// the batches: runs are joined in order, and their partition paths renumbered by first
    /// appearance.
    pub fn key_rows(&self, batches: &[RecordBatch]) -> Result<KeyedRows, TableError> {
        // On rayon's pool (its threads outlive the call), one run per thread, in run order.
        use rayon::prelude::*;
        let runs = runs_of_batches(batches, rayon::current_num_threads());
        let made = runs
            .par_iter()
            .map(|&(batches, first_row)| self.key_run(batches, first_row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyedRows::join(made))
    }

    /// One thread's part of [`Self::key_rows`]: the keyed rows of consecutive batches whose
    /// first row is row `first_row` of the run.
    fn key_run(&self, batches: &[RecordBatch], first_row: usize) -> Result<KeyedRows, TableError> {
        let (keys, ascending) = self.ordered_record_keys(batches, first_row)?;
        let partitions = self.partition_paths(batches)?;
        Ok(KeyedRows {
            keys: keys.into(),
            partitions,
            ascending,
        })
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
    ) -> Result<Vec<(&'a str, KeyText<'a>)>, TableError> {
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

/// Every row's record key and partition path ([`HudiTable::key_rows`]).
#[derive(Debug)]
pub struct KeyedRows {
    /// Each row's record key, in row order (the `_hoodie_record_key` column as written).
    pub keys: RecordKeys,
    pub partitions: PartitionPaths,
    /// Each key is greater than the one before it, so no key repeats (the province job's rows
    /// come ordered by their key): the plan need not look for repeats.
    pub ascending: bool,
}

impl KeyedRows {
    /// The keyed rows of consecutive runs of batches, as one. Runs without rows are left out,
    /// so each boundary compares the last key of one run with the first of the next.
    fn join(runs: Vec<KeyedRows>) -> KeyedRows {
        let mut joined = KeyedRows {
            keys: RecordKeys::default(),
            partitions: PartitionPaths::default(),
            ascending: true,
        };
        for run in runs.into_iter().filter(|run| !run.keys.is_empty()) {
            let boundary = joined
                .keys
                .last()
                .is_none_or(|last| last < run.keys.value(0));
            joined.ascending &= run.ascending && boundary;
            joined.partitions.append(run.partitions);
            joined.keys.extend(run.keys);
        }
        joined
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

/// Whether the last key written is greater than the one before it (true for a first key).
fn last_two_ascend(keys: &StringBuilder) -> bool {
    let (offsets, values) = (keys.offsets_slice(), keys.values_slice());
    match offsets {
        [.., a, b, c] => values[*a as usize..*b as usize] < values[*b as usize..*c as usize],
        _ => true,
    }
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
enum KeyText<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    /// Values turned to text once, up front.
    Texts(Vec<Option<String>>),
    /// A few distinct values turned to text once; each row's index into them.
    Distinct {
        texts: Vec<String>,
        of_row: Vec<Option<u32>>,
    },
}

impl<'a> KeyText<'a> {
    fn new(col: &'a ArrayRef) -> KeyText<'a> {
        match col.data_type() {
            DataType::Utf8 => KeyText::Utf8(col.as_string::<i32>()),
            DataType::LargeUtf8 => KeyText::LargeUtf8(col.as_string::<i64>()),
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
            KeyText::Texts(texts) => texts.iter().flatten().any(|t| holds(t.as_bytes())),
            KeyText::Distinct { texts, .. } => texts.iter().any(|t| holds(t.as_bytes())),
        }
    }

    fn value(&self, row: usize) -> Option<&str> {
        match self {
            KeyText::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            KeyText::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
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
        assert!(!t.key_rows(&batches).unwrap().ascending);
        let ordered = dated(&["a", "a", "b"], &[Some(day), Some(day + 1), Some(day)]);
        assert!(t.key_rows(&[ordered]).unwrap().ascending);
    }

    fn keyed_in_runs(t: &HudiTable, batches: &[RecordBatch], runs: usize) -> KeyedRows {
        let made = runs_of_batches(batches, runs)
            .into_iter()
            .map(|(batches, first_row)| t.key_run(batches, first_row).unwrap())
            .collect();
        KeyedRows::join(made)
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
            assert_eq!(
                made.keys.iter().collect::<Vec<_>>(),
                texts(&keys),
                "{runs} runs"
            );
            let by_row: Vec<&str> = (0..made.keys.len()).map(|r| made.keys.value(r)).collect();
            assert_eq!(by_row, texts(&keys), "{runs} runs, row by row");
            assert_eq!(made.keys.last(), Some("s:s09,d:__null__"), "{runs} runs");
            assert_eq!(made.partitions.paths, paths.paths, "{runs} runs");
            assert_eq!(made.partitions.of_row, paths.of_row, "{runs} runs");
            assert!(made.ascending, "{runs} runs");
        }
        assert_eq!(
            paths.paths,
            ["2026-03-02", "2026-03-01", "__HIVE_DEFAULT_PARTITION__"]
        );
        assert_eq!(t.key_rows(&batches).unwrap().keys.len(), 10);
        assert_eq!(keyed_in_runs(&t, &[], 2).keys.len(), 0);
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
        let made = apart
            .iter()
            .map(|b| t.key_run(std::slice::from_ref(b), 0).unwrap())
            .collect();
        assert!(!KeyedRows::join(made).ascending);
        // A run's errors count rows from the run's first row: the empty key is the third.
        let err = keyed_in_runs_err(&t, &[one(&["a"]), one(&["b", ""])]);
        assert!(err.contains("row 3"), "{err}");
    }

    fn keyed_in_runs_err(t: &HudiTable, batches: &[RecordBatch]) -> String {
        runs_of_batches(batches, 2)
            .into_iter()
            .find_map(|(batches, first_row)| t.key_run(batches, first_row).err())
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
