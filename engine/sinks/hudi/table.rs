//! A Hudi copy-on-write table on object storage: its configuration (`hoodie.properties`), its
//! partitions and base files, and reading and writing those files.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path as LocalPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn,
    ArrowRowGroupWriterFactory,
};
use datafusion::parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::column::writer::ColumnCloseResult;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use datafusion::parquet::schema::types::{ColumnDescPtr, ColumnPath};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::properties;
use super::runs_chunk::RunsColumn;
use super::timeline::{committed_file_groups, BaseFile, FileGroups, Timeline};
use crate::storage::{Location, ObjectFileReader};

pub use super::timeline::HOODIE_DIR;
pub const PROPERTIES_FILE: &str = "hoodie.properties";
pub const PARTITION_METADATA: &str = ".hoodie_partition_metadata";

const COMPLEX_KEYGEN: &str = "org.apache.hudi.keygen.ComplexKeyGenerator";
const SIMPLE_KEYGEN: &str = "org.apache.hudi.keygen.SimpleKeyGenerator";
const NON_PARTITIONED_KEYGEN: &str = "org.apache.hudi.keygen.NonpartitionedKeyGenerator";

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{url}: {message}")]
    Storage { url: String, message: String },
    #[error("{url}: not a table tally can write: {message}")]
    Unsupported { url: String, message: String },
    #[error("{url}: the job declares {what} `{job}` but the table has `{table}`")]
    Mismatch {
        url: String,
        what: &'static str,
        job: String,
        table: String,
    },
    #[error("{url}: {message}")]
    Data { url: String, message: String },
    /// A call to the store, the file system or a codec that failed, with its cause.
    #[error("{url}: {context}: {cause}")]
    Failed {
        url: String,
        context: String,
        #[source]
        cause: TableCause,
    },
}

/// What a table's storage or encoding reported.
#[derive(Debug, thiserror::Error)]
pub enum TableCause {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// How a table's rows are keyed and laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    pub database: String,
    pub name: String,
    pub record_key: Vec<String>,
    pub partition_fields: Vec<String>,
    pub precombine_field: String,
    pub hive_style: bool,
}

impl TableConfig {
    /// Key generator: one key field → Simple (`value`), several → Complex (`f1:v1,f2:v2`).
    pub(super) fn key_generator(&self) -> &'static str {
        if self.partition_fields.is_empty() {
            NON_PARTITIONED_KEYGEN
        } else if self.record_key.len() == 1 && self.partition_fields.len() == 1 {
            SIMPLE_KEYGEN
        } else {
            COMPLEX_KEYGEN
        }
    }
}

/// An open table.
#[derive(Debug, Clone)]
pub struct HudiTable {
    pub location: Location,
    pub config: TableConfig,
    pub properties: BTreeMap<String, String>,
}

impl HudiTable {
    /// A storage error about this table.
    pub fn err(&self, message: impl std::fmt::Display) -> TableError {
        TableError::Storage {
            url: self.location.url.clone(),
            message: message.to_string(),
        }
    }

    /// A failed call, its cause kept: `context` says what was being done.
    pub fn failed(&self, context: impl Into<String>, cause: impl Into<TableCause>) -> TableError {
        TableError::Failed {
            url: self.location.url.clone(),
            context: context.into(),
            cause: cause.into(),
        }
    }

    /// An error in the rows being written (as opposed to the storage).
    pub fn data_err(&self, message: impl std::fmt::Display) -> TableError {
        TableError::Data {
            url: self.location.url.clone(),
            message: message.to_string(),
        }
    }

    pub fn path(&self, relative: &str) -> Path {
        self.location.child(relative)
    }

    pub fn hoodie_dir(&self) -> Path {
        self.path(HOODIE_DIR)
    }

    /// Opens the table at `location`, or returns `None` when there is none yet.
    pub async fn open(location: &Location) -> Result<Option<HudiTable>, TableError> {
        let path = location.child(&format!("{HOODIE_DIR}/{PROPERTIES_FILE}"));
        let text = match location.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => Err(e),
        }
        .map_err(|e| TableError::Storage {
            url: location.url.clone(),
            message: format!("cannot read {HOODIE_DIR}/{PROPERTIES_FILE}: {e}"),
        })?;
        let props = properties::parse(&String::from_utf8_lossy(&text));
        let unsupported = |message: String| TableError::Unsupported {
            url: location.url.clone(),
            message,
        };
        let get = |k: &str| props.get(k).cloned().unwrap_or_default();
        if get("hoodie.table.version") != "6" {
            return Err(unsupported(format!(
                "hoodie.table.version is `{}`; tally writes version 6",
                get("hoodie.table.version")
            )));
        }
        if get("hoodie.table.type") != "COPY_ON_WRITE" {
            return Err(unsupported(format!(
                "hoodie.table.type is `{}`; tally writes COPY_ON_WRITE",
                get("hoodie.table.type")
            )));
        }
        let list = |k: &str| -> Vec<String> {
            get(k)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let config = TableConfig {
            database: props
                .get("hoodie.database.name")
                .cloned()
                .unwrap_or_else(|| "default".into()),
            name: get("hoodie.table.name"),
            record_key: list("hoodie.table.recordkey.fields"),
            partition_fields: list("hoodie.table.partition.fields"),
            precombine_field: get("hoodie.table.precombine.field"),
            hive_style: get("hoodie.datasource.write.hive_style_partitioning") == "true",
        };
        if config.record_key.is_empty() {
            return Err(unsupported("hoodie.table.recordkey.fields is empty".into()));
        }
        Ok(Some(HudiTable {
            location: location.clone(),
            config,
            properties: props,
        }))
    }

