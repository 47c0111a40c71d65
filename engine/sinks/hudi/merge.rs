//! Merging: the rows of one file group's new base file.
//!
//! The job's rows are first brought to the table's data schema ([`conform`]) and kept in the
//! batches they came in, with their record keys, kept or made again per slice ([`IncomingRows`]):
//! no copy of a province's rows is made. [`merge_group`] then combines a group's latest slice
//! with its incoming rows: an incoming row replaces a stored one only when its precombine value
//! is greater or equal (an older source never overwrites a newer one) *and* some data column
//! differs, so rerunning the same inputs changes nothing. Stored rows keep their meta columns;
//! rows taken from this instant get its commit time and sequence numbers, and every row names
//! the new file.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{
    make_comparator, new_null_array, Array, ArrayRef, AsArray, DictionaryArray, DynComparator,
    Int32Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::kernels::interleave::interleave;
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::{Field, Int32Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::HashMap;
use rayon::prelude::*;

use super::keys::{IncomingKeys, RecordKeys};
use super::parts::PartStarts;
use super::plan::GroupPlan;
use super::schema::META_COLUMNS;
use super::string_runs::StringRuns;
use super::table::TableError;

/// Brings the job's rows to the table's data schema: columns by name, cast to the table's types;
/// table columns the job does not produce are null. A job column the table lacks is an error.
pub fn conform(
    batch: &RecordBatch,
    data: &SchemaRef,
    url: &str,
) -> Result<RecordBatch, TableError> {
    let err = |message: String| TableError::Data {
        url: url.to_string(),
        message,
    };
    for f in batch.schema().fields() {
        if data.index_of(f.name()).is_err() {
            return Err(err(format!(
                "the job produces column `{}`, which the table does not have",
                f.name()
            )));
        }
    }
    let columns = data
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()).map_err(|e| {
                err(format!(
                    "column `{}` is {} in the job but {} in the table: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))
            }),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(data.clone(), columns).map_err(|e| err(e.to_string()))
}

/// [`conform`] over several batches.
pub fn conform_all(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    url: &str,
) -> Result<Vec<RecordBatch>, TableError> {
    batches.iter().map(|b| conform(b, schema, url)).collect()
}

/// The job's rows, conformed to the table's data schema, in the batches they came in (no copy of
/// them is made), with their record keys. Rows are numbered across the batches, from 0.
#[derive(Debug)]
pub struct IncomingRows {
    batches: Vec<RecordBatch>,
    /// Where each batch starts among the rows.
    starts: PartStarts,
    /// Each row's record key.
    pub keys: IncomingKeys,
    /// Each key is greater than the one before (the job's rows come sorted by key).
    keys_ascending: bool,
    /// Per data column, its runs when it is a string column of long runs ([`StringRuns`]).
    string_runs: Vec<Option<StringRuns>>,
}

impl IncomingRows {
    /// `keys` holds one key per row of `batches`, in order; `keys_ascending` says each is greater
    /// than the one before.
    pub fn new(
        batches: Vec<RecordBatch>,
        keys: IncomingKeys,
        keys_ascending: bool,
    ) -> IncomingRows {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let starts = PartStarts::new(batches.iter().map(RecordBatch::num_rows));
        let columns = batches.first().map_or(0, RecordBatch::num_columns);
        let string_runs = (0..columns)
            .map(|c| StringRuns::find(&batches, c))
            .collect();
        IncomingRows {
            batches,
            starts,
            keys,
            keys_ascending,
            string_runs,
        }
    }

    /// Whether each key is greater than the one before it (so none repeats).
    pub fn keys_ascending(&self) -> bool {
        self.keys_ascending
    }

    /// The record key of row `row` (rows count across the batches, from 0).
    fn key(&self, row: usize) -> Cow<'_, str> {
        match &self.keys {
            IncomingKeys::Kept(keys) => Cow::Borrowed(keys.value(row)),
            IncomingKeys::Made(maker) => {
                let (batch, index) = self.starts.locate(row);
                Cow::Owned(maker.key(&self.batches[batch], index))
            }
        }
    }
}

/// A file group's new base file, decided row by row but not yet built: its rows are made a
/// slice at a time ([`Merged::slice`]), so a group of a million rows is never in memory twice.
#[derive(Debug)]
pub struct Merged {
    /// The stored slice the kept rows come from (empty for a new group).
    existing: RecordBatch,
    incoming: Arc<IncomingRows>,
    picks: Vec<Pick>,
    /// The inserted rows' keys ascend in pick order: the smallest is the first, the largest the
    /// last.
    inserts_ascending: bool,
    instant: String,
    group_no: usize,
    file_name: String,
    partition: String,
    schema: SchemaRef,
    pub inserts: u64,
    pub updates: u64,
    pub unchanged: u64,
    /// Incoming rows older than the stored ones, ignored.
    pub older: u64,
}

/// The instant a merge writes and the file it writes to.
pub struct MergeTarget<'a> {
    pub instant: &'a str,
    /// This group's number in the instant (part of its sequence numbers).
    pub group_no: usize,
    pub file_name: &'a str,
    /// The table's schema: meta columns, then the data columns of [`IncomingRows`].
    pub schema: &'a SchemaRef,
}

