//! The commit of one write instant, as a transaction: request → prepare → commit, or abort.
//!
//! 1. [`request`]: `<instant>.commit.requested`, created only if absent (two writers cannot pick
//!    the same instant);
//! 2. [`write_plan`]: `<instant>.inflight` names the file groups the instant will write, so a
//!    rollback knows which partitions to clean if the writer dies;
//! 3. the base files are written (see [`super::upsert`]);
//! 4. [`PreparedCommit::commit`]: every base file is durable and present, this writer still
//!    holds the lock, and no other writer's instant appeared since the write began (the conflict
//!    check); then `<instant>.commit`, created only if absent, is the commit point;
//! 5. or [`PreparedCommit::abort`]: the base files and the instant's timeline files are removed.
//!
//! The metadata is Hudi's `HoodieCommitMetadata` JSON as typed structs, in Hudi's field order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lock::WriterLock;
use super::table::{at_once, HudiTable, TableError};
use super::timeline::{BaseFile, Instant, InstantState, Timeline};

/// `HoodieCommitMetadata`: what a commit (or an inflight plan) wrote, per partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CommitMetadata {
    pub partition_to_write_stats: BTreeMap<String, Vec<WriteStat>>,
    pub compacted: bool,
    /// `schema`: the Avro schema of the table's rows after this commit.
    pub extra_metadata: BTreeMap<String, String>,
    pub operation_type: String,
}

/// `HoodieWriteStat`: one file group's write in a commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WriteStat {
    pub file_id: String,
    /// The new base file, relative to the table; none in an inflight plan.
    pub path: Option<String>,
    pub cdc_stats: Option<serde_json::Value>,
    /// The instant of the slice this file replaces, or the text `null` for a new file group.
    pub prev_commit: String,
    pub num_writes: u64,
    pub num_deletes: u64,
    pub num_update_writes: u64,
    pub num_inserts: u64,
    pub total_write_bytes: u64,
    pub total_write_errors: u64,
    pub temp_path: Option<String>,
    /// Set for written files (Hudi leaves it null in plans).
    pub partition_path: Option<String>,
    pub total_log_records: u64,
    pub total_log_files_compacted: u64,
    pub total_log_size_compacted: u64,
    pub total_updated_records_compacted: u64,
    pub total_log_blocks: u64,
    pub total_corrupt_log_block: u64,
    pub total_rollback_blocks: u64,
    pub file_size_in_bytes: u64,
    pub min_event_time: Option<i64>,
    pub max_event_time: Option<i64>,
    pub runtime_stats: Option<serde_json::Value>,
}

impl WriteStat {
    /// A file group's entry: `path` and `bytes` once its base file is written, none in a plan.
    pub fn new(file_id: &str, base: Option<&BaseFile>, written: Option<(&str, u64)>) -> WriteStat {
        let (path, bytes) = match written {
            Some((path, bytes)) => (Some(path.to_string()), bytes),
            None => (None, 0),
        };
        WriteStat {
            file_id: file_id.to_string(),
            path,
            prev_commit: base.map_or_else(|| "null".into(), |b| b.instant.clone()),
            total_write_bytes: bytes,
            file_size_in_bytes: bytes,
            ..WriteStat::default()
        }
    }

    /// With the row counts: all rows in the file, updated rows, inserted rows.
    pub fn counts(mut self, writes: u64, updates: u64, inserts: u64) -> WriteStat {
        self.num_writes = writes;
        self.num_update_writes = updates;
        self.num_inserts = inserts;
        self
    }
}

impl CommitMetadata {
    /// An upsert's metadata from each file group's stat and its partition.
    pub fn upsert(
        stats: impl IntoIterator<Item = (String, WriteStat)>,
        schema: Option<String>,
    ) -> Self {
        let mut by_partition: BTreeMap<String, Vec<WriteStat>> = BTreeMap::new();
        for (partition, mut stat) in stats {
            if stat.path.is_some() {
                stat.partition_path = Some(partition.clone());
            }
            by_partition.entry(partition).or_default().push(stat);
        }
        CommitMetadata {
            partition_to_write_stats: by_partition,
            compacted: false,
            extra_metadata: schema
                .map(|s| BTreeMap::from([("schema".to_string(), s)]))
                .unwrap_or_default(),
            operation_type: "UPSERT".into(),
        }
    }

