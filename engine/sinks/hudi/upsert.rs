//! Copy-on-write upsert with Hudi's commit protocol.
//!
//! Stage (nothing visible yet):
//! 1. take the writer lock ([`super::lock`]), roll back instants whose writer is provably gone
//!    ([`super::rollback`]);
//! 2. for each partition the rows touch, read only the record-key column of the latest base files
//!    to find the file group holding each key; new keys go to small file groups, then new ones;
//! 3. create `<instant>.commit.requested` (only if absent) and start the instant's heartbeat, write
//!    `<instant>.inflight` (the plan), then, per touched
//!    file group, a new base file `<fileId>_<token>_<instant>.parquet` merging the latest slice
//!    with the incoming rows: a row is replaced only by one whose precombine value is greater or
//!    equal (an older source never overwrites a newer one), and a group where nothing changes is
//!    not rewritten.
//!
//! Publish: check every base file the commit names exists (fsynced first on local disk), that
//! this writer still holds the lock, and that no other writer's instant appeared; then create the
//! `<instant>.commit` JSON in one put, only if absent (the commit point). Then clean
//! ([`super::clean`]), archive ([`super::archive`]) and release the lock. A run killed anywhere
//! before the commit leaves only files of an instant that never completed, which readers ignore
//! and the next writer rolls back once the heartbeat shows this one gone.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant as Clock;