    /// Creates the table: `hoodie.properties` with version 6, layout version 1, copy-on-write.
    /// The properties file is written last, in one put: a table exists once it is there.
    pub async fn create(
        location: &Location,
        config: TableConfig,
        avro_schema: &str,
    ) -> Result<HudiTable, TableError> {
        let mut props = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            props.insert(k.to_string(), v);
        };
        set("hoodie.table.name", config.name.clone());
        set("hoodie.database.name", config.database.clone());
        set("hoodie.table.type", "COPY_ON_WRITE".into());
        set("hoodie.table.version", "6".into());
        set("hoodie.timeline.layout.version", "1".into());
        set("hoodie.table.base.file.format", "PARQUET".into());
        set("hoodie.table.recordkey.fields", config.record_key.join(","));
        set(
            "hoodie.table.partition.fields",
            config.partition_fields.join(","),
        );
        set(
            "hoodie.table.precombine.field",
            config.precombine_field.clone(),
        );
        set(
            "hoodie.table.keygenerator.class",
            config.key_generator().into(),
        );
        set(
            "hoodie.datasource.write.hive_style_partitioning",
            config.hive_style.to_string(),
        );
        set(
            "hoodie.datasource.write.partitionpath.urlencode",
            "false".into(),
        );
        set(
            "hoodie.datasource.write.drop.partition.columns",
            "false".into(),
        );
        set("hoodie.populate.meta.fields", "true".into());
        set("hoodie.archivelog.folder", "archived".into());
        set("hoodie.timeline.timezone", "UTC".into());
        set("hoodie.table.create.schema", avro_schema.to_string());
        set(
            "hoodie.table.checksum",
            properties::table_checksum(&config.database, &config.name).to_string(),
        );
        let text = properties::render(&props, "Properties written by tally");
        let table = HudiTable {
            location: location.clone(),
            config,
            properties: props,
        };
        table
            .put(
                &format!("{HOODIE_DIR}/{PROPERTIES_FILE}"),
                text.into_bytes(),
            )
            .await?;
        Ok(table)
    }

    /// Writes a small object (timeline and metadata files) in one put.
    pub async fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), TableError> {
        crate::failpoint_counted("hudi-write");
        self.location
            .store
            .put(&self.path(relative), PutPayload::from(Bytes::from(bytes)))
            .await
            .map(|_| ())
            .map_err(|e| self.failed(format!("cannot write {relative}"), e))
    }

    /// Writes a small object only if it does not exist yet (`If-None-Match: *` on S3, an atomic
    /// link on local disk): two writers can never both create the same instant file.
    pub async fn create_new(&self, relative: &str, bytes: Vec<u8>) -> Result<(), TableError> {
        crate::failpoint_counted("hudi-write");
        let put = self
            .location
            .store
            .put_opts(
                &self.path(relative),
                PutPayload::from(Bytes::from(bytes)),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(self.err(format!(
                "{relative} already exists: another writer made the same instant; nothing was committed"
            ))),
            Err(e) => Err(self.failed(format!("cannot write {relative}"), e)),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, relative: &str) -> Result<bool, TableError> {
        match self.location.store.head(&self.path(relative)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed(format!("cannot check {relative}"), e)),
        }
    }

    /// On local disk, flushes files (and the folders holding them) to stable storage, so the
    /// commit never names data a power cut could lose. Object stores are durable on return.
    ///
    /// Several files are synced at once, each on a thread of its own: one after another, a
    /// commit's base files waited for the disk in turn at the end of the run, with every core
    /// idle (their writes were started as they were put: [`Self::put_base_file`]).
    pub fn sync_local(&self, relatives: &[String]) -> Result<(), TableError> {
        let Some(root) = &self.location.local_root else {
            return Ok(());
        };
        let files: Vec<(String, PathBuf)> = relatives
            .iter()
            .map(|relative| (relative.clone(), root.join(relative)))
            .collect();
        self.sync_all_of(&files)?;
        let folders: BTreeSet<PathBuf> = files
            .iter()
            .filter(|(_, path)| path.is_file())
            .filter_map(|(_, path)| path.parent().map(LocalPath::to_path_buf))
            .collect();
        let folders: Vec<(String, PathBuf)> = folders
            .into_iter()
            .map(|folder| (folder.display().to_string(), folder))
            .collect();
        self.sync_all_of(&folders)
    }

    /// `fsync`s each `(name, path)`, [`SYNC_THREADS`] at a time; the first failure names its
    /// file.
    fn sync_all_of(&self, entries: &[(String, PathBuf)]) -> Result<(), TableError> {
        let sync = |path: &LocalPath| std::fs::File::open(path).and_then(|f| f.sync_all());
        let per_thread = entries.len().div_ceil(SYNC_THREADS).max(1);
        let failed = std::thread::scope(|scope| {
            let threads: Vec<_> = entries
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .find_map(|(name, path)| sync(path).err().map(|e| (name.clone(), e)))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .find_map(|failure| failure)
        });
        match failed {
            Some((name, e)) => Err(self.failed(format!("cannot sync {name}"), e)),
            None => Ok(()),
        }
    }

    /// Reads a small object.
    pub async fn get(&self, relative: &str) -> Result<Option<Bytes>, TableError> {
        match self.location.store.get(&self.path(relative)).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| self.failed(format!("cannot read {relative}"), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(format!("cannot read {relative}"), e)),
        }
    }

    /// Deletes an object; a missing one is fine.
    pub async fn delete(&self, relative: &str) -> Result<(), TableError> {
        crate::failpoint_counted("hudi-write");
        match self.location.store.delete(&self.path(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(format!("cannot delete {relative}"), e)),
        }
    }

    pub async fn timeline(&self) -> Result<Timeline, TableError> {
        Timeline::load(self.location.store.as_ref(), &self.hoodie_dir())
            .await
            .map_err(|e| self.failed("cannot list the timeline", e))
    }

    /// Base files directly in one partition (all slices, committed or not).
    pub async fn partition_files(&self, partition: &str) -> Result<Vec<BaseFile>, TableError> {
        let dir = if partition.is_empty() {
            self.location.prefix.clone()
        } else {
            self.path(partition)
        };
        let prefix = (!dir.as_ref().is_empty()).then_some(&dir);
        let listing = self
            .location
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| self.failed(format!("cannot list partition `{partition}`"), e))?;
        Ok(listing
            .objects
            .iter()
            .filter_map(|m| BaseFile::parse(partition, m.location.filename()?, m.size))
            .collect())
    }

    /// Every base file of the table, found by listing everything outside `.hoodie/`.
    pub async fn all_files(&self) -> Result<Vec<BaseFile>, TableError> {
        let root = self.location.prefix.clone();
        let prefix = (!root.as_ref().is_empty()).then_some(&root);
        let objects: Vec<_> = self
            .location
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| self.failed("cannot list the table", e))?;
        let root_parts = root.parts().count();
        Ok(objects
            .iter()
            .filter_map(|m| {
                let parts: Vec<String> = m
                    .location
                    .parts()
                    .skip(root_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                let (file, dirs) = parts.split_last()?;
                if dirs.first().is_some_and(|d| d.starts_with('.')) {
                    return None;
                }
                BaseFile::parse(&dirs.join("/"), file, m.size)
            })
            .collect())
    }

    /// File ids that completed replacecommits replaced (clustering, insert-overwrite).
    pub async fn replaced_file_ids(
        &self,
        timeline: &Timeline,
    ) -> Result<HashSet<String>, TableError> {
        let mut replaced = HashSet::new();
        for instant in &timeline.instants {
            if instant.action != "replacecommit"
                || instant.state != super::timeline::InstantState::Completed
            {
                continue;
            }
            let Some(bytes) = self.get(&instant.path()).await? else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(map) = json["partitionToReplaceFileIds"].as_object() {
                for ids in map.values() {
                    for id in ids.as_array().into_iter().flatten() {
                        if let Some(id) = id.as_str() {
                            replaced.insert(id.to_string());
                        }
                    }
                }
            }
        }
        Ok(replaced)
    }

    /// The snapshot: the latest committed slice of every file group, in every partition.
    pub async fn snapshot(&self) -> Result<Vec<BaseFile>, TableError> {
        let timeline = self.timeline().await?;
        let replaced = self.replaced_file_ids(&timeline).await?;
        let groups = committed_file_groups(
            self.all_files().await?,
            &timeline.completed_writes(),
            &replaced,
        );
        Ok(groups.into_values().filter_map(|mut s| s.pop()).collect())
    }

    /// Committed file groups of one partition.
    pub async fn partition_groups(
        &self,
        partition: &str,
        timeline: &Timeline,
        replaced: &HashSet<String>,
    ) -> Result<FileGroups, TableError> {
        Ok(committed_file_groups(
            self.partition_files(partition).await?,
            &timeline.completed_writes(),
            replaced,
        ))
    }

    /// Reads a base file, optionally only some columns (by name).
    pub async fn read_base_file(
        &self,
        file: &BaseFile,
        columns: Option<&[&str]>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), TableError> {
        let relative = file.relative_path();
        let fail = |e: datafusion::parquet::errors::ParquetError| {
            self.failed(format!("cannot read {relative}"), e)
        };
        let reader =
            ObjectFileReader::new(self.location.store.clone(), self.path(&relative), file.size);
        let mut builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(fail)?;
        if let Some(columns) = columns {
            let schema = builder.schema().clone();
            let roots: Vec<usize> = columns
                .iter()
                .filter_map(|c| schema.index_of(c).ok())
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
        }
        let stream = builder.with_batch_size(65536).build().map_err(fail)?;
        let schema = stream.schema().clone();
        let batches = stream.try_collect().await.map_err(fail)?;
        Ok((schema, batches))
    }

    /// Writes an encoded base file (see [`encode_base_file`]) in one put, at `relative` (its
    /// partition path and file name); readers ignore it until its instant completes.
    ///
    /// On local disk the file's write to the disk is started at once (`sync_file_range`, which
    /// waits for nothing), while the other groups encode: the commit's sync then finds it done
    /// instead of writing every base file at the end of the run. What is durable, and when,
    /// does not change: the commit still syncs each file ([`Self::sync_local`]).
    pub async fn put_base_file(&self, relative: &str, bytes: Vec<u8>) -> Result<u64, TableError> {
        let size = bytes.len() as u64;
        self.put(relative, bytes).await?;
        if let Some(root) = &self.location.local_root {
            start_writing(&root.join(relative));
        }
        Ok(size)
    }

    /// Writes `.hoodie_partition_metadata` for a new partition.
    pub async fn write_partition_metadata(
        &self,
        partition: &str,
        instant: &str,
    ) -> Result<(), TableError> {
        let depth = if partition.is_empty() {
            0
        } else {
            partition.split('/').count()
        };
        let mut props = BTreeMap::new();
        props.insert("commitTime".to_string(), instant.to_string());
        props.insert("partitionDepth".to_string(), depth.to_string());
        let relative = if partition.is_empty() {
            PARTITION_METADATA.to_string()
        } else {
            format!("{partition}/{PARTITION_METADATA}")
        };
        self.put(
            &relative,
            properties::render(&props, "partition metadata").into_bytes(),
        )
        .await
    }
}

