//! Recovering the timeline before a write: what a gone writer left is rolled back, what a live one
//! is doing is left alone, and what tally does not maintain is refused.
//!
//! Invariants:
//! - A pending commit is rolled back only when its writer is provably gone (its heartbeat, see
//!   [`super::heartbeat`]); a live writer's instant stops this run with a clear error instead.
//! - A rollback is itself an instant, as in Hudi: `<t>.rollback.requested` (the plan, Avro),
//!   `<t>.rollback.inflight`, the base files deleted, the target's timeline files deleted newest
//!   state first, then `<t>.rollback` (what was deleted, Avro). Killed anywhere, the target is still
//!   pending (or already gone) and the next run redoes it; a leftover pending rollback or clean of
//!   tally's is removed, since both are safe to redo.

use std::collections::BTreeSet;
use std::time::{Duration, Instant as Clock};

use chrono::Utc;

use super::commit::CommitMetadata;
use super::heartbeat::{self, WriterState};
use super::instant_avro::{self, FilesByPartition};
use super::table::{HudiTable, TableError, HOODIE_DIR};
use super::timeline::{new_instant_time, Instant, InstantState, Timeline};

fn unsupported(table: &HudiTable, message: String) -> TableError {
    TableError::Unsupported {
        url: table.location.url.clone(),
        message,
    }
}

/// Brings the timeline to a state this writer can build on; returns the rolled-back instants and
/// the reloaded timeline.
pub async fn recover(
    table: &HudiTable,
    lease: Duration,
) -> Result<(Vec<String>, Timeline), TableError> {
    remove_stray_temp_files(table).await?;
    let mut timeline = table.timeline().await?;
    if let Some(foreign) = timeline.pending_foreign().first() {
        return Err(unsupported(
            table,
            format!(
                "the timeline has a pending `{}` ({}), which tally does not carry forward (a \
                 clustering plan, say); complete or roll it back with Hudi before writing with tally",
                foreign.action, foreign.file_name
            ),
        ));
    }
    for leftover in timeline.pending_housekeeping() {
        table.delete(&leftover.path()).await?;
    }
    let mut rolled_back = Vec::new();
    for time in timeline.pending_writes() {
        if let WriterState::Alive { last_beat } =
            heartbeat::writer_state(table, &time, lease).await?
        {
            return Err(table.err(format!(
                "another writer's instant {time} is in progress (last heartbeat {last_beat}); \
                 retry when it is done"
            )));
        }
        let current = table.timeline().await?;
        let rollback_time = new_instant_time(Utc::now(), &current);
        roll_back(table, &current, &time, &rollback_time).await?;
        rolled_back.push(time);
    }
    if !rolled_back.is_empty() || !timeline.pending_housekeeping().is_empty() {
        timeline = table.timeline().await?;
    }
    Ok((rolled_back, timeline))
}

/// Rolls back pending commit `time` as rollback instant `rollback_time`.
pub async fn roll_back(
    table: &HudiTable,
    timeline: &Timeline,
    time: &str,
    rollback_time: &str,
) -> Result<(), TableError> {
    let started = Clock::now();
    let mut partitions: BTreeSet<String> = BTreeSet::new();
    let inflight_path = Instant::path_for(time, "commit", InstantState::Inflight);
    if let Some(plan) = table.get(&inflight_path).await? {
        if let Some(plan) = CommitMetadata::parse(&plan) {
            partitions.extend(plan.partition_to_write_stats.into_keys());
        }
    }
    let mut doomed: Vec<(String, String)> = Vec::new();
    for partition in &partitions {
        for file in table.partition_files(partition).await? {
            if file.instant == time {
                doomed.push((partition.clone(), file.relative_path()));
            }
        }
    }
    let full = |relative: &str| format!("{}/{relative}", table.location.url);
    let mut files = FilesByPartition::new();
    for (partition, relative) in &doomed {
        files
            .entry(partition.clone())
            .or_default()
            .push(full(relative));
    }
    let requested = Instant::path_for(rollback_time, "rollback", InstantState::Requested);
    let inflight = Instant::path_for(rollback_time, "rollback", InstantState::Inflight);
    let completed = Instant::path_for(rollback_time, "rollback", InstantState::Completed);
    table
        .put(
            &requested,
            instant_avro::rollback_plan(time, &files).map_err(|e| table.err(e))?,
        )
        .await?;
    table.put(&inflight, Vec::new()).await?;
    for (_, relative) in &doomed {
        table.delete(relative).await?;
    }
    // A base file killed mid-write locally is a `<name>#<n>` temp file listings do not show.
    if let Some(root) = &table.location.local_root {
        for partition in &partitions {
            if let Ok(entries) = std::fs::read_dir(root.join(partition)) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name.contains(&format!("_{time}.parquet#")) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
    // The target's timeline files, newest state first: a rollback interrupted here is redone.
    let mut target = timeline.files_of(time);
    target.sort_by_key(|i| std::cmp::Reverse(i.state));
    for instant in target {
        if instant.state != InstantState::Completed {
            table.delete(&instant.path()).await?;
        }
    }
    heartbeat::remove(table, time).await?;
    let took = started.elapsed().as_millis() as i64;
    table
        .put(
            &completed,
            instant_avro::rollback_metadata(rollback_time, time, took, &files)
                .map_err(|e| table.err(e))?,
        )
        .await?;
    tracing::warn!(table = %table.location.url, instant = time, rollback = rollback_time, files = doomed.len(), "rolled back an incomplete instant");
    Ok(())
}

/// A local write killed between writing its temp file and renaming it leaves `<name>#<n>` behind;
/// readers ignore such files, and the writer holding the lock removes them from the timeline.
/// (object_store's local listing hides them, so the folder is read directly.)
async fn remove_stray_temp_files(table: &HudiTable) -> Result<(), TableError> {
    let Some(root) = &table.location.local_root else {
        return Ok(());
    };
    let hoodie = root.join(HOODIE_DIR);
    let fail = |e: std::io::Error| TableError::Storage {
        url: table.location.url.clone(),
        message: format!("cannot tidy {}: {e}", hoodie.display()),
    };
    let entries = match std::fs::read_dir(&hoodie) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    for entry in entries {
        let entry = entry.map_err(fail)?;
        if entry.file_name().to_string_lossy().contains('#') && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(fail)?;
        }
    }
    Ok(())
}
