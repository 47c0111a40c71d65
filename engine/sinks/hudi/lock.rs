//! One writer at a time: a lock object in `.hoodie/.aux/`, created only if absent
//! (`PutMode::Create`: an atomic create on local disks and on AWS S3, which honors
//! `If-None-Match: *`). A lock left by a writer that died is broken when its lease has expired, or
//! at once when the owner was a process on this host that no longer exists.
//!
//! Not every S3-compatible server enforces conditional creates (Garage ignores them); the writer
//! also re-reads the timeline before it commits and refuses to commit over another writer's
//! instant, and the scheduler's atomic job claim (state store) keeps two runs of one job apart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::table::{HudiTable, TableError, HOODIE_DIR};

pub const LOCK_FILE: &str = ".aux/tally-writer.lock";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    host: String,
    pid: u32,
    /// The owner's start time (clock ticks since boot, `/proc/<pid>/stat`), so a reused process
    /// id is not mistaken for the owner.
    #[serde(default)]
    process_start: Option<u64>,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A held lock; release it with [`WriterLock::release`].
#[derive(Debug)]
pub struct WriterLock {
    table: HudiTable,
}

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().to_string()
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), or `None` when no such process
/// exists. A thread id also has a `/proc` entry, but with its own start time, and a zombie is dead.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn owner_alive(holder: &LockRecord) -> bool {
    match (process_start(holder.pid), holder.process_start) {
        (None, _) => false,
        (Some(now), Some(recorded)) => now == recorded,
        (Some(_), None) => true,
    }
}

impl WriterLock {
    fn relative() -> String {
        format!("{HOODIE_DIR}/{LOCK_FILE}")
    }

    /// Takes the table's writer lock, or says who holds it.
    pub async fn acquire(table: &HudiTable, lease: Duration) -> Result<WriterLock, TableError> {
        let path = table.path(&Self::relative());
        for _ in 0..3 {
            let now = Utc::now();
            let record = LockRecord {
                host: this_host(),
                pid: std::process::id(),
                process_start: process_start(std::process::id()),
                acquired_at: now,
                expires_at: now + chrono::Duration::from_std(lease).unwrap_or_default(),
            };
            let body = serde_json::to_vec(&record).expect("lock record serializes");
            let put = table
                .location
                .store
                .put_opts(
                    &path,
                    PutPayload::from(body),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match put {
                Ok(_) => {
                    return Ok(WriterLock {
                        table: table.clone(),
                    })
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let holder = table
                        .get(&Self::relative())
                        .await?
                        .and_then(|b| serde_json::from_slice::<LockRecord>(&b).ok());
                    let stale = match &holder {
                        None => true,
                        Some(h) => {
                            h.expires_at < Utc::now() || (h.host == this_host() && !owner_alive(h))
                        }
                    };
                    if !stale {
                        let h = holder.expect("not stale means present");
                        return Err(TableError::Storage {
                            url: table.location.url.clone(),
                            message: format!(
                                "another writer holds the table (process {} on {} since {}, lease until {}); \
                                 retry when it is done",
                                h.pid, h.host, h.acquired_at, h.expires_at
                            ),
                        });
                    }
                    tracing::warn!(table = %table.location.url, holder = ?holder, "breaking a stale writer lock");
                    table.delete(&Self::relative()).await?;
                }
                Err(e) => {
                    return Err(TableError::Storage {
                        url: table.location.url.clone(),
                        message: format!("cannot take the writer lock: {e}"),
                    })
                }
            }
        }
        Err(TableError::Storage {
            url: table.location.url.clone(),
            message: "cannot take the writer lock: it keeps changing hands".into(),
        })
    }

    pub async fn release(self) -> Result<(), TableError> {
        self.table.delete(&Self::relative()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_alive_only_while_its_own_process_runs() {
        let me = std::process::id();
        let record = |pid, process_start| LockRecord {
            host: this_host(),
            pid,
            process_start,
            acquired_at: Utc::now(),
            expires_at: Utc::now(),
        };
        assert!(owner_alive(&record(me, process_start(me))));
        // Same pid, another start time: the id was reused by a different process.
        assert!(!owner_alive(&record(me, process_start(me).map(|t| t + 1))));
        assert!(!owner_alive(&record(u32::MAX - 1, None)));
    }
}