#[cfg(test)]
impl HudiTable {
    /// A table for unit tests on object_store's in-memory store (which honors conditional writes
    /// as AWS S3 does): keyed by `keys`, partitioned by `d`, precombined on `v`.
    pub(crate) fn in_memory(keys: &[&str], properties: BTreeMap<String, String>) -> HudiTable {
        HudiTable {
            location: Location::from_store(
                Arc::new(object_store::memory::InMemory::new()),
                "memory://t",
            ),
            config: TableConfig {
                database: "default".into(),
                name: "t".into(),
                record_key: keys.iter().map(|k| k.to_string()).collect(),
                partition_fields: vec!["d".into()],
                precombine_field: "v".into(),
                hive_style: false,
            },
            properties,
        }
    }
}

/// Shared reference to a table's object store, for background work.
pub type SharedTable = Arc<HudiTable>;

/// Small requests to a table's store made at once by [`at_once`]: a backfill may touch hundreds
/// of partitions, and each request is a round trip on S3.
const STORE_REQUESTS_AT_ONCE: usize = 16;

/// Runs independent requests to the table's store (listings, small puts, existence checks,
/// deletes) several at once, the results in the requests' order; the first error is returned.
/// Made one after another, each waited a round trip for the one before (20-50 ms on S3).
///
/// The requests are made (not yet sent) before this returns, so the future holds them and not
/// the iterator that made them: a closure's borrow inside a `Send` future trips the compiler.
pub fn at_once<T, F>(
    requests: impl IntoIterator<Item = F>,
) -> impl std::future::Future<Output = Result<Vec<T>, TableError>>
where
    F: std::future::Future<Output = Result<T, TableError>>,
{
    use futures::{StreamExt, TryStreamExt};
    let requests: Vec<F> = requests.into_iter().collect();
    futures::stream::iter(requests)
        .buffered(STORE_REQUESTS_AT_ONCE)
        .try_collect()
}

