//! Cleaning old file slices after a commit, by retained commits with a time floor (Hudi's
//! `KEEP_LATEST_COMMITS`, plus a minimum age).
//!
//! Invariants:
//! - The earliest retained commit is the `retain_commits`-th newest, moved back further until it
//!   is at least `min_age` old. Every snapshot at or after it stays readable: a slice is deleted
//!   only when a newer slice of its file group was committed at or before that commit. So a query
//!   that started within `min_age`, or within the last `retain_commits` commits, keeps its files.
//! - Only the file groups this commit touched are examined (the only ones that gained a slice).
//! - A clean is an instant: `<t>.clean.requested` and `<t>.clean.inflight` (the plan, Avro), the
//!   files deleted, then `<t>.clean` (what was deleted, Avro). A run killed mid-clean leaves a
//!   pending clean that the next writer removes; files it did not delete yet are found again.

use std::time::{Duration, Instant as Clock};

use chrono::{DateTime, Utc};

use super::instant_avro::{self, FilesByPartition};
use super::table::{at_once, HudiTable, TableError};
use super::timeline::{format_instant, new_instant_time, BaseFile, Instant, InstantState};

/// How much history cleaning keeps.
#[derive(Debug, Clone)]
pub struct CleanPolicy {
    /// Commits whose snapshots stay readable (Hudi's `hoodie.cleaner.commits.retained`).
    pub retain_commits: usize,
    /// Snapshots younger than this stay readable whatever the count.
    pub min_age: Duration,
}

impl Default for CleanPolicy {
    fn default() -> Self {
        CleanPolicy {
            retain_commits: 10,
            min_age: Duration::from_secs(3600),
        }
    }
}

/// The earliest commit whose snapshot must stay readable, or `None` when nothing may be cleaned.
/// `commits` are the completed write times, oldest first.
pub fn earliest_retained(
    commits: &[String],
    policy: &CleanPolicy,
    now: DateTime<Utc>,
) -> Option<String> {
    let keep = policy.retain_commits.max(1);
    if commits.len() <= keep {
        return None;
    }
    let by_count = &commits[commits.len() - keep];
    let floor = format_instant(now - chrono::Duration::from_std(policy.min_age).ok()?);
    let by_age = commits
        .iter()
        .rev()
        .find(|c| c.as_str() <= floor.as_str())?;
    Some(by_count.min(by_age).clone())
}

/// The old slices of one file group that no snapshot at or after `earliest` can read.
/// `slices` are the group's committed slices, oldest first, `newest` the instant just committed.
pub fn cleanable<'a>(slices: &'a [BaseFile], newest: &str, earliest: &str) -> Vec<&'a BaseFile> {
    slices
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let superseded_in_time = slices[i + 1..]
                .iter()
                .map(|s| s.instant.as_str())
                .chain(std::iter::once(newest))
                .any(|later| later <= earliest);
            superseded_in_time
        })
        .map(|(_, s)| s)
        .collect()
}

/// Cleans the touched file groups after commit `newest`; returns the files deleted.
pub async fn clean(
    table: &HudiTable,
    touched: &[Vec<BaseFile>],
    newest: &str,
    policy: &CleanPolicy,
) -> Result<usize, TableError> {
    let started = Clock::now();
    let timeline = table.timeline().await?;
    let commits: Vec<String> = timeline.completed_writes().completed.into_iter().collect();
    let Some(earliest) = earliest_retained(&commits, policy, Utc::now()) else {
        return Ok(0);
    };
    let mut relative: Vec<(String, String, String)> = Vec::new();
    for slices in touched {
        for old in cleanable(slices, newest, &earliest) {
            relative.push((
                old.partition.clone(),
                old.relative_path(),
                old.file_name.clone(),
            ));
        }
    }
    if relative.is_empty() {
        return Ok(0);
    }
    let mut paths = FilesByPartition::new();
    let mut names = FilesByPartition::new();
    for (partition, rel, name) in &relative {
        paths
            .entry(partition.clone())
            .or_default()
            .push(format!("{}/{rel}", table.location.url));
        names
            .entry(partition.clone())
            .or_default()
            .push(name.clone());
    }
    let time = new_instant_time(Utc::now(), &timeline);
    let plan = instant_avro::cleaner_plan(&earliest, &paths).map_err(|e| table.err(e))?;
    for state in [InstantState::Requested, InstantState::Inflight] {
        table
            .put(&Instant::path_for(&time, "clean", state), plan.clone())
            .await?;
    }
    // Several at once: each is a round trip on S3, and a day of runs leaves a slice per run.
    at_once(relative.iter().map(|(_, rel, _)| table.delete(rel))).await?;
    let took = started.elapsed().as_millis() as i64;
    let done = instant_avro::clean_metadata(&time, &earliest, newest, took, &names)
        .map_err(|e| table.err(e))?;
    let path = Instant::path_for(&time, "clean", InstantState::Completed);
    table.put(&path, done).await?;
    Ok(relative.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(times: &[&str]) -> Vec<String> {
        times.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn the_earliest_retained_commit_respects_count_and_age() {
        let now: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let all = commits(&[
            "20260301080000000",
            "20260301090000000",
            "20260301100000000",
            "20260301113000000",
            "20260301115900000",
        ]);
        let policy = |n, mins: u64| CleanPolicy {
            retain_commits: n,
            min_age: Duration::from_secs(mins * 60),
        };
        // Keep 2 commits, no age floor: the 2nd newest.
        assert_eq!(
            earliest_retained(&all, &policy(2, 0), now).as_deref(),
            Some("20260301113000000")
        );
        // An hour's floor moves it back to the newest commit at least an hour old.
        assert_eq!(
            earliest_retained(&all, &policy(2, 60), now).as_deref(),
            Some("20260301100000000")
        );
        // Nothing old enough, or too few commits: nothing is cleaned.
        assert_eq!(earliest_retained(&all, &policy(2, 6 * 60), now), None);
        assert_eq!(earliest_retained(&all, &policy(5, 0), now), None);
    }

    #[test]
    fn a_slice_goes_only_once_a_newer_one_is_retained() {
        let slice = |t: &str| BaseFile::parse("p", &format!("g-0_0-0-0_{t}.parquet"), 1).unwrap();
        let slices = vec![slice("20260301080000000"), slice("20260301090000000")];
        let gone = |earliest: &str| -> Vec<String> {
            cleanable(&slices, "20260301100000000", earliest)
                .into_iter()
                .map(|s| s.instant.clone())
                .collect()
        };
        // A snapshot at 08:30 reads the 08:00 slice: keep both.
        assert!(gone("20260301083000000").is_empty());
        // From 09:00 on, the 08:00 slice is never read.
        assert_eq!(gone("20260301090000000"), ["20260301080000000"]);
        // From the newest commit on, both older slices go.
        assert_eq!(
            gone("20260301100000000"),
            ["20260301080000000", "20260301090000000"]
        );
    }
}
