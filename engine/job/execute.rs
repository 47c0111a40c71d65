//! Executing a job: list its input files, expose them as one table, run its SQL on DataFusion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{HashSet, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use serde::Serialize;

use super::definition::{DefinitionError, JobDefinition};
use crate::cluster::ClusterTarget;
use crate::layout::format_date;
use crate::progress::Progress;
use crate::sources::{
    files_table, first_keys, list_inputs, ranked, BadRow, InputFile, InputTable, KeyRanges,
    ListingError, MisplacedRow, RankedFile, SourceStats,
};
use crate::storage::{Location, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Listing(#[from] ListingError),
    #[error("no input files for {what} in {input} (looked for {patterns})")]
    NoInputFiles {
        what: String,
        input: String,
        patterns: String,
    },
    #[error("job `{job}` failed: {source}")]
    Query {
        job: String,
        #[source]
        source: DataFusionError,
    },
    #[error("job `{job}` failed: the query needs more than --memory-limit {limit_mib} MiB even when spilling to disk; raise --memory-limit ({source})")]
    MemoryLimit {
        job: String,
        limit_mib: u64,
        #[source]
        source: DataFusionError,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("job `{job}` failed: the cluster's executors refused {bad_rows} bad input rows, more than --max-bad-rows {limit} (each row is named in the executors' logs)")]
    TooManyBadRows {
        job: String,
        bad_rows: u64,
        limit: u64,
    },
    #[error(
        "job `{job}` output has no column `{column}` declared as its {role} (columns: {columns})"
    )]
    MissingOutputColumn {
        job: String,
        column: String,
        role: &'static str,
        columns: String,
    },
    #[error("job `{job}` produced {count} rows with an already-seen record key, e.g. {example}; its SQL must make exactly one row per key")]
    DuplicateKeys {
        job: String,
        count: usize,
        example: String,
    },
}

/// A DataFusion (or Arrow) error while planning or running `job`'s SQL.
fn query_err(job: &JobDefinition, e: impl Into<DataFusionError>) -> RunError {
    RunError::Query {
        job: job.name.clone(),
        source: e.into(),
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job: JobDefinition,
    pub params: BTreeMap<String, String>,
    /// Folder of validated input files (local path, `file://` or `s3://`).
    pub input: String,
    /// Bad input rows tolerated (skipped and reported) before the run fails.
    pub max_bad_rows: u64,
    /// Memory the query may hold (hash tables, sort buffers); beyond it, aggregations and sorts
    /// spill to temporary files. `None`: [`DEFAULT_MEMORY_LIMIT`].
    pub memory_limit: Option<u64>,
    /// Run the query on this Ballista cluster instead of in this process (`None`: here).
    pub cluster: Option<ClusterTarget>,
}

/// The query's memory budget when none is given. At 1 GiB the 10M-transaction province spilled its
/// final aggregation and sort (11.5 s); at 2 GiB it does not (6.4 s, 1.48 GB peak), and the 50M
/// province, which spills either way, still peaks at 1.48 GB (measured on the dry run with
/// `/usr/bin/time -v`; benches/HISTORY.md).
pub const DEFAULT_MEMORY_LIMIT: u64 = 2 << 30;

/// Sees a job's rows while the query makes them, for a sink that writes before the run ends
/// ([`crate::sinks::Sink::observe`]). What it sees is provisional: `begin` starts every attempt
/// (a run that reads its input again without key ranges begins twice), and the run's own checks
/// (bad rows, unique keys) come after the last row, so an observer keeps what it writes
/// invisible until the run publishes it.
pub trait RowObserver: Send + Sync {
    /// An attempt starts; rows seen before it are void.
    fn begin(&self, schema: &SchemaRef);
    /// The attempt's next rows, in the order of the run's result.
    fn rows(&self, batch: &RecordBatch);
}

/// The rows a run made, and what it read.
#[derive(Debug)]
pub struct RunResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub summary: RunSummary,
    /// The physical plan as it ran, its operators' metrics filled in.
    pub plan: Arc<dyn ExecutionPlan>,
}

impl RunResult {
    /// Each operator of the plan as it ran, with its metrics (rows, time, memory, spills), as
    /// DataFusion's `EXPLAIN ANALYZE` shows them: where a run's time went.
    pub fn profile(&self) -> String {
        DisplayableExecutionPlan::with_metrics(self.plan.as_ref())
            .indent(true)
            .to_string()
    }
}

