//! Copy-on-write upsert: one instant of Hudi's commit protocol, staged then published.
//!
//! Stage (nothing visible yet), with the writer lock held ([`super::lock`]):
//! 1. roll back instants whose writer is provably gone ([`super::rollback`]);
//! 2. open or create the table and take its data schema ([`super::open`]);
//! 3. plan: find the file group of each incoming key by reading only the record-key column of
//!    the touched partitions' latest base files, and pack new keys ([`super::plan`]);
//! 4. request the instant and start its heartbeat, write the plan, then per touched file group a
//!    new base file `<fileId>_<token>_<instant>.parquet` merging the latest slice with the
//!    incoming rows ([`super::merge`]); a group where nothing changes is not rewritten.
//!
//! Memory: the job's rows are never copied (they stay in the query's batches); their record keys
//! are held only when the plan looks them up (a touched partition already holds rows) or checks
//! them for repeats (they do not ascend), and otherwise made again for each slice from its own
//! columns ([`super::keys::IncomingKeys`]). A group's new base file is built and encoded
//! [`ENCODE_ROWS`] rows at a time, one group per core at once, so a run holds its rows plus a few
//! slices, not a second province.
//!
//! Publish: the commit with its checks ([`super::commit`]), then clean ([`super::clean`]),
//! archive ([`super::archive`]) and release the lock. A run killed anywhere before the commit
//! leaves only files of an instant that never completed, which readers ignore and the next
//! writer rolls back once the heartbeat shows this one gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant as Clock;

use async_trait::async_trait;
use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};

use super::archive::ArchivePolicy;
use super::clean::CleanPolicy;
use super::commit::{self, CommitMetadata, PreparedCommit, WriteStat};
use super::heartbeat::Heartbeat;
use super::keys::PartitionPaths;
use super::lock::{LockOptions, WriterLock};
use super::merge::{conform_all, merge_group, IncomingRows, MergeTarget};
use super::open::{commit_schema, existing_data_schema, job_table_config, open_or_create};
use super::plan::{locate_keys, place_rows, GroupPlan};
use super::schema::avro_schema;
use super::table::{at_once, encode_base_file, HudiTable, TableError};
use super::timeline::{new_instant_time, BaseFile, FileGroups, Timeline};
use crate::sinks::{JobRows, SinkDetails, SinkError, SinkReport, StagedWrite};

/// Rows of a new base file built and encoded at a time: a file group of a million rows is never
/// in memory whole beside the job's rows.
const ENCODE_ROWS: usize = 64 * 1024;

/// Tuning of the upsert.
#[derive(Debug, Clone)]
pub struct UpsertOptions {
    /// Base files grow up to about this size before new file groups are started.
    pub target_file_bytes: u64,
    /// The writer lock: lease, how long to wait, single-writer stores.
    pub lock: LockOptions,
    /// How much history cleaning keeps.
    pub clean: CleanPolicy,
    /// Bounds of the active timeline.
    pub archive: ArchivePolicy,
}

impl Default for UpsertOptions {
    fn default() -> Self {
        UpsertOptions {
            target_file_bytes: 120 << 20,
            lock: LockOptions::default(),
            clean: CleanPolicy::default(),
            archive: ArchivePolicy::default(),
        }
    }
}

/// Figures for the summary and the notes: what was read and written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpsertFigures {
    pub instant: Option<String>,
    /// Partitions the run's rows fall in; no other partition is listed or read.
    pub partitions_touched: usize,
    pub partitions_created: Vec<String>,
    /// Latest base files whose record-key column was read to locate keys.
    pub key_files_read: usize,
    /// Total size of those files (only their key column is fetched).
    pub key_bytes_read: u64,
    /// Base files read in full because their file group changes.
    pub files_rewritten: usize,
    /// Total size of those files.
    pub bytes_rewritten_read: u64,
    pub files_written: usize,
    pub bytes_written: u64,
    pub inserts: u64,
    pub updates: u64,
    pub unchanged: u64,
    pub older_ignored: u64,
    pub rolled_back: Vec<String>,
    pub files_cleaned: usize,
    /// Instants moved from the active timeline to `.hoodie/archived/`.
    pub instants_archived: usize,
}

