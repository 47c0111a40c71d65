//! The input table of a job and its scan: the plan node that reads a job's files.
//!
//! [`InputTable`] is what a job's SQL sees as its input table. Scanning it makes an
//! [`InputScanExec`] over a *work list*: a small in-memory source whose partition `p` holds one
//! row per file that partition `p` reads (folder, name, URL, size, time, format, rank; groups
//! balanced by size, see [`InputSpec::new`]). The scan itself holds only how to read (the layout's
//! columns, the bad-row tolerance, the columns kept, as a [`ReadSpec`]). A job that declares a
//! `file_key` has its files grouped by key range instead ([`InputTable::in_key_ranges`]), and its
//! scan says so in its output partitioning (see [`super::file_keys`]).
//!
//! Why a work list rather than files inside the scan: a plan can then be written down and run
//! elsewhere piece by piece. Ballista (the `distributed` feature) gives each task a slice of a
//! stage's partitions and cuts the leaves it knows, such as memory sources, to that slice; the
//! scan, above the leaf, then reads exactly its task's files, and a rebuilt scan reads exactly the
//! rows a local run reads.
//!
//! A scan built here reads files whose stores are already open; a rebuilt one opens each folder
//! when it first needs it (opening an S3 folder is asynchronous: credentials, region).
//!
//! The scan's metrics carry its reading figures (`input_rows`, `input_bytes`, `bad_rows`), so a
//! run's profile shows them, and a cluster run adds them up from its executors.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, UInt64Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::cast::{as_int64_array, as_string_array, as_uint64_array};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr, RangePartitioning,
    SplitPoint,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{Count, Metric, MetricValue, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::file_keys::{KeyCheck, KeyRanges};
use super::{
    csv_file, input_schema, parquet_file, InputFile, InputFormat, RankedFile, ScanColumns,
    SourceStats,
};
use crate::layout::{ColumnType, Layout, LayoutError};
use crate::storage::Location;

/// Metric names of the scan's reading figures.
pub const INPUT_ROWS_METRIC: &str = "input_rows";
pub const INPUT_BYTES_METRIC: &str = "input_bytes";
pub const BAD_ROWS_METRIC: &str = "bad_rows";

/// One input file as data: where it is, and what the readers need to know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSpec {
    /// The folder's URL as [`Location::open`] takes it (`file:///abs/dir`, `s3://bucket/prefix`).
    pub folder: String,
    /// The file's name inside the folder.
    pub name: String,
    /// The file's URL (the `source_file` lineage value).
    pub url: String,
    pub size: u64,
    /// `source_time` in microseconds since the epoch.
    pub source_time_micros: i64,
    pub format: InputFormat,
    /// The file's rank among the job's files, oldest first.
    pub rank: i64,
}

/// A layout as data: its name and its columns' names and types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutSpec {
    pub name: String,
    /// (column name, type name as layouts write it, e.g. `decimal(18,2)`).
    pub columns: Vec<(String, String)>,
}

impl LayoutSpec {
    fn of(layout: &Layout) -> LayoutSpec {
        LayoutSpec {
            name: layout.name.clone(),
            columns: layout
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.to_string()))
                .collect(),
        }
    }

    fn layout(&self) -> Result<Layout, LayoutError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for (name, ty) in &self.columns {
            let ty = ColumnType::from_name(ty).ok_or_else(|| LayoutError::Invalid {
                path: "the scan's layout".into(),
                message: format!("column `{name}` has unknown type `{ty}`"),
            })?;
            columns.push(crate::layout::ColumnSpec {
                name: name.clone(),
                ty,
            });
        }
        Ok(Layout::from_columns(&self.name, columns))
    }
}

/// Everything a scan of a job's input reads, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub layout: LayoutSpec,
    /// The scan's partitions: each reads its files one after another.
    pub groups: Vec<Vec<FileSpec>>,
    /// Bad rows tolerated before the read fails.
    pub max_bad_rows: u64,
}