/// Figures for the end-of-run summary and the state store.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub job: String,
    pub params: BTreeMap<String, String>,
    pub input: String,
    pub files: Vec<String>,
    pub bytes_in: u64,
    pub rows_in: u64,
    pub bad_rows: u64,
    pub bad_row_samples: Vec<BadRow>,
    pub rows_out: u64,
    pub seconds: f64,
}

impl RunSummary {
    pub fn line(&self) -> String {
        format!(
            "{} files, {} bytes, {} rows in, {} bad rows, {} rows out, {:.2}s",
            self.files.len(),
            self.bytes_in,
            self.rows_in,
            self.bad_rows,
            self.rows_out,
            self.seconds
        )
    }
}

/// The cores DataFusion runs on: one partition each.
fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A DataFusion session sized for this machine, with unbounded memory (planning, small queries).
pub fn session() -> SessionContext {
    session_with_memory_limit(None, Plans::Local)
}

/// Where a session's plans run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// Here: with tally's own plan nodes for inputs read in key order ([`super::ordering`]).
    Local,
    /// On a cluster, whose executors know DataFusion's plan nodes (and tally's input scan) only.
    Cluster,
}

/// A DataFusion session whose operators share `limit` bytes of memory fairly and spill to
/// temporary files beyond it (`None`: no limit).
pub fn session_with_memory_limit(limit: Option<u64>, plans: Plans) -> SessionContext {
    let cores = available_cores();
    // DataFusion's own options can be tuned without a rebuild through its environment variables
    // (`DATAFUSION_EXECUTION_BATCH_SIZE=16384`, ...); tally's defaults apply where none is set.
    let mut config = SessionConfig::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring DATAFUSION_* settings that do not parse");
        SessionConfig::new()
    });
    if std::env::var_os("DATAFUSION_EXECUTION_TARGET_PARTITIONS").is_none() {
        config = config.with_target_partitions(cores);
    }
    // An input already split into as many partitions as there are cores by a key (a scan in key
    // ranges) is not split again by a superset of that key: a GROUP BY on it then aggregates
    // each partition in one pass. DataFusion's default asks for 4 partitions before trusting one.
    if std::env::var_os("DATAFUSION_OPTIMIZER_SUBSET_REPARTITION_THRESHOLD").is_none() {
        let target = config.target_partitions();
        config.options_mut().optimizer.subset_repartition_threshold = target;
    }
    let mut config = config.with_information_schema(false);
    // `VARCHAR` in a job's SQL means plain Utf8, the string type every sink and reader expects.
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    let runtime = match limit.map(|limit| {
        let pool = datafusion::execution::memory_pool::FairSpillPool::new(limit as usize);
        datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
    }) {
        None => None,
        Some(Ok(runtime)) => Some(runtime),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot set up the memory pool; running without a limit");
            None
        }
    };
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features();
    if plans == Plans::Local {
        // After DataFusion's rules: sorts and merges that inputs read in key order make simpler.
        state = state.with_physical_optimizer_rule(Arc::new(super::ordering::KeyOrderRule));
    }
    if let Some(runtime) = runtime {
        state = state.with_runtime_env(runtime);
    }
    let ctx = SessionContext::new_with_state(state.build());
    super::functions::register(&ctx);
    ctx
}

/// The job's parameters as SQL values (`$province` → `'IL'`), bound by DataFusion rather than
/// pasted into the SQL text.
fn param_values(params: &BTreeMap<String, String>) -> Vec<(String, ScalarValue)> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), ScalarValue::Utf8(Some(v.clone()))))
        .collect()
}