use async_trait::async_trait;
use chrono::Utc;
use datafusion::arrow::array::{
    make_comparator, new_null_array, Array, ArrayRef, AsArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::kernels::interleave::interleave;
use datafusion::arrow::compute::{cast, concat_batches, SortOptions};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use object_store::ObjectStoreExt;
use serde_json::{json, Value};

use super::archive::ArchivePolicy;
use super::clean::CleanPolicy;
use super::heartbeat::Heartbeat;
use super::lock::{LockOptions, WriterLock};
use super::schema::{avro_schema, META_COLUMNS};
use super::table::{HudiTable, TableConfig, TableError, HOODIE_DIR};
use super::timeline::{new_instant_time, BaseFile, InstantState, Timeline};
use crate::sinks::{JobRows, SinkError, SinkReport, StagedWrite};
use crate::storage::Location;

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

/// The table configuration a job declares.
pub fn job_table_config(rows: &JobRows<'_>, database: &str) -> TableConfig {
    TableConfig {
        database: database.to_string(),
        name: rows.job.sinks.hudi_table.clone(),
        record_key: rows.job.output.record_key.clone(),
        partition_fields: vec![rows.job.output.partition_field.clone()],
        precombine_field: rows.job.output.precombine_field.clone(),
        hive_style: rows.job.sinks.hive_style_partitioning,
    }
}

/// Opens the table at `url`, creating it from the job's declaration when there is none, and
/// checks that an existing table is keyed the way the job says.
pub async fn open_or_create(
    url: &str,
    wanted: &TableConfig,
    data_schema: &SchemaRef,
) -> Result<HudiTable, TableError> {
    let location = Location::create(url)
        .await
        .map_err(|e| TableError::Storage {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    let table = match HudiTable::open(&location).await? {
        Some(t) => t,
        None => {
            super::schema::check_supported(data_schema).map_err(|e| TableError::Data {
                url: location.url.clone(),
                message: e.to_string(),
            })?;
            let schema =
                avro_schema(&wanted.name, data_schema, false).map_err(|e| TableError::Data {
                    url: location.url.clone(),
                    message: e.to_string(),
                })?;
            return HudiTable::create(&location, wanted.clone(), &schema).await;
        }
    };
    let c = &table.config;
    let checks: [(&'static str, String, String); 3] = [
        (
            "record key",
            wanted.record_key.join(","),
            c.record_key.join(","),
        ),
        (
            "partition fields",
            wanted.partition_fields.join(","),
            c.partition_fields.join(","),
        ),
        (
            "precombine field",
            wanted.precombine_field.clone(),
            c.precombine_field.clone(),
        ),
    ];
    for (what, job, have) in checks {
        if job != have {
            return Err(TableError::Mismatch {
                url: table.location.url.clone(),
                what,
                job,
                table: have,
            });
        }
    }
    Ok(table)
}

/// Hudi's metadata table indexes every file of the table; a write that does not update it would
/// leave readers that use it (Spark, Athena with it enabled) seeing a stale file list.
async fn refuse_metadata_table(table: &HudiTable) -> Result<(), TableError> {
    let enabled = table
        .properties
        .get("hoodie.table.metadata.partitions")
        .is_some_and(|p| !p.trim().is_empty())
        || table
            .get(&format!(
                "{HOODIE_DIR}/metadata/{HOODIE_DIR}/hoodie.properties"
            ))
            .await?
            .is_some();
    if enabled {
        return Err(TableError::Unsupported {
            url: table.location.url.clone(),
            message: "the table has Hudi's metadata table (.hoodie/metadata), which tally does not \
                      maintain; disable it with Hudi (hoodie.metadata.enable=false, which removes it) \
                      before writing with tally"
                .into(),
        });
    }
    Ok(())
}

/// The data columns (no meta columns) of the table's latest base files, if it has any.
async fn existing_data_schema(
    table: &HudiTable,
    timeline: &Timeline,
) -> Result<Option<SchemaRef>, TableError> {
    let Some(latest) = timeline
        .instants
        .iter()
        .rev()
        .find(|i| i.state == InstantState::Completed && i.action == "commit")
    else {
        return Ok(None);
    };
    let Some(bytes) = table
        .get(&format!("{HOODIE_DIR}/{}", latest.file_name))
        .await?
    else {
        return Ok(None);
    };
    let meta: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let path = meta["partitionToWriteStats"].as_object().and_then(|m| {
        m.values()
            .flat_map(|v| v.as_array().into_iter().flatten())
            .find_map(|s| s["path"].as_str().map(str::to_string))
    });
    let Some(path) = path else { return Ok(None) };
    let (partition, name) = path.rsplit_once('/').unwrap_or(("", &path));
    let size = table
        .location
        .store
        .head(&table.path(&path))
        .await
        .map(|m| m.size);
    let Ok(size) = size else { return Ok(None) };
    let Some(file) = BaseFile::parse(partition, name, size) else {
        return Ok(None);
    };
    let reader = crate::storage::ObjectFileReader::new(
        table.location.store.clone(),
        table.path(&file.relative_path()),
        file.size,
    );
    let builder = datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| TableError::Storage {
            url: table.location.url.clone(),
            message: format!("cannot read the schema of {path}: {e}"),
        })?;
    let fields: Vec<Field> = builder
        .schema()
        .fields()
        .iter()
        .filter(|f| !META_COLUMNS.contains(&f.name().as_str()))
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect();
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// Brings the job's rows to the table's data schema: columns by name, cast to the table's types;
/// table columns the job does not produce are null. A job column the table lacks is an error.
fn conform(batch: &RecordBatch, data: &SchemaRef, url: &str) -> Result<RecordBatch, TableError> {
    let err = |message: String| TableError::Data {
        url: url.to_string(),
        message,
    };
    for f in batch.schema().fields() {
        if data.index_of(f.name()).is_err() {
            return Err(err(format!(
                "the job produces column `{}`, which the table does not have",
                f.name()
            )));
        }
    }
    let columns = data
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()).map_err(|e| {
                err(format!(
                    "column `{}` is {} in the job but {} in the table: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))
            }),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(data.clone(), columns).map_err(|e| err(e.to_string()))
}

/// What one file group gets in this instant.
struct GroupPlan {
    partition: String,
    file_id: String,
    base: Option<BaseFile>,
    /// Incoming rows whose key the group already holds.
    updates: Vec<usize>,
    /// Incoming rows with new keys placed in this group.
    inserts: Vec<usize>,
}

/// A staged upsert: base files written, `.commit` not yet.
pub struct StagedUpsert {
    table: HudiTable,
    lock: Option<WriterLock>,
    heartbeat: Option<Heartbeat>,
    instant: String,
    latest_before: Option<String>,
    commit: Value,
    written: Vec<String>,
    /// Older slices of the touched file groups, oldest first, for cleaning.
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
            instant: parts.instant,
            latest_before: parts.latest_before,
            commit: parts.commit,
            written: parts.written,
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

struct StagedParts {
    heartbeat: Heartbeat,
    instant: String,
    latest_before: Option<String>,
    commit: Value,
    written: Vec<String>,
    slices: Vec<Vec<BaseFile>>,
}

async fn stage_locked(
    table: &HudiTable,
    rows: &JobRows<'_>,
    options: &UpsertOptions,
) -> Result<(UpsertFigures, Option<StagedParts>), TableError> {
    let url = table.location.url.clone();
    let data_err = |message: String| TableError::Data {
        url: url.clone(),
        message,
    };
    let mut figures = UpsertFigures::default();
    refuse_metadata_table(table).await?;
    let (rolled_back, timeline) = super::rollback::recover(table, options.lock.lease).await?;
    figures.rolled_back = rolled_back;
    let instant = new_instant_time(Utc::now(), &timeline);
    let latest_before = timeline.latest_time().map(str::to_string);

    let data_schema = existing_data_schema(table, &timeline)
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
    let incoming =
        concat_batches(&rows.schema, rows.batches).map_err(|e| data_err(e.to_string()))?;
    let incoming = conform(&incoming, &data_schema, &url)?;
    let keys = table.record_keys(&incoming)?;
    let partitions = table.partition_paths(&incoming)?;
    let table_schema = super::schema::table_schema(&data_schema);
    let incoming_full = with_meta_columns(&incoming, &table_schema, &instant, &keys, &partitions)
        .map_err(|e| data_err(e.to_string()))?;
    let precombine_idx = table_schema
        .index_of(&table.config.precombine_field)
        .map_err(|_| {
            data_err(format!(
                "no precombine column `{}`",
                table.config.precombine_field
            ))
        })?;

    let mut by_partition: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (row, p) in partitions.iter().enumerate() {
        by_partition.entry(p.as_str()).or_default().push(row);
    }
    figures.partitions_touched = by_partition.len();
    let replaced = table.replaced_file_ids(&timeline).await?;

    // Plan: which file group each incoming row goes to.
    let mut plans: Vec<GroupPlan> = Vec::new();
    let mut slices_of: HashMap<String, Vec<BaseFile>> = HashMap::new();
    for (partition, rows_here) in &by_partition {
        let groups = table
            .partition_groups(partition, &timeline, &replaced)
            .await?;
        if groups.is_empty() {
            figures.partitions_created.push(partition.to_string());
        }
        let mut key_owner: HashMap<String, String> = HashMap::new();
        let mut sizes: Vec<(String, u64, u64)> = Vec::new();
        for (file_id, slices) in &groups {
            let latest = slices.last().expect("groups have slices");
            let (_, batches) = table
                .read_base_file(latest, Some(&["_hoodie_record_key"]))
                .await?;
            figures.key_files_read += 1;
            figures.key_bytes_read += latest.size;
            let mut count = 0u64;
            for b in &batches {
                let col = b.column(0).as_string::<i32>();
                for k in col.iter().flatten() {
                    key_owner.insert(k.to_string(), file_id.clone());
                    count += 1;
                }
            }
            sizes.push((file_id.clone(), latest.size, count));
            slices_of.insert(file_id.clone(), slices.clone());
        }
        let mut group_plans: BTreeMap<String, GroupPlan> = BTreeMap::new();
        let mut new_keys = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for &row in rows_here {
            if !seen.insert(keys[row].as_str()) {
                return Err(data_err(format!(
                    "record key `{}` appears twice in one run's rows",
                    keys[row]
                )));
            }
            match key_owner.get(&keys[row]) {
                Some(file_id) => group_plans
                    .entry(file_id.clone())
                    .or_insert_with(|| GroupPlan {
                        partition: partition.to_string(),
                        file_id: file_id.clone(),
                        base: groups[file_id].last().cloned(),
                        updates: vec![],
                        inserts: vec![],
                    })
                    .updates
                    .push(row),
                None => new_keys.push(row),
            }
        }
        // New keys: fill small file groups first, then start new ones.
        // Bytes per row of a file; 100 when a file has no rows to tell.
        let row_bytes = |size: u64, count: u64| size.checked_div(count).map_or(100, |b| b.max(1));
        let default_row_bytes = sizes
            .iter()
            .map(|(_, s, c)| row_bytes(*s, *c))
            .max()
            .unwrap_or(100);
        sizes.sort_by_key(|(_, size, _)| *size);
        let mut pending = new_keys.into_iter().peekable();
        for (file_id, size, count) in &sizes {
            if pending.peek().is_none() {
                break;
            }
            if *size >= options.target_file_bytes {
                continue;
            }
            let room = (options.target_file_bytes - size) / row_bytes(*size, *count);
            let plan = group_plans
                .entry(file_id.clone())
                .or_insert_with(|| GroupPlan {
                    partition: partition.to_string(),
                    file_id: file_id.clone(),
                    base: groups[file_id].last().cloned(),
                    updates: vec![],
                    inserts: vec![],
                });
            plan.inserts.extend(pending.by_ref().take(room as usize));
        }
        let per_new_file = (options.target_file_bytes / default_row_bytes).max(1) as usize;
        let rest: Vec<usize> = pending.collect();
        for chunk in rest.chunks(per_new_file) {
            let file_id = format!("{}-0", uuid::Uuid::new_v4());
            group_plans.insert(
                file_id.clone(),
                GroupPlan {
                    partition: partition.to_string(),
                    file_id,
                    base: None,
                    updates: vec![],
                    inserts: chunk.to_vec(),
                },
            );
        }
        plans.extend(group_plans.into_values());
    }

    // The plan, on the timeline before any base file exists.
    let requested = super::timeline::Instant::file_for(&instant, "commit", InstantState::Requested);
    let inflight = super::timeline::Instant::file_for(&instant, "commit", InstantState::Inflight);
    table
        .create_new(&format!("{HOODIE_DIR}/{requested}"), Vec::new())
        .await?;
    let heartbeat = Heartbeat::start(table, &instant, options.lock.lease).await?;
    let plan_json = commit_json(
        plans.iter().map(|p| {
            (
                p.partition.clone(),
                write_stat(
                    &p.file_id,
                    None,
                    p.base.as_ref(),
                    0,
                    p.updates.len() as u64,
                    p.inserts.len() as u64,
                    0,
                ),
            )
        }),
        None,
    );
    table
        .put(
            &format!("{HOODIE_DIR}/{inflight}"),
            serde_json::to_vec_pretty(&plan_json).unwrap_or_default(),
        )
        .await?;
    for p in &figures.partitions_created {
        table.write_partition_metadata(p, &instant).await?;
    }

    let avro_with_meta = avro_schema(&table.config.name, &data_schema, true).unwrap_or_default();
    let mut stats: Vec<(String, Value)> = Vec::new();
    let mut written = Vec::new();
    let mut cleaning = Vec::new();
    for (group_no, plan) in plans.iter().enumerate() {
        let existing = match &plan.base {
            Some(base) => {
                let (_, batches) = table.read_base_file(base, None).await?;
                figures.files_rewritten += 1;
                figures.bytes_rewritten_read += base.size;
                let batch =
                    concat_batches(&table_schema, &conform_all(&batches, &table_schema, &url)?)
                        .map_err(|e| data_err(e.to_string()))?;
                Some(batch)
            }
            None => None,
        };
        let token = format!("{group_no}-0-0");
        let file_name = BaseFile::name(&plan.file_id, &token, &instant);
        let merged = merge_group(
            existing.as_ref(),
            &incoming_full,
            plan,
            &keys,
            precombine_idx,
            &instant,
            group_no,
            &file_name,
        )
        .map_err(|e| data_err(e.to_string()))?;
        figures.unchanged += merged.unchanged;
        figures.older_ignored += merged.older;
        if merged.updates == 0 && merged.inserts == 0 {
            continue;
        }
        figures.updates += merged.updates;
        figures.inserts += merged.inserts;
        let key_col = merged.batch.column(2).as_string::<i32>();
        let min_key = key_col
            .iter()
            .flatten()
            .min()
            .unwrap_or_default()
            .to_string();
        let max_key = key_col
            .iter()
            .flatten()
            .max()
            .unwrap_or_default()
            .to_string();
        let size = table
            .write_base_file(
                &plan.partition,
                &file_name,
                &merged.batch,
                &avro_with_meta,
                (&min_key, &max_key),
            )
            .await?;
        figures.files_written += 1;
        figures.bytes_written += size;
        let relative = if plan.partition.is_empty() {
            file_name.clone()
        } else {
            format!("{}/{file_name}", plan.partition)
        };
        written.push(relative.clone());
        stats.push((
            plan.partition.clone(),
            write_stat(
                &plan.file_id,
                Some(&relative),
                plan.base.as_ref(),
                merged.batch.num_rows() as u64,
                merged.updates,
                merged.inserts,
                size,
            ),
        ));
        if let Some(slices) = slices_of.get(&plan.file_id) {
            cleaning.push(slices.clone());
        }
    }
    crate::failpoint("hudi-after-base-files");

    if written.is_empty() {
        // Nothing changed: the instant is withdrawn and the timeline is as it was.
        table.delete(&format!("{HOODIE_DIR}/{inflight}")).await?;
        table.delete(&format!("{HOODIE_DIR}/{requested}")).await?;
        heartbeat.stop().await?;
        return Ok((figures, None));
    }
    let schema_text = commit_schema(table, &timeline, &data_schema).await?;
    let commit = commit_json(stats.into_iter(), Some(schema_text));
    figures.instant = Some(instant.clone());
    Ok((
        figures,
        Some(StagedParts {
            heartbeat,
            instant,
            latest_before,
            commit,
            written,
            slices: cleaning,
        }),
    ))
}

fn conform_all(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    url: &str,
) -> Result<Vec<RecordBatch>, TableError> {
    batches.iter().map(|b| conform(b, schema, url)).collect()
}

/// The schema text for the commit: the one the table's last commit carried (so a Spark-written
/// table keeps its own), else the job's.
async fn commit_schema(
    table: &HudiTable,
    timeline: &Timeline,
    data: &SchemaRef,
) -> Result<String, TableError> {
    if let Some(latest) = timeline
        .instants
        .iter()
        .rev()
        .find(|i| i.state == InstantState::Completed && i.action == "commit")
    {
        if let Some(bytes) = table
            .get(&format!("{HOODIE_DIR}/{}", latest.file_name))
            .await?
        {
            let meta: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(s) = meta["extraMetadata"]["schema"].as_str() {
                return Ok(s.to_string());
            }
        }
    }
    avro_schema(&table.config.name, data, false).map_err(|e| TableError::Data {
        url: table.location.url.clone(),
        message: e.to_string(),
    })
}

/// The incoming rows with meta columns for this instant (sequence numbers and file names are
/// filled per file group later).
fn with_meta_columns(
    data: &RecordBatch,
    table_schema: &SchemaRef,
    instant: &str,
    keys: &[String],
    partitions: &[String],
) -> datafusion::arrow::error::Result<RecordBatch> {
    let n = data.num_rows();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            instant, n,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", n))),
        Arc::new(StringArray::from_iter_values(keys.iter())),
        Arc::new(StringArray::from_iter_values(partitions.iter())),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n("", n))),
    ];
    columns.extend(data.columns().iter().cloned());
    RecordBatch::try_new(table_schema.clone(), columns)
}

struct Merged {
    batch: RecordBatch,
    inserts: u64,
    updates: u64,
    unchanged: u64,
    older: u64,
}

/// Merges one file group's latest slice with its incoming rows.
#[allow(clippy::too_many_arguments)]
fn merge_group(
    existing: Option<&RecordBatch>,
    incoming: &RecordBatch,
    plan: &GroupPlan,
    keys: &[String],
    precombine_idx: usize,
    instant: &str,
    group_no: usize,
    file_name: &str,
) -> datafusion::arrow::error::Result<Merged> {
    const EXISTING: usize = 0;
    const INCOMING: usize = 1;
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let (mut updates, mut unchanged, mut older) = (0u64, 0u64, 0u64);
    let empty = RecordBatch::new_empty(incoming.schema());
    let existing = existing.unwrap_or(&empty);
    let mut wanted: HashMap<&str, usize> = plan
        .updates
        .iter()
        .map(|&r| (keys[r].as_str(), r))
        .collect();
    if existing.num_rows() > 0 {
        let newer_or_equal = make_comparator(
            incoming.column(precombine_idx).as_ref(),
            existing.column(precombine_idx).as_ref(),
            SortOptions::default(),
        )?;
        let data_cols: Vec<_> = (META_COLUMNS.len()..incoming.num_columns())
            .map(|i| {
                make_comparator(
                    incoming.column(i).as_ref(),
                    existing.column(i).as_ref(),
                    SortOptions::default(),
                )
                .ok()
            })
            .collect();
        let existing_keys = existing.column(2).as_string::<i32>();
        for e in 0..existing.num_rows() {
            let incoming_row = existing_keys
                .is_valid(e)
                .then(|| wanted.remove(existing_keys.value(e)))
                .flatten();
            match incoming_row {
                None => picks.push((EXISTING, e)),
                Some(i) if newer_or_equal(i, e) == Ordering::Less => {
                    older += 1;
                    picks.push((EXISTING, e));
                }
                Some(i) => {
                    let same = data_cols
                        .iter()
                        .all(|c| c.as_ref().is_some_and(|cmp| cmp(i, e) == Ordering::Equal));
                    if same {
                        unchanged += 1;
                        picks.push((EXISTING, e));
                    } else {
                        updates += 1;
                        picks.push((INCOMING, i));
                    }
                }
            }
        }
    }
    // Keys the plan expected here but the slice no longer holds are inserted, like new keys.
    let mut leftovers: Vec<usize> = wanted.into_values().collect();
    leftovers.sort_unstable();
    let mut inserts = 0u64;
    for row in plan.inserts.iter().copied().chain(leftovers) {
        picks.push((INCOMING, row));
        inserts += 1;
    }
    let sources = [existing, incoming];
    let columns: Vec<ArrayRef> = (0..incoming.num_columns())
        .map(|c| {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, &picks)
        })
        .collect::<Result<_, _>>()?;
    // Rows taken from this instant get its sequence numbers; every row names the new file.
    let existing_seqno = existing.column(1).as_string::<i32>();
    let mut n = 0usize;
    let seqno: StringArray = picks
        .iter()
        .map(|&(src, row)| {
            if src == EXISTING {
                existing_seqno
                    .is_valid(row)
                    .then(|| existing_seqno.value(row).to_string())
            } else {
                n += 1;
                Some(format!("{instant}_{group_no}_{}", n - 1))
            }
        })
        .collect();
    let mut columns = columns;
    columns[1] = Arc::new(seqno);
    columns[4] = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        file_name,
        picks.len(),
    )));
    Ok(Merged {
        batch: RecordBatch::try_new(incoming.schema(), columns)?,
        inserts,
        updates,
        unchanged,
        older,
    })
}

