//! The Hudi timeline (table version 6, layout version 1) and the base files it makes visible.
//!
//! Instants are files directly in `.hoodie/`: `<time>.commit.requested`, `<time>.inflight`,
//! `<time>.commit` for commits, `<time>.<action>[.requested|.inflight]` for the other actions. A
//! base file `<fileId>_<writeToken>_<time>.parquet` belongs to the snapshot only when its instant
//! has completed; the latest such file of each file group is the group's current slice.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::ObjectStore;

/// The folder of a table's timeline and properties.
pub const HOODIE_DIR: &str = ".hoodie";

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstantState {
    Requested,
    Inflight,
    Completed,
}

/// One instant file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    pub time: String,
    pub action: String,
    pub state: InstantState,
    pub file_name: String,
}

impl Instant {
    /// Parses a timeline file name; `None` for files that are not instants.
    pub fn parse(file_name: &str) -> Option<Instant> {
        let (time, rest) = file_name.split_once('.')?;
        if time.len() < 14 || !time.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (action, state) = match rest {
            "commit.requested" => ("commit", InstantState::Requested),
            "inflight" => ("commit", InstantState::Inflight),
            "commit" => ("commit", InstantState::Completed),
            other => match other.split_once('.') {
                Some((action, "requested")) => (action, InstantState::Requested),
                Some((action, "inflight")) => (action, InstantState::Inflight),
                Some(_) => return None,
                None => (other, InstantState::Completed),
            },
        };
        // Actions are plain words; anything else (a `<name>#<n>` temp file left by a killed
        // local write, say) is not an instant.
        if action.is_empty() || !action.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        Some(Instant {
            time: time.to_string(),
            action: action.to_string(),
            state,
            file_name: file_name.to_string(),
        })
    }

    /// The file name of this instant's action in `state` (layout version 1).
    pub fn file_for(time: &str, action: &str, state: InstantState) -> String {
        match (action, state) {
            ("commit", InstantState::Requested) => format!("{time}.commit.requested"),
            ("commit", InstantState::Inflight) => format!("{time}.inflight"),
            (a, InstantState::Requested) => format!("{time}.{a}.requested"),
            (a, InstantState::Inflight) => format!("{time}.{a}.inflight"),
            (a, InstantState::Completed) => format!("{time}.{a}"),
        }
    }

    /// The table-relative path of this instant's file: `.hoodie/<file>`.
    pub fn path(&self) -> String {
        format!("{HOODIE_DIR}/{}", self.file_name)
    }

    /// The table-relative path of this instant's action in `state`: `.hoodie/<file>`.
    pub fn path_for(time: &str, action: &str, state: InstantState) -> String {
        format!("{HOODIE_DIR}/{}", Instant::file_for(time, action, state))
    }
}

/// All instants of a table, by time.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub instants: Vec<Instant>,
}

impl Timeline {
    /// Lists `.hoodie/` (not its sub-folders).
    pub async fn load(
        store: &dyn ObjectStore,
        hoodie_dir: &Path,
    ) -> object_store::Result<Timeline> {
        let listing = store.list_with_delimiter(Some(hoodie_dir)).await?;
        let mut instants: Vec<Instant> = listing
            .objects
            .iter()
            .filter_map(|m| m.location.filename().and_then(Instant::parse))
            .collect();
        instants.sort_by(|a, b| (&a.time, a.state).cmp(&(&b.time, b.state)));
        Ok(Timeline { instants })
    }

    /// The writes whose base files are visible: completed `commit`/`replacecommit` instants, and
    /// every instant older than the active timeline's first write (archived ones; Hudi's readers,
    /// hudi-rs among them, treat those as committed too).
    pub fn completed_writes(&self) -> CommittedWrites {
        CommittedWrites {
            completed: self
                .instants
                .iter()
                .filter(|i| i.state == InstantState::Completed && writes_base_files(&i.action))
                .map(|i| i.time.clone())
                .collect(),
            active_start: self
                .instants
                .iter()
                .filter(|i| writes_base_files(&i.action))
                .map(|i| i.time.clone())
                .min(),
        }
    }

    /// Actions tally does not carry forward that are pending (a Spark clustering plan, an index
    /// build, a compaction): writing past them would break the writer that owns them.
    pub fn pending_foreign(&self) -> Vec<&Instant> {
        self.pending_actions(|a| !matches!(a, "commit" | "rollback" | "clean"))
    }

    /// Pending `rollback`/`clean` instants (a tally run killed while rolling back or cleaning).
    pub fn pending_housekeeping(&self) -> Vec<&Instant> {
        self.pending_actions(|a| matches!(a, "rollback" | "clean"))
    }