fn sink_err(table: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError {
        sink: "hudi",
        target: table.to_string(),
        message: e.to_string(),
    }
}

/// A staged upsert: base files written, `.commit` not yet.
pub struct StagedUpsert {
    table: HudiTable,
    lock: Option<WriterLock>,
    heartbeat: Option<Heartbeat>,
    prepared: PreparedCommit,
    /// Slices of the touched file groups, oldest first, for cleaning.
    slices: Vec<Vec<BaseFile>>,
    options: UpsertOptions,
    figures: UpsertFigures,
    started: Clock,
}

/// Result of staging: either nothing to do, or a staged instant.
pub enum Staged {
    Unchanged(Box<(UpsertFigures, HudiTable)>),
    Instant(Box<StagedUpsert>),
}

/// Stages an upsert of `rows` into the table at `url`.
pub async fn stage_upsert(
    url: &str,
    rows: &JobRows<'_>,
    options: &UpsertOptions,
) -> Result<Staged, TableError> {
    let started = Clock::now();
    let wanted = job_table_config(rows, "default");
    let table = open_or_create(url, &wanted, &rows.schema).await?;
    let lock = WriterLock::acquire(&table, &options.lock).await?;
    match stage_locked(&table, rows, options).await {
        Ok((figures, None)) => {
            lock.release().await?;
            Ok(Staged::Unchanged(Box::new((figures, table))))
        }
        Ok((figures, Some(parts))) => Ok(Staged::Instant(Box::new(StagedUpsert {
            table,
            lock: Some(lock),
            heartbeat: Some(parts.heartbeat),
            prepared: parts.prepared,
            slices: parts.slices,
            options: options.clone(),
            figures,
            started,
        }))),
        Err(e) => {
            // Leave the partial instant for the next run's rollback rather than racing it here
            // with a half-broken store; only the lock is released.
            let _ = lock.release().await;
            Err(e)
        }
    }
}

/// What staging leaves for publishing.
struct StagedParts {
    heartbeat: Heartbeat,
    prepared: PreparedCommit,
    slices: Vec<Vec<BaseFile>>,
}

/// The schemas the incoming rows are written in.
struct Schemas {
    /// The table's data columns: the incoming rows' schema.
    data: SchemaRef,
    /// The data schema with the meta columns in front: the base files' schema.
    table: SchemaRef,
    /// The precombine column's index among the data columns.
    precombine_idx: usize,
}

/// The incoming rows, in the table's data schema and in the job's own batches, with their
/// partitions: what the plan needs before it decides whether the rows' keys are kept.
struct Unkeyed {
    batches: Vec<RecordBatch>,
    partitions: PartitionPaths,
    schemas: Schemas,
}

impl Unkeyed {
    async fn new(
        table: &HudiTable,
        timeline: &Timeline,
        rows: &JobRows<'_>,
    ) -> Result<Unkeyed, TableError> {
        let url = &table.location.url;
        let data_schema = existing_data_schema(table, timeline)
            .await?
            .unwrap_or_else(|| {
                Arc::new(Schema::new(
                    rows.schema
                        .fields()
                        .iter()
                        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                        .collect::<Vec<_>>(),
                ))
            });
        let batches = conform_all(rows.batches, &data_schema, url)?;
        let partitions = table.partition_rows(&batches)?;
        let precombine = &table.config.precombine_field;
        let precombine_idx = data_schema
            .index_of(precombine)
            .map_err(|_| table.data_err(format!("no precombine column `{precombine}`")))?;
        Ok(Unkeyed {
            batches,
            partitions,
            schemas: Schemas {
                table: super::schema::table_schema(&data_schema),
                data: data_schema,
                precombine_idx,
            },
        })
    }

