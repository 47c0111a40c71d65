//! The event-driven layers around a job, as one loop on one machine (`tally watch`): a raw file
//! that appears (or changes) is validated, its validated file is tracked, and a scheduler pass
//! runs every job whose preconditions now hold, as the Lambda functions on S3 events and
//! schedules do on AWS.
//!
//! Invariants:
//! - a file is validated once per version (size and modification time), and only once that
//!   version has stayed the same for one polling interval, so a file still being copied is not
//!   read half-written;
//! - a file that cannot be validated (no layout, too many bad rows, unreadable) is reported and
//!   left until it changes: one bad file never stops the loop;
//! - the validated file is tracked under the validated folder exactly as given (`--validated`),
//!   so a job registered with the same `--input` matches it;
//! - every pass ends with a scheduler pass when something was tracked, and at least every
//!   [`WatchOptions::schedule_every`] otherwise (retries and their backoff need no new file).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::events::Folders;
use super::{schedule, Decision, Outcome, ScheduleOptions};
use crate::progress::Progress;
use crate::state::{StateError, StateStore};
use crate::storage::{Location, StorageError};
use crate::validate::{output_name, validate_some, FileReport, ValidateError};

/// What `tally watch` watches and how it runs what becomes ready.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The raw folder watched (a path, `file://` or `s3://`) and the validated one.
    pub folders: Folders,
    /// How the scheduler pass runs the jobs that are ready.
    pub schedule: ScheduleOptions,
    /// How often the raw folder is listed.
    pub interval: Duration,
    /// The longest time between two scheduler passes.
    pub schedule_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Files validated in this pass (published or not).
    pub validated: Vec<FileReport>,
    /// Raw files skipped because no layout matches their name.
    pub no_layout: Vec<String>,
    /// Validated files recorded in the state store.
    pub tracked: u64,
    /// The scheduler pass's decisions, when one ran.
    pub decisions: Vec<Decision>,
}

/// A version of a raw file: its size and modification time.
type Version = (u64, DateTime<Utc>);

/// The loop's memory between passes.
pub struct Watcher {
    options: WatchOptions,
    store: StateStore,
    /// Versions already handled, by file name.
    done: HashMap<String, Version>,
    /// Versions seen once, waiting to be seen unchanged.
    settling: HashMap<String, Version>,
    last_schedule: Option<Instant>,
}

impl Watcher {
    pub fn new(options: WatchOptions, store: StateStore) -> Watcher {
        Watcher {
            options,
            store,
            done: HashMap::new(),
            settling: HashMap::new(),
            last_schedule: None,
        }
    }

    /// One pass: list, validate what settled, track it, schedule.
    pub async fn pass(&mut self, progress: &Progress) -> Result<PassReport, WatchError> {
        let mut report = PassReport::default();
        let folders = &self.options.folders;
        let raw = Location::open(&folders.raw).await?;
        let mut ready: HashMap<String, Version> = HashMap::new();
        for file in raw.list_files().await? {
            if !file.name.to_ascii_lowercase().ends_with(".tdf") {
                continue;
            }
            let version = (file.size, file.last_modified);
            if self.done.get(&file.name) == Some(&version) {
                continue;
            }
            if self.settling.get(&file.name) == Some(&version) {
                if folders.layouts.for_file(&file.name).is_none() {
                    report.no_layout.push(file.name.clone());
                    self.done.insert(file.name, version);
                } else {
                    ready.insert(file.name, version);
                }
            } else {
                self.settling.insert(file.name, version);
            }
        }
        if !ready.is_empty() {
            let validated = validate_some(&folders.validation(2), progress, |f| {
                ready.contains_key(&f.name)
            })
            .await?;
            let now = Utc::now();
            let folder = folders.validated.trim_end_matches('/');
            let mut tracked = Vec::new();
            for file in &validated.files {
                let name = file.input.rsplit('/').next().unwrap_or(&file.input);
                if file.published() {
                    tracked.push((format!("{folder}/{}", output_name(name)), now));
                }
            }
            for (name, version) in ready {
                self.settling.remove(&name);
                self.done.insert(name, version);
            }
            report.tracked = self.store.track_files(&tracked).await?;
            report.validated = validated.files;
        }
        let due = self
            .last_schedule
            .is_none_or(|t| t.elapsed() >= self.options.schedule_every);
        if report.tracked > 0 || due {
            report.decisions = schedule(&self.store, &self.options.schedule).await?;
            self.last_schedule = Some(Instant::now());
        }
        Ok(report)
    }
}

/// The lines a pass is worth showing: files validated, files refused, jobs started or failed.
pub fn event_lines(report: &PassReport) -> Vec<String> {
    let mut lines = Vec::new();
    for f in &report.validated {
        let quarantined = if f.bad_rows > 0 {
            format!(", {} bad rows quarantined", f.bad_rows)
        } else {
            String::new()
        };
        lines.push(if f.published() {
            format!(
                "validated {} -> {}: {} rows{quarantined}",
                f.input, f.output, f.rows
            )
        } else {
            format!("not published {}: {}", f.input, f.status)
        });
    }
    for name in &report.no_layout {
        lines.push(format!(
            "skipped {name}: no layout matches this file name (see jobs/layouts.toml)"
        ));
    }
    if report.tracked > 0 {
        lines.push(format!("tracked {} validated files", report.tracked));
    }
    for d in &report.decisions {
        if d.outcome != Outcome::Skipped {
            lines.push(format!("{} {}: {}", d.outcome, d.job_config_id, d.detail));
        }
    }
    lines
}
