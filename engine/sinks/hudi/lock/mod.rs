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
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::table::{HudiTable, TableError, HOODIE_DIR};

mod object;
use object::{
    conditional_writes_honored, lock_object, put_lock, read_lock, LockRecord, ObjectLock,
};

pub const LOCK_FILE: &str = ".aux/tally-writer.lock";

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
                .map_err(|e| table.failed("cannot take the writer lock", e))??;
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
        table.failed(format!("cannot take the writer lock {}", path.display()), e)
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

/// How often a lease (the lock's, an instant's heartbeat) is renewed: every quarter of it, and not
/// more often than four times a second.
pub fn renewal_interval(lease: Duration) -> Duration {
    (lease / 4).max(Duration::from_millis(250))
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

    fn memory_table() -> HudiTable {
        HudiTable::in_memory(&["k"], Default::default())
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