impl InputSpec {
    /// The spec of a scan over `files` in `partitions` partitions. As many files are parsed at
    /// once as there are partitions, so a province of hundreds of files neither oversubscribes
    /// the CPU nor holds hundreds of read buffers; the largest file goes first onto the least
    /// loaded group, so shares are balanced by size.
    pub fn new(
        files: &[RankedFile],
        layout: &Layout,
        partitions: usize,
        max_bad_rows: u64,
    ) -> InputSpec {
        let mut groups: Vec<(u64, Vec<usize>)> =
            vec![(0, Vec::new()); partitions.clamp(1, files.len().max(1))];
        let mut by_size: Vec<usize> = (0..files.len()).collect();
        by_size.sort_by(|&a, &b| {
            let (a, b) = (&files[a].file, &files[b].file);
            b.size.cmp(&a.size).then_with(|| a.url.cmp(&b.url))
        });
        for i in by_size {
            let group = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .expect("at least one group");
            group.0 += files[i].file.size.max(1);
            group.1.push(i);
        }
        let groups: Vec<Vec<usize>> = groups.into_iter().map(|(_, files)| files).collect();
        InputSpec::of_groups(files, &groups, layout, max_bad_rows)
    }

    /// The spec of a scan whose partition `p` reads the files `groups[p]` indexes.
    fn of_groups(
        files: &[RankedFile],
        groups: &[Vec<usize>],
        layout: &Layout,
        max_bad_rows: u64,
    ) -> InputSpec {
        let spec = |ranked: &RankedFile| FileSpec {
            folder: ranked.file.folder.clone(),
            name: ranked.file.name.clone(),
            url: ranked.file.url.clone(),
            size: ranked.file.size,
            source_time_micros: ranked.file.source_time.timestamp_micros(),
            format: ranked.file.format,
            rank: ranked.rank,
        };
        InputSpec {
            layout: LayoutSpec::of(layout),
            groups: groups
                .iter()
                .map(|group| group.iter().map(|&i| spec(&files[i])).collect())
                .collect(),
            max_bad_rows,
        }
    }
}

/// The columns of the scan's work list: one row per file, as [`FileSpec`] holds it.
fn work_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("folder", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new("source_time_micros", DataType::Int64, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, false),
    ]))
}

/// One partition's files as a work-list batch.
fn work_batch(files: &[FileSpec]) -> Result<RecordBatch> {
    let text = |f: fn(&FileSpec) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(files.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|f| &f.folder),
        text(|f| &f.name),
        text(|f| &f.url),
        Arc::new(UInt64Array::from_iter_values(files.iter().map(|f| f.size))),
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|f| f.source_time_micros),
        )),
        text(|f| match f.format {
            InputFormat::Csv => "csv",
            InputFormat::Parquet => "parquet",
        }),
        Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.rank))),
    ];
    Ok(RecordBatch::try_new(work_schema(), columns)?)
}

/// Files of a partition whose readers are started before the one being read ends.
const FILES_STARTED_AHEAD: usize = 1;

/// The files a work-list batch names.
fn work_files(batch: &RecordBatch) -> Result<Vec<FileSpec>> {
    let text = |i: usize| as_string_array(batch.column(i));
    let (folder, name, url, format) = (text(0)?, text(1)?, text(2)?, text(5)?);
    let size = as_uint64_array(batch.column(3))?;
    let (time, rank) = (
        as_int64_array(batch.column(4))?,
        as_int64_array(batch.column(6))?,
    );
    (0..batch.num_rows())
        .map(|row| {
            Ok(FileSpec {
                folder: folder.value(row).to_string(),
                name: name.value(row).to_string(),
                url: url.value(row).to_string(),
                size: size.value(row),
                source_time_micros: time.value(row),
                format: match format.value(row) {
                    "csv" => InputFormat::Csv,
                    "parquet" => InputFormat::Parquet,
                    other => {
                        return Err(DataFusionError::Internal(format!(
                            "unknown input format `{other}` in the scan's work list"
                        )))
                    }
                },
                rank: rank.value(row),
            })
        })
        .collect()
}