    /// Checks the rows' record keys, keeping them when `keep` (a touched partition holds stored
    /// keys to look them up in) or when they do not ascend (the plan looks for repeats).
    fn keyed(self, table: &HudiTable, keep: bool) -> Result<Incoming, TableError> {
        let started = Clock::now();
        let mut keyed = table.key_rows(&self.batches, keep)?;
        // Whether the keys ascend is known only once they are all made: rows out of key order
        // into new partitions (a job without an ORDER BY on its key) are keyed a second time.
        if !keyed.ascending && keyed.keys.kept().is_none() {
            keyed = table.key_rows(&self.batches, true)?;
        }
        tracing::debug!(
            table = %table.location.url,
            keys_secs = started.elapsed().as_secs_f64(),
            kept = keyed.keys.kept().is_some(),
            ascending = keyed.ascending,
            "hudi: record keys checked"
        );
        Ok(Incoming {
            rows: Arc::new(IncomingRows::new(self.batches, keyed.keys, keyed.ascending)),
            schemas: self.schemas,
        })
    }
}

/// The incoming rows, ready to merge: in the table's data schema, in the job's own batches, with
/// their keys.
struct Incoming {
    rows: Arc<IncomingRows>,
    schemas: Schemas,
}

/// Plans the instant: the rows keyed (see [`Unkeyed::keyed`]) and every touched partition's
/// rows placed in file groups, with the slices of the groups that exist.
async fn plan_instant(
    table: &HudiTable,
    timeline: &Timeline,
    unkeyed: Unkeyed,
    options: &UpsertOptions,
    figures: &mut UpsertFigures,
) -> Result<(Incoming, Vec<GroupPlan>, BTreeMap<String, Vec<BaseFile>>), TableError> {
    let paths = &unkeyed.partitions;
    // Each partition's row list sized from a count first: grown a row at a time, a province's
    // row numbers (27 MB at 3.4M rows) were copied as the lists doubled, on one core.
    let mut counts = vec![0usize; paths.paths.len()];
    for &p in &paths.of_row {
        counts[p as usize] += 1;
    }
    let mut rows_of: Vec<Vec<usize>> = counts.into_iter().map(Vec::with_capacity).collect();
    for (row, &p) in paths.of_row.iter().enumerate() {
        rows_of[p as usize].push(row);
    }
    let by_partition: BTreeMap<String, Vec<usize>> =
        paths.paths.iter().cloned().zip(rows_of).collect();
    figures.partitions_touched = by_partition.len();
    let replaced: HashSet<String> = table.replaced_file_ids(timeline).await?;
    // The touched partitions are listed first, several at once: each listing is a round trip to
    // the store (a LIST on S3), and they were made one after another. Their groups' keys are
    // then read a partition ahead of the planning (a partition can hold millions).
    let listed: Vec<FileGroups> = at_once(
        by_partition
            .keys()
            .map(|partition| table.partition_groups(partition, timeline, &replaced)),
    )
    .await?;
    // Keys are kept only where the plan looks them up: into new partitions (a first run, a new
    // day) they are made again as each base file is written.
    let keep_keys = listed.iter().any(|groups| !groups.is_empty());
    let incoming = unkeyed.keyed(table, keep_keys)?;
    let mut plans = Vec::new();
    let mut slices_of = BTreeMap::new();
    // A partition's stored keys are read while the one before it is planned (two partitions'
    // keys in memory at most): on S3 each read is a few round trips.
    let reads: Vec<_> = listed
        .into_iter()
        .map(|groups| locate_keys(table, groups))
        .collect();
    let mut stored_keys = futures::stream::iter(reads).buffered(2);
    for (partition, rows_here) in &by_partition {
        // One read per listed partition, in order: a missing one is a bug, not a partition to skip.
        let stored = stored_keys
            .next()
            .await
            .ok_or_else(|| table.err(format!("partition `{partition}` was not listed")))??;
        let key_owner = stored.owners();
        let groups = &stored.groups;
        for latest in groups.iter().filter_map(|g| g.slices.last()) {
            figures.key_files_read += 1;
            figures.key_bytes_read += latest.size;
        }
        if groups.is_empty() {
            figures.partitions_created.push(partition.to_string());
        }
        let placed = place_rows(
            partition,
            rows_here,
            incoming.rows.keys.kept(),
            incoming.rows.keys_ascending(),
            groups,
            &key_owner,
            options.target_file_bytes,
            || format!("{}-0", uuid::Uuid::new_v4()),
        )
        .map_err(|e| table.data_err(e))?;
        plans.extend(placed);
        drop(key_owner);
        slices_of.extend(stored.groups.into_iter().map(|g| (g.file_id, g.slices)));
    }
    Ok((incoming, plans, slices_of))
}

