//! Input files that each hold one value of a key column, read in ranges of it.
//!
//! A store sends its own files: every row of `IL-101-2.csv` is store `v101`'s. A job that says so
//! (`file_key = "store_id"` in its `[input]`) has its files read in ranges of that key, one range
//! per partition, balanced by bytes, each partition reading its files in key order. All rows of
//! one store then reach one partition, one store after another, and DataFusion sees the scan
//! range-partitioned on the key and each partition ordered by it. The first satisfies the hash
//! partitioning a GROUP BY on any columns including the key needs, so each partition aggregates
//! its rows in one pass, with no exchange of rows between partitions; the second lets that
//! aggregation finish and emit each store's groups as soon as the next store starts (a hash table
//! the size of one store's groups, not of the whole range's), and lets an `ORDER BY` that starts
//! with the key sort one store at a time and concatenate the partitions instead of merging them
//! (see [`crate::job::ordering`]).
//!
//! Invariant: a partition emits its files' rows in key order, and only rows whose key is the one
//! planned for their file. The keys are planned before anything is read, from each file's first
//! row (a Parquet file's statistics); the readers then check every row against their file's
//! [`KeyCheck`]. Any other key (a file holding several stores) stops the read with
//! [`MisplacedRow`], and the run reads again without ranges: the declaration can make a run
//! faster, never wrong.

use std::collections::BTreeMap;
use std::io::Read;

use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::file::statistics::Statistics;
use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::{InputFormat, RankedFile};
use crate::layout::Layout;
use crate::storage::ObjectFileReader;

/// How much of a CSV file is read to find its first row's key.
const FIRST_CHUNK: u64 = 64 << 10;

/// What planning knows of one file's key before reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKey {
    /// The first row's key (a Parquet file's, when its statistics give a single value).
    Value(String),
    /// No row was found where the first row was looked for: the file may go to any partition
    /// (its readers still check every row it turns out to have).
    NoRows,
    /// The file may hold several values (Parquet statistics say so, or give none): the files
    /// cannot be read in ranges.
    Unknown,
}

/// What a reader checks on each row of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    /// The key column's index among the layout's columns.
    pub column: usize,
    pub column_name: String,
    /// The file's planned key, the only one its rows may hold (`None`: the file was planned to
    /// hold no rows).
    pub expected: Option<String>,
}

impl KeyCheck {
    #[inline]
    pub fn admits(&self, key: &str) -> bool {
        self.expected.as_deref() == Some(key)
    }

    /// The error that stops a read at a row whose key is not its file's.
    pub fn misplaced(&self, file: &str, row: String, key: &str) -> DataFusionError {
        DataFusionError::External(Box::new(MisplacedRow {
            file: file.to_string(),
            row,
            column: self.column_name.clone(),
            key: key.to_string(),
        }))
    }
}

/// A row whose key is not the one planned for its file: the file holds more than one value of the
/// job's `file_key` (or rows where none were found when planning). The run reads its input again
/// without ranges.
#[derive(Debug, thiserror::Error)]
#[error("{file} {row}: {column} `{key}` is not the {column} this file was planned to hold (the job's [input] declares one {column} per file)")]
pub struct MisplacedRow {
    pub file: String,
    /// `line N` (CSV) or `row N` (Parquet).
    pub row: String,
    pub column: String,
    pub key: String,
}

impl MisplacedRow {
    /// The misplaced row behind a failed read, if that is why it failed.
    pub fn behind(e: &DataFusionError) -> Option<&MisplacedRow> {
        match e.find_root() {
            DataFusionError::External(inner) => inner.downcast_ref::<MisplacedRow>(),
            _ => None,
        }
    }
}

/// The files split into key ranges: which files each partition reads and the keys it starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRanges {
    /// For each partition, the indices of its files, in key order (files planned to hold no
    /// rows first).
    pub groups: Vec<Vec<usize>>,
    /// The first key of partitions 1.. (DataFusion's split points: partition `p` reads
    /// `split_points[p - 1] <= key < split_points[p]`).
    pub split_points: Vec<String>,
    /// Each file's check, by index.
    pub checks: Vec<KeyCheck>,
}

