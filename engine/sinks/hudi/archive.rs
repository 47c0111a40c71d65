//! Keeping the active timeline bounded: once more than `max_active` instants have completed, the
//! oldest are moved out of `.hoodie/` into `.hoodie/archived/` until `min_active` remain.
//!
//! Invariants:
//! - Only completed instants older than every pending instant and every `replacecommit` (whose
//!   list of replaced file groups readers need) are archived, and never the newest commit (its
//!   metadata carries the schema). Readers treat a base file older than the active
//!   timeline's first write as committed (Hudi and hudi-rs do, and so does
//!   [`super::timeline::Timeline::completed_writes`]), so archiving changes no snapshot.
//! - The archive is written before anything is removed: JSON-lines files
//!   `tally-archive-<nnnnnn>.jsonl`, each line one instant file's name and its bytes (base64). The
//!   newest file grows (rewritten whole, in one put) until it passes 1 MiB, then the next one
//!   starts, so the folder holds a file per MiB of history, not one per run. Hudi's own
//!   archived-timeline reader looks for its log files (`.commits_.archive*`) and ignores these;
//!   nothing in a snapshot read depends on them.
//! - Per instant, the requested and inflight files go first and the completed file last, so an
//!   interrupted archival never leaves an instant that looks pending.

use std::collections::BTreeSet;

use serde::Serialize;

use super::table::{at_once, HudiTable, TableError, HOODIE_DIR};
use super::timeline::{InstantState, Timeline};

pub const ARCHIVE_DIR: &str = "archived";
const ARCHIVE_ROLL_BYTES: usize = 1 << 20;

/// Bounds of the active timeline (Hudi's `hoodie.keep.max.commits` / `hoodie.keep.min.commits`).
#[derive(Debug, Clone)]
pub struct ArchivePolicy {
    pub max_active: usize,
    pub min_active: usize,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        ArchivePolicy {
            max_active: 30,
            min_active: 20,
        }
    }
}

#[derive(Serialize)]
struct ArchivedFile {
    file: String,
    base64: String,
}

/// The completed instant times to archive, oldest first.
pub fn to_archive(timeline: &Timeline, policy: &ArchivePolicy) -> Vec<String> {
    let completed: BTreeSet<&str> = timeline
        .instants
        .iter()
        .filter(|i| i.state == InstantState::Completed)
        .map(|i| i.time.as_str())
        .collect();
    if completed.len() <= policy.max_active {
        return Vec::new();
    }
    // Archival stops at the first pending instant, and at the first replacecommit (its record of
    // replaced file groups must stay readable).
    let floor = timeline
        .pending_actions(|_| true)
        .into_iter()
        .chain(
            timeline
                .instants
                .iter()
                .filter(|i| i.action == "replacecommit"),
        )
        .map(|i| i.time.as_str())
        .min();
    let newest_commit = timeline
        .completed_writes()
        .completed
        .iter()
        .next_back()
        .cloned();
    let excess = completed.len() - policy.min_active.min(policy.max_active);
    completed
        .iter()
        .take(excess)
        .filter(|t| floor.is_none_or(|f| **t < f))
        .filter(|t| newest_commit.as_deref() != Some(**t))
        .map(|t| t.to_string())
        .collect()
}

/// Archives what [`to_archive`] picks; returns how many instants were archived.
pub async fn archive(table: &HudiTable, policy: &ArchivePolicy) -> Result<usize, TableError> {
    let timeline = table.timeline().await?;
    let times = to_archive(&timeline, policy);
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return Ok(0);
    };
    let mut files = Vec::new();
    for time in &times {
        let mut of_time = timeline.files_of(time);
        // Requested and inflight first, completed last (see the module docs).
        of_time.sort_by_key(|i| i.state);
        files.extend(of_time.into_iter().cloned());
    }
    // Read several at once (a GET each on S3), kept in order.
    let paths: Vec<String> = files.iter().map(|instant| instant.path()).collect();
    let contents = at_once(paths.iter().map(|path| table.get(path))).await?;
    let mut lines = Vec::new();
    for (instant, bytes) in files.iter().zip(contents) {
        let line = ArchivedFile {
            file: instant.file_name.clone(),
            base64: base64_encode(&bytes.unwrap_or_default()),
        };
        lines.push(serde_json::to_string(&line).unwrap_or_default());
    }
    let (name, mut body) = open_archive(table).await?;
    body.extend_from_slice((lines.join("\n") + "\n").as_bytes());
    table.put(&name, body).await?;
    tracing::debug!(table = %table.location.url, first = %first, last = %last, archive = %name, "archived instants");
    // Removed several at once, in two waves: every requested and inflight file, then every
    // completed one, so an instant never looks pending (see the module docs).
    let (pending, completed): (Vec<_>, Vec<_>) = files
        .iter()
        .zip(&paths)
        .partition(|(instant, _)| instant.state != InstantState::Completed);
    for wave in [pending, completed] {
        at_once(wave.into_iter().map(|(_, path)| table.delete(path))).await?;
    }
    Ok(times.len())
}

/// The archive file to add to, and what it holds so far.
async fn open_archive(table: &HudiTable) -> Result<(String, Vec<u8>), TableError> {
    let folder = format!("{HOODIE_DIR}/{ARCHIVE_DIR}");
    let listing = table
        .location
        .store
        .list_with_delimiter(Some(&table.path(&folder)))
        .await
        .map_err(|e| table.failed(format!("cannot list {folder}"), e))?;
    let newest = listing
        .objects
        .iter()
        .filter_map(|m| {
            let name = m.location.filename()?;
            let seq: u64 = name
                .strip_prefix("tally-archive-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((seq, m.size))
        })
        .max();
    let file = |seq: u64| format!("{folder}/tally-archive-{seq:06}.jsonl");
    match newest {
        Some((seq, size)) if (size as usize) < ARCHIVE_ROLL_BYTES => {
            let body = table.get(&file(seq)).await?.unwrap_or_default().to_vec();
            Ok((file(seq), body))
        }
        Some((seq, _)) => Ok((file(seq + 1), Vec::new())),
        None => Ok((file(1), Vec::new())),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::hudi::timeline::Instant;

    fn timeline(names: &[String]) -> Timeline {
        let mut instants: Vec<Instant> = names.iter().filter_map(|n| Instant::parse(n)).collect();
        instants.sort_by(|a, b| (&a.time, a.state).cmp(&(&b.time, b.state)));
        Timeline { instants }
    }

    #[test]
    fn archives_the_oldest_down_to_the_minimum_and_stops_at_a_pending_instant() {
        let policy = ArchivePolicy {
            max_active: 4,
            min_active: 2,
        };
        let t = |i: u32| format!("2026030110{i:02}00000");
        let mut names: Vec<String> = (0..6).map(|i| format!("{}.commit", t(i))).collect();
        assert_eq!(
            to_archive(&timeline(&names), &policy),
            [t(0), t(1), t(2), t(3)]
        );
        // A pending instant at t(2) holds archival below it.
        names.push(format!("{}.commit.requested", t(2)));
        names.retain(|n| n != &format!("{}.commit", t(2)));
        assert_eq!(to_archive(&timeline(&names), &policy), [t(0), t(1)]);
        // Under the maximum: nothing.
        assert!(to_archive(&timeline(&names[..3]), &policy).is_empty());
    }
}
