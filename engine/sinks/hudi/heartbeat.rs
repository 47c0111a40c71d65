//! Per-instant heartbeats, as Hudi keeps them: `.hoodie/.heartbeat/<instant>`, rewritten while the
//! writer of that instant works. A pending instant is rolled back only when its writer is provably
//! gone: no heartbeat file, a heartbeat older than the lease, or a heartbeat of a process on this
//! host that no longer exists. Hudi's own writers judge the file by its modification time alone;
//! tally also records the owner, to tell a dead local process at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::lock::{renewal_interval, Owner};
use super::table::{HudiTable, TableError, HOODIE_DIR};

pub const HEARTBEAT_DIR: &str = ".heartbeat";

#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    #[serde(flatten)]
    owner: Owner,
    beat_at: DateTime<Utc>,
}

fn relative(instant: &str) -> String {
    format!("{HOODIE_DIR}/{HEARTBEAT_DIR}/{instant}")
}

/// A running heartbeat; [`Heartbeat::stop`] ends it and removes the file.
#[derive(Debug)]
pub struct Heartbeat {
    table: HudiTable,
    instant: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn beat(table: &HudiTable, instant: &str) -> Result<(), TableError> {
    let beat = Beat {
        owner: Owner::me(),
        beat_at: Utc::now(),
    };
    table
        .put(
            &relative(instant),
            serde_json::to_vec(&beat).unwrap_or_default(),
        )
        .await
}

impl Heartbeat {
    /// Writes the first beat, then one every quarter of `lease` in the background.
    pub async fn start(
        table: &HudiTable,
        instant: &str,
        lease: Duration,
    ) -> Result<Heartbeat, TableError> {
        beat(table, instant).await?;
        let (table2, instant2) = (table.clone(), instant.to_string());
        let every = renewal_interval(lease);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = beat(&table2, &instant2).await {
                    tracing::warn!(table = %table2.location.url, instant = %instant2, error = %e, "heartbeat failed; retrying");
                }
            }
        });
        Ok(Heartbeat {
            table: table.clone(),
            instant: instant.to_string(),
            task,
        })
    }

    /// Stops beating and removes the heartbeat file (the instant completed or was withdrawn).
    pub async fn stop(self) -> Result<(), TableError> {
        self.task.abort();
        self.table.delete(&relative(&self.instant)).await
    }
}

/// Removes the heartbeat of an instant that was rolled back.
pub async fn remove(table: &HudiTable, instant: &str) -> Result<(), TableError> {
    table.delete(&relative(instant)).await
}

/// What the heartbeat of a pending instant says about its writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterState {
    /// Provably gone: the instant may be rolled back.
    Gone,
    /// Beating within the lease: another writer is at work.
    Alive { last_beat: DateTime<Utc> },
}

/// Whether the writer of `instant` is gone (see the module docs).
pub async fn writer_state(
    table: &HudiTable,
    instant: &str,
    lease: Duration,
) -> Result<WriterState, TableError> {
    let path = table.path(&relative(instant));
    let got = match table.location.store.get(&path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(WriterState::Gone),
        Err(e) => {
            return Err(table.failed(format!("cannot read the heartbeat of instant {instant}"), e))
        }
    };
    let modified = got.meta.last_modified;
    let body = got.bytes().await.unwrap_or_default();
    if let Ok(beat) = serde_json::from_slice::<Beat>(&body) {
        if beat.owner.known_dead() {
            return Ok(WriterState::Gone);
        }
    }
    let lease = chrono::Duration::from_std(lease).unwrap_or_default();
    if modified + lease < Utc::now() {
        Ok(WriterState::Gone)
    } else {
        Ok(WriterState::Alive {
            last_beat: modified,
        })
    }
}