impl KeyRanges {
    /// Ranges over `files` whose keys are `keys` (same order): `partitions` of them, or one per
    /// distinct key when there are fewer; `None` when they cannot be made: a file of unknown
    /// key, fewer than two partitions or fewer than two distinct keys.
    pub fn plan(
        files: &[RankedFile],
        keys: &[FileKey],
        partitions: usize,
        column: usize,
        column_name: &str,
    ) -> Option<KeyRanges> {
        if partitions < 2 || keys.contains(&FileKey::Unknown) {
            return None;
        }
        let mut bytes_by_key: BTreeMap<&str, u64> = BTreeMap::new();
        for (file, key) in files.iter().zip(keys) {
            if let FileKey::Value(key) = key {
                *bytes_by_key.entry(key).or_default() += file.file.size.max(1);
            }
        }
        let partitions = partitions.min(bytes_by_key.len());
        if partitions < 2 {
            return None;
        }
        // Cut before the key that takes the running total past the next share, and wherever
        // the keys left are just enough for the partitions left.
        let total: u64 = bytes_by_key.values().sum();
        let mut split_points: Vec<String> = Vec::with_capacity(partitions - 1);
        let mut before = 0u64;
        for (i, (key, bytes)) in bytes_by_key.iter().enumerate() {
            let still_to_open = partitions - 1 - split_points.len();
            let keys_left = bytes_by_key.len() - i;
            let share_end = total / partitions as u64 * (split_points.len() as u64 + 1);
            if i > 0
                && still_to_open > 0
                && (before + bytes / 2 >= share_end || keys_left == still_to_open)
            {
                split_points.push(key.to_string());
            }
            before += bytes;
        }
        let mut groups = vec![Vec::new(); partitions];
        let mut checks = Vec::with_capacity(files.len());
        for (i, key) in keys.iter().enumerate() {
            let (p, expected) = match key {
                FileKey::Value(key) => (
                    split_points.partition_point(|s| s.as_str() <= key.as_str()),
                    Some(key.clone()),
                ),
                // Rows are not expected: any the file turns out to have stop the read.
                _ => (0, None),
            };
            groups[p].push(i);
            checks.push(KeyCheck {
                column,
                column_name: column_name.to_string(),
                expected,
            });
        }
        // Each partition reads its files one key after another (a stable sort keeps a key's
        // files in their given order).
        for group in &mut groups {
            group.sort_by(|&a, &b| checks[a].expected.cmp(&checks[b].expected));
        }
        Some(KeyRanges {
            groups,
            split_points,
            checks,
        })
    }
}

/// Each file's [`FileKey`]: the key column (`column`, an index among the layout's columns) of a
/// CSV file's first valid row, or the single value a Parquet file's statistics give. Files are
/// looked at several at a time (an S3 input answers each with one ranged read).
pub async fn first_keys(files: &[RankedFile], layout: &Layout, column: usize) -> Vec<FileKey> {
    // Owned futures: a stream of futures borrowing from here would not be `Send` for every
    // lifetime, as the run's future must be.
    let layout = std::sync::Arc::new(layout.clone());
    let lookups: Vec<_> = files
        .iter()
        .map(|ranked| first_key(ranked.clone(), layout.clone(), column))
        .collect();
    futures::stream::iter(lookups).buffered(16).collect().await
}

async fn first_key(ranked: RankedFile, layout: std::sync::Arc<Layout>, column: usize) -> FileKey {
    let (file, layout) = (&ranked.file, layout.as_ref());
    match file.format {
        InputFormat::Csv => {
            let len = file.size.min(FIRST_CHUNK);
            let head = match &file.local_path {
                Some(path) => {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                        let mut head = Vec::with_capacity(len as usize);
                        std::fs::File::open(path)?
                            .take(len)
                            .read_to_end(&mut head)?;
                        Ok(head)
                    })
                    .await
                    .ok()
                    .and_then(Result::ok)
                }
                None => file
                    .store
                    .get_range(&file.path, 0..len)
                    .await
                    .ok()
                    .map(|b| b.to_vec()),
            };
            // A file that cannot be read now fails its read later, with the reader's message.
            let Some(head) = head else {
                return FileKey::Unknown;
            };
            csv_first_key(&head, len < file.size, layout, column)
        }
        InputFormat::Parquet => parquet_key(&ranked, layout, column).await,
    }
}

/// The key of the first valid row in `head`, the start of a CSV file (`cut`: the file goes on,
/// so the last line may be partial and is not looked at).
fn csv_first_key(head: &[u8], cut: bool, layout: &Layout, column: usize) -> FileKey {
    let head = match (cut, memchr::memrchr(b'\n', head)) {
        (false, _) => head,
        (true, Some(end)) => &head[..=end],
        (true, None) => return FileKey::NoRows,
    };
    let mut csv = super::csv_file::csv_reader_builder().from_reader(head);
    let mut parsed = Vec::with_capacity(layout.columns.len());
    for record in csv.byte_records() {
        let Ok(record) = record else {
            return FileKey::NoRows;
        };
        if layout
            .parse_row(record.len(), |i| &record[i], &mut parsed)
            .is_ok()
        {
            // parse_row checked the field as UTF-8; readers keep it trimmed.
            let key = std::str::from_utf8(&record[column]).unwrap_or_default();
            return FileKey::Value(key.trim().to_string());
        }
    }
    FileKey::NoRows
}