/// Compares an incoming batch's values with the stored slice's: the precombine column, then each
/// data column (`None` where the types cannot be compared, which counts as a change).
struct Comparators {
    precombine: DynComparator,
    data: Vec<Option<DynComparator>>,
}

impl Comparators {
    fn new(
        incoming: &RecordBatch,
        existing: &RecordBatch,
        precombine: usize,
    ) -> Result<Comparators, ArrowError> {
        let stored = |c: usize| existing.column(META_COLUMNS.len() + c).as_ref();
        Ok(Comparators {
            precombine: make_comparator(
                incoming.column(precombine).as_ref(),
                stored(precombine),
                SortOptions::default(),
            )?,
            data: (0..incoming.num_columns())
                .map(|c| {
                    make_comparator(
                        incoming.column(c).as_ref(),
                        stored(c),
                        SortOptions::default(),
                    )
                    .ok()
                })
                .collect(),
        })
    }
}

/// Where a row of the new base file comes from.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// A row of the latest slice, by index.
    Stored(usize),
    /// An incoming row, by its number across the batches, with its sequence number in the group.
    Incoming { row: usize, seq: usize },
}

/// Merges one file group's latest slice (in the table's schema) with its incoming rows (the rows
/// of `incoming` the plan names); `precombine` is the precombine column's index among the data
/// columns.
pub fn merge_group(
    existing: Option<RecordBatch>,
    incoming: &Arc<IncomingRows>,
    plan: &GroupPlan,
    precombine: usize,
    target: &MergeTarget<'_>,
) -> Result<Merged, ArrowError> {
    let mut picks: Vec<Pick> = Vec::new();
    let (mut updates, mut unchanged, mut older) = (0u64, 0u64, 0u64);
    let existing = existing.unwrap_or_else(|| RecordBatch::new_empty(target.schema.clone()));
    let existing_keys = existing.column(2).as_string::<i32>();
    // A new group with no updates pairs nothing, and needs no key: the plan keeps the keys only
    // where a touched partition holds stored ones.
    let (partners, leftovers) = match incoming.keys.kept() {
        _ if existing.num_rows() == 0 && plan.updates.is_empty() => (Vec::new(), Vec::new()),
        Some(keys) => pair_stored_rows(existing_keys, keys, &plan.updates, incoming.keys_ascending),
        None => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "file group {} has stored rows or updates, but the incoming record keys were \
                 not kept to pair them",
                plan.file_id
            )))
        }
    };
    if existing.num_rows() > 0 {
        // Made per incoming batch, the first time one of its rows meets a stored row.
        let mut comparators: Vec<Option<Comparators>> =
            (0..incoming.batches.len()).map(|_| None).collect();
        for (e, partner) in partners.into_iter().enumerate() {
            let Some(i) = partner else {
                picks.push(Pick::Stored(e));
                continue;
            };
            let (b, r) = incoming.starts.locate(i);
            let compare = match &mut comparators[b] {
                Some(c) => &*c,
                slot => &*slot.insert(Comparators::new(
                    &incoming.batches[b],
                    &existing,
                    precombine,
                )?),
            };
            if (compare.precombine)(r, e) == Ordering::Less {
                older += 1;
                picks.push(Pick::Stored(e));
                continue;
            }
            let same = compare
                .data
                .iter()
                .all(|c| c.as_ref().is_some_and(|cmp| cmp(r, e) == Ordering::Equal));
            if same {
                unchanged += 1;
                picks.push(Pick::Stored(e));
            } else {
                picks.push(Pick::Incoming {
                    row: i,
                    seq: updates as usize,
                });
                updates += 1;
            }
        }
    }
    // Keys the plan expected here but the slice no longer holds are inserted, like new keys.
    let inserts_ascending = incoming.keys_ascending
        && leftovers.is_empty()
        && plan.inserts.windows(2).all(|w| w[0] < w[1]);
    let mut inserts = 0u64;
    for row in plan.inserts.iter().copied().chain(leftovers) {
        picks.push(Pick::Incoming {
            row,
            seq: (updates + inserts) as usize,
        });
        inserts += 1;
    }
    Ok(Merged {
        existing,
        incoming: incoming.clone(),
        picks,
        inserts_ascending,
        instant: target.instant.to_string(),
        group_no: target.group_no,
        file_name: target.file_name.to_string(),
        partition: plan.partition.clone(),
        schema: target.schema.clone(),
        inserts,
        updates,
        unchanged,
        older,
    })
}

