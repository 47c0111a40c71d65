//! One writer at a time, soundly, on local disk and on S3.
//!
//! - **Local tables** take an exclusive `flock` on `.hoodie/.aux/tally-writer.lock`. The kernel
//!   releases it when the process ends, however it ends, so a killed writer never leaves a lock
//!   that needs breaking, and two processes can never both hold it. The file is never deleted
//!   (deleting a lock file others are waiting on would let two of them lock different files);
//!   it holds the current owner's record for messages.
//! - **Object stores** keep a lock object whose every change is conditional on the version the
//!   writer last saw: taken with `If-None-Match: *` (`PutMode::Create`), and replaced, renewed
//!   and released with `If-Match: <etag>` (`PutMode::Update`). Of several writers that find the
//!   same stale or released lock, exactly one replaces it. A released lock is overwritten with a
//!   released record rather than deleted, because a delete cannot be made conditional. The lease
//!   is short and renewed in the background while the run works; a writer whose renewal is
//!   refused has lost the lock and must not commit ([`WriterLock::ensure_held`]).
//! - A store that ignores conditional writes (Garage does today) is detected with a probe, and
//!   tally refuses to write there unless the caller says only one writer ever runs
//!   (`single_writer`, `--hudi-single-writer`), as the scheduler's job claim guarantees for one job.

use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::table::{HudiTable, TableError, HOODIE_DIR};

pub const LOCK_FILE: &str = ".aux/tally-writer.lock";
const PROBE_FILE: &str = ".aux/tally-conditional-write-probe";

/// How the writer lock behaves.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// How long an object-store lock (and an instant's heartbeat) stays valid without renewal;
    /// renewed every quarter of it.
    pub lease: Duration,
    /// How long to wait for another writer to finish before giving up.
    pub wait: Duration,
    /// The caller guarantees a single writer: allowed on stores without conditional writes.
    pub single_writer: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            lease: Duration::from_secs(120),
            wait: Duration::from_secs(300),
            single_writer: false,
        }
    }
}

/// Who holds (or last held) the lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// The owner's start time (clock ticks since boot, `/proc/<pid>/stat`), so a reused process
    /// id is not mistaken for the owner.
    #[serde(default)]
    pub process_start: Option<u64>,
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            host: this_host(),
            pid,
            process_start: process_start(pid),
        }
    }

    /// True when the owner is known to be gone: a process on this host that no longer exists.
    pub fn known_dead(&self) -> bool {
        self.host == this_host() && !process_alive(self.pid, self.process_start)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    #[serde(flatten)]
    owner: Owner,
    /// Distinguishes this holding from every other, even by the same process.
    #[serde(default)]
    token: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    released: bool,
}

impl LockRecord {
    fn new(token: &str, lease: Duration) -> LockRecord {
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
    fn free(&self) -> bool {
        self.released || self.expires_at < Utc::now() || self.owner.known_dead()
    }

    fn describe(&self) -> String {
        format!(
            "process {} on {} since {}, lease until {}",
            self.owner.pid, self.owner.host, self.acquired_at, self.expires_at
        )
    }
}

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().to_string()
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), or `None` when no such process
/// exists. A thread id also has a `/proc` entry, but with its own start time, and a zombie is dead.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn process_alive(pid: u32, recorded_start: Option<u64>) -> bool {
    match (process_start(pid), recorded_start) {
        (None, _) => false,
        (Some(now), Some(recorded)) => now == recorded,
        (Some(_), None) => true,
    }
}

/// A held lock. Release it with [`WriterLock::release`]; dropping it also lets go (the local
/// `flock` ends with the file handle, an object lock simply expires).
#[derive(Debug)]
pub struct WriterLock {
    table: HudiTable,
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// The open lock file; its `flock` is the lock.
    Local(std::fs::File),
    Object(ObjectLock),
}