async fn stage_locked(
    table: &HudiTable,
    rows: &JobRows<'_>,
    options: &UpsertOptions,
) -> Result<(UpsertFigures, Option<StagedParts>), TableError> {
    let mut figures = UpsertFigures::default();
    super::open::refuse_metadata_table(table).await?;
    let (rolled_back, timeline) = super::rollback::recover(table, options.lock.lease).await?;
    figures.rolled_back = rolled_back;
    let instant = new_instant_time(Utc::now(), &timeline);
    let latest_before = timeline.latest_time().map(str::to_string);
    let phase = Clock::now();
    let unkeyed = Unkeyed::new(table, &timeline, rows).await?;
    let conformed = phase.elapsed();
    let (incoming, plans, slices_of) =
        plan_instant(table, &timeline, unkeyed, options, &mut figures).await?;
    tracing::debug!(
        table = %table.location.url,
        rows_secs = conformed.as_secs_f64(),
        plan_secs = (phase.elapsed() - conformed).as_secs_f64(),
        groups = plans.len(),
        "hudi: rows keyed and placed in file groups"
    );

    // The plan, on the timeline before any base file exists.
    commit::request(table, &instant).await?;
    let heartbeat = Heartbeat::start(table, &instant, options.lock.lease).await?;
    let plan = CommitMetadata::upsert(
        plans.iter().map(|p| {
            let stat = WriteStat::new(&p.file_id, p.base.as_ref(), None);
            let stat = stat.counts(0, p.updates.len() as u64, p.inserts.len() as u64);
            (p.partition.clone(), stat)
        }),
        None,
    );
    commit::write_plan(table, &instant, &plan).await?;
    // New partitions' metadata files are written while the base files are (as Hudi's create
    // handle writes one with a partition's first file), several at once: each is a round trip
    // to the store, a PUT on S3, and a run's partitions were written one after another before
    // any group began. A rollback finds the instant's partitions in its plan, not by these.
    let partition_metadata = at_once(
        figures
            .partitions_created
            .iter()
            .map(|partition| table.write_partition_metadata(partition, &instant)),
    );

    let table_schema = incoming.schemas.table.clone();
    let avro_with_meta =
        avro_schema(&table.config.name, &incoming.schemas.data, true).unwrap_or_default();
    let mut stats: Vec<(String, WriteStat)> = Vec::new();
    let mut written = Vec::new();
    let mut cleaning = Vec::new();
    // Groups are merged here, their Parquet encoded on blocking threads and their files put, as
    // many groups at once as there are cores (so at most that many new base files are in
    // memory); their figures are then taken in plan order. A group does not wait for the one
    // before it: a core that finished a group starts the next (in plan order, a finished group
    // held its place until the one before it finished too, and a core idled).
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let context = GroupContext {
        table,
        incoming: &incoming,
        instant: &instant,
        table_schema: &table_schema,
        avro_schema: &avro_with_meta,
    };
    let groups = futures::stream::iter(0..plans.len())
        .map(|group_no| context.rewrite(group_no, &plans[group_no]))
        .buffer_unordered(workers)
        .try_collect::<Vec<RewrittenGroup>>();
    let (_, mut rewritten) = futures::try_join!(partition_metadata, groups)?;
    rewritten.sort_unstable_by_key(|group| group.group_no);
    for group in rewritten {
        let plan = &plans[group.group_no];
        if let Some(base) = &plan.base {
            figures.files_rewritten += 1;
            figures.bytes_rewritten_read += base.size;
        }
        figures.unchanged += group.unchanged;
        figures.older_ignored += group.older;
        let Some(file) = group.file else {
            continue;
        };
        figures.updates += file.updates;
        figures.inserts += file.inserts;
        let (relative, size) = (file.relative, file.size);
        figures.files_written += 1;
        figures.bytes_written += size;
        let stat = WriteStat::new(&plan.file_id, plan.base.as_ref(), Some((&relative, size)))
            .counts(file.rows, file.updates, file.inserts);
        stats.push((plan.partition.clone(), stat));
        written.push(relative);
        if let Some(slices) = slices_of.get(&plan.file_id) {
            cleaning.push(slices.clone());
        }
    }
    tracing::debug!(
        table = %table.location.url,
        secs = phase.elapsed().as_secs_f64(),
        files = written.len(),
        "hudi: base files merged, encoded and written"
    );
    crate::failpoint("hudi-after-base-files");

    if written.is_empty() {
        // Nothing changed: the instant is withdrawn and the timeline is as it was.
        commit::withdraw(table, &instant).await?;
        heartbeat.stop().await?;
        return Ok((figures, None));
    }
    let schema_text = commit_schema(table, &timeline, &incoming.schemas.data).await?;
    figures.instant = Some(instant.clone());
    let prepared = PreparedCommit {
        instant,
        latest_before,
        written,
        metadata: CommitMetadata::upsert(stats, Some(schema_text)),
    };
    Ok((
        figures,
        Some(StagedParts {
            heartbeat,
            prepared,
            slices: cleaning,
        }),
    ))
}