/// How a scan gets at the files its work list names.
#[derive(Debug, Clone)]
enum Opener {
    /// Built here: the files, their stores open, by URL.
    Known(Arc<HashMap<String, RankedFile>>),
    /// Rebuilt elsewhere: folders opened on first use, once each.
    Folders(Arc<tokio::sync::Mutex<HashMap<String, Location>>>),
}

impl Opener {
    async fn open(&self, spec: &FileSpec) -> Result<RankedFile> {
        let folders = match self {
            Opener::Known(files) => {
                return files.get(&spec.url).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "{} is not one of the scan's files",
                        spec.url
                    ))
                })
            }
            Opener::Folders(folders) => folders,
        };
        let mut folders = folders.lock().await;
        if !folders.contains_key(&spec.folder) {
            let location = Location::open(&spec.folder).await.map_err(|e| {
                DataFusionError::Execution(format!("cannot open input folder: {e}"))
            })?;
            folders.insert(spec.folder.clone(), location);
        }
        let location = &folders[&spec.folder];
        let source_time = DateTime::<Utc>::from_timestamp_micros(spec.source_time_micros)
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "{}: source time {} µs is out of range",
                    spec.url, spec.source_time_micros
                ))
            })?;
        Ok(RankedFile {
            file: InputFile {
                name: spec.name.clone(),
                url: spec.url.clone(),
                folder: spec.folder.clone(),
                store: location.store.clone(),
                path: location.child(&spec.name),
                local_path: location.local_path(&spec.name),
                size: spec.size,
                source_time,
                format: spec.format,
            },
            rank: spec.rank,
        })
    }
}

/// A job's input table: its files as one table of the layout's columns and the lineage columns.
#[derive(Debug)]
pub struct InputTable {
    spec: InputSpec,
    layout: Layout,
    schema: SchemaRef,
    opener: Opener,
    stats: Arc<SourceStats>,
    key_ranges: Option<Arc<ScanKeyRanges>>,
}

/// A scan whose partitions read key ranges (see [`super::file_keys`]): the key column, the
/// ranges' split points, and each file's row check, by URL.
#[derive(Debug)]
struct ScanKeyRanges {
    column: String,
    split_points: Vec<String>,
    checks: HashMap<String, KeyCheck>,
}

impl InputTable {
    /// The table over `files` (their stores open), read in `partitions` partitions; reading
    /// figures and refused rows go to `stats`.
    pub fn new(
        files: &[RankedFile],
        layout: &Layout,
        stats: Arc<SourceStats>,
        partitions: usize,
    ) -> InputTable {
        let by_url = files
            .iter()
            .map(|f| (f.file.url.clone(), f.clone()))
            .collect();
        InputTable {
            spec: InputSpec::new(files, layout, partitions, stats.max_bad_rows),
            schema: input_schema(layout),
            layout: layout.clone(),
            opener: Opener::Known(Arc::new(by_url)),
            stats,
            key_ranges: None,
        }
    }

    /// The table over `files` read in the key ranges `ranges` planned: partition `p` reads the
    /// files of range `p` and checks that each row's key `column` lies in it.
    pub fn in_key_ranges(
        files: &[RankedFile],
        layout: &Layout,
        stats: Arc<SourceStats>,
        ranges: KeyRanges,
        column: &str,
    ) -> InputTable {
        let mut table = InputTable::new(files, layout, stats, 1);
        table.spec = InputSpec::of_groups(files, &ranges.groups, layout, table.stats.max_bad_rows);
        table.key_ranges = Some(Arc::new(ScanKeyRanges {
            column: column.to_string(),
            split_points: ranges.split_points,
            checks: files
                .iter()
                .map(|f| f.file.url.clone())
                .zip(ranges.checks)
                .collect(),
        }));
        table
    }
}