/// A base file's bytes: `batches` (in `schema`) as Snappy-compressed Parquet, with the Avro
/// schema and the record key range Hudi's readers and index expect in its footer. The batches are
/// taken one at a time, so only one of them and the encoded file are in memory at once. CPU work,
/// meant for a blocking thread.
///
/// A batch's columns are encoded side by side on rayon's pool (each column has its own writer;
/// the row group is put together in column order when it closes), and the next batch is made
/// meanwhile, so the last file groups of an upsert, or a table's only one, do not leave cores
/// idle. A column whose values come in long runs in a row group's first batch (a file's commit
/// time, partition and name, a store's id and source file) is kept as runs and encoded per run
/// ([`RunsColumn`]); every other column by arrow-rs's column writers, in row groups of
/// `ArrowWriter`'s maximum row count (a file without such columns has the bytes a plain
/// `ArrowWriter` makes).
pub fn encode_base_file<I>(
    schema: SchemaRef,
    batches: I,
    avro_schema: &str,
    key_range: (&str, &str),
) -> Result<Vec<u8>, ParquetError>
where
    I: IntoIterator<Item = Result<RecordBatch, ArrowError>>,
    I::IntoIter: Send,
{
    encode_parquet(
        schema,
        batches,
        base_file_properties(avro_schema, key_range),
    )
}

/// Files synced at once by [`HudiTable::sync_local`].
const SYNC_THREADS: usize = 8;