/// Pairs each stored row (`stored` holds their keys) with the incoming row among `updates` that
/// has its key, and returns the updates no stored row has, in ascending order.
///
/// When both sides come in strictly ascending key order (a base file tally wrote, a job whose
/// keys ascend) the two are walked side by side, a comparison a step, instead of hashing every
/// incoming key and looking up every stored one: the 1.8M province upserted again into the
/// table holding it merged in 0.78-0.81 s instead of 0.93-0.95 s. Otherwise, or when a stored
/// key is null or out of order, by a hash map; both ways give the same pairs (a unit test
/// compares them).
fn pair_stored_rows(
    stored: &StringArray,
    keys: &RecordKeys,
    updates: &[usize],
    keys_ascending: bool,
) -> (Vec<Option<usize>>, Vec<usize>) {
    let walkable = keys_ascending
        && updates.windows(2).all(|w| w[0] < w[1])
        && stored.null_count() == 0
        && (1..stored.len()).all(|e| stored.value(e - 1) < stored.value(e));
    if walkable {
        let mut partners = Vec::with_capacity(stored.len());
        let mut leftovers = Vec::new();
        let mut next = updates.iter().copied().peekable();
        for key in stored.iter().flatten() {
            // Updates below this stored key have no stored row.
            while let Some(row) = next.next_if(|&row| keys.value(row) < key) {
                leftovers.push(row);
            }
            partners.push(next.next_if(|&row| keys.value(row) == key));
        }
        leftovers.extend(next);
        return (partners, leftovers);
    }
    let mut wanted: HashMap<&str, usize> = updates.iter().map(|&r| (keys.value(r), r)).collect();
    let partners = (0..stored.len())
        .map(|e| {
            stored
                .is_valid(e)
                .then(|| wanted.remove(stored.value(e)))
                .flatten()
        })
        .collect();
    let mut leftovers: Vec<usize> = wanted.into_values().collect();
    leftovers.sort_unstable();
    (partners, leftovers)
}

impl Merged {
    /// Rows of the new base file.
    pub fn rows(&self) -> usize {
        self.picks.len()
    }

    /// The smallest and largest record key of the new base file.
    pub fn key_range(&self) -> (String, String) {
        let stored = self.existing.column(2).as_string::<i32>();
        let key_of = |pick: &Pick| match *pick {
            Pick::Stored(e) => stored.is_valid(e).then(|| Cow::Borrowed(stored.value(e))),
            Pick::Incoming { row, .. } => Some(self.incoming.key(row)),
        };
        // Inserted rows follow the stored slice's.
        let (kept, inserted) = self
            .picks
            .split_at(self.picks.len() - self.inserts as usize);
        // Sorted inserts are bounded by their ends: a new group of half a million rows needs
        // two keys, not a million comparisons of 50-byte keys. The rows between are skipped.
        let between = match self.inserts_ascending {
            true => inserted.len().saturating_sub(2),
            false => 0,
        };
        let inserted = inserted
            .iter()
            .take(1)
            .chain(inserted.iter().skip(1 + between));
        let mut keys = kept.iter().chain(inserted).filter_map(key_of);
        let Some(first) = keys.next() else {
            return (String::new(), String::new());
        };
        // Stored keys mostly come in increasing order too: a key above the largest so far is
        // then one comparison, not two.
        let (mut min, mut max) = (first.clone(), first);
        for key in keys {
            if key > max {
                max = key;
            } else if key < min {
                min = key;
            }
        }
        (min.into_owned(), max.into_owned())
    }

    /// This group's sequence numbers, `<instant>_<group>_<n>`.
    fn seq_numbers(&self) -> SeqNumbers {
        SeqNumbers {
            prefix: format!("{}_{}_", self.instant, self.group_no),
            digits: itoa::Buffer::new(),
        }
    }