    /// Parses a commit or plan file; `None` when it is not commit metadata JSON.
    pub fn parse(bytes: &[u8]) -> Option<CommitMetadata> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("commit metadata serializes")
    }

    /// The Avro schema text the commit carries.
    pub fn schema(&self) -> Option<&str> {
        self.extra_metadata.get("schema").map(String::as_str)
    }

    /// Any base file the commit wrote (relative path).
    pub fn any_file(&self) -> Option<&str> {
        self.partition_to_write_stats
            .values()
            .flatten()
            .find_map(|s| s.path.as_deref())
    }
}

/// The metadata of the table's latest completed commit, if it has one.
pub async fn latest_commit(
    table: &HudiTable,
    timeline: &Timeline,
) -> Result<Option<CommitMetadata>, TableError> {
    let Some(latest) = timeline
        .instants
        .iter()
        .rev()
        .find(|i| i.state == InstantState::Completed && i.action == "commit")
    else {
        return Ok(None);
    };
    Ok(table
        .get(&latest.path())
        .await?
        .and_then(|bytes| CommitMetadata::parse(&bytes)))
}

/// Step 1: claims `instant` on the timeline; fails if another writer already has.
pub async fn request(table: &HudiTable, instant: &str) -> Result<(), TableError> {
    let path = Instant::path_for(instant, "commit", InstantState::Requested);
    table.create_new(&path, Vec::new()).await
}

/// Step 2: the plan, on the timeline before any base file exists.
pub async fn write_plan(
    table: &HudiTable,
    instant: &str,
    plan: &CommitMetadata,
) -> Result<(), TableError> {
    let path = Instant::path_for(instant, "commit", InstantState::Inflight);
    table.put(&path, plan.to_json()).await
}

/// Withdraws an instant that wrote nothing: the timeline is as it was.
pub async fn withdraw(table: &HudiTable, instant: &str) -> Result<(), TableError> {
    for state in [InstantState::Inflight, InstantState::Requested] {
        table
            .delete(&Instant::path_for(instant, "commit", state))
            .await?;
    }
    Ok(())
}

/// An instant whose base files are written: what its `.commit` will say.
pub struct PreparedCommit {
    pub instant: String,
    /// The latest instant on the timeline when this write began (the conflict check's horizon).
    pub latest_before: Option<String>,
    /// Base files written, relative to the table.
    pub written: Vec<String>,
    pub metadata: CommitMetadata,
}

impl PreparedCommit {
    /// Step 4: checks, then publishes `.commit`. A failed check aborts the instant.
    pub async fn commit(
        &self,
        table: &HudiTable,
        lock: Option<&WriterLock>,
    ) -> Result<(), TableError> {
        // Every file the commit names is durable and present.
        table.sync_local(&self.written)?;
        // Several at once: each is a round trip to the store (a HEAD on S3).
        let present = at_once(self.written.iter().map(|r| table.exists(r))).await?;
        let missing = self
            .written
            .iter()
            .zip(present)
            .find(|(_, present)| !present);
        if let Some((relative, _)) = missing {
            self.abort(table).await?;
            return Err(table.err(format!(
                "base file {relative} of instant {} is missing (removed by another writer?); nothing was committed",
                self.instant
            )));
        }
        if let Some(lock) = lock {
            if let Err(e) = lock.ensure_held().await {
                self.abort(table).await?;
                return Err(e);
            }
        }
        let timeline = table.timeline().await?;
        if let Some(other) = self.conflict(&timeline) {
            let message = format!(
                "another writer's instant {} appeared while this run was writing; this run's instant {} is withdrawn",
                other.file_name, self.instant
            );
            self.abort(table).await?;
            return Err(table.err(message));
        }
        let commit_file = Instant::path_for(&self.instant, "commit", InstantState::Completed);
        table
            .create_new(&commit_file, self.metadata.to_json())
            .await?;
        // The commit file and the `.hoodie/` entry naming it, both durable.
        table.sync_local(&[commit_file])?;
        crate::failpoint("hudi-after-commit");
        Ok(())
    }