/// Starts a local file's write to disk ([`crate::storage::start_disk_write`]). A file that
/// cannot be opened is left to the commit's sync, which reports it.
fn start_writing(path: &LocalPath) {
    #[cfg(unix)]
    if let Ok(file) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        crate::storage::start_disk_write(file.as_raw_fd());
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// How base files are written: Snappy, and the footer entries Hudi reads.
fn base_file_properties(avro_schema: &str, key_range: (&str, &str)) -> WriterProperties {
    // A file's sequence numbers and record keys are all distinct: a dictionary of them is built
    // only to be dropped when it outgrows its page (Parquet's fallback), so they go plain.
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_column_dictionary_enabled(ColumnPath::from("_hoodie_commit_seqno"), false)
        .set_column_dictionary_enabled(ColumnPath::from("_hoodie_record_key"), false)
        .set_key_value_metadata(Some(vec![
            KeyValue::new("parquet.avro.schema".into(), avro_schema.to_string()),
            KeyValue::new("hoodie_min_record_key".into(), key_range.0.to_string()),
            KeyValue::new("hoodie_max_record_key".into(), key_range.1.to_string()),
        ]))
        .build()
}

/// [`encode_base_file`] with any writer properties.
fn encode_parquet<I>(
    schema: SchemaRef,
    batches: I,
    props: WriterProperties,
) -> Result<Vec<u8>, ParquetError>
where
    I: IntoIterator<Item = Result<RecordBatch, ArrowError>>,
    I::IntoIter: Send,
{
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut encoder = ParquetEncoder::new(&mut buffer, schema, props)?;
    // The next batch is made (a base file's next slice: its rows gathered, its keys written)
    // while this one is encoded.
    let mut batches = batches.into_iter();
    let mut next = batches.next();
    while let Some(batch) = next.take() {
        let batch = batch?;
        let (encoded, following) = rayon::join(|| encoder.push(batch), || batches.next());
        encoded?;
        next = following;
    }
    encoder.finish()?;
    Ok(buffer)
}

/// A Parquet file being written batch by batch, a row group at a time, each column by its own
/// encoder ([`ColumnEncoder`]).
struct ParquetEncoder<'a> {
    file: SerializedFileWriter<&'a mut Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    props: WriterProperties,
    /// The file's Parquet columns, one per leaf.
    columns: Vec<ColumnDescPtr>,
    /// Columns may be encoded by runs only where each field is one Parquet column (no nesting).
    flat: bool,
    max_rows: usize,
    /// The row group being written: its column encoders and rows so far.
    open: Option<(Vec<ColumnEncoder>, usize)>,
    /// Row groups closed so far.
    groups: usize,
}

impl<'a> ParquetEncoder<'a> {
    fn new(
        buffer: &'a mut Vec<u8>,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self, ParquetError> {
        let (file, factory) = ArrowWriter::try_new(buffer, schema.clone(), Some(props.clone()))?
            .into_serialized_writer()?;
        let columns = file.schema_descr().columns().to_vec();
        Ok(ParquetEncoder {
            flat: columns.len() == schema.fields().len(),
            max_rows: props.max_row_group_row_count().unwrap_or(usize::MAX).max(1),
            file,
            factory,
            schema,
            props,
            columns,
            open: None,
            groups: 0,
        })
    }

    /// Encodes `batch`'s rows, closing each row group that fills.
    fn push(&mut self, mut batch: RecordBatch) -> Result<(), ParquetError> {
        while batch.num_rows() > 0 {
            let take = batch
                .num_rows()
                .min(self.max_rows - self.open.as_ref().map_or(0, |(_, rows)| *rows));
            let slice = batch.slice(0, take);
            let (encoders, rows) = match &mut self.open {
                Some(group) => group,
                slot => {
                    // Each column's encoder is chosen on the row group's first batch.
                    let mut encoders = Vec::with_capacity(self.columns.len());
                    let writers = self.factory.create_column_writers(self.groups)?;
                    for (i, writer) in writers.into_iter().enumerate() {
                        // Leaf `i` is field `i` only in a flat schema.
                        let descr = &self.columns[i];
                        let runs =
                            self.flat && RunsColumn::suits(descr, &self.props, slice.column(i));
                        encoders.push(match runs {
                            true => ColumnEncoder::Runs(RunsColumn::new(
                                descr.clone(),
                                slice.column(i),
                            )?),
                            false => ColumnEncoder::Arrow(Box::new(writer)),
                        });
                    }
                    slot.insert((encoders, 0))
                }
            };
            encode_columns(encoders, &self.schema, &slice)?;
            *rows += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if *rows == self.max_rows {
                let (encoders, _) = self.open.take().expect("a row group is open");
                close_row_group(&mut self.file, encoders, &self.props)?;
                self.groups += 1;
            }
        }
        Ok(())
    }

    /// Closes the last row group and writes the footer.
    fn finish(mut self) -> Result<(), ParquetError> {
        if let Some((encoders, _)) = self.open.take() {
            close_row_group(&mut self.file, encoders, &self.props)?;
        }
        self.file.close()?;
        Ok(())
    }
}

/// How one Parquet column of a row group is encoded: by arrow-rs's column writer, or by runs
/// ([`RunsColumn`]: a column whose values come in long runs).
enum ColumnEncoder {
    Arrow(Box<ArrowColumnWriter>),
    Runs(RunsColumn),
}