    /// The first four meta columns of a slice whose rows all come from this instant (a new file
    /// group's): commit time and partition are the same on every row. Sequence numbers and the
    /// key column (`key_column`) are made side by side.
    fn incoming_meta(
        &self,
        picks: &[Pick],
        key_column: impl FnOnce() -> StringArray + Send,
    ) -> Vec<ArrayRef> {
        let (seq_no, key) = rayon::join(
            || {
                let mut seq_no = StringBuilder::with_capacity(picks.len(), picks.len() * 32);
                let mut seq_numbers = self.seq_numbers();
                for pick in picks {
                    if let Pick::Incoming { seq, .. } = *pick {
                        seq_numbers.append(&mut seq_no, seq);
                    }
                }
                seq_no.finish()
            },
            key_column,
        );
        vec![
            repeated(&self.instant, picks.len()),
            Arc::new(seq_no),
            Arc::new(key),
            repeated(&self.partition, picks.len()),
        ]
    }

    /// The first four meta columns of a slice mixing stored rows and rows of this instant, whose
    /// keys are `keys`.
    fn mixed_meta(&self, picks: &[Pick], keys: &RecordKeys) -> Vec<ArrayRef> {
        let existing = &self.existing;
        let stored_meta: [&StringArray; 4] =
            std::array::from_fn(|c| existing.column(c).as_string::<i32>());
        let mut meta: [StringBuilder; 4] =
            std::array::from_fn(|_| StringBuilder::with_capacity(picks.len(), picks.len() * 24));
        let mut seq_numbers = self.seq_numbers();
        for pick in picks {
            match *pick {
                Pick::Stored(e) => {
                    for (column, stored) in meta.iter_mut().zip(stored_meta) {
                        column.append_option(stored.is_valid(e).then(|| stored.value(e)));
                    }
                }
                Pick::Incoming { row, seq } => {
                    let [commit_time, seq_no, key, path] = &mut meta;
                    commit_time.append_value(&self.instant);
                    seq_numbers.append(seq_no, seq);
                    key.append_value(keys.value(row));
                    path.append_value(&self.partition);
                }
            }
        }
        meta.iter_mut()
            .map(|column| Arc::new(column.finish()) as ArrayRef)
            .collect()
    }

    /// The key column of a slice's rows, all incoming, from their kept keys: each key is looked
    /// up once, and the column sized exactly from them (the province job's keys are 50 bytes,
    /// and a guess below that had every slice's key column copied once more as it grew).
    fn kept_key_column(picks: &[Pick], keys: &RecordKeys) -> StringArray {
        let chosen: Vec<&str> = picks
            .iter()
            .filter_map(|pick| match *pick {
                Pick::Incoming { row, .. } => Some(keys.value(row)),
                Pick::Stored(_) => None,
            })
            .collect();
        let bytes = chosen.iter().map(|k| k.len()).sum();
        let mut key = StringBuilder::with_capacity(chosen.len(), bytes);
        for k in chosen {
            key.append_value(k);
        }
        key.finish()
    }

    /// The data columns of a slice's rows: one interleave per column over the stored slice and
    /// the incoming batches, a column per task on rayon's pool.
    fn data_columns(&self, picks: &[Pick]) -> Result<Vec<ArrayRef>, ArrowError> {
        let (existing, incoming) = (&self.existing, &self.incoming);
        let mut near = 0;
        let sources: Vec<(usize, usize)> = picks
            .iter()
            .map(|pick| match *pick {
                Pick::Stored(e) => (0, e),
                Pick::Incoming { row, .. } => {
                    let (b, r) = incoming.starts.locate_near(row, near);
                    near = b;
                    (1 + b, r)
                }
            })
            .collect();
        let all_incoming = sources.iter().all(|&(source, _)| source > 0);
        (0..self.schema.fields().len() - META_COLUMNS.len())
            .into_par_iter()
            .map(|c| {
                // A string column of long runs is taken by run (string_runs.rs).
                if let Some(Some(runs)) = incoming.string_runs.get(c) {
                    if all_incoming {
                        let rows = sources.iter().map(|&(source, row)| (source - 1, row));
                        return Ok(runs.gather(&incoming.batches, c, rows));
                    }
                }
                let mut arrays: Vec<&dyn Array> = Vec::with_capacity(1 + incoming.batches.len());
                arrays.push(existing.column(META_COLUMNS.len() + c).as_ref());
                arrays.extend(incoming.batches.iter().map(|b| b.column(c).as_ref()));
                interleave(&arrays, &sources)
            })
            .collect()
    }

