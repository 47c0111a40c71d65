//! The Hudi sink's flags: file sizes, history kept, the writer lock.

use std::time::Duration;

use tally::sinks::hudi::archive::ArchivePolicy;
use tally::sinks::hudi::clean::CleanPolicy;
use tally::sinks::hudi::lock::LockOptions;
use tally::sinks::hudi::UpsertOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct HudiArgs {
    /// Hudi: target size of a base file in MiB before new file groups start.
    #[arg(long, default_value_t = 120)]
    hudi_target_file_mb: u64,
    /// Hudi: commits whose snapshots stay readable; file slices only older snapshots read are
    /// cleaned after each commit (Hudi's hoodie.cleaner.commits.retained).
    #[arg(long, alias = "hudi-retain-versions", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    hudi_retain_commits: u64,
    /// Hudi: snapshots younger than this many minutes stay readable whatever the count, so a
    /// long query never loses its files.
    #[arg(long, default_value_t = 60)]
    hudi_retain_minutes: u64,
    /// Hudi: completed instants on the active timeline before the oldest are archived to
    /// .hoodie/archived/ (down to two thirds of this).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..))]
    hudi_max_active_instants: u64,
    /// Hudi: seconds the writer lock (on S3) and an instant's heartbeat stay valid without
    /// renewal; both are renewed every quarter of it while the run works.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    hudi_lease_secs: u64,
    /// Hudi: seconds to wait for another writer of the table before giving up.
    #[arg(long, default_value_t = 300)]
    hudi_lock_wait_secs: u64,
    /// Hudi: write to an object store that ignores conditional writes (some S3-compatible
    /// servers). Only safe when a single writer ever runs, as the scheduler's job claim ensures.
    #[arg(long)]
    hudi_single_writer: bool,
}

impl HudiArgs {
    pub fn upsert_options(&self) -> UpsertOptions {
        let max_active = self.hudi_max_active_instants as usize;
        UpsertOptions {
            target_file_bytes: self.hudi_target_file_mb.max(1) << 20,
            lock: LockOptions {
                lease: Duration::from_secs(self.hudi_lease_secs),
                wait: Duration::from_secs(self.hudi_lock_wait_secs),
                single_writer: self.hudi_single_writer,
            },
            clean: CleanPolicy {
                retain_commits: self.hudi_retain_commits as usize,
                min_age: Duration::from_secs(self.hudi_retain_minutes * 60),
            },
            archive: ArchivePolicy {
                max_active,
                min_active: (max_active * 2 / 3).max(2),
            },
        }
    }
}