/// Encodes `batch`'s columns into their encoders, a Parquet leaf column per task on rayon's pool
/// (columns kept as runs too: comparing a store's 60-byte source file name row by row is work
/// worth sharing). Encoders are per leaf, in schema order: a nested column (a struct, a list)
/// has several (and is never kept as runs).
fn encode_columns(
    encoders: &mut [ColumnEncoder],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<(), ParquetError> {
    /// One leaf's share of the batch.
    enum Job<'a> {
        Arrow(&'a mut Box<ArrowColumnWriter>, ArrowLeafColumn),
        Runs(&'a mut RunsColumn, &'a ArrayRef),
    }
    // Levels are worked out first, column by column (cheap: a flat column without nulls has
    // none to compute); the encoding is the work shared out.
    let count = encoders.len();
    let mut jobs = Vec::with_capacity(count);
    let mut next_encoder = encoders.iter_mut().peekable();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        // A column kept as runs is one leaf (flat schemas only) and needs no levels.
        let runs = next_encoder.next_if(|e| matches!(e, ColumnEncoder::Runs(_)));
        if let Some(ColumnEncoder::Runs(runs)) = runs {
            jobs.push(Job::Runs(runs, column));
            continue;
        }
        for leaf in compute_leaves(field, column)? {
            match next_encoder.next() {
                Some(ColumnEncoder::Arrow(writer)) => jobs.push(Job::Arrow(writer, leaf)),
                Some(ColumnEncoder::Runs(_)) => {
                    return Err(ParquetError::General(
                        "a nested column's leaf was given a runs encoder".into(),
                    ))
                }
                None => {
                    return Err(ParquetError::General(format!(
                        "more leaf columns than the {count} column encoders"
                    )))
                }
            }
        }
    }
    if next_encoder.next().is_some() {
        return Err(ParquetError::General(
            "fewer leaf columns than column encoders".into(),
        ));
    }
    // On rayon's pool, whose threads live as long as the process: a thread started per slice
    // began with an empty allocator heap, so every slice's page buffers were fresh memory the
    // kernel had to fault in and zero.
    use rayon::prelude::*;
    jobs.into_par_iter()
        .with_max_len(1)
        .try_for_each(|job| match job {
            Job::Arrow(writer, leaf) => writer.write(&leaf),
            Job::Runs(runs, column) => runs.push(column.as_ref()),
        })
}