    /// The new base file's rows `range`, in the table's schema, except that a column holding one
    /// value on every row (the file name; the commit time and partition of a new group's rows)
    /// comes dictionary-encoded, which the Parquet writer writes as the strings it stands for.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> {
        let picks = &self.picks[range];
        let incoming = &self.incoming;

        // Every column is made apart from the others, on rayon's pool: the last file group of an
        // upsert, encoded alone, would otherwise build its slices on one core while the others
        // wait. Keys that were not kept are made from the data columns, once they are gathered.
        let all_incoming = picks.iter().all(|p| matches!(p, Pick::Incoming { .. }));
        let (meta, data) = match (&incoming.keys, all_incoming) {
            (IncomingKeys::Made(maker), true) => {
                let data = self.data_columns(picks)?;
                (self.incoming_meta(picks, || maker.column(&data)), data)
            }
            (IncomingKeys::Made(_), false) => {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "{}: a slice mixes stored rows with incoming rows whose keys were not kept",
                    self.file_name
                )))
            }
            // Meta columns: stored rows keep theirs; rows taken from this instant get its
            // commit time and their sequence numbers, their keys and the group's partition.
            (IncomingKeys::Kept(keys), _) => {
                let (meta, data) = rayon::join(
                    || match all_incoming {
                        true => self.incoming_meta(picks, || Self::kept_key_column(picks, keys)),
                        false => self.mixed_meta(picks, keys),
                    },
                    || self.data_columns(picks),
                );
                (meta, data?)
            }
        };
        // Every row names the new file.
        let mut columns = meta;
        columns.push(repeated(&self.file_name, picks.len()));
        columns.extend(data);
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .zip(&columns)
            .map(|(field, column)| {
                field
                    .as_ref()
                    .clone()
                    .with_data_type(column.data_type().clone())
            })
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
    }
}

/// A column of `rows` copies of `value`, as one value and a zero key per row: the text itself
/// repeated was the largest part of a slice (a file name is 80 bytes, 256 MB over a province's
/// 3.4M rows), written out only for the Parquet writer to intern it again.
pub(super) fn repeated(value: &str, rows: usize) -> ArrayRef {
    let values: ArrayRef = Arc::new(StringArray::from(vec![value]));
    Arc::new(DictionaryArray::<Int32Type>::new(
        Int32Array::from(vec![0; rows]),
        values,
    ))
}

/// Writes a group's sequence numbers straight into their column: the prefix, then the number's
/// digits, with no string made per row.
struct SeqNumbers {
    prefix: String,
    digits: itoa::Buffer,
}