/// One file's entry in `partitionToWriteStats`, with the fields Hudi writes.
fn write_stat(
    file_id: &str,
    path: Option<&str>,
    base: Option<&BaseFile>,
    writes: u64,
    updates: u64,
    inserts: u64,
    bytes: u64,
) -> Value {
    json!({
        "fileId": file_id,
        "path": path,
        "cdcStats": null,
        "prevCommit": base.map(|b| b.instant.clone()).unwrap_or_else(|| "null".into()),
        "numWrites": writes,
        "numDeletes": 0,
        "numUpdateWrites": updates,
        "numInserts": inserts,
        "totalWriteBytes": bytes,
        "totalWriteErrors": 0,
        "tempPath": null,
        "partitionPath": null,
        "totalLogRecords": 0,
        "totalLogFilesCompacted": 0,
        "totalLogSizeCompacted": 0,
        "totalUpdatedRecordsCompacted": 0,
        "totalLogBlocks": 0,
        "totalCorruptLogBlock": 0,
        "totalRollbackBlocks": 0,
        "fileSizeInBytes": bytes,
        "minEventTime": null,
        "maxEventTime": null,
        "runtimeStats": null,
    })
}

/// Commit metadata JSON (`HoodieCommitMetadata`).
fn commit_json(stats: impl Iterator<Item = (String, Value)>, schema: Option<String>) -> Value {
    let mut by_partition: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (partition, mut stat) in stats {
        if stat["path"].is_string() {
            stat["partitionPath"] = json!(partition);
        }
        by_partition.entry(partition).or_default().push(stat);
    }
    let mut extra = serde_json::Map::new();
    if let Some(schema) = schema {
        extra.insert("schema".into(), json!(schema));
    }
    json!({
        "partitionToWriteStats": by_partition,
        "compacted": false,
        "extraMetadata": extra,
        "operationType": "UPSERT",
    })
}