    /// Optimistic concurrency: another writer's instant newer than this write's horizon, or one
    /// still pending, means the two may have touched the same file groups.
    fn conflict<'t>(&self, timeline: &'t Timeline) -> Option<&'t Instant> {
        let pending = timeline.pending_writes();
        timeline.instants.iter().find(|i| {
            i.time != self.instant
                && (self
                    .latest_before
                    .as_deref()
                    .is_none_or(|l| i.time.as_str() > l)
                    || (i.state != InstantState::Completed && pending.contains(&i.time)))
        })
    }

    /// Step 5: removes the instant's base files (several at once), then its timeline files.
    pub async fn abort(&self, table: &HudiTable) -> Result<(), TableError> {
        at_once(self.written.iter().map(|r| table.delete(r))).await?;
        withdraw(table, &self.instant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_reads_spark_written_commits_and_writes_hudi_field_order() {
        let spark = r#"{"partitionToWriteStats":{"30":[{"fileId":"f-0","path":"30/f-0_1-119-167_20240418172804498.parquet",
            "cdcStats":null,"prevCommit":"null","numWrites":1,"numDeletes":0,"numUpdateWrites":0,"numInserts":1,
            "totalWriteBytes":441186,"totalWriteErrors":0,"tempPath":null,"partitionPath":"30","totalLogRecords":0,
            "totalLogFilesCompacted":0,"totalLogSizeCompacted":0,"totalUpdatedRecordsCompacted":0,"totalLogBlocks":0,
            "totalCorruptLogBlock":0,"totalRollbackBlocks":0,"fileSizeInBytes":441186,"minEventTime":null,
            "maxEventTime":null,"runtimeStats":{"totalScanTime":0,"totalUpsertTime":0,"totalCreateTime":90}}]},
            "compacted":false,"extraMetadata":{"schema":"{}"},"operationType":"UPSERT"}"#;
        let meta = CommitMetadata::parse(spark.as_bytes()).unwrap();
        assert_eq!(
            meta.any_file(),
            Some("30/f-0_1-119-167_20240418172804498.parquet")
        );
        assert_eq!(meta.schema(), Some("{}"));
        assert_eq!(meta.partition_to_write_stats["30"][0].num_inserts, 1);

        let ours = CommitMetadata::upsert(
            [(
                "2026-03-01".to_string(),
                WriteStat::new("g-0", None, Some(("2026-03-01/g-0_0-0-0_1.parquet", 10)))
                    .counts(2, 1, 1),
            )],
            None,
        );
        let text = String::from_utf8(ours.to_json()).unwrap();
        let order: Vec<usize> = [
            "fileId",
            "path",
            "prevCommit",
            "numWrites",
            "partitionPath",
            "runtimeStats",
        ]
        .iter()
        .map(|k| text.find(&format!("\"{k}\"")).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("\"partitionPath\": \"2026-03-01\""), "{text}");
        assert!(text.contains("\"prevCommit\": \"null\""), "{text}");
        assert_eq!(CommitMetadata::parse(text.as_bytes()), Some(ours));
    }

    /// The base files a commit names are looked up several at once: one missing among them
    /// (the third of five) still withdraws the instant, deletes the others and names it.
    #[tokio::test]
    async fn a_missing_base_file_among_several_withdraws_the_instant_and_is_named() {
        let table = HudiTable::in_memory(&["k"], BTreeMap::new());
        let instant = "20260301000000000";
        request(&table, instant).await.unwrap();
        let written: Vec<String> = (0..5)
            .map(|g| format!("{g}/f-{g}_{g}-0-0_{instant}.parquet"))
            .collect();
        for (g, relative) in written.iter().enumerate() {
            if g != 2 {
                table.put(relative, b"base".to_vec()).await.unwrap();
            }
        }
        let prepared = PreparedCommit {
            instant: instant.to_string(),
            latest_before: None,
            written: written.clone(),
            metadata: CommitMetadata::upsert(std::iter::empty(), None),
        };
        let err = prepared.commit(&table, None).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("base file {} of instant", written[2])),
            "{err}"
        );
        for relative in &written {
            assert!(!table.exists(relative).await.unwrap(), "{relative} stayed");
        }
        let timeline = table.timeline().await.unwrap();
        assert!(timeline.instants.is_empty(), "{:?}", timeline.instants);
    }

    #[test]
    fn plans_name_partitions_but_no_files() {
        let plan = CommitMetadata::upsert(
            [(
                "p".to_string(),
                WriteStat::new("g-0", None, None).counts(0, 0, 5),
            )],
            None,
        );
        let stat = &plan.partition_to_write_stats["p"][0];
        assert_eq!(
            (stat.path.as_deref(), stat.partition_path.as_deref()),
            (None, None)
        );
        assert!(plan.extra_metadata.is_empty());
        assert_eq!(plan.any_file(), None);
    }
}