    /// Instant files of actions `which` accepts that never completed.
    pub fn pending_actions(&self, which: impl Fn(&str) -> bool) -> Vec<&Instant> {
        let completed: HashSet<(&str, &str)> = self
            .instants
            .iter()
            .filter(|i| i.state == InstantState::Completed)
            .map(|i| (i.time.as_str(), i.action.as_str()))
            .collect();
        self.instants
            .iter()
            .filter(|i| {
                i.state != InstantState::Completed
                    && which(&i.action)
                    && !completed.contains(&(i.time.as_str(), i.action.as_str()))
            })
            .collect()
    }

    /// Write instants that were requested or started but never completed (a crashed writer).
    pub fn pending_writes(&self) -> Vec<String> {
        let completed: HashSet<&str> = self
            .instants
            .iter()
            .filter(|i| i.state == InstantState::Completed)
            .map(|i| i.time.as_str())
            .collect();
        let mut pending: Vec<String> = self
            .instants
            .iter()
            .filter(|i| writes_base_files(&i.action) && !completed.contains(i.time.as_str()))
            .map(|i| i.time.clone())
            .collect();
        pending.dedup();
        pending
    }

    /// Files of every state of instant `time`.
    pub fn files_of(&self, time: &str) -> Vec<&Instant> {
        self.instants.iter().filter(|i| i.time == time).collect()
    }

    /// The newest instant time of any action.
    pub fn latest_time(&self) -> Option<&str> {
        self.instants.iter().map(|i| i.time.as_str()).max()
    }
}

fn writes_base_files(action: &str) -> bool {
    matches!(action, "commit" | "replacecommit")
}

/// Which write instants' base files are visible (see [`Timeline::completed_writes`]).
#[derive(Debug, Clone, Default)]
pub struct CommittedWrites {
    pub completed: BTreeSet<String>,
    /// The first write instant on the active timeline, of any state.
    pub active_start: Option<String>,
}

impl CommittedWrites {
    pub fn contains(&self, time: &str) -> bool {
        self.completed.contains(time)
            || self
                .active_start
                .as_deref()
                .is_some_and(|start| time < start)
    }
}

const INSTANT_FORMAT: &str = "%Y%m%d%H%M%S%3f";

/// The time an instant names (`yyyyMMddHHmmssSSS`, or Hudi's older `yyyyMMddHHmmss`), UTC.
pub fn instant_datetime(time: &str) -> Option<DateTime<Utc>> {
    let parsed = match time.len() {
        17 => chrono::NaiveDateTime::parse_from_str(time, INSTANT_FORMAT).ok(),
        14 => chrono::NaiveDateTime::parse_from_str(time, "%Y%m%d%H%M%S").ok(),
        _ => None,
    }?;
    Some(parsed.and_utc())
}

/// The instant time of a moment.
pub fn format_instant(at: DateTime<Utc>) -> String {
    at.format(INSTANT_FORMAT).to_string()
}

/// A new instant time, later than every instant on the timeline, and always a real time (a
/// clock behind the newest instant steps one millisecond past it, carrying into seconds, minutes
/// and days as a clock would).
pub fn new_instant_time(now: DateTime<Utc>, timeline: &Timeline) -> String {
    let latest = timeline.latest_time().and_then(instant_datetime);
    match latest {
        Some(latest) if latest >= now => format_instant(latest + chrono::Duration::milliseconds(1)),
        _ => format_instant(now),
    }
}

/// A base file: `<fileId>_<writeToken>_<instant>.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFile {
    /// Partition path relative to the table root (`2026-03-01`, `trans_date=2026-03-01`, or `` for
    /// an unpartitioned table).
    pub partition: String,
    pub file_id: String,
    pub write_token: String,
    pub instant: String,
    pub file_name: String,
    pub size: u64,
}

impl BaseFile {
    pub fn parse(partition: &str, file_name: &str, size: u64) -> Option<BaseFile> {
        let stem = file_name.strip_suffix(".parquet")?;
        let mut parts = stem.rsplitn(3, '_');
        let instant = parts.next()?;
        let write_token = parts.next()?;
        let file_id = parts.next()?;
        if !instant.bytes().all(|b| b.is_ascii_digit()) || file_id.is_empty() {
            return None;
        }
        Some(BaseFile {
            partition: partition.to_string(),
            file_id: file_id.to_string(),
            write_token: write_token.to_string(),
            instant: instant.to_string(),
            file_name: file_name.to_string(),
            size,
        })
    }

    pub fn name(file_id: &str, write_token: &str, instant: &str) -> String {
        format!("{file_id}_{write_token}_{instant}.parquet")
    }

    /// Path relative to the table root.
    pub fn relative_path(&self) -> String {
        if self.partition.is_empty() {
            self.file_name.clone()
        } else {
            format!("{}/{}", self.partition, self.file_name)
        }
    }
}

/// The file groups of one partition: every committed slice of each, oldest first.
pub type FileGroups = BTreeMap<String, Vec<BaseFile>>;