/// The single value of the key column in a Parquet file, from its row groups' statistics.
async fn parquet_key(ranked: &RankedFile, layout: &Layout, column: usize) -> FileKey {
    let file = &ranked.file;
    let reader = ObjectFileReader::new(file.store.clone(), file.path.clone(), file.size);
    let Ok(builder) = ParquetRecordBatchStreamBuilder::new(reader).await else {
        return FileKey::Unknown;
    };
    let metadata = builder.metadata();
    let name = &layout.columns[column].name;
    let Some(index) = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == std::slice::from_ref(name))
    else {
        return FileKey::Unknown;
    };
    let mut value: Option<String> = None;
    for group in metadata.row_groups() {
        if group.num_rows() == 0 {
            continue;
        }
        let single = match group.column(index).statistics() {
            Some(Statistics::ByteArray(s))
                if s.min_is_exact() && s.max_is_exact() && s.null_count_opt() == Some(0) =>
            {
                match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) if min == max => min.as_utf8().ok().map(str::to_string),
                    _ => None,
                }
            }
            _ => None,
        };
        match (single, &value) {
            (Some(v), None) => value = Some(v),
            (Some(v), Some(seen)) if &v == seen => {}
            _ => return FileKey::Unknown,
        }
    }
    value.map_or(FileKey::NoRows, FileKey::Value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LayoutSet;

    fn file(name: &str, size: u64) -> RankedFile {
        super::super::test_file(name, size, 1)
    }

    fn value(key: &str) -> FileKey {
        FileKey::Value(key.into())
    }

    #[test]
    fn ranges_keep_a_keys_files_together_in_key_order_and_balance_bytes() {
        let files = [
            file("b1", 10),
            file("a1", 40),
            file("d1", 40),
            file("a2", 50),
            file("c1", 60),
            file("empty", 0),
        ];
        let keys = [
            value("b"),
            value("a"),
            value("d"),
            value("a"),
            value("c"),
            FileKey::NoRows,
        ];
        let ranges = KeyRanges::plan(&files, &keys, 2, 0, "store_id").unwrap();
        // a: 90 bytes, b: 10, c: 60, d: 40 (200 in all): a+b | c+d, each in key order (a file
        // planned to hold no rows first, a key's files as given).
        assert_eq!(ranges.split_points, vec!["c".to_string()]);
        assert_eq!(ranges.groups, vec![vec![5, 1, 3, 0], vec![4, 2]]);
        // A file admits its own key only, however near the others are.
        assert!(ranges.checks[1].admits("a") && !ranges.checks[1].admits("b"));
        assert!(ranges.checks[4].admits("c") && !ranges.checks[4].admits("cc"));
        assert!(!ranges.checks[5].admits("a") && !ranges.checks[5].admits(""));
    }

    #[test]
    fn every_partition_gets_a_key_when_shares_are_lopsided() {
        let files = [file("a", 1000), file("b", 1), file("c", 1)];
        let keys = [value("a"), value("b"), value("c")];
        let ranges = KeyRanges::plan(&files, &keys, 3, 0, "store_id").unwrap();
        assert_eq!(ranges.split_points, vec!["b".to_string(), "c".to_string()]);
        assert_eq!(ranges.groups, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn fewer_keys_than_partitions_make_one_range_per_key() {
        let files = [file("a", 10), file("b", 10), file("c", 10)];
        let keys = [value("a"), value("b"), value("c")];
        let ranges = KeyRanges::plan(&files, &keys, 8, 0, "store_id").unwrap();
        assert_eq!(ranges.split_points, vec!["b".to_string(), "c".to_string()]);
        assert_eq!(ranges.groups, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn no_ranges_for_unknown_keys_or_too_few_keys() {
        let files = [file("a", 10), file("b", 10)];
        assert!(KeyRanges::plan(&files, &[value("a"), FileKey::Unknown], 2, 0, "k").is_none());
        assert!(KeyRanges::plan(&files, &[value("a"), value("a")], 2, 0, "k").is_none());
        assert!(KeyRanges::plan(&files, &[value("a"), value("b")], 1, 0, "k").is_none());
    }

    #[test]
    fn a_csv_files_key_is_its_first_valid_rows() {
        let layouts = LayoutSet::embedded();
        let layout = layouts.by_name("pos_transactions").unwrap();
        let head = b"------ junk\n v7 ,1.00,4,i1,2024-01-01\nv8,1.00,4,i1,2024-01-01\n";
        assert_eq!(csv_first_key(head, false, layout, 0), value("v7"));
        // A cut head ignores its partial last line.
        assert_eq!(
            csv_first_key(b"v9,1.00,4,i1,2024-01-0", true, layout, 0),
            FileKey::NoRows
        );
        assert_eq!(csv_first_key(b"", false, layout, 0), FileKey::NoRows);
    }

    #[test]
    fn a_misplaced_row_is_found_behind_wrapped_errors() {
        let check = KeyCheck {
            column: 0,
            column_name: "store_id".into(),
            expected: Some("a".into()),
        };
        let e = check.misplaced("file:///in/x.csv", "line 3".into(), "b");
        let wrapped = DataFusionError::Context("reading".into(), Box::new(e));
        let row = MisplacedRow::behind(&wrapped).expect("found");
        assert_eq!((row.key.as_str(), row.row.as_str()), ("b", "line 3"));
        assert!(MisplacedRow::behind(&DataFusionError::Execution("x".into())).is_none());
    }
}