#[async_trait::async_trait]
impl TableProvider for InputTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let work = self
            .spec
            .groups
            .iter()
            .map(|group| work_batch(group).map(|b| vec![b]))
            .collect::<Result<Vec<_>>>()?;
        let work = MemorySourceConfig::try_new_exec(&work, work_schema(), None)?;
        Ok(Arc::new(InputScanExec::new(
            work,
            ReadSpec {
                layout: self.spec.layout.clone(),
                max_bad_rows: self.spec.max_bad_rows,
                projection: projection.cloned(),
            },
            self.layout.clone(),
            self.opener.clone(),
            self.stats.clone(),
            self.key_ranges.clone(),
        )?))
    }
}

/// How a scan reads, as data: the layout, the bad-row tolerance, the columns kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadSpec {
    pub layout: LayoutSpec,
    pub max_bad_rows: u64,
    /// The columns of the layout and lineage kept (`None`: all).
    pub projection: Option<Vec<usize>>,
}

/// What a scan's partitions share to read files: the layout, the schema the readers make, how
/// files are opened, where figures go.
#[derive(Debug)]
struct Readers {
    layout: Layout,
    /// The columns the readers hand on: the scan's projection.
    columns: ScanColumns,
    opener: Opener,
    stats: Arc<SourceStats>,
    /// Set when the partitions read key ranges.
    key_ranges: Option<Arc<ScanKeyRanges>>,
}

impl Readers {
    /// The reader of one file.
    async fn open(&self, spec: &FileSpec) -> Result<Arc<dyn PartitionStream>> {
        let file = self.opener.open(spec).await?;
        let (layout, columns, stats) = (
            self.layout.clone(),
            self.columns.clone(),
            self.stats.clone(),
        );
        let key_check = self
            .key_ranges
            .as_ref()
            .and_then(|r| r.checks.get(&spec.url).cloned());
        Ok(match file.file.format {
            InputFormat::Csv => Arc::new(csv_file::CsvPartition {
                file,
                layout,
                columns,
                stats,
                key_check,
            }),
            InputFormat::Parquet => Arc::new(parquet_file::ParquetPartition {
                file,
                layout,
                columns,
                stats,
                key_check,
            }),
        })
    }

    /// The ordering of the key when the partitions read key ranges and the key is among the
    /// columns kept (`schema`, the projected ones): then each partition's rows are in that
    /// order, and the partitions are its ranges (see [`super::file_keys`]).
    fn key_ordering(&self, schema: &Schema) -> Result<Option<(LexOrdering, Vec<SplitPoint>)>> {
        let Some(ranges) = &self.key_ranges else {
            return Ok(None);
        };
        let Ok(index) = schema.index_of(&ranges.column) else {
            return Ok(None);
        };
        let key = PhysicalSortExpr::new(
            Arc::new(Column::new(&ranges.column, index)),
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        );
        let ordering = LexOrdering::new([key])
            .ok_or_else(|| DataFusionError::Internal("a key range ordering has one key".into()))?;
        let split_points = ranges
            .split_points
            .iter()
            .map(|key| SplitPoint::new(vec![ScalarValue::Utf8(Some(key.clone()))]))
            .collect();
        Ok(Some((ordering, split_points)))
    }

    /// The scan's output properties over `schema` (the projected columns) in `partitions`
    /// partitions: ordered by the key and partitioned in its ranges when it reads key ranges,
    /// neither otherwise.
    fn properties(&self, schema: SchemaRef, partitions: usize) -> Result<PlanProperties> {
        let (equivalences, partitioning) = match self.key_ordering(&schema)? {
            Some((ordering, split_points)) if split_points.len() + 1 == partitions => (
                EquivalenceProperties::new_with_orderings(schema, [ordering.clone()]),
                Partitioning::Range(RangePartitioning::try_new(ordering, split_points)?),
            ),
            _ => (
                EquivalenceProperties::new(schema),
                Partitioning::UnknownPartitioning(partitions),
            ),
        };
        Ok(PlanProperties::new(
            equivalences,
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ))
    }
}