/// Lists a job's input files for the given parameters.
pub async fn find_inputs(
    job: &JobDefinition,
    params: &BTreeMap<String, String>,
    input: &str,
) -> Result<(Location, Vec<InputFile>), RunError> {
    job.check_params(params)?;
    let borrowed: BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let patterns = job.input_patterns(&borrowed)?;
    let location = Location::open(input).await?;
    let files = list_inputs(&location, &patterns).await?;
    if files.is_empty() {
        let what = if params.is_empty() {
            format!("job `{}`", job.name)
        } else {
            params
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(RunError::NoInputFiles {
            what,
            input: location.url,
            patterns: patterns.join(", "),
        });
    }
    Ok((location, files))
}

/// Runs a job over its input files and returns its rows.
///
/// A job whose input declares a `file_key` is first run with its files read in key ranges (see
/// [`crate::sources::KeyRanges`]); when a file turns out to hold several keys, that attempt stops
/// at the first such row and the job runs again over the same files, split by size alone.
pub async fn run_job(
    request: &RunRequest,
    progress: &Progress,
    observers: &[Box<dyn RowObserver>],
) -> Result<RunResult, RunError> {
    let started = Instant::now();
    let job = &request.job;
    let (location, files) = find_inputs(job, &request.params, &request.input).await?;
    tracing::info!(job = %job.name, files = files.len(), input = %location.url, "running job");
    let files = ranked(&files);

    // Key ranges are for one machine's cores: a cluster run splits its files by size.
    let key_column = match &request.cluster {
        None => job.input.file_key.as_deref(),
        Some(_) => None,
    };
    let attempt = match key_column {
        Some(column) => match run_once(request, &files, Some(column), progress, observers).await {
            Err(RunError::Query { source, .. }) if MisplacedRow::behind(&source).is_some() => {
                let row = MisplacedRow::behind(&source).map(ToString::to_string);
                tracing::warn!(
                    job = %job.name,
                    row = row.as_deref().unwrap_or_default(),
                    "a file holds more than one value of the job's file_key: reading again without key ranges"
                );
                run_once(request, &files, None, progress, observers).await?
            }
            other => other?,
        },
        None => run_once(request, &files, None, progress, observers).await?,
    };
    let Attempt {
        schema,
        batches,
        plan,
        stats,
        cluster_figures,
    } = attempt;
    let (rows_in, bytes_in, bad_rows) = match cluster_figures {
        Some(f) => (f.rows_in, f.bytes_in, f.bad_rows),
        None => (
            stats.rows_in(),
            stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            stats.bad_rows(),
        ),
    };
    // Executors each hold the tolerance for their own tasks; the run holds it for the sum.
    if bad_rows > request.max_bad_rows {
        return Err(RunError::TooManyBadRows {
            job: job.name.clone(),
            bad_rows,
            limit: request.max_bad_rows,
        });
    }
    check_unique_keys(job, &schema, &batches, &plan)?;

    let summary = RunSummary {
        job: job.name.clone(),
        params: request.params.clone(),
        input: location.url.clone(),
        files: files.iter().map(|f| f.file.url.clone()).collect(),
        bytes_in,
        rows_in,
        bad_rows,
        bad_row_samples: stats
            .bad_samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default(),
        rows_out: batches.iter().map(|b| b.num_rows() as u64).sum(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(RunResult {
        schema,
        batches,
        summary,
        plan,
    })
}

/// Key ranges per core in a local run. More ranges start the rows' delivery earlier (a range's
/// rows wait for the ranges before it) and balance the cores' work better at the end; each
/// range is one more aggregation and sort to set up, and smaller hash tables. Measured against
/// one range per core (2 cores, `tally run` of the benchmark province): at 10M, the dry run 0.93×
/// the wall time and CPU; at 1.8M, the run into a SQLite warehouse 0.86× the wall time (its
/// writer now loads beside the query instead of after it).
const RANGES_PER_CORE: usize = 4;

/// The `partitions` key ranges `job`'s files can be read in, from each file's first key; `None`
/// when the files cannot be split so (see [`KeyRanges::plan`]).
async fn plan_key_ranges(
    job: &JobDefinition,
    files: &[RankedFile],
    column: &str,
    partitions: usize,
) -> Option<KeyRanges> {
    let layout = &job.input.layout;
    let index = layout.columns.iter().position(|c| c.name == column)?;
    let keys = first_keys(files, layout, index).await;
    let ranges = KeyRanges::plan(files, &keys, partitions, index, column);
    match &ranges {
        Some(r) => {
            tracing::debug!(column, split_points = ?r.split_points, "reading the input in key ranges")
        }
        None => tracing::debug!(column, "the input files cannot be read in key ranges"),
    }
    ranges
}

/// One execution of a job's SQL over its files.
struct Attempt {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    plan: Arc<dyn ExecutionPlan>,
    stats: Arc<SourceStats>,
    cluster_figures: Option<crate::cluster::ReadFigures>,
}

/// Plans and runs the job's SQL over `files` (in ranges of `key_column` when given and the files
/// allow it), on a session of its own, with reading figures of its own.
async fn run_once(
    request: &RunRequest,
    files: &[RankedFile],
    key_column: Option<&str>,
    progress: &Progress,
    observers: &[Box<dyn RowObserver>],
) -> Result<Attempt, RunError> {
    let job = &request.job;
    let stats = Arc::new(SourceStats::new(request.max_bad_rows));
    let plans = match request.cluster {
        None => Plans::Local,
        Some(_) => Plans::Cluster,
    };
    let ctx = session_with_memory_limit(
        Some(request.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT)),
        plans,
    );
    if let Some(cluster) = &request.cluster {
        // Every stage of the plan, not only the scan, is cut into the cluster's partitions.
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = cluster.partitions;
    }
    let partitions = ctx.copied_config().target_partitions();
    // Locally, more ranges than cores, run a core's worth at a time in key order (see
    // [`super::ordering::RangeConcatExec`]): each range's rows reach the sinks as soon as the
    // ranges before it are done, instead of the last core's half waiting for the first's.
    let ranges = match plans {
        Plans::Local if partitions > 1 => partitions * RANGES_PER_CORE,
        _ => partitions,
    };
    let key_ranges = match key_column {
        Some(column) => plan_key_ranges(job, files, column, ranges)
            .await
            .map(|ranges| (ranges, column)),
        None => None,
    };
    let table = match key_ranges {
        Some((ranges, column)) => {
            InputTable::in_key_ranges(files, &job.input.layout, stats.clone(), ranges, column)
        }
        None => InputTable::new(files, &job.input.layout, stats.clone(), partitions),
    };
    let bar = progress.bytes("reading", files.iter().map(|f| f.file.size).sum());
    let frame = job_frame(&ctx, job, files, table, &request.params).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    check_output_columns(job, &schema)?;
    let ticker = {
        let (bar, stats) = (bar.clone(), stats.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    // DataFrame::collect, keeping the physical plan: its metrics are the run's profile.
    let task_ctx = Arc::new(frame.task_ctx());
    let plan = frame
        .create_physical_plan()
        .await
        .map_err(|e| query_err(job, e))?;
    for observer in observers {
        observer.begin(&schema);
    }
    let executed = match &request.cluster {
        None => collect_observed(plan.clone(), task_ctx, observers)
            .await
            .map(|batches| (batches, None))
            .map_err(|e| {
                let limit = request.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
                match e.find_root() {
                    DataFusionError::ResourcesExhausted(_) => RunError::MemoryLimit {
                        job: job.name.clone(),
                        limit_mib: limit >> 20,
                        source: e,
                    },
                    _ => query_err(job, e),
                }
            }),
        Some(cluster) => run_on_cluster(plan.clone(), &ctx, job, cluster)
            .await
            // A cluster's rows arrive at once: observers see them after the query.
            .inspect(|(batches, _)| {
                for batch in batches {
                    for observer in observers {
                        observer.rows(batch);
                    }
                }
            })
            .map(|(batches, figures)| (batches, Some(figures))),
    };
    ticker.abort();
    bar.finish_and_clear();
    let (batches, cluster_figures) = executed?;
    Ok(Attempt {
        schema,
        batches,
        plan,
        stats,
        cluster_figures,
    })
}

/// DataFusion's `collect`, showing each batch to the observers as it arrives.
async fn collect_observed(
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<datafusion::execution::TaskContext>,
    observers: &[Box<dyn RowObserver>],
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let mut stream = datafusion::physical_plan::execute_stream(plan, task_ctx)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for observer in observers {
            observer.rows(&batch);
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// Runs the planned job on a Ballista cluster; see [`crate::cluster`].
#[cfg(feature = "distributed")]
async fn run_on_cluster(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
    job: &JobDefinition,
    cluster: &ClusterTarget,
) -> Result<(Vec<RecordBatch>, crate::cluster::ReadFigures), RunError> {
    let name = format!("tally {}", job.name);
    Ok(crate::cluster::execute(plan, &ctx.copied_config(), &name, cluster).await?)
}

#[cfg(not(feature = "distributed"))]
async fn run_on_cluster(
    _plan: Arc<dyn ExecutionPlan>,
    _ctx: &SessionContext,
    _job: &JobDefinition,
    _cluster: &ClusterTarget,
) -> Result<(Vec<RecordBatch>, crate::cluster::ReadFigures), RunError> {
    Err(crate::cluster::ClusterError::NotBuilt {
        what: "run a job on a cluster (--cluster)",
    }
    .into())
}

/// The job's SQL planned in `ctx` over `files` as its input table, its parameters bound.
async fn job_frame(
    ctx: &SessionContext,
    job: &JobDefinition,
    files: &[RankedFile],
    table: InputTable,
    params: &BTreeMap<String, String>,
) -> Result<DataFrame, RunError> {
    ctx.register_table(job.input.table.as_str(), Arc::new(table))
        .map_err(|e| query_err(job, e))?;
    let files_table = files_table(files).map_err(|e| query_err(job, e))?;
    ctx.register_table(format!("{}_files", job.input.table), Arc::new(files_table))
        .map_err(|e| query_err(job, e))?;
    ctx.sql(&job.sql)
        .await
        .and_then(|df| df.with_param_values(param_values(params)))
        .map_err(|e| query_err(job, e))
}

/// The job's SQL planned over an empty input, each parameter set by `value_of`.
async fn plan_over_nothing(
    job: &JobDefinition,
    value_of: impl Fn(&str) -> String,
) -> Result<DataFrame, RunError> {
    let params: BTreeMap<String, String> = job
        .params
        .iter()
        .map(|p| (p.clone(), value_of(p)))
        .collect();
    let table = InputTable::new(&[], &job.input.layout, Arc::new(SourceStats::new(0)), 1);
    job_frame(&session(), job, &[], table, &params).await
}

/// The job's logical and physical plans, as `EXPLAIN` prints them, over an empty input.
pub async fn explain_job(job: &JobDefinition) -> Result<String, RunError> {
    let frame = plan_over_nothing(job, |p| format!("<{p}>")).await?;
    check_output_columns(job, &Arc::new(frame.schema().as_arrow().clone()))?;
    let plans = frame
        .explain(false, false)
        .map_err(|e| query_err(job, e))?
        .collect()
        .await
        .map_err(|e| query_err(job, e))?;
    let mut out = String::new();
    for batch in &plans {
        let kinds = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>();
        let texts = batch
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>();
        if let (Some(kinds), Some(texts)) = (kinds, texts) {
            for (kind, text) in kinds.iter().zip(texts.iter()) {
                out.push_str(&format!(
                    "== {} ==\n{}\n\n",
                    kind.unwrap_or(""),
                    text.unwrap_or("")
                ));
            }
        }
    }
    Ok(out)
}

/// The schema of a job's rows, found by planning it over no input.
pub async fn output_schema(job: &JobDefinition) -> Result<SchemaRef, RunError> {
    let frame = plan_over_nothing(job, |_| String::new()).await?;
    Ok(Arc::new(frame.schema().as_arrow().clone()))
}

fn check_output_columns(job: &JobDefinition, schema: &SchemaRef) -> Result<(), RunError> {
    let declared = job
        .output
        .record_key
        .iter()
        .map(|c| (c, "record key"))
        .chain([
            (&job.output.partition_field, "partition field"),
            (&job.output.precombine_field, "precombine field"),
        ]);
    for (column, role) in declared {
        if schema.index_of(column).is_err() {
            return Err(RunError::MissingOutputColumn {
                job: job.name.clone(),
                column: column.clone(),
                role,
                columns: schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// Sinks rely on one row per record key; a job whose SQL breaks that is stopped here, before
/// anything is written.
///
/// Keys are hashed column-wise (DataFusion's vectorized hashing) and only the hashes are kept: 8
/// bytes a row rather than the key itself. Rows whose hash was already seen are then compared on
/// their actual keys, so a hash collision never passes for a duplicate.
///
/// When `plan` makes its rows ordered by the key, rows of one key are next to each other and
/// each row is compared with the one before it instead, with no set at all.
fn check_unique_keys(
    job: &JobDefinition,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    plan: &Arc<dyn ExecutionPlan>,
) -> Result<(), RunError> {
    use datafusion::common::hash_utils::{create_hashes, RandomState};
    use std::collections::HashMap;
    let indices = record_key_indices(job, schema);
    if ordered_by_record_key(job, &indices, plan) {
        return check_adjacent_keys(job, schema, batches, &indices);
    }
    let random_state = RandomState::with_seed(0);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    // The values are already hashes: foldhash mixes a u64 in a few instructions, where std's
    // SipHash made this check a tenth of a 10M-transaction dry run.
    let mut seen: HashSet<u64> = HashSet::with_capacity_and_hasher(rows, Default::default());
    let mut repeated: HashSet<u64> = HashSet::default();
    let mut hashes = Vec::new();
    for batch in batches {
        hashes.clear();
        hashes.resize(batch.num_rows(), 0);
        create_hashes(key_columns(batch, &indices), &random_state, &mut hashes)
            .map_err(|e| query_err(job, e))?;
        for &hash in &hashes {
            if !seen.insert(hash) {
                repeated.insert(hash);
            }
        }
    }
    if repeated.is_empty() {
        return Ok(());
    }
    // Second pass over the rows whose hash repeats: compare the keys themselves.
    let converter = key_converter(job, schema, &indices)?;
    let mut keys: HashMap<Box<[u8]>, ()> = HashMap::new();
    let mut duplicates = 0usize;
    let mut example = None;
    for batch in batches {
        hashes.clear();
        hashes.resize(batch.num_rows(), 0);
        create_hashes(key_columns(batch, &indices), &random_state, &mut hashes)
            .map_err(|e| query_err(job, e))?;
        let converted = converter
            .convert_columns(&key_columns(batch, &indices))
            .map_err(|e| query_err(job, e))?;
        for (row_idx, hash) in hashes.iter().enumerate() {
            if repeated.contains(hash)
                && keys
                    .insert(converted.row(row_idx).as_ref().into(), ())
                    .is_some()
            {
                duplicates += 1;
                if example.is_none() {
                    example = Some(describe_key(job, schema, batch, row_idx));
                }
            }
        }
    }
    duplicates_found(job, duplicates, example)
}

/// The output columns of the job's record key.
fn record_key_indices(job: &JobDefinition, schema: &SchemaRef) -> Vec<usize> {
    job.output
        .record_key
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect()
}

/// `batch`'s record key columns (`indices`).
fn key_columns(batch: &RecordBatch, indices: &[usize]) -> Vec<ArrayRef> {
    indices
        .iter()
        .map(|&i| Arc::clone(batch.column(i)))
        .collect()
}

/// The check's outcome: `count` rows repeated a key, `example` the first (none: all unique).
fn duplicates_found(
    job: &JobDefinition,
    count: usize,
    example: Option<String>,
) -> Result<(), RunError> {
    match example {
        None => Ok(()),
        Some(example) => Err(RunError::DuplicateKeys {
            job: job.name.clone(),
            count,
            example,
        }),
    }
}

/// Turns the record key's columns (`indices`) into comparable bytes.
fn key_converter(
    job: &JobDefinition,
    schema: &SchemaRef,
    indices: &[usize],
) -> Result<RowConverter, RunError> {
    RowConverter::new(
        indices
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )
    .map_err(|e| query_err(job, e))
}

/// Whether `plan` makes its rows ordered first by the record key's columns (`indices`, in any
/// order and direction): then the rows of a repeated key are next to each other.
fn ordered_by_record_key(
    job: &JobDefinition,
    indices: &[usize],
    plan: &Arc<dyn ExecutionPlan>,
) -> bool {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::ExecutionPlanProperties;
    let mut key = indices.to_vec();
    let Some(ordering) = plan.output_ordering() else {
        return false;
    };
    if key.is_empty() || key.len() != job.output.record_key.len() || ordering.len() < key.len() {
        return false;
    }
    let mut leading: Vec<usize> = ordering
        .iter()
        .take(key.len())
        .filter_map(|e| e.expr.downcast_ref::<Column>().map(Column::index))
        .collect();
    key.sort_unstable();
    leading.sort_unstable();
    leading == key
}

/// [`check_unique_keys`] over rows ordered by the key: each row against the one before it.
fn check_adjacent_keys(
    job: &JobDefinition,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    indices: &[usize],
) -> Result<(), RunError> {
    let converter = key_converter(job, schema, indices)?;
    let mut previous: Option<datafusion::arrow::row::OwnedRow> = None;
    let mut duplicates = 0usize;
    let mut example = None;
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let keys = converter
            .convert_columns(&key_columns(batch, indices))
            .map_err(|e| query_err(job, e))?;
        for row in 0..keys.num_rows() {
            let repeated = match (row, &previous) {
                (0, Some(last)) => last.row() == keys.row(0),
                (0, None) => false,
                _ => keys.row(row - 1) == keys.row(row),
            };
            if repeated {
                duplicates += 1;
                if example.is_none() {
                    example = Some(describe_key(job, schema, batch, row));
                }
            }
        }
        previous = Some(keys.row(keys.num_rows() - 1).owned());
    }
    duplicates_found(job, duplicates, example)
}

fn describe_key(
    job: &JobDefinition,
    schema: &SchemaRef,
    batch: &RecordBatch,
    row: usize,
) -> String {
    job.output
        .record_key
        .iter()
        .filter_map(|c| {
            let idx = schema.index_of(c).ok()?;
            let value = ScalarValue::try_from_array(batch.column(idx), row).ok()?;
            let text = match value {
                ScalarValue::Date32(Some(d)) => format_date(d),
                other => other.to_string(),
            };
            Some(format!("{c}={text}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}
