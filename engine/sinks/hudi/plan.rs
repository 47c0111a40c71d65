//! Planning an upsert: which file group each incoming row goes to.
//!
//! Per partition the rows touch (no other partition is listed or read; the touched ones are
//! listed first, several at once, see [`super::upsert`]):
//! - [`locate_keys`] reads only the record-key column of each file group's latest base file;
//! - [`place_rows`], a pure function, sends a key the partition already holds to the group
//!   holding it, fills groups smaller than the target file size with new keys (smallest first),
//!   and starts new groups of about the target size for the rest.

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
// DataFusion's hash maps (hashbrown with foldhash): a province's keys are hashed about a million
// times per run, where std's SipHash showed in profiles.
use datafusion::common::{HashMap, HashSet as FastHashSet};

use super::keys::RecordKeys;
use super::table::{HudiTable, TableError};
use super::timeline::{BaseFile, FileGroups};

/// What one file group gets in this instant.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub partition: String,
    pub file_id: String,
    /// The latest slice the new base file replaces; none for a new group.
    pub base: Option<BaseFile>,
    /// Incoming rows whose key the group already holds.
    pub updates: Vec<usize>,
    /// Incoming rows with new keys placed in this group.
    pub inserts: Vec<usize>,
}

/// An existing file group of a partition, as the planner sees it.
#[derive(Debug, Clone)]
pub struct ExistingGroup {
    pub file_id: String,
    /// Its slices, oldest first; the last is the latest.
    pub slices: Vec<BaseFile>,
    /// Rows in the latest slice.
    pub rows: u64,
}

/// Why rows could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// A key found twice among one run's rows (the job's SQL must make one row per key).
    #[error("record key `{0}` appears twice in one run's rows")]
    DuplicateKey(String),
    /// The rows' keys must be looked up or checked for repeats, and were not kept.
    #[error("the rows of partition `{0}` must be looked up by key, and their keys were not kept")]
    KeysNotKept(String),
}

/// A partition's committed file groups and the record keys of their latest base files, as
/// read by [`locate_keys`].
pub struct StoredKeys {
    pub groups: Vec<ExistingGroup>,
    /// Per group (in `groups`' order), the `_hoodie_record_key` column of its latest base file.
    keys: Vec<Vec<RecordBatch>>,
}

impl StoredKeys {
    /// Which group (an index into `groups`) holds each stored key. The keys are borrowed from
    /// the columns read, not copied: a map of owned keys made two strings a key (the key, and the
    /// group's 40-byte id again); a rerun of the 1.8M province planned in 0.36-0.40 s with it,
    /// 0.17-0.19 s with this. A key stored twice counts for the group read last, as before.
    pub fn owners(&self) -> HashMap<&str, usize> {
        let stored: usize = self.groups.iter().map(|g| g.rows as usize).sum();
        let mut owner = HashMap::with_capacity(stored);
        for (group, batches) in self.keys.iter().enumerate() {
            for batch in batches {
                for key in batch.column(0).as_string::<i32>().iter().flatten() {
                    owner.insert(key, group);
                }
            }
        }
        owner
    }
}

/// Reads the record keys of a partition's committed file groups (as
/// [`HudiTable::partition_groups`] lists them; only that column of each latest base file).
pub async fn locate_keys(table: &HudiTable, groups: FileGroups) -> Result<StoredKeys, TableError> {
    let mut stored = StoredKeys {
        groups: Vec::with_capacity(groups.len()),
        keys: Vec::with_capacity(groups.len()),
    };
    for (file_id, slices) in groups {
        let latest = slices.last().expect("groups have slices");
        let (_, batches) = table
            .read_base_file(latest, Some(&["_hoodie_record_key"]))
            .await?;
        let rows = batches
            .iter()
            .map(|b| (b.num_rows() - b.column(0).null_count()) as u64)
            .sum();
        stored.groups.push(ExistingGroup {
            file_id,
            slices,
            rows,
        });
        stored.keys.push(batches);
    }
    Ok(stored)
}