/// The plan node reading a job's input files; see the module docs. Its one input is the work
/// list, a memory source whose partition `p` holds the files partition `p` reads.
#[derive(Debug)]
pub struct InputScanExec {
    work: Arc<dyn ExecutionPlan>,
    read: ReadSpec,
    readers: Arc<Readers>,
    properties: Arc<PlanProperties>,
}

impl InputScanExec {
    /// The node's name in plans and in the metrics a cluster reports.
    pub const NAME: &'static str = "InputScanExec";

    fn new(
        work: Arc<dyn ExecutionPlan>,
        read: ReadSpec,
        layout: Layout,
        opener: Opener,
        stats: Arc<SourceStats>,
        key_ranges: Option<Arc<ScanKeyRanges>>,
    ) -> Result<InputScanExec> {
        let readers = Arc::new(Readers {
            columns: ScanColumns::new(&layout, read.projection.as_deref())?,
            layout,
            opener,
            stats,
            key_ranges,
        });
        InputScanExec::over(work, read, readers)
    }

    fn over(
        work: Arc<dyn ExecutionPlan>,
        read: ReadSpec,
        readers: Arc<Readers>,
    ) -> Result<InputScanExec> {
        let schema = readers.columns.schema.clone();
        let partitions = work.properties().partitioning.partition_count();
        let properties = readers.properties(schema, partitions)?;
        Ok(InputScanExec {
            work,
            read,
            readers,
            properties: Arc::new(properties),
        })
    }

    /// A scan rebuilt from its spec (on another machine) over its work list: it opens the
    /// folders when it first runs, and counts its own reading figures.
    pub fn rebuild(work: Arc<dyn ExecutionPlan>, read: ReadSpec) -> Result<InputScanExec> {
        let layout = read
            .layout
            .layout()
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let stats = Arc::new(SourceStats::new(read.max_bad_rows));
        InputScanExec::new(
            work,
            read,
            layout,
            Opener::Folders(Default::default()),
            stats,
            None,
        )
    }

    /// How this scan reads.
    pub fn read_spec(&self) -> &ReadSpec {
        &self.read
    }
}

impl DisplayAs for InputScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: layout={}, partitions={}",
            Self::NAME,
            self.read.layout.name,
            self.properties.partitioning.partition_count()
        )?;
        if let Some(ranges) = &self.readers.key_ranges {
            write!(
                f,
                ", {} ranges from {:?}",
                ranges.column, ranges.split_points
            )?;
        }
        if self.read.projection.is_some() {
            let names: Vec<&str> = (self.readers.columns.schema.fields().iter())
                .map(|field| field.name().as_str())
                .collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

/// The one input of a plan node given new children (`ExecutionPlan::with_new_children`), or an
/// internal error saying `expected` when there are not exactly one.
pub fn only_child(
    mut children: Vec<Arc<dyn ExecutionPlan>>,
    expected: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(child), true) => Ok(child),
        _ => Err(DataFusionError::Internal(expected.into())),
    }
}