impl SeqNumbers {
    fn append(&mut self, column: &mut StringBuilder, seq: usize) {
        column
            .write_str(&self.prefix)
            .expect("writing to a string builder");
        column.append_value(self.digits.format(seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn data_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
            Field::new("seen", DataType::Int64, true),
        ]))
    }

    /// Rows `(key, amount, seen)` in the data schema.
    fn data(rows: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            data_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// Incoming rows in one batch per slice of `batches`, keyed by their `k`.
    fn incoming(batches: &[&[(&str, i64, i64)]]) -> Arc<IncomingRows> {
        let keys: Vec<&str> = batches.iter().flat_map(|b| b.iter().map(|r| r.0)).collect();
        let ascending = keys.windows(2).all(|w| w[0] < w[1]);
        Arc::new(IncomingRows::new(
            batches.iter().map(|b| data(b)).collect(),
            IncomingKeys::Kept(StringArray::from(keys).into()),
            ascending,
        ))
    }

    /// The whole new base file, made in slices of 2 rows (so slices start mid-way).
    fn whole(merged: &Merged) -> RecordBatch {
        let slices: Vec<RecordBatch> = (0..merged.rows())
            .step_by(2)
            .map(|start| {
                let slice = merged.slice(start..merged.rows().min(start + 2)).unwrap();
                let columns = slice
                    .columns()
                    .iter()
                    .zip(merged.schema.fields())
                    .map(|(c, f)| cast(c, f.data_type()).unwrap())
                    .collect();
                RecordBatch::try_new(merged.schema.clone(), columns).unwrap()
            })
            .collect();
        datafusion::arrow::compute::concat_batches(&merged.schema, &slices).unwrap()
    }

    fn plan(updates: Vec<usize>, inserts: Vec<usize>) -> GroupPlan {
        GroupPlan {
            partition: "p".into(),
            file_id: "g-0".into(),
            base: None,
            updates,
            inserts,
        }
    }

    /// "seen" is the precombine column: the third data column.
    const SEEN: usize = 2;

    /// A key, a store (a string column of long runs, gathered by run) and "seen".
    fn store_data_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("store", DataType::Utf8, true),
            Field::new("seen", DataType::Int64, true),
        ]))
    }

    #[test]
    fn a_string_column_of_long_runs_is_gathered_by_run_where_every_row_is_new() {
        let data_schema = store_data_schema();
        let schema = super::super::schema::table_schema(&data_schema);
        // Rows `from..to`: key `k<i>`, store `s<i / 20>`, seen `seen`.
        let rows = |from: usize, to: usize, seen: i64| {
            let keys: Vec<String> = (from..to).map(|i| format!("k{i:03}")).collect();
            let batch = RecordBatch::try_new(
                data_schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(&keys)),
                    Arc::new(StringArray::from_iter_values(
                        (from..to).map(|i| format!("s{}", i / 20)),
                    )),
                    Arc::new(Int64Array::from(vec![seen; to - from])),
                ],
            )
            .unwrap();
            Arc::new(IncomingRows::new(
                vec![batch],
                IncomingKeys::Kept(StringArray::from(keys).into()),
                true,
            ))
        };
        let stores = |b: &RecordBatch| -> Vec<String> {
            let s = b.column(META_COLUMNS.len() + 1).as_string::<i32>();
            s.iter().map(|v| v.unwrap().to_string()).collect()
        };
        let expected = |n: usize| (0..n).map(|i| format!("s{}", i / 20)).collect::<Vec<_>>();
        let target = |instant| MergeTarget {
            instant,
            group_no: 0,
            file_name: "g-0_0-0-0_1.parquet",
            schema: &schema,
        };
        // A new group: every slice is taken by run, the store column a dictionary.
        let first = rows(0, 40, 5);
        assert!(first.string_runs[1].is_some() && first.string_runs[0].is_none());
        let stored = merge_group(
            None,
            &first,
            &plan(vec![], (0..40).collect()),
            2,
            &target("1"),
        )
        .unwrap();
        assert!(matches!(
            stored
                .slice(0..40)
                .unwrap()
                .column(META_COLUMNS.len() + 1)
                .data_type(),
            DataType::Dictionary(_, _)
        ));
        assert_eq!(stores(&whole(&stored)), expected(40));
        // Updates of the last stored rows and new rows after them: slices of stored rows are
        // gathered row by row, the last ones (new rows only) by run.
        let second = rows(30, 80, 6);
        assert!(second.string_runs[1].is_some());
        let merged = merge_group(
            Some(whole(&stored)),
            &second,
            &plan((0..10).collect(), (10..50).collect()),
            2,
            &target("2"),
        )
        .unwrap();
        assert_eq!((merged.updates, merged.inserts), (10, 40));
        assert_eq!(stores(&whole(&merged)), expected(80));
    }

    #[test]
    fn a_new_groups_keys_made_from_its_columns_are_the_keys_kept() {
        let data_schema = store_data_schema();
        let schema = super::super::schema::table_schema(&data_schema);
        // Keyed by store (gathered by run, as a dictionary) and k, with an empty and a null k
        // (`__empty__` sorts before `__null__`).
        let table = super::super::table::HudiTable::in_memory(
            &["store", "k"],
            [(
                "hoodie.table.keygenerator.class".to_string(),
                "org.apache.hudi.keygen.ComplexKeyGenerator".to_string(),
            )]
            .into(),
        );
        let batch = |from: usize, to: usize| {
            let k = (from..to).map(|i| match i {
                0 => Some(String::new()),
                1 => None,
                i => Some(format!("k{i:03}")),
            });
            RecordBatch::try_new(
                data_schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter(k)),
                    Arc::new(StringArray::from_iter_values(
                        (from..to).map(|i| format!("s{}", i / 30)),
                    )),
                    Arc::new(Int64Array::from(vec![5; to - from])),
                ],
            )
            .unwrap()
        };
        let batches = vec![batch(0, 40), batch(40, 80)];
        let incoming = |keep: bool| {
            let keyed = table.key_rows(&batches, keep).unwrap();
            assert!(keyed.ascending && keyed.keys.kept().is_some() == keep);
            Arc::new(IncomingRows::new(batches.clone(), keyed.keys, true))
        };
        let target = MergeTarget {
            instant: "1",
            group_no: 0,
            file_name: "g-0_0-0-0_1.parquet",
            schema: &schema,
        };
        let merge =
            |rows: &Arc<IncomingRows>, plan: &GroupPlan| merge_group(None, rows, plan, 2, &target);
        let every_row = plan(vec![], (0..80).collect());
        let (kept, made) = (incoming(true), incoming(false));
        let (kept, made) = (
            merge(&kept, &every_row).unwrap(),
            merge(&made, &every_row).unwrap(),
        );
        assert!(
            made.slice(0..80)
                .unwrap()
                .column(META_COLUMNS.len() + 1)
                .data_type()
                != &DataType::Utf8
        );
        assert_eq!(whole(&made), whole(&kept));
        assert_eq!(made.key_range(), kept.key_range());
        assert_eq!(
            made.key_range(),
            (
                "store:s0,k:__empty__".to_string(),
                "store:s2,k:k079".to_string()
            )
        );
        // Rows of a stored group are paired by key: keys not kept are refused, not guessed.
        let stored = whole(&kept);
        let err = merge_group(
            Some(stored),
            &incoming(false),
            &plan(vec![0], vec![]),
            2,
            &target,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not kept"), "{err}");
    }

    #[test]
    fn the_key_range_spans_stored_and_inserted_keys_sorted_or_not() {
        let schema = super::super::schema::table_schema(&data_schema());
        let target = |instant: &'static str| MergeTarget {
            instant,
            group_no: 0,
            file_name: "g-0_0-0-0_1.parquet",
            schema: &schema,
        };
        let (first, second) = (target("1"), target("2"));
        // Sorted inserts: only their ends are compared.
        let sorted = incoming(&[&[("b", 1, 1), ("c", 1, 1)], &[("d", 1, 1)]]);
        let stored =
            merge_group(None, &sorted, &plan(vec![], vec![0, 1, 2]), SEEN, &first).unwrap();
        assert!(stored.inserts_ascending);
        assert_eq!(stored.key_range(), ("b".to_string(), "d".to_string()));
        // Unsorted inserts after stored rows: the smallest is new, in the middle; the largest
        // stays a stored key.
        let unsorted = incoming(&[&[("c", 1, 1), ("a", 1, 1), ("bb", 1, 1)]]);
        let merged = merge_group(
            Some(whole(&stored)),
            &unsorted,
            &plan(vec![0], vec![2, 1]),
            SEEN,
            &second,
        )
        .unwrap();
        assert!(!merged.inserts_ascending);
        assert_eq!(merged.key_range(), ("a".to_string(), "d".to_string()));
        // Sorted inserts below the stored keys: the stored ones are still scanned.
        let below = incoming(&[&[("a", 1, 1), ("aa", 1, 1)]]);
        let merged = merge_group(
            Some(whole(&stored)),
            &below,
            &plan(vec![], vec![0, 1]),
            SEEN,
            &second,
        )
        .unwrap();
        assert!(merged.inserts_ascending);
        assert_eq!(merged.key_range(), ("a".to_string(), "d".to_string()));
    }

    #[test]
    fn newer_rows_replace_equal_ones_stay_older_ones_are_ignored() {
        let schema = super::super::schema::table_schema(&data_schema());
        let first = MergeTarget {
            instant: "1",
            group_no: 0,
            file_name: "g-0_0-0-0_1.parquet",
            schema: &schema,
        };
        let stored = merge_group(
            None,
            &incoming(&[&[("a", 10, 5), ("b", 20, 5)], &[("c", 30, 5), ("d", 40, 5)]]),
            &plan(vec![], vec![0, 1, 2, 3]),
            SEEN,
            &first,
        )
        .unwrap();
        assert_eq!(stored.inserts, 4);
        assert_eq!(stored.key_range(), ("a".to_string(), "d".to_string()));
        // a: newer and different; b: the same row again; c: older; e: new. Two batches, so rows
        // are found across them.
        let rows = incoming(&[&[("a", 11, 6)], &[("b", 20, 5), ("c", 99, 4), ("e", 50, 6)]]);
        let target = MergeTarget {
            instant: "2",
            group_no: 7,
            file_name: "g-0_7-0-0_2.parquet",
            schema: &schema,
        };
        let merged = merge_group(
            Some(whole(&stored)),
            &rows,
            &plan(vec![0, 1, 2], vec![3]),
            SEEN,
            &target,
        )
        .unwrap();
        assert_eq!(
            (
                merged.updates,
                merged.unchanged,
                merged.older,
                merged.inserts
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(merged.key_range(), ("a".to_string(), "e".to_string()));
        let b = &whole(&merged);
        let col = |i: usize| b.column(i).as_string::<i32>();
        let amounts = b
            .column(6)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let got: Vec<(&str, i64, &str, &str, &str)> = (0..b.num_rows())
            .map(|r| {
                (
                    col(2).value(r),
                    amounts.value(r),
                    col(0).value(r),
                    col(1).value(r),
                    col(3).value(r),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 11, "2", "2_7_0", "p"),
                ("b", 20, "1", "1_0_1", "p"),
                ("c", 30, "1", "1_0_2", "p"),
                ("d", 40, "1", "1_0_3", "p"),
                ("e", 50, "2", "2_7_1", "p"),
            ]
        );
        assert!((0..b.num_rows()).all(|r| col(4).value(r) == "g-0_7-0-0_2.parquet"));
    }

    #[test]
    fn stored_rows_are_paired_side_by_side_as_by_hash() {
        let incoming: RecordKeys =
            StringArray::from(vec!["a", "b", "c", "d", "g", "h", "i"]).into();
        let stored = StringArray::from(vec!["b", "d", "f", "h"]);
        let all: Vec<usize> = (0..7).collect();
        let expected = (vec![Some(1), Some(3), None, Some(5)], vec![0, 2, 4, 6]);
        assert_eq!(pair_stored_rows(&stored, &incoming, &all, true), expected);
        assert_eq!(pair_stored_rows(&stored, &incoming, &all, false), expected);
        // Nothing stored, nothing wanted.
        let none = StringArray::from(Vec::<&str>::new());
        assert_eq!(
            pair_stored_rows(&none, &incoming, &all, true),
            (vec![], all.clone())
        );
        assert_eq!(
            pair_stored_rows(&stored, &incoming, &[], true),
            (vec![None; 4], vec![])
        );
        // A null or an out-of-order stored key: paired by hash, the same way.
        let odd = StringArray::from(vec![Some("d"), None, Some("b"), Some("h")]);
        assert_eq!(
            pair_stored_rows(&odd, &incoming, &all, true),
            (vec![Some(3), None, Some(1), Some(5)], vec![0, 2, 4, 6])
        );
        // Many random subsets: side by side and by hash agree.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut universe: Vec<String> = (0..40).map(|i| format!("k{i:03}")).collect();
            universe.retain(|_| rng.bool());
            let pick = |rng: &mut fastrand::Rng| -> Vec<&str> {
                universe
                    .iter()
                    .map(String::as_str)
                    .filter(|_| rng.u8(..4) != 0)
                    .collect()
            };
            let (ours, theirs) = (pick(&mut rng), pick(&mut rng));
            let incoming: RecordKeys = StringArray::from(ours.clone()).into();
            let stored = StringArray::from(theirs);
            let updates: Vec<usize> = (0..ours.len()).filter(|_| rng.bool()).collect();
            assert_eq!(
                pair_stored_rows(&stored, &incoming, &updates, true),
                pair_stored_rows(&stored, &incoming, &updates, false),
                "{ours:?} {updates:?}"
            );
        }
    }

    #[test]
    fn rows_are_found_in_their_batch_whatever_the_hint() {
        // The empty batch is left out: "c" is the first row of the second batch kept.
        let rows = incoming(&[
            &[("a", 1, 1), ("b", 2, 2)],
            &[],
            &[("c", 3, 3)],
            &[("d", 4, 4), ("e", 5, 5)],
        ]);
        assert_eq!(rows.starts.locate(2), (1, 0));
        assert_eq!(rows.starts.locate(4), (2, 1));
        for row in 0..5 {
            for near in 0..6 {
                assert_eq!(
                    rows.starts.locate_near(row, near),
                    rows.starts.locate(row),
                    "{row} {near}"
                );
            }
        }
    }

    #[test]
    fn job_columns_the_table_lacks_are_refused_and_missing_ones_are_null() {
        let table = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("extra", DataType::Int64, true),
        ]));
        let job = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        let conformed = conform(&job, &table, "t").unwrap();
        assert!(conformed.column(1).is_null(0));
        let e = conform(&conformed, &data_schema(), "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("`extra`, which the table does not have"),
            "{e}"
        );
    }
}