/// Groups base files by file id, keeping only slices of completed writes, oldest first, and
/// leaving out file groups a completed replacecommit replaced.
pub fn committed_file_groups(
    files: impl IntoIterator<Item = BaseFile>,
    completed: &CommittedWrites,
    replaced: &HashSet<String>,
) -> FileGroups {
    let mut groups: FileGroups = BTreeMap::new();
    for f in files {
        if completed.contains(&f.instant) && !replaced.contains(&f.file_id) {
            groups.entry(f.file_id.clone()).or_default().push(f);
        }
    }
    for slices in groups.values_mut() {
        slices.sort_by(|a, b| a.instant.cmp(&b.instant));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_file_names_parse_and_render() {
        for (name, action, state) in [
            (
                "20240418172802262.commit.requested",
                "commit",
                InstantState::Requested,
            ),
            (
                "20240418172802262.inflight",
                "commit",
                InstantState::Inflight,
            ),
            (
                "20240418172802262.commit",
                "commit",
                InstantState::Completed,
            ),
            (
                "20240418172802262.clean.requested",
                "clean",
                InstantState::Requested,
            ),
            (
                "20240418172802262.rollback",
                "rollback",
                InstantState::Completed,
            ),
            (
                "20240418172802262.replacecommit.inflight",
                "replacecommit",
                InstantState::Inflight,
            ),
        ] {
            let i = Instant::parse(name).unwrap();
            assert_eq!((i.action.as_str(), i.state), (action, state), "{name}");
            assert_eq!(Instant::file_for(&i.time, action, state), name);
        }
        assert!(Instant::parse("hoodie.properties").is_none());
        assert!(Instant::parse("20240418172802262.commit#1").is_none());
        assert!(Instant::parse(".aux").is_none());
    }

    #[test]
    fn base_file_names_parse() {
        let f = BaseFile::parse(
            "10",
            "97de74b1-2a8e-4bb7-874c-0a74e1f42a77-0_0-119-166_20240418172804498.parquet",
            5,
        )
        .unwrap();
        assert_eq!(f.file_id, "97de74b1-2a8e-4bb7-874c-0a74e1f42a77-0");
        assert_eq!(f.write_token, "0-119-166");
        assert_eq!(f.instant, "20240418172804498");
        assert_eq!(f.relative_path(), format!("10/{}", f.file_name));
        assert!(BaseFile::parse("", "x.parquet", 1).is_none());
    }

    #[test]
    fn new_instants_are_later_than_the_timeline() {
        let now: DateTime<Utc> = "2026-03-01T10:00:00.123Z".parse().unwrap();
        let empty = Timeline::default();
        assert_eq!(new_instant_time(now, &empty), "20260301100000123");
        let ahead = Timeline {
            instants: vec![Instant::parse("20260301100000500.commit").unwrap()],
        };
        assert_eq!(new_instant_time(now, &ahead), "20260301100000501");
        // A clock behind the newest instant carries across second, minute, hour and day.
        for (latest, next) in [
            ("20260301100059999", "20260301100100000"),
            ("20260301105959999", "20260301110000000"),
            ("20260301235959999", "20260302000000000"),
            ("20261231235959999", "20270101000000000"),
        ] {
            let ahead = Timeline {
                instants: vec![Instant::parse(&format!("{latest}.commit")).unwrap()],
            };
            let made = new_instant_time(now, &ahead);
            assert_eq!(made, next);
            assert!(instant_datetime(&made).is_some());
        }
    }

    #[test]
    fn only_committed_slices_count() {
        let completed: BTreeSet<String> = ["001".to_string()].into();
        let files = vec![
            BaseFile::parse("p", "a-0_0-0-0_00000000000000001.parquet", 1),
            BaseFile::parse("p", "a-0_0-0-0_00000000000000002.parquet", 1),
        ];
        let completed = CommittedWrites {
            completed: completed
                .into_iter()
                .map(|_| "00000000000000001".to_string())
                .collect(),
            active_start: Some("00000000000000001".into()),
        };
        let groups =
            committed_file_groups(files.into_iter().flatten(), &completed, &HashSet::new());
        assert_eq!(groups["a-0"].len(), 1);
        assert_eq!(groups["a-0"][0].instant, "00000000000000001");
        // Instants before the active timeline were archived: their files count as committed.
        let archived = CommittedWrites {
            completed: BTreeSet::new(),
            active_start: Some("00000000000000002".into()),
        };
        let files = vec![
            BaseFile::parse("p", "a-0_0-0-0_00000000000000001.parquet", 1),
            BaseFile::parse("p", "a-0_0-0-0_00000000000000002.parquet", 1),
        ];
        let groups = committed_file_groups(files.into_iter().flatten(), &archived, &HashSet::new());
        assert_eq!(groups["a-0"].len(), 1);
    }
}