impl ExecutionPlan for InputScanExec {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.work]
    }

    // Partition `p` reads exactly the files of the work list's partition `p`: the work list is
    // never repartitioned.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let work = only_child(children, "InputScanExec has one input, its work list")?;
        Ok(Arc::new(InputScanExec::over(
            work,
            self.read.clone(),
            self.readers.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let work = self.work.execute(partition, ctx.clone())?;
        let schema = self.schema();
        let readers = self.readers.clone();
        // Each work row is one file, its rows given in the files' order. The next file is opened
        // and its reader started (on a task of its own: a stream is only polled for its next
        // file when the current one ends) while the current one is read. A reader's first batch
        // takes a thread start and a parse, and a partition that waited for it at every file
        // left its core idle for part of a 1.8M-transaction run (150 files of a dozen thousand
        // rows each). Dropping the scan drops the tasks, which aborts them.
        let batches = work
            .map(|batch| batch.and_then(|b| work_files(&b)))
            .map_ok(|files| futures::stream::iter(files.into_iter().map(Ok::<_, DataFusionError>)))
            .try_flatten()
            .map_ok(move |spec| {
                let readers = readers.clone();
                let ctx = ctx.clone();
                let started = SpawnedTask::spawn(async move {
                    readers.open(&spec).await.map(|reader| reader.execute(ctx))
                });
                async move {
                    started
                        .join()
                        .await
                        .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?
                }
            })
            .try_buffered(FILES_STARTED_AHEAD + 1)
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let stats = &self.readers.stats;
        let mut set = MetricsSet::new();
        for (name, value) in [
            (INPUT_ROWS_METRIC, stats.rows_in()),
            (
                INPUT_BYTES_METRIC,
                stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (BAD_ROWS_METRIC, stats.bad_rows()),
        ] {
            let count = Count::new();
            count.add(value as usize);
            set.push(Arc::new(Metric::new(
                MetricValue::Count {
                    name: name.into(),
                    count,
                },
                None,
            )));
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::LayoutSet;

    use super::super::test_file as file;

    #[test]
    fn groups_are_balanced_by_size_largest_first() {
        let layouts = LayoutSet::embedded();
        let layout = layouts.by_name("pos_transactions").unwrap();
        let files = [
            file("a", 100, 1),
            file("b", 60, 2),
            file("c", 50, 3),
            file("d", 10, 4),
        ];
        let spec = InputSpec::new(&files, layout, 2, 7);
        let names: Vec<Vec<&str>> = spec
            .groups
            .iter()
            .map(|g| g.iter().map(|f| f.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "d"], vec!["b", "c"]]);
        assert_eq!(spec.max_bad_rows, 7);
    }

    #[test]
    fn a_read_spec_survives_json_and_rebuilds_the_same_layout() {
        let layouts = LayoutSet::embedded();
        let layout = layouts.by_name("pos_transactions").unwrap();
        let read = ReadSpec {
            layout: LayoutSpec::of(layout),
            max_bad_rows: 3,
            projection: Some(vec![0, 2]),
        };
        let text = serde_json::to_string(&read).unwrap();
        let back: ReadSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, read);
        assert_eq!(back.layout.layout().unwrap().columns, layout.columns);
        let work =
            MemorySourceConfig::try_new_exec(&[vec![], vec![]], work_schema(), None).unwrap();
        let scan = InputScanExec::rebuild(work, back).unwrap();
        assert_eq!(scan.schema().fields().len(), 2);
        assert_eq!(scan.properties().partitioning.partition_count(), 2);
    }

    #[test]
    fn work_lists_name_the_files_they_were_made_of() {
        let layouts = LayoutSet::embedded();
        let layout = layouts.by_name("pos_transactions").unwrap();
        let mut parquet = file("b", 60, 2);
        parquet.file.format = InputFormat::Parquet;
        let spec = InputSpec::new(&[file("a", 100, 1), parquet], layout, 1, 0);
        let batch = work_batch(&spec.groups[0]).unwrap();
        assert_eq!(work_files(&batch).unwrap(), spec.groups[0]);
    }

    #[test]
    fn a_read_spec_with_an_unknown_type_is_refused() {
        let read = ReadSpec {
            layout: LayoutSpec {
                name: "x".into(),
                columns: vec![("a".into(), "float".into())],
            },
            max_bad_rows: 0,
            projection: None,
        };
        let work = MemorySourceConfig::try_new_exec(&[vec![]], work_schema(), None).unwrap();
        let err = InputScanExec::rebuild(work, read).unwrap_err();
        assert!(err.to_string().contains("unknown type `float`"), "{err}");
    }
}