/// What every file group's rewrite of one instant shares.
struct GroupContext<'a> {
    table: &'a HudiTable,
    incoming: &'a Incoming,
    instant: &'a str,
    table_schema: &'a SchemaRef,
    avro_schema: &'a str,
}

/// One file group after its rewrite: the figures, and the new base file unless nothing changed.
struct RewrittenGroup {
    group_no: usize,
    unchanged: u64,
    older: u64,
    file: Option<WrittenFile>,
}

/// A group's new base file once it is put: where (relative to the table) and its size.
struct WrittenFile {
    relative: String,
    size: u64,
    rows: u64,
    inserts: u64,
    updates: u64,
}

impl GroupContext<'_> {
    /// Reads the group's latest base file (if any), merges the incoming rows the plan gives it,
    /// encodes the result on a blocking thread and puts the new base file into its partition.
    async fn rewrite(
        &self,
        group_no: usize,
        plan: &GroupPlan,
    ) -> Result<RewrittenGroup, TableError> {
        let table = self.table;
        let existing = match &plan.base {
            Some(base) => {
                let (_, batches) = table.read_base_file(base, None).await?;
                let batches = conform_all(&batches, self.table_schema, &table.location.url)?;
                Some(concat_batches(self.table_schema, &batches).map_err(|e| table.data_err(e))?)
            }
            None => None,
        };
        let name = BaseFile::name(&plan.file_id, &format!("{group_no}-0-0"), self.instant);
        let target = MergeTarget {
            instant: self.instant,
            group_no,
            file_name: &name,
            schema: self.table_schema,
        };
        let merged = merge_group(
            existing,
            &self.incoming.rows,
            plan,
            self.incoming.schemas.precombine_idx,
            &target,
        )
        .map_err(|e| table.data_err(e))?;
        let mut group = RewrittenGroup {
            group_no,
            unchanged: merged.unchanged,
            older: merged.older,
            file: None,
        };
        if merged.updates == 0 && merged.inserts == 0 {
            return Ok(group);
        }
        let (rows, inserts, updates) = (merged.rows(), merged.inserts, merged.updates);
        let (schema, avro) = (self.table_schema.clone(), self.avro_schema.to_string());
        let encoding = Clock::now();
        let bytes = tokio::task::spawn_blocking(move || {
            let (min_key, max_key) = merged.key_range();
            let slices = (0..rows)
                .step_by(ENCODE_ROWS)
                .map(|start| merged.slice(start..rows.min(start + ENCODE_ROWS)));
            encode_base_file(schema, slices, &avro, (&min_key, &max_key))
        })
        .await
        .map_err(|e| table.failed(format!("cannot encode {name}"), e))?
        .map_err(|e| table.failed(format!("cannot encode {name}"), e))?;
        let relative = if plan.partition.is_empty() {
            name
        } else {
            format!("{}/{}", plan.partition, name)
        };
        let encoded = encoding.elapsed();
        let size = table.put_base_file(&relative, bytes).await?;
        // Per group, so a profile can tell a slow group, or a last one left alone, from the rest.
        tracing::debug!(
            file = %relative,
            group_no,
            rows,
            encode_secs = encoded.as_secs_f64(),
            put_secs = (encoding.elapsed() - encoded).as_secs_f64(),
            "hudi: file group encoded and put"
        );
        group.file = Some(WrittenFile {
            relative,
            size,
            rows: rows as u64,
            inserts,
            updates,
        });
        Ok(group)
    }
}

