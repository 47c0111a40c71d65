//! The lock on an object store: one lock object, every change conditional on the version the
//! writer last saw (`If-None-Match: *` to take it, `If-Match: <etag>` to renew, replace or
//! release it), and a lease renewed in the background. See the parent module for the protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::super::table::{HudiTable, TableError, HOODIE_DIR};
use super::{renewal_interval, LockOptions, Owner, WriterLock};

const PROBE_FILE: &str = ".aux/tally-conditional-write-probe";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LockRecord {
    #[serde(flatten)]
    pub(super) owner: Owner,
    /// Distinguishes this holding from every other, even by the same process.
    #[serde(default)]
    pub(super) token: String,
    pub(super) acquired_at: DateTime<Utc>,
    pub(super) expires_at: DateTime<Utc>,
    #[serde(default)]
    pub(super) released: bool,
}

impl LockRecord {
    pub(super) fn new(token: &str, lease: Duration) -> LockRecord {
        let now = Utc::now();
        LockRecord {
            owner: Owner::me(),
            token: token.to_string(),
            acquired_at: now,
            expires_at: now + chrono::Duration::from_std(lease).unwrap_or_default(),
            released: false,
        }
    }

    /// Free to take: released, expired, or owned by a process of this host that is gone.
    pub(super) fn free(&self) -> bool {
        self.released || self.expires_at < Utc::now() || self.owner.known_dead()
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "process {} on {} since {}, lease until {}",
            self.owner.pid, self.owner.host, self.acquired_at, self.expires_at
        )
    }
}

#[derive(Debug)]
pub(super) struct ObjectLock {
    pub(super) token: String,
    /// The lock object's version as this writer last wrote it.
    pub(super) e_tag: Arc<Mutex<Option<String>>>,
    pub(super) lost: Arc<AtomicBool>,
    pub(super) renewer: tokio::task::JoinHandle<()>,
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Whether the store refuses a second create of one object. The probe object stays, so later
/// probes are one request on a store that honors conditions.
pub(super) async fn conditional_writes_honored(table: &HudiTable) -> Result<bool, TableError> {
    let path = table.path(&format!("{HOODIE_DIR}/{PROBE_FILE}"));
    let create = || async {
        table
            .location
            .store
            .put_opts(
                &path,
                PutPayload::from_static(b"tally checks conditional writes with this object\n"),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await
    };
    for attempt in 0..2 {
        match create().await {
            Ok(_) if attempt == 0 => continue,
            Ok(_) => return Ok(false),
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(true),
            Err(object_store::Error::NotImplemented { .. }) => return Ok(false),
            Err(e) => {
                return Err(table.failed(
                    "cannot check whether the store honors conditional writes",
                    e,
                ))
            }
        }
    }
    Ok(false)
}

/// The lock object's record and version, if there is one.
pub(super) async fn read_lock(
    table: &HudiTable,
) -> Result<Option<(LockRecord, Option<String>)>, TableError> {
    let path = table.path(&WriterLock::relative());
    match table.location.store.get(&path).await {
        Ok(got) => {
            let e_tag = got.meta.e_tag.clone();
            let bytes = got
                .bytes()
                .await
                .map_err(|e| table.failed("cannot read the writer lock", e))?;
            // An unreadable record is treated as free: it cannot name a live owner.
            let record = serde_json::from_slice::<LockRecord>(&bytes).unwrap_or(LockRecord {
                owner: Owner {
                    host: String::new(),
                    pid: 0,
                    process_start: None,
                },
                token: String::new(),
                acquired_at: DateTime::<Utc>::MIN_UTC,
                expires_at: DateTime::<Utc>::MIN_UTC,
                released: true,
            });
            Ok(Some((record, e_tag)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(table.failed("cannot read the writer lock", e)),
    }
}

/// Writes the lock record: created when `e_tag` is `None`, else replaced only at that version.
/// Returns the new version.
pub(super) async fn put_lock(
    table: &HudiTable,
    record: &LockRecord,
    e_tag: Option<String>,
) -> object_store::Result<Option<String>> {
    let mode = match e_tag {
        None => PutMode::Create,
        Some(e_tag) => PutMode::Update(UpdateVersion {
            e_tag: Some(e_tag),
            version: None,
        }),
    };
    let body = serde_json::to_vec(record).unwrap_or_default();
    let put = table
        .location
        .store
        .put_opts(
            &table.path(&WriterLock::relative()),
            PutPayload::from(body),
            PutOptions {
                mode,
                ..Default::default()
            },
        )
        .await?;
    Ok(put.e_tag)
}

pub(super) async fn lock_object(
    table: &HudiTable,
    options: &LockOptions,
) -> Result<ObjectLock, TableError> {
    let token = uuid::Uuid::new_v4().to_string();
    let deadline = tokio::time::Instant::now() + options.wait;
    loop {
        let record = LockRecord::new(&token, options.lease);
        let (attempt, holder) = match read_lock(table).await? {
            None => (put_lock(table, &record, None).await, None),
            Some((current, e_tag)) if current.free() => {
                if !current.released {
                    tracing::warn!(table = %table.location.url, holder = %current.describe(), "replacing a stale writer lock");
                }
                match e_tag {
                    Some(e_tag) => (put_lock(table, &record, Some(e_tag)).await, None),
                    None => {
                        return Err(
                            table.err("the store gave no version (ETag) for the writer lock")
                        )
                    }
                }
            }
            Some((current, _)) => (
                Err(object_store::Error::Precondition {
                    path: WriterLock::relative(),
                    source: "held".into(),
                }),
                Some(current),
            ),
        };
        match attempt {
            Ok(e_tag) => {
                let e_tag = Arc::new(Mutex::new(e_tag));
                let lost = Arc::new(AtomicBool::new(false));
                let renewer = tokio::spawn(renew(
                    table.clone(),
                    token.clone(),
                    options.lease,
                    e_tag.clone(),
                    lost.clone(),
                ));
                return Ok(ObjectLock {
                    token,
                    e_tag,
                    lost,
                    renewer,
                });
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                if tokio::time::Instant::now() >= deadline {
                    let holder = match holder {
                        Some(h) => h.describe(),
                        None => "another process".into(),
                    };
                    return Err(table.err(format!(
                            "another writer holds the table ({holder}); waited {}s, retry when it is done",
                            options.wait.as_secs()
                        ),
                    ));
                }
                let pause = 200 + fastrand::u64(0..300);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(e) => return Err(table.failed("cannot take the writer lock", e)),
        }
    }
}

/// Renews the lease every quarter of it, each time conditional on the version last written. A
/// refused renewal means another writer replaced the lock: `lost` is set and renewal stops.
async fn renew(
    table: HudiTable,
    token: String,
    lease: Duration,
    e_tag: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
) {
    let every = renewal_interval(lease);
    loop {
        tokio::time::sleep(every).await;
        let current = e_tag.lock().map(|t| t.clone()).unwrap_or(None);
        let record = LockRecord::new(&token, lease);
        match put_lock(&table, &record, current).await {
            Ok(next) => {
                if let Ok(mut slot) = e_tag.lock() {
                    *slot = next;
                }
            }
            Err(object_store::Error::Precondition { .. }) => {
                tracing::error!(table = %table.location.url, "the writer lock was taken by another writer; this run will not commit");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(table = %table.location.url, error = %e, "renewing the writer lock failed; retrying");
            }
        }
    }
}