/// Closes a row group's column encoders and appends their chunks to `file`, in column order.
/// The file's buffer is first grown to hold them all: appended as they come, a base file of
/// 8 MB was copied as its buffer doubled, each time into memory the kernel had to fault in.
fn close_row_group(
    file: &mut SerializedFileWriter<&mut Vec<u8>>,
    encoders: Vec<ColumnEncoder>,
    props: &WriterProperties,
) -> Result<(), ParquetError> {
    /// A column's encoded chunk, ready to append.
    enum Closed {
        Arrow(ArrowColumnChunk),
        Runs(Bytes, ColumnCloseResult),
    }
    let closed = encoders
        .into_iter()
        .map(|encoder| match encoder {
            ColumnEncoder::Arrow(writer) => writer.close().map(Closed::Arrow),
            ColumnEncoder::Runs(runs) => runs
                .finish(props)
                .map(|(chunk, close)| Closed::Runs(chunk, close)),
        })
        .collect::<Result<Vec<_>, ParquetError>>()?;
    let bytes: i64 = closed
        .iter()
        .map(|c| match c {
            Closed::Arrow(chunk) => chunk.close().metadata.compressed_size(),
            Closed::Runs(_, close) => close.metadata.compressed_size(),
        })
        .sum();
    file.inner_mut()
        .reserve(usize::try_from(bytes).unwrap_or(0));
    let mut group = file.next_row_group()?;
    for chunk in closed {
        match chunk {
            Closed::Arrow(chunk) => chunk.append_to_row_group(&mut group)?,
            Closed::Runs(chunk, close) => group.append_column(&chunk, close)?,
        }
    }
    group.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray, StructArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, from: i64, rows: i64) -> RecordBatch {
        let numbers: Vec<i64> = (from..from + rows).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    numbers.iter().map(|n| format!("key-{n:05}")),
                )) as ArrayRef,
                Arc::new(Int64Array::from(numbers.clone())),
                Arc::new(StringArray::from_iter_values(numbers.iter().map(|n| {
                    if n % 3 == 0 {
                        "same"
                    } else {
                        "other"
                    }
                }))),
                // A nested column: two leaves, so writers and columns do not line up one to one.
                Arc::new(StructArray::from(vec![
                    (
                        Arc::new(Field::new("a", DataType::Int32, true)),
                        Arc::new(Int32Array::from_iter_values(
                            numbers.iter().map(|n| *n as i32),
                        )) as ArrayRef,
                    ),
                    (
                        Arc::new(Field::new("b", DataType::Utf8, true)),
                        Arc::new(StringArray::from_iter_values(
                            numbers.iter().map(|n| format!("b{}", n % 7)),
                        )) as ArrayRef,
                    ),
                ])),
            ],
        )
        .unwrap()
    }

    /// Column by column on several threads, a nested column among them (so no column is kept as
    /// runs), row groups split inside a batch: the same bytes as arrow's own writer given the same
    /// batches and properties.
    #[test]
    fn columns_encoded_side_by_side_make_the_bytes_of_arrows_writer() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("_hoodie_record_key", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "nested",
                DataType::Struct(
                    vec![
                        Field::new("a", DataType::Int32, true),
                        Field::new("b", DataType::Utf8, true),
                    ]
                    .into(),
                ),
                true,
            ),
        ]));
        let props = || {
            let base = base_file_properties("{}", ("key-00000", "key-00249"));
            base.into_builder()
                .set_max_row_group_row_count(Some(100))
                .build()
        };
        let batches = || {
            [(0, 70), (70, 70), (140, 0), (140, 110)]
                .into_iter()
                .map(|(from, rows)| Ok(batch(&schema, from, rows)))
        };
        let ours = encode_parquet(schema.clone(), batches(), props()).unwrap();
        let mut arrows = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut arrows, schema.clone(), Some(props())).unwrap();
        for b in batches() {
            writer.write(&b.unwrap()).unwrap();
        }
        writer.close().unwrap();
        assert_eq!(ours, arrows);

        let reader =
            datafusion::parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(ours))
                .unwrap();
        use datafusion::parquet::file::reader::FileReader;
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, vec![100, 100, 50]);
    }

    /// The merge hands over one-value columns (a file's name on every row) as a dictionary
    /// array ([`super::super::merge::repeated`]); the file must be the one the repeated strings
    /// make.
    #[test]
    fn a_dictionary_column_makes_the_bytes_of_the_strings_it_stands_for() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("_hoodie_file_name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let name = "2b5c1c1e-0_1-0-0_20261204000000000.parquet";
        let rows = 300;
        let numbers = || Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef;
        let strings = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    name, rows,
                ))),
                numbers(),
            ],
        )
        .unwrap();
        let dictionary = super::super::merge::repeated(name, rows);
        let dictionary_schema = Arc::new(Schema::new(vec![
            Field::new("_hoodie_file_name", dictionary.data_type().clone(), true),
            Field::new("n", DataType::Int64, true),
        ]));
        let dictionary =
            RecordBatch::try_new(dictionary_schema, vec![dictionary, numbers()]).unwrap();
        let encode = |batch: RecordBatch| {
            encode_base_file(schema.clone(), [Ok(batch)], "{}", ("a", "b")).unwrap()
        };
        assert_eq!(encode(dictionary), encode(strings));
    }

    /// Columns whose values come in long runs are encoded per run (a dictionary page and RLE
    /// runs, [`super::super::runs_chunk`]): read back by arrow-rs with its page index, whole and
    /// through a row selection that skips pages, they are the rows written, across data pages,
    /// row groups and batches, nulls included; their statistics are those of the rows.
    #[test]
    fn columns_of_long_runs_are_read_back_whole_with_their_statistics() {
        use datafusion::arrow::array::{Date32Array, TimestampMicrosecondArray};
        use datafusion::arrow::compute::{cast, concat_batches};
        use datafusion::arrow::datatypes::TimeUnit;
        use datafusion::parquet::arrow::arrow_reader::{
            ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
        };
        use datafusion::parquet::arrow::ArrowSchemaConverter;
        use datafusion::parquet::basic::Encoding;
        use datafusion::parquet::file::metadata::PageIndexPolicy;
        use datafusion::parquet::file::statistics::Statistics;

        let rows = 5_000usize;
        let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("province", DataType::Utf8, true),
            Field::new("store", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
            Field::new("time", time.clone(), true),
            Field::new("count", DataType::Int32, true),
            Field::new("big", DataType::Int64, true),
            Field::new("item", DataType::Utf8, true),
        ]));
        let province = StringArray::from_iter(
            (0..rows).map(|r| (!(1_500..2_600).contains(&r)).then_some("IL")),
        );
        let store =
            StringArray::from_iter_values((0..rows).map(|r| format!("s{:03}", 150 - r / 700)));
        let day = Date32Array::from_iter_values((0..rows).map(|r| 20_500 + (r / 1_200) as i32));
        let times = TimestampMicrosecondArray::from_iter_values(
            (0..rows).map(|r| 1_772_000_000_000_000 + (r / 900) as i64 * 1_000_000),
        )
        .with_timezone("UTC");
        let count = Int32Array::from_iter_values((0..rows).map(|r| -((r / 2_000) as i32)));
        let big = Int64Array::from_iter(
            (0..rows)
                .map(|r| (!(4_000..4_100).contains(&r)).then_some(i64::MAX - (r / 333) as i64)),
        );
        let item = StringArray::from_iter_values((0..rows).map(|r| format!("i{r:05}")));
        let all = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(province) as ArrayRef,
                Arc::new(store),
                Arc::new(day),
                Arc::new(times),
                Arc::new(count),
                Arc::new(big),
                Arc::new(item),
            ],
        )
        .unwrap();
        let props = base_file_properties("{}", ("a", "b"))
            .into_builder()
            .set_max_row_group_row_count(Some(2_000))
            .set_data_page_row_count_limit(300)
            .build();
        let batches = [(0, 1_234), (1_234, 0), (1_234, rows - 1_234)]
            .map(|(from, len)| Ok(all.slice(from, len)));
        let file = Bytes::from(encode_parquet(schema.clone(), batches, props.clone()).unwrap());

        let read = |selection: Option<RowSelection>| {
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let mut builder =
                ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), options)
                    .unwrap();
            if let Some(selection) = selection {
                builder = builder.with_row_selection(selection);
            }
            let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
            concat_batches(&schema, &batches).unwrap()
        };
        assert_eq!(read(None), all);
        let selection = RowSelection::from(vec![
            RowSelector::skip(2_450),
            RowSelector::select(700),
            RowSelector::skip(1_000),
            RowSelector::select(850),
        ]);
        let expected = concat_batches(&schema, &[all.slice(2_450, 700), all.slice(4_150, 850)]);
        assert_eq!(read(Some(selection)), expected.unwrap());

        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let metadata = ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), options)
            .unwrap()
            .metadata()
            .clone();
        assert_eq!(metadata.num_row_groups(), 3);
        let pages = metadata.offset_index().expect("an offset index");
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let range = g * 2_000..((g + 1) * 2_000).min(rows);
            let group: &datafusion::parquet::file::metadata::RowGroupMetaData = group;
            for (c, chunk) in group.columns().iter().take(6).enumerate() {
                let name = chunk.column_path().string();
                assert!(chunk.dictionary_page_offset().is_some(), "{name}");
                assert!(
                    chunk.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
                    "{name}"
                );
                // Pages of the row count limit, the offset index pointing at each.
                let first_rows: Vec<i64> = pages[g][c]
                    .page_locations()
                    .iter()
                    .map(|p| p.first_row_index)
                    .collect();
                let expected: Vec<i64> = (0..range.len() as i64).step_by(300).collect();
                assert_eq!(first_rows, expected, "{name} in row group {g}");
                let column = all.column(c).slice(range.start, range.len());
                let nulls = column.null_count() as u64;
                let stats = chunk.statistics().expect("statistics");
                assert_eq!(stats.null_count_opt(), Some(nulls), "{name}");
                let column = match column.data_type() {
                    DataType::Date32 => cast(&column, &DataType::Int32).unwrap(),
                    DataType::Timestamp(..) => cast(&column, &DataType::Int64).unwrap(),
                    _ => column,
                };
                let (min, max) = match stats {
                    Statistics::ByteArray(s) => (
                        s.min_opt().map(|v| v.as_utf8().unwrap().to_string()),
                        s.max_opt().map(|v| v.as_utf8().unwrap().to_string()),
                    ),
                    Statistics::Int32(s) => (
                        s.min_opt().map(|v| v.to_string()),
                        s.max_opt().map(|v| v.to_string()),
                    ),
                    Statistics::Int64(s) => (
                        s.min_opt().map(|v| v.to_string()),
                        s.max_opt().map(|v| v.to_string()),
                    ),
                    other => panic!("{name}: {other:?}"),
                };
                let text = cast(&column, &DataType::Utf8).unwrap();
                let text = text.as_any().downcast_ref::<StringArray>().unwrap();
                let mut values: Vec<&str> = text.iter().flatten().collect();
                if matches!(column.data_type(), DataType::Utf8) {
                    values.sort();
                } else {
                    values.sort_by_key(|v| v.parse::<i64>().unwrap());
                }
                let expected = (
                    values.first().map(|v| v.to_string()),
                    values.last().map(|v| v.to_string()),
                );
                assert_eq!((min, max), expected, "{name} in row group {g}");
            }
        }
        // The first six columns were encoded by runs; item numbers, all different, by arrow's
        // writer.
        let descriptors = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let suits: Vec<bool> = (0..7)
            .map(|c| RunsColumn::suits(&descriptors.column(c), &props, all.column(c).as_ref()))
            .collect();
        assert_eq!(suits, [true, true, true, true, true, true, false]);
    }

    #[tokio::test]
    async fn local_base_files_are_put_then_synced_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let mut table = HudiTable::in_memory(&["k"], BTreeMap::new());
        table.location = Location::create(&url).await.unwrap();
        let relatives: Vec<String> = (0..10)
            .map(|n| format!("2026-03-0{}/f{n}.parquet", n % 3))
            .collect();
        for (n, relative) in relatives.iter().enumerate() {
            let size = table
                .put_base_file(relative, vec![n as u8; 1000 + n])
                .await
                .unwrap();
            assert_eq!(size, 1000 + n as u64);
        }
        table.sync_local(&relatives).unwrap();
        let on_disk = std::fs::read(dir.path().join(&relatives[7])).unwrap();
        assert_eq!(on_disk, vec![7u8; 1007]);

        let mut with_missing = relatives.clone();
        with_missing.insert(4, "2026-03-09/gone.parquet".into());
        let e = table.sync_local(&with_missing).unwrap_err().to_string();
        assert!(e.contains("cannot sync 2026-03-09/gone.parquet"), "{e}");
    }
}