impl StagedUpsert {
    fn url(&self) -> String {
        self.table.location.url.clone()
    }

    async fn remove_staged(&self) -> Result<(), TableError> {
        for relative in &self.written {
            self.table.delete(relative).await?;
        }
        for state in [InstantState::Inflight, InstantState::Requested] {
            let name = super::timeline::Instant::file_for(&self.instant, "commit", state);
            self.table.delete(&format!("{HOODIE_DIR}/{name}")).await?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), TableError> {
        // Every file the commit names is durable and present.
        self.table.sync_local(&self.written)?;
        for relative in &self.written {
            if !self.table.exists(relative).await? {
                let message = format!(
                    "base file {relative} of instant {} is missing (removed by another writer?); nothing was committed",
                    self.instant
                );
                self.remove_staged().await?;
                return Err(TableError::Storage {
                    url: self.url(),
                    message,
                });
            }
        }
        if let Some(lock) = &self.lock {
            if let Err(e) = lock.ensure_held().await {
                self.remove_staged().await?;
                return Err(e);
            }
        }
        // Optimistic check: no other writer may have started or finished an instant meanwhile.
        let timeline = self.table.timeline().await?;
        let intruder = timeline.instants.iter().find(|i| {
            i.time != self.instant
                && (self
                    .latest_before
                    .as_deref()
                    .is_none_or(|l| i.time.as_str() > l)
                    || (i.state != InstantState::Completed
                        && timeline.pending_writes().contains(&i.time)))
        });
        if let Some(other) = intruder {
            let message = format!(
                "another writer's instant {} appeared while this run was writing; this run's instant {} is withdrawn",
                other.file_name, self.instant
            );
            self.remove_staged().await?;
            return Err(TableError::Storage {
                url: self.url(),
                message,
            });
        }
        let name =
            super::timeline::Instant::file_for(&self.instant, "commit", InstantState::Completed);
        let commit_file = format!("{HOODIE_DIR}/{name}");
        self.table
            .create_new(
                &commit_file,
                serde_json::to_vec_pretty(&self.commit).unwrap_or_default(),
            )
            .await?;
        // The commit file and the `.hoodie/` entry naming it, both durable.
        self.table.sync_local(&[commit_file])?;
        crate::failpoint("hudi-after-commit");
        Ok(())
    }

    /// Cleans old slices of the touched file groups, then archives old instants.
    async fn tidy(&mut self) -> Result<(), TableError> {
        self.figures.files_cleaned += super::clean::clean(
            &self.table,
            &self.slices,
            &self.instant,
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
        let outcome = self.commit().await;
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
        let removed = self.remove_staged().await;
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
        details: json!({ "figures": figures, "athena_add_partitions": athena }),
    }
}