#[derive(Debug)]
struct ObjectLock {
    token: String,
    /// The lock object's version as this writer last wrote it.
    e_tag: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl WriterLock {
    fn relative() -> String {
        format!("{HOODIE_DIR}/{LOCK_FILE}")
    }

    /// Takes the table's writer lock, waiting up to `options.wait` for another writer.
    pub async fn acquire(
        table: &HudiTable,
        options: &LockOptions,
    ) -> Result<WriterLock, TableError> {
        if let Some(root) = &table.location.local_root {
            let path = root.join(HOODIE_DIR).join(LOCK_FILE);
            let wait = options.wait;
            let table2 = table.clone();
            let file = tokio::task::spawn_blocking(move || lock_local(&table2, &path, wait))
                .await
                .map_err(|e| table.err(format!("cannot take the writer lock: {e}")))??;
            return Ok(WriterLock {
                table: table.clone(),
                held: Held::Local(file),
            });
        }
        if !conditional_writes_honored(table).await? && !options.single_writer {
            return Err(table.err("the object store does not honor conditional writes (If-None-Match / If-Match), so \
                 tally cannot keep two writers of this table apart; if only one writer ever runs \
                 (the scheduler's job claim ensures that for one job), pass --hudi-single-writer",
            ));
        }
        let object = lock_object(table, options).await?;
        Ok(WriterLock {
            table: table.clone(),
            held: Held::Object(object),
        })
    }

    /// Fails unless this writer still holds the lock: checked just before the commit.
    pub async fn ensure_held(&self) -> Result<(), TableError> {
        let Held::Object(lock) = &self.held else {
            return Ok(());
        };
        let lost = || {
            self.table.err(
                "this writer's lock on the table lapsed and another writer may have taken it; \
                 nothing was committed",
            )
        };
        if lock.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        let current = read_lock(&self.table).await?;
        match current {
            Some((record, _)) if record.token == lock.token && !record.released => {
                if record.expires_at <= Utc::now() {
                    return Err(lost());
                }
                Ok(())
            }
            _ => Err(lost()),
        }
    }

    /// Lets go of the lock.
    pub async fn release(self) -> Result<(), TableError> {
        match &self.held {
            Held::Local(file) => {
                // Unlocked when the handle closes; the record stays for the next owner to replace.
                let _ = file.unlock();
                Ok(())
            }
            Held::Object(lock) => {
                lock.renewer.abort();
                if lock.lost.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let e_tag = lock.e_tag.lock().map(|t| t.clone()).unwrap_or(None);
                let mut record = LockRecord::new(&lock.token, Duration::ZERO);
                record.released = true;
                match put_lock(&self.table, &record, e_tag).await {
                    Ok(_) | Err(object_store::Error::Precondition { .. }) => Ok(()),
                    Err(e) => Err(self
                        .table
                        .err(format!("cannot release the writer lock: {e}"))),
                }
            }
        }
    }
}

/// Takes the local `flock`, polling until `wait` has passed.
fn lock_local(
    table: &HudiTable,
    path: &std::path::Path,
    wait: Duration,
) -> Result<std::fs::File, TableError> {
    let io_err = |e: std::io::Error| {
        table.err(format!(
            "cannot take the writer lock {}: {e}",
            path.display()
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if std::time::Instant::now() >= deadline {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let holder = serde_json::from_str::<LockRecord>(&text)
                        .map(|r| r.describe())
                        .unwrap_or_else(|_| "unknown process".into());
                    return Err(table.err(format!(
                            "another writer holds the table ({holder}); waited {}s, retry when it is done",
                            wait.as_secs()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
    // Record the owner for messages; the lease means nothing locally (the kernel holds the lock).
    let record = LockRecord::new(&uuid::Uuid::new_v4().to_string(), Duration::ZERO);
    let body = serde_json::to_vec(&record).unwrap_or_default();
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    file.write_all(&body).map_err(io_err)?;
    Ok(file)
}

/// Whether the store refuses a second create of one object. The probe object stays, so later
/// probes are one request on a store that honors conditions.
async fn conditional_writes_honored(table: &HudiTable) -> Result<bool, TableError> {
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
                return Err(table.err(format!(
                    "cannot check whether the store honors conditional writes: {e}"
                )))
            }
        }
    }
    Ok(false)
}

/// The lock object's record and version, if there is one.
async fn read_lock(table: &HudiTable) -> Result<Option<(LockRecord, Option<String>)>, TableError> {
    let path = table.path(&WriterLock::relative());
    match table.location.store.get(&path).await {
        Ok(got) => {
            let e_tag = got.meta.e_tag.clone();
            let bytes = got
                .bytes()
                .await
                .map_err(|e| table.err(format!("cannot read the writer lock: {e}")))?;
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
        Err(e) => Err(table.err(format!("cannot read the writer lock: {e}"))),
    }
}

/// Writes the lock record: created when `e_tag` is `None`, else replaced only at that version.
/// Returns the new version.
async fn put_lock(
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

async fn lock_object(table: &HudiTable, options: &LockOptions) -> Result<ObjectLock, TableError> {
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
            Err(e) => return Err(table.err(format!("cannot take the writer lock: {e}"))),
        }
    }
}

/// How often a lease (the lock's, an instant's heartbeat) is renewed: every quarter of it, and not
/// more often than four times a second.
pub fn renewal_interval(lease: Duration) -> Duration {
    (lease / 4).max(Duration::from_millis(250))
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

#[cfg(test)]
impl WriterLock {
    /// Stops lease renewal, as if the writer were paused.
    fn pause_renewal(&self) {
        if let Held::Object(lock) = &self.held {
            lock.renewer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::hudi::TableConfig;
    use crate::storage::Location;

    /// A table on object_store's in-memory store, which honors conditional writes as AWS S3 does.
    fn memory_table() -> HudiTable {
        HudiTable {
            location: Location::from_store(
                Arc::new(object_store::memory::InMemory::new()),
                "memory://table",
            ),
            config: TableConfig {
                database: "default".into(),
                name: "t".into(),
                record_key: vec!["k".into()],
                partition_fields: vec!["p".into()],
                precombine_field: "v".into(),
                hive_style: false,
            },
            properties: Default::default(),
        }
    }

    fn options(lease_ms: u64, wait_ms: u64) -> LockOptions {
        LockOptions {
            lease: Duration::from_millis(lease_ms),
            wait: Duration::from_millis(wait_ms),
            single_writer: false,
        }
    }

    #[tokio::test]
    async fn a_lapsed_lease_passes_the_lock_on_and_the_old_holder_can_neither_commit_nor_release_it(
    ) {
        let table = memory_table();
        // Leases long enough for a loaded machine to renew in time (every quarter of them).
        let a = WriterLock::acquire(&table, &options(1500, 0))
            .await
            .unwrap();
        // Renewed while A works: B waits past the lease and still cannot take it.
        let err = WriterLock::acquire(&table, &options(1500, 2000))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("another writer holds the table"),
            "{err}"
        );
        a.ensure_held().await.unwrap();
        // A pauses; its lease runs out and B takes the lock.
        a.pause_renewal();
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let b = WriterLock::acquire(&table, &options(1500, 0))
            .await
            .unwrap();
        let lost = a.ensure_held().await.unwrap_err();
        assert!(lost.to_string().contains("lapsed"), "{lost}");
        // A's release is conditional on its own version: B keeps the lock.
        a.release().await.unwrap();
        b.ensure_held().await.unwrap();
        assert!(WriterLock::acquire(&table, &options(1500, 0))
            .await
            .is_err());
        b.release().await.unwrap();
        WriterLock::acquire(&table, &options(1500, 0))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_writers_finding_one_stale_lock_exactly_one_takes_it() {
        let table = memory_table();
        let dead = WriterLock::acquire(&table, &options(200, 0)).await.unwrap();
        dead.pause_renewal();
        std::mem::forget(dead);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let table = table.clone();
                tokio::spawn(async move { WriterLock::acquire(&table, &options(60_000, 0)).await })
            })
            .collect();
        let mut held = Vec::new();
        for racer in racers {
            if let Ok(lock) = racer.await.unwrap() {
                held.push(lock);
            }
        }
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_lock_is_alive_only_while_its_own_process_runs() {
        let me = std::process::id();
        assert!(process_alive(me, process_start(me)));
        // Same pid, another start time: the id was reused by a different process.
        assert!(!process_alive(me, process_start(me).map(|t| t + 1)));
        assert!(!process_alive(u32::MAX - 1, None));
    }

    #[test]
    fn released_expired_and_dead_locks_are_free() {
        let mut record = LockRecord::new("t", Duration::from_secs(60));
        assert!(!record.free());
        record.released = true;
        assert!(record.free());
        let mut expired = LockRecord::new("t", Duration::ZERO);
        expired.expires_at -= chrono::Duration::seconds(1);
        assert!(expired.free());
        let mut dead = LockRecord::new("t", Duration::from_secs(60));
        dead.owner.pid = u32::MAX - 1;
        assert!(dead.free());
    }
}
