//! A Hudi copy-on-write table on object storage: its configuration (`hoodie.properties`), its
//! partitions and base files, and reading and writing those files.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter};
use datafusion::parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use datafusion::parquet::schema::types::ColumnPath;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::properties;
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
    pub fn sync_local(&self, relatives: &[String]) -> Result<(), TableError> {
        let Some(root) = &self.location.local_root else {
            return Ok(());
        };
        let mut folders = std::collections::BTreeSet::new();
        for relative in relatives {
            let path = root.join(relative);
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&path).map_err(|e| self.failed(format!("cannot sync {relative}"), e))?;
            if path.is_file() {
                if let Some(parent) = path.parent() {
                    folders.insert(parent.to_path_buf());
                }
            }
        }
        for folder in folders {
            std::fs::File::open(&folder)
                .and_then(|f| f.sync_all())
                .map_err(|e| self.failed(format!("cannot sync {}", folder.display()), e))?;
        }
        Ok(())
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
    pub async fn put_base_file(&self, relative: &str, bytes: Vec<u8>) -> Result<u64, TableError> {
        let size = bytes.len() as u64;
        self.put(relative, bytes).await?;
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

/// A base file's bytes: `batches` (in `schema`) as Snappy-compressed Parquet, with the Avro
/// schema and the record key range Hudi's readers and index expect in its footer. The batches are
/// taken one at a time, so only one of them and the encoded file are in memory at once. CPU work,
/// meant for a blocking thread.
///
/// A batch's columns are encoded side by side on the machine's cores (each column has its own
/// writer; the row group is put together in column order when it closes), so the last file
/// groups of an upsert, or a table's only one, do not leave cores idle. The bytes are those of a
/// plain `ArrowWriter`: the same column writers, row groups of its maximum row count.
pub fn encode_base_file(
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch, ArrowError>>,
    avro_schema: &str,
    key_range: (&str, &str),
) -> Result<Vec<u8>, ParquetError> {
    encode_parquet(
        schema,
        batches,
        base_file_properties(avro_schema, key_range),
    )
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
fn encode_parquet(
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<RecordBatch, ArrowError>>,
    props: WriterProperties,
) -> Result<Vec<u8>, ParquetError> {
    let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
    let mut buffer = Vec::with_capacity(1 << 20);
    let (mut file, factory) =
        ArrowWriter::try_new(&mut buffer, schema.clone(), Some(props))?.into_serialized_writer()?;
    // The row group being written: its column writers and rows so far.
    let mut open: Option<(Vec<ArrowColumnWriter>, usize)> = None;
    let mut groups = 0;
    for batch in batches {
        let mut batch = batch?;
        while batch.num_rows() > 0 {
            let (columns, rows) = match &mut open {
                Some(group) => group,
                slot => slot.insert((factory.create_column_writers(groups)?, 0)),
            };
            let take = batch.num_rows().min(max_rows - *rows);
            encode_columns(columns, &schema, &batch.slice(0, take))?;
            *rows += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if *rows == max_rows {
                let (columns, _) = open.take().expect("a row group is open");
                close_row_group(&mut file, columns)?;
                groups += 1;
            }
        }
    }
    if let Some((columns, _)) = open {
        close_row_group(&mut file, columns)?;
    }
    file.close()?;
    Ok(buffer)
}

/// Encodes `batch`'s columns into their writers, a Parquet leaf column per task on as many
/// threads as there are cores (each thread takes the next leaf left). Writers are per leaf, in
/// schema order: a nested column (a struct, a list) has several.
fn encode_columns(
    writers: &mut [ArrowColumnWriter],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<(), ParquetError> {
    use std::sync::Mutex;
    // Levels are worked out first, column by column (cheap: a flat column without nulls has
    // none to compute); the encoding is the work shared out.
    let mut leaves = Vec::with_capacity(writers.len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        leaves.extend(compute_leaves(field, column)?);
    }
    if leaves.len() != writers.len() {
        return Err(ParquetError::General(format!(
            "{} leaf columns for {} column writers",
            leaves.len(),
            writers.len()
        )));
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(writers.len());
    if threads <= 1 {
        return writers
            .iter_mut()
            .zip(&leaves)
            .try_for_each(|(writer, leaf)| writer.write(leaf));
    }
    let queue = Mutex::new(writers.iter_mut().zip(&leaves));
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    while let Some((writer, leaf)) = next() {
                        writer.write(leaf)?;
                    }
                    Ok::<(), ParquetError>(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(ParquetError::General("a column encoder panicked".into())))
        })
    })
}

/// Closes a row group's column writers and appends their chunks to `file`, in column order.
fn close_row_group<W: std::io::Write + Send>(
    file: &mut SerializedFileWriter<W>,
    columns: Vec<ArrowColumnWriter>,
) -> Result<(), ParquetError> {
    let mut group = file.next_row_group()?;
    for column in columns {
        column.close()?.append_to_row_group(&mut group)?;
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

    /// Column by column on several threads, a nested column among them, row groups split inside
    /// a batch: the same bytes as arrow's own writer given the same batches and properties.
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
}