impl StagedUpsert {
    fn url(&self) -> String {
        self.table.location.url.clone()
    }

    /// Cleans old slices of the touched file groups, then archives old instants.
    async fn tidy(&mut self) -> Result<(), TableError> {
        self.figures.files_cleaned += super::clean::clean(
            &self.table,
            &self.slices,
            &self.prepared.instant,
            &self.options.clean,
        )
        .await?;
        self.figures.instants_archived +=
            super::archive::archive(&self.table, &self.options.archive).await?;
        Ok(())
    }
}

#[async_trait]
impl StagedWrite for StagedUpsert {
    async fn publish(mut self: Box<Self>) -> Result<SinkReport, SinkError> {
        let url = self.url();
        let outcome = self.prepared.commit(&self.table, self.lock.as_ref()).await;
        if let Some(heartbeat) = self.heartbeat.take() {
            if let Err(e) = heartbeat.stop().await {
                tracing::warn!(table = %url, error = %e, "removing the heartbeat failed");
            }
        }
        if outcome.is_ok() {
            if let Err(e) = self.tidy().await {
                tracing::warn!(table = %url, error = %e, "cleaning or archiving failed; the next run retries");
            }
        }
        if let Some(lock) = self.lock.take() {
            lock.release().await.map_err(|e| sink_err(&url, e))?;
        }
        outcome.map_err(|e| sink_err(&url, e))?;
        Ok(report(&self.table, &self.figures, self.started))
    }

    async fn discard(mut self: Box<Self>) -> Result<(), SinkError> {
        let url = self.url();
        let removed = self.prepared.abort(&self.table).await;
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop().await.map_err(|e| sink_err(&url, e))?;
        }
        if let Some(lock) = self.lock.take() {
            lock.release().await.map_err(|e| sink_err(&url, e))?;
        }
        removed.map_err(|e| sink_err(&url, e))
    }
}

/// The sink report of an upsert.
pub fn report(table: &HudiTable, figures: &UpsertFigures, started: Clock) -> SinkReport {
    let summary = match &figures.instant {
        Some(instant) => format!(
            "commit {instant}: {} inserts, {} updates, {} unchanged, {} older ignored; {} files written ({} bytes), {} rewritten, {} partitions ({} new), {} old slices cleaned, {:.2}s",
            figures.inserts,
            figures.updates,
            figures.unchanged,
            figures.older_ignored,
            figures.files_written,
            figures.bytes_written,
            figures.files_rewritten,
            figures.partitions_touched,
            figures.partitions_created.len(),
            figures.files_cleaned,
            started.elapsed().as_secs_f64()
        ),
        None => format!(
            "no changes ({} rows unchanged, {} older ignored): no commit",
            figures.unchanged, figures.older_ignored
        ),
    };
    let athena = super::athena::add_partitions(table, &figures.partitions_created);
    SinkReport {
        sink: "hudi".into(),
        target: table.location.url.clone(),
        summary,
        details: SinkDetails::Hudi {
            figures: figures.clone(),
            athena_add_partitions: athena,
        },
    }
}
