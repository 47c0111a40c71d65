//! Record keys and partition paths, as Hudi's key generators make them from a row's values.
//!
//! The table's own key generator (`hoodie.table.keygenerator.class`) decides the form: `value`
//! for a simple key, `f1:v1,f2:v2` for a complex one. Keys that Hudi would make ambiguous are
//! refused rather than written.

use std::fmt::Write as _;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::HashMap as FastHashMap;

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
    /// keys. Row numbers in errors count across the batches, from 1.
    pub fn record_keys(&self, batches: &[RecordBatch]) -> Result<StringArray, TableError> {
        let complex = self.complex_keys();
        let bad = |row: usize, reason: String| TableError::Data {
            url: self.location.url.clone(),
            message: format!("row {}: {reason}", row + 1),
        };
        let width: usize = self.config.record_key.iter().map(|n| n.len() + 16).sum();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // Each key is written straight into the column (`write_str`), then closed by
        // `append_value("")`.
        let mut keys = StringBuilder::with_capacity(rows, rows * width);
        let mut row_no = 0usize;
        for batch in batches {
            let columns = self.key_texts(batch, &self.config.record_key, "record key")?;
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
                    if complex {
                        // Bytes, not chars: both are ASCII, which no other UTF-8 byte equals.
                        if text.bytes().any(|b| matches!(b, b',' | b':')) {
                            return Err(bad(
                                row_no,
                                format!(
                                    "record key field `{name}` is `{text}`: a `,` or `:` in a \
                                     key value makes Hudi's complex key ambiguous"
                                ),
                            ));
                        }
                        for part in [if i > 0 { "," } else { "" }, name, ":", text] {
                            let _ = keys.write_str(part);
                        }
                    } else {
                        if value.is_none_or(str::is_empty) {
                            return Err(bad(
                                row_no,
                                format!("record key field `{name}` is null or empty"),
                            ));
                        }
                        for part in [if i > 0 { "," } else { "" }, text] {
                            let _ = keys.write_str(part);
                        }
                    }
                }
                if complex && present == 0 {
                    return Err(bad(
                        row_no,
                        format!(
                            "every record key field ({}) is null or empty",
                            self.config.record_key.join(", ")
                        ),
                    ));
                }
                keys.append_value("");
                row_no += 1;
            }
        }
        Ok(keys.finish())
    }

    /// The partition path of every row of the batches, in order (`2026-03-01`, or
    /// `trans_date=2026-03-01` hive-style).
    pub fn partition_paths(&self, batches: &[RecordBatch]) -> Result<PartitionPaths, TableError> {
        let mut paths = PartitionPaths::default();
        // A run's rows fall in a few partitions: each path is made once per batch and value, and
        // numbered by the path itself, so values that make one path (a null and an empty
        // string both make the default partition) share its index.
        let mut index_of: std::collections::HashMap<String, u32> = Default::default();
        for batch in batches {
            let columns =
                self.key_texts(batch, &self.config.partition_fields, "partition field")?;
            let mut in_batch: FastHashMap<Vec<Option<&str>>, u32> = FastHashMap::default();
            let mut values: Vec<Option<&str>> = Vec::with_capacity(columns.len());
            for row in 0..batch.num_rows() {
                values.clear();
                values.extend(columns.iter().map(|(_, col)| col.value(row)));
                if let Some(&index) = in_batch.get(values.as_slice()) {
                    paths.of_row.push(index);
                    continue;
                }
                let path = columns
                    .iter()
                    .zip(&values)
                    .map(|((name, _), value)| {
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
                    .join("/");
                let index = *index_of.entry(path).or_insert_with_key(|path| {
                    paths.paths.push(path.clone());
                    (paths.paths.len() - 1) as u32
                });
                in_batch.insert(values.clone(), index);
                paths.of_row.push(index);
            }
        }
        Ok(paths)
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
}

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
                // Few distinct dates: each is formatted once, and rows point at its text.
                let dates = col.as_primitive::<Date32Type>();
                let mut index_of: FastHashMap<i32, u32> = FastHashMap::default();
                let mut texts: Vec<String> = Vec::new();
                let of_row = dates
                    .iter()
                    .map(|d| {
                        d.map(|d| {
                            *index_of.entry(d).or_insert_with(|| {
                                texts.push(format_date(d));
                                (texts.len() - 1) as u32
                            })
                        })
                    })
                    .collect();
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
            .record_keys(&batches(&[
                ("s", vec![Some("a"), None]),
                ("i", vec![Some("b"), Some("")]),
            ]))
            .unwrap_err();
        // Row 2 has every key field null or empty.
        assert!(keys.to_string().contains("row 2"), "{keys}");
        let keys = t
            .record_keys(&batches(&[
                ("s", vec![Some("a"), None]),
                ("i", vec![Some("b"), Some("c")]),
            ]))
            .unwrap();
        assert_eq!(texts(&keys), ["s:a,i:b", "s:__null__,i:c"]);
        for hostile in ["a,i:b", "a:b"] {
            let err = t
                .record_keys(&batches(&[
                    ("s", vec![Some(hostile)]),
                    ("i", vec![Some("x")]),
                ]))
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

    #[test]
    fn a_simple_key_must_be_present() {
        let t = table(&["s"], "SimpleKeyGenerator");
        assert_eq!(
            texts(
                &t.record_keys(&batches(&[("s", vec![Some("a,b:c")])]))
                    .unwrap()
            ),
            ["a,b:c"]
        );
        for missing in [None, Some("")] {
            let err = t
                .record_keys(&batches(&[("s", vec![missing])]))
                .unwrap_err();
            assert!(err.to_string().contains("null or empty"), "{err}");
        }
    }
}