/// The keys of one partition seen so far, to refuse a repeat. A run's rows usually come in key
/// order (the province job's `ORDER BY` is its key), and keys in strictly increasing order
/// cannot repeat: each is compared with the one before. At the first key out of order, every
/// key so far goes into a set, which checks the rest.
#[derive(Default)]
struct KeysSeen<'a> {
    previous: Option<&'a str>,
    set: Option<FastHashSet<&'a str>>,
}

impl<'a> KeysSeen<'a> {
    /// Whether `key` was seen before; `so_far` gives the keys before it (read only once, when
    /// the order first breaks).
    fn repeated<I: Iterator<Item = &'a str>>(
        &mut self,
        key: &'a str,
        so_far: impl FnOnce() -> I,
    ) -> bool {
        if let Some(set) = &mut self.set {
            return !set.insert(key);
        }
        if self.previous.is_none_or(|previous| previous < key) {
            self.previous = Some(key);
            return false;
        }
        let mut set: FastHashSet<&str> = so_far().collect();
        let repeated = !set.insert(key);
        self.set = Some(set);
        repeated
    }
}

/// Places one partition's incoming rows (`rows_here`, indexes into `keys`) in file groups;
/// `key_owner` names the group (an index into `groups`) holding each stored key.
/// `new_file_id` names each new group. `keys_ascending` says the caller saw every key greater
/// than the one before, so none repeats; otherwise repeats are looked for here. The keys may be
/// left out (`None`) only where none is read: ascending keys into a partition without stored
/// keys.
#[allow(clippy::too_many_arguments)]
pub fn place_rows(
    partition: &str,
    rows_here: &[usize],
    keys: Option<&RecordKeys>,
    keys_ascending: bool,
    groups: &[ExistingGroup],
    key_owner: &HashMap<&str, usize>,
    target_file_bytes: u64,
    mut new_file_id: impl FnMut() -> String,
) -> Result<Vec<GroupPlan>, PlaceError> {
    let by_id: HashMap<&str, &ExistingGroup> =
        groups.iter().map(|g| (g.file_id.as_str(), g)).collect();
    let existing_plan = |file_id: &str| GroupPlan {
        partition: partition.to_string(),
        file_id: file_id.to_string(),
        base: by_id.get(file_id).and_then(|g| g.slices.last().cloned()),
        updates: vec![],
        inserts: vec![],
    };
    let mut plans: BTreeMap<String, GroupPlan> = BTreeMap::new();
    let mut new_keys = Vec::new();
    let mut seen = KeysSeen::default();
    // No stored key to find and no repeat to look for: every row is new, and no key is read (a
    // new partition's rows were otherwise looked up one by one, on one core, while the others
    // waited for the plan).
    let rows_to_look_up: &[usize] = if keys_ascending && key_owner.is_empty() {
        new_keys.extend_from_slice(rows_here);
        &[]
    } else {
        rows_here
    };
    for (i, &row) in rows_to_look_up.iter().enumerate() {
        let Some(keys) = keys else {
            return Err(PlaceError::KeysNotKept(partition.to_string()));
        };
        let key = keys.value(row);
        // Comparing each key with the one before took a fifth of a second over a province's
        // 3.4M keys, read here a partition at a time, out of memory order.
        if !keys_ascending && seen.repeated(key, || rows_here[..i].iter().map(|&r| keys.value(r))) {
            return Err(PlaceError::DuplicateKey(key.to_string()));
        }
        match key_owner.get(key) {
            // Found by the id it has, not a copy of it made a row (a rerun updates every row).
            Some(&group) => {
                let file_id = groups[group].file_id.as_str();
                match plans.get_mut(file_id) {
                    Some(plan) => plan.updates.push(row),
                    None => {
                        let mut plan = existing_plan(file_id);
                        plan.updates.push(row);
                        plans.insert(file_id.to_string(), plan);
                    }
                }
            }
            None => new_keys.push(row),
        }
    }
    // Bytes per row of a file; 100 when a file has no rows to tell.
    let row_bytes = |size: u64, rows: u64| size.checked_div(rows).map_or(100, |b| b.max(1));
    let mut sizes: Vec<(&str, u64, u64)> = groups
        .iter()
        .filter_map(|g| Some((g.file_id.as_str(), g.slices.last()?.size, g.rows)))
        .collect();
    let default_row_bytes = sizes
        .iter()
        .map(|(_, size, rows)| row_bytes(*size, *rows))
        .max()
        .unwrap_or(100);
    // New keys: fill small file groups first, smallest first, then start new ones.
    sizes.sort_by_key(|(_, size, _)| *size);
    let mut pending = new_keys.into_iter().peekable();
    for (file_id, size, rows) in sizes {
        if pending.peek().is_none() {
            break;
        }
        if size >= target_file_bytes {
            continue;
        }
        let room = (target_file_bytes - size) / row_bytes(size, rows);
        plans
            .entry(file_id.to_string())
            .or_insert_with(|| existing_plan(file_id))
            .inserts
            .extend(pending.by_ref().take(room as usize));
    }
    let per_new_file = (target_file_bytes / default_row_bytes).max(1) as usize;
    let rest: Vec<usize> = pending.collect();
    let mut placed: Vec<GroupPlan> = plans.into_values().collect();
    for chunk in rest.chunks(per_new_file) {
        placed.push(GroupPlan {
            partition: partition.to_string(),
            file_id: new_file_id(),
            base: None,
            updates: vec![],
            inserts: chunk.to_vec(),
        });
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    fn group(file_id: &str, size: u64, rows: u64) -> ExistingGroup {
        let name = BaseFile::name(file_id, "0-0-0", "20260301100000000");
        ExistingGroup {
            file_id: file_id.into(),
            slices: vec![BaseFile::parse("p", &name, size).unwrap()],
            rows,
        }
    }

    fn keys(n: usize) -> RecordKeys {
        StringArray::from_iter_values((0..n).map(|i| format!("k{i}"))).into()
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("new{n}-0")
        }
    }

    #[test]
    fn known_keys_go_to_their_group_and_new_ones_fill_the_small_group_first() {
        let keys = keys(6);
        // "small" holds k0 in 100 bytes (100 bytes a row): room for 4 more under 500.
        let groups = [group("big-0", 1000, 10), group("small-0", 100, 1)];
        let owner = HashMap::from([("k0", 1), ("k1", 0)]);
        let plans = place_rows(
            "p",
            &[0, 1, 2, 3, 4, 5],
            Some(&keys),
            false,
            &groups,
            &owner,
            500,
            ids(),
        )
        .unwrap();
        let by_id: HashMap<&str, &GroupPlan> =
            plans.iter().map(|p| (p.file_id.as_str(), p)).collect();
        assert_eq!(by_id["big-0"].updates, vec![1]);
        assert_eq!(by_id["small-0"].updates, vec![0]);
        assert_eq!(by_id["small-0"].inserts, vec![2, 3, 4, 5]);
        assert_eq!(plans.len(), 2, "no new group while the small one has room");
        assert_eq!(by_id["small-0"].base.as_ref().unwrap().size, 100);
    }

    #[test]
    fn stored_keys_name_their_group_and_a_key_stored_twice_counts_for_the_last_read() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let batch = |keys: Vec<Option<&str>>| {
            let schema = Schema::new(vec![Field::new("_hoodie_record_key", DataType::Utf8, true)]);
            RecordBatch::try_new(
                std::sync::Arc::new(schema),
                vec![std::sync::Arc::new(StringArray::from(keys))],
            )
            .unwrap()
        };
        let stored = StoredKeys {
            groups: vec![group("a-0", 100, 3), group("b-0", 100, 2)],
            keys: vec![
                vec![
                    batch(vec![Some("k1"), None]),
                    batch(vec![Some("k2"), Some("k3")]),
                ],
                vec![batch(vec![Some("k3"), Some("k4")])],
            ],
        };
        let owners = stored.owners();
        assert_eq!(owners.len(), 4, "{owners:?}");
        assert_eq!(
            ["k1", "k2", "k3", "k4"].map(|k| owners[k]),
            [0, 0, 1, 1],
            "{owners:?}"
        );
        assert!(!owners.contains_key(""));
    }

    /// Places `rows` into a partition without stored keys (files of 300 bytes).
    fn place_new(
        rows: &[usize],
        keys: Option<&RecordKeys>,
        ascending: bool,
    ) -> Result<Vec<GroupPlan>, PlaceError> {
        place_rows("p", rows, keys, ascending, &[], &HashMap::new(), 300, ids())
    }

    fn into_new_partition(rows: &[usize], keys: &RecordKeys, ascending: bool) -> Vec<GroupPlan> {
        place_new(rows, Some(keys), ascending).unwrap()
    }

    #[test]
    fn keys_beyond_the_room_start_new_groups_of_the_target_size() {
        let plans = into_new_partition(&[0, 1, 2, 3, 4, 5, 6], &keys(7), false);
        // 100 bytes a row by default: 3 rows per new file.
        let inserts: Vec<&[usize]> = plans.iter().map(|p| p.inserts.as_slice()).collect();
        assert_eq!(inserts, vec![&[0, 1, 2][..], &[3, 4, 5], &[6]]);
        assert!(plans.iter().all(|p| p.base.is_none() && p.partition == "p"));
        assert_eq!(plans[0].file_id, "new1-0");
    }

    #[test]
    fn ascending_keys_into_a_new_partition_are_all_inserts_in_their_order() {
        let plans = into_new_partition(&[4, 0, 2, 1, 3], &keys(5), true);
        let inserts: Vec<&[usize]> = plans.iter().map(|p| p.inserts.as_slice()).collect();
        assert_eq!(inserts, vec![&[4, 0, 2][..], &[1, 3]]);
        assert!(plans
            .iter()
            .all(|p| p.updates.is_empty() && p.base.is_none()));
        // No key is read there: the same plan when the keys were not kept.
        assert_eq!(place_new(&[4, 0, 2, 1, 3], None, true).unwrap(), plans);
    }

    #[test]
    fn rows_whose_keys_must_be_read_need_them_kept() {
        // Keys not known to ascend are checked for repeats; stored keys are looked up.
        let unordered = place_new(&[0, 1], None, false);
        let stored = [group("a-0", 1000, 10)];
        let owner = HashMap::from([("k1", 0)]);
        let into_stored = place_rows("p", &[0, 1], None, true, &stored, &owner, 300, ids());
        for placed in [unordered, into_stored] {
            let err = placed.unwrap_err().to_string();
            assert!(err.contains("their keys were not kept"), "{err}");
        }
    }

    #[test]
    fn ascending_keys_still_find_their_stored_group() {
        let keys = keys(3);
        let groups = [group("a-0", 1000, 10)];
        let owner = HashMap::from([("k1", 0)]);
        let plans = place_rows(
            "p",
            &[0, 1, 2],
            Some(&keys),
            true,
            &groups,
            &owner,
            500,
            ids(),
        )
        .unwrap();
        let updated: Vec<&[usize]> = plans.iter().map(|p| p.updates.as_slice()).collect();
        assert_eq!(updated, vec![&[1][..], &[]]);
        assert_eq!(
            plans[1].inserts,
            vec![0, 2],
            "the full group takes no insert"
        );
    }

    #[test]
    fn a_repeated_key_is_refused_in_order_or_not() {
        let keys: RecordKeys = StringArray::from(vec!["a", "b", "c", "d", "b", "e"]).into();
        let place = |rows: &[usize]| {
            place_new(rows, Some(&keys), false)
                .map(|plans| plans.iter().map(|p| p.inserts.len()).sum::<usize>())
                .map_err(|e| e.to_string())
        };
        // In key order: compared with the previous key only.
        assert_eq!(place(&[0, 1, 2, 3]), Ok(4));
        // Out of order without a repeat, and with one far from its first place.
        assert_eq!(place(&[2, 0, 3, 1, 5]), Ok(5));
        assert_eq!(
            place(&[0, 1, 2, 3, 4]),
            Err("record key `b` appears twice in one run's rows".to_string())
        );
        assert_eq!(
            place(&[3, 1, 5, 0, 4]),
            Err("record key `b` appears twice in one run's rows".to_string())
        );
    }

    #[test]
    fn a_key_twice_is_refused() {
        let keys: RecordKeys = StringArray::from(vec!["a", "a"]).into();
        let e = place_new(&[0, 1], Some(&keys), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record key `a` appears twice in one run's rows"
        );
    }
}
