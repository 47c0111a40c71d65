//! Starting the disk write of a database file's pages while the load still runs.
//!
//! A load's pages reach the file as SQLite's small page cache spills them, but the kernel keeps
//! them dirty in memory (its own background writeback starts at a tenth of memory or after 30
//! seconds), so the sync that makes the load durable ([`super::sqlite_rows::write_through`])
//! wrote a province's 614 MB in one go after every other sink had finished: about half a second
//! with both cores idle, at 10M transactions. [`EarlyWriteback::nudge`] asks the kernel to begin
//! writing the file's dirty pages (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`: it starts the
//! writes and waits for none) each time the file has grown by [`NUDGE_BYTES`], so the final sync
//! finds most of them on disk already.
//!
//! Invariant: nothing here changes what is durable or when. The writes it starts are the ones
//! the final sync would make; the sync still waits for all of them (and SQLite's own ordering of
//! journal and database writes is untouched, since the pages are already in the file). The file
//! descriptor is SQLite's own, found in `/proc/self/fd` by device and inode and never closed
//! here (closing any descriptor of the file would drop SQLite's POSIX locks); it is checked
//! again before each use, and where it cannot be found (not Linux, an in-memory database)
//! nothing is done.

use std::path::Path;

/// How much the file grows between two requests to start writing it.
const NUDGE_BYTES: u64 = 32 << 20;

/// SQLite's descriptor of one database file, and how far its writing was started.
#[derive(Debug)]
pub struct EarlyWriteback {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::RawFd,
    #[cfg(target_os = "linux")]
    file: (u64, u64),
    started_at: u64,
}

impl EarlyWriteback {
    /// Finds the descriptor the process holds open on the database file at `path`.
    #[cfg(target_os = "linux")]
    pub fn find(path: &Path) -> Option<EarlyWriteback> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let file = (meta.dev(), meta.ino());
        let fd = std::fs::read_dir("/proc/self/fd")
            .ok()?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .find(|&fd| identity(fd).is_some_and(|(id, _)| id == file))?;
        Some(EarlyWriteback {
            fd,
            file,
            started_at: meta.size(),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn find(_path: &Path) -> Option<EarlyWriteback> {
        None
    }

    /// Starts writing the file's dirty pages if it grew by [`NUDGE_BYTES`] since the last time.
    /// Nothing is done while the descriptor does not name the database file.
    pub fn nudge(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let Some((file, size)) = identity(self.fd) else {
                return;
            };
            if file != self.file || size < self.started_at + NUDGE_BYTES {
                return;
            }
            // The descriptor is open (fstat just answered for it) and names the database file.
            crate::storage::start_disk_write(self.fd);
            self.started_at = size;
        }
    }
}

/// The (device, inode) and size of what an open descriptor names.
#[cfg(target_os = "linux")]
fn identity(fd: std::os::fd::RawFd) -> Option<((u64, u64), u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer when it returns 0, and reads nothing else.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful fstat.
    let stat = unsafe { stat.assume_init() };
    Some(((stat.st_dev, stat.st_ino), stat.st_size as u64))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_the_open_descriptor_of_the_file_and_starts_writing_after_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut file = std::fs::File::create(&path).unwrap();
        let mut early = EarlyWriteback::find(&path).expect("the file is open here");
        assert_eq!(early.started_at, 0);
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        early.nudge();
        assert_eq!(early.started_at, 0, "1 MiB is below the threshold");
        file.write_all(&vec![7u8; NUDGE_BYTES as usize]).unwrap();
        early.nudge();
        assert_eq!(early.started_at, NUDGE_BYTES + (1 << 20));
    }

    #[test]
    fn a_sqlite_connection_holds_its_database_file_open_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; CREATE TABLE t (x)")
            .unwrap();
        assert!(EarlyWriteback::find(&path).is_some());
    }

    #[test]
    fn a_file_nobody_holds_open_or_that_is_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        std::fs::write(&path, b"x").unwrap();
        assert!(EarlyWriteback::find(&path).is_none());
        assert!(EarlyWriteback::find(&dir.path().join("missing.db")).is_none());
    }
}
