//! Plan rewrites for inputs read in key order (see [`crate::sources::KeyRanges`]).
//!
//! A scan in key ranges has each partition ordered by the key (a store) and the partitions in
//! ranges of it. DataFusion uses the first to aggregate one store at a time, but sorts a bounded
//! input whole and merges sorted partitions whatever their ranges. Two rewrites, applied after
//! DataFusion's own rules by [`KeyOrderRule`]:
//!
//! - a sort whose input is already ordered by a prefix of its keys (an `ORDER BY store_id,
//!   item_id` over groups emitted store by store) becomes a [`PrefixSortExec`]: it sorts one run
//!   of equal prefix at a time by the keys after the prefix, and emits each run when the next one
//!   starts, while its input is still being read;
//! - a merge of sorted partitions that are ascending ranges of the merge's leading keys becomes a
//!   [`RangeConcatExec`]: partition 0's rows, then partition 1's, and so on, the order the merge
//!   would make, without comparing a row.
//!
//! A prefix sort over a projection of an inner hash join that collects its build side moves below
//! the join, onto the probe side, when every sort key is a probe-side column: the join keeps the
//! probe side's order, and the rows sorted are narrower (the province job's rows before the
//! join adds each file's name and time: half the bytes a sort moves).
//!
//! Invariant: a rewritten plan yields the same rows in the same order as the plan it replaces
//! (rows equal on every sort key aside, which a sort does not order; a prefix sort keeps them
//! in input order).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{interleave_record_batch, partition};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::JoinType;
use datafusion::common::ScalarValue;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{
    ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{Stream, StreamExt};

use crate::sources::only_child;

/// Rewrites sorts and merges that the inputs' key order makes simpler; see the module docs.
#[derive(Debug, Default)]
pub struct KeyOrderRule;

impl PhysicalOptimizerRule for KeyOrderRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Bottom up: a sort becomes a prefix sort before the merge above it is looked at.
        plan.transform_up(|node| {
            if let Some(rewritten) = prefix_sort(&node)? {
                let rewritten = sort_below_join(&rewritten)?.unwrap_or(rewritten);
                return Ok(Transformed::yes(rewritten));
            }
            if let Some(rewritten) = range_concat(&node) {
                return Ok(Transformed::yes(rewritten));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tally_key_order"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` as a [`PrefixSortExec`] when it is a sort (of each partition, no limit) whose input is
/// ordered by some but not all of its keys.
fn prefix_sort(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(sort) = node.downcast_ref::<SortExec>() else {
        return Ok(None);
    };
    let input = sort.input();
    let partitions = input.output_partitioning().partition_count();
    if sort.fetch().is_some() || !(sort.preserve_partitioning() || partitions == 1) {
        return Ok(None);
    }
    let prefix = ordered_prefix(input, sort.expr())?;
    if prefix == 0 || prefix == sort.expr().len() {
        return Ok(None);
    }
    Ok(Some(Arc::new(PrefixSortExec::try_new(
        Arc::clone(input),
        sort.expr().clone(),
        prefix,
    )?)))
}

/// How many leading keys of `ordering` the rows of `input` already come ordered by.
fn ordered_prefix(input: &Arc<dyn ExecutionPlan>, ordering: &LexOrdering) -> Result<usize> {
    let keys: Vec<PhysicalSortExpr> = ordering.iter().cloned().collect();
    let ordered = input.equivalence_properties();
    let mut prefix = 0;
    while prefix < keys.len() && ordered.ordering_satisfy(keys[..=prefix].to_vec())? {
        prefix += 1;
    }
    Ok(prefix)
}

/// `node`, a [`PrefixSortExec`] over a projection of an inner [`HashJoinExec`] that collects its
/// build (left) side, with the sort moved onto the join's probe (right) side when every key is a
/// probe-side column that the projection passes through unchanged. The rewrite is kept only if
/// the plan's own ordering analysis finds the new plan's rows in the order the sort promised.
fn sort_below_join(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(sort) = node.downcast_ref::<PrefixSortExec>() else {
        return Ok(None);
    };
    let Some(projection) = sort.input.downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    let Some(join) = projection.input().downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    if *join.join_type() != JoinType::Inner || *join.partition_mode() != PartitionMode::CollectLeft
    {
        return Ok(None);
    }
    let left_width = join.left().schema().fields().len();
    let probe_schema = join.right().schema();
    let mut keys = Vec::with_capacity(sort.ordering.len());
    for key in sort.ordering.iter() {
        // The key's column in the projection's output, then in the join's output, then in the
        // join's left-then-right columns.
        let Some(column) = key.expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let Some(projected) = projection.expr().get(column.index()) else {
            return Ok(None);
        };
        let Some(joined) = projected.expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let combined = match &join.projection {
            Some(picked) => match picked.get(joined.index()) {
                Some(&index) => index,
                None => return Ok(None),
            },
            None => joined.index(),
        };
        let Some(probe_index) = combined.checked_sub(left_width) else {
            return Ok(None);
        };
        let Some(field) = probe_schema.fields().get(probe_index) else {
            return Ok(None);
        };
        keys.push(PhysicalSortExpr::new(
            Arc::new(Column::new(field.name(), probe_index)),
            key.options,
        ));
    }
    let Some(probe_ordering) = LexOrdering::new(keys) else {
        return Ok(None);
    };
    let probe = Arc::clone(join.right());
    let prefix = ordered_prefix(&probe, &probe_ordering)?;
    if prefix == 0 || prefix == probe_ordering.len() {
        return Ok(None);
    }
    let sorted_probe = Arc::new(PrefixSortExec::try_new(probe, probe_ordering, prefix)?);
    // The join's and the projection's properties (their order above all) are worked out anew.
    let recompute = || ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    let join = Arc::clone(projection.input())
        .replace_children(vec![Arc::clone(join.left()), sorted_probe], recompute())?;
    let rewritten = Arc::clone(&sort.input).replace_children(vec![join], recompute())?;
    let same_order = rewritten
        .equivalence_properties()
        .ordering_satisfy(sort.ordering.iter().cloned())?;
    Ok(same_order.then_some(rewritten))
}

/// `node` as a [`RangeConcatExec`] when it is a merge (no limit) of partitions that are ranges of
/// the merge's leading keys, in the merge's order, each ordered as the merge needs.
fn range_concat(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let merge = node.downcast_ref::<SortPreservingMergeExec>()?;
    let input = merge.input();
    let Partitioning::Range(ranges) = input.output_partitioning() else {
        return None;
    };
    let leading = ranges.ordering();
    let keys = merge.expr();
    let ranges_lead = leading.len() <= keys.len()
        && leading
            .iter()
            .zip(keys.iter())
            .all(|(range_key, key)| range_key == key);
    let each_ordered = input
        .equivalence_properties()
        .ordering_satisfy(keys.iter().cloned())
        .unwrap_or(false);
    (merge.fetch().is_none() && ranges_lead && each_ordered)
        .then(|| Arc::new(RangeConcatExec::new(Arc::clone(input))) as Arc<dyn ExecutionPlan>)
}

/// Sorts each partition whose rows already come ordered by the first `prefix` keys of `ordering`:
/// the rows of one run of equal prefix are held until the next run starts, sorted by the other
/// keys and emitted. Memory holds one run (counted against the session's pool), not the whole
/// partition.
#[derive(Debug)]
pub struct PrefixSortExec {
    input: Arc<dyn ExecutionPlan>,
    ordering: LexOrdering,
    prefix: usize,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PrefixSortExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        ordering: LexOrdering,
        prefix: usize,
    ) -> Result<PrefixSortExec> {
        let mut equivalences = input.equivalence_properties().clone();
        equivalences.reorder(ordering.clone())?;
        let properties = PlanProperties::new(
            equivalences,
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            input.boundedness(),
        );
        Ok(PrefixSortExec {
            input,
            ordering,
            prefix,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for PrefixSortExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.ordering.iter().map(ToString::to_string).collect();
        write!(
            f,
            "PrefixSortExec: expr=[{}], input ordered by the first {}",
            keys.join(", "),
            self.prefix
        )
    }
}

impl ExecutionPlan for PrefixSortExec {
    fn name(&self) -> &str {
        "PrefixSortExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for key in self.ordering.iter() {
            if f(&key.expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(children, "PrefixSortExec has one input")?;
        Ok(Arc::new(PrefixSortExec::try_new(
            input,
            self.ordering.clone(),
            self.prefix,
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&ctx))?;
        let keys: Vec<PhysicalSortExpr> = self.ordering.iter().cloned().collect();
        let (prefix, rest) = keys.split_at(self.prefix);
        let schema = self.schema();
        let fields = rest
            .iter()
            .map(|key| {
                Ok(SortField::new_with_options(
                    key.expr.data_type(&schema)?,
                    key.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let reservation =
            MemoryConsumer::new(format!("PrefixSortExec[{partition}]")).register(ctx.memory_pool());
        Ok(Box::pin(PrefixSortStream {
            input,
            prefix: prefix.iter().map(|k| Arc::clone(&k.expr)).collect(),
            rest: rest.iter().map(|k| Arc::clone(&k.expr)).collect(),
            converter: RowConverter::new(fields)?,
            run: Vec::new(),
            run_key: None,
            ready: VecDeque::new(),
            batch_size: ctx.session_config().batch_size(),
            reservation,
            metrics: BaselineMetrics::new(&self.metrics, partition),
            done: false,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct PrefixSortStream {
    input: SendableRecordBatchStream,
    /// The keys the input is ordered by, and the ones sorted here.
    prefix: Vec<Arc<dyn PhysicalExpr>>,
    rest: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    /// The rows of the current run, as they came, and its prefix values.
    run: Vec<RecordBatch>,
    run_key: Option<Vec<ScalarValue>>,
    /// Sorted batches not yet emitted.
    ready: VecDeque<RecordBatch>,
    batch_size: usize,
    reservation: MemoryReservation,
    metrics: BaselineMetrics,
    done: bool,
}

impl PrefixSortStream {
    fn evaluate(keys: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        keys.iter()
            .map(|key| key.evaluate(batch)?.into_array(batch.num_rows()))
            .collect()
    }

    /// Adds `batch` to the runs: each run it ends is sorted into `ready`.
    fn add_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let prefix = Self::evaluate(&self.prefix, &batch)?;
        for range in partition(&prefix)?.ranges() {
            let key = prefix
                .iter()
                .map(|column| ScalarValue::try_from_array(column, range.start))
                .collect::<Result<Vec<_>>>()?;
            if self.run_key.as_ref() != Some(&key) {
                self.finish_run()?;
                self.run_key = Some(key);
            }
            let rows = batch.slice(range.start, range.len());
            self.reservation
                .try_grow(rows.get_array_memory_size())
                .map_err(|e| {
                    DataFusionError::ResourcesExhausted(format!(
                        "one run of equal sort prefix does not fit the memory limit: {e}"
                    ))
                })?;
            self.run.push(rows);
        }
        Ok(())
    }

    /// Sorts the current run by the keys after the prefix into `ready`, in batches of the
    /// session's size.
    fn finish_run(&mut self) -> Result<()> {
        if self.run.is_empty() {
            return Ok(());
        }
        let run = std::mem::take(&mut self.run);
        let total: usize = run.iter().map(RecordBatch::num_rows).sum();
        let mut keys: Rows = self.converter.empty_rows(total, total * 16);
        let mut origin: Vec<(usize, usize)> = Vec::with_capacity(total);
        for (b, batch) in run.iter().enumerate() {
            self.converter
                .append(&mut keys, &Self::evaluate(&self.rest, batch)?)?;
            origin.extend((0..batch.num_rows()).map(|row| (b, row)));
        }
        let order = sorted_rows(&keys);
        let batches: Vec<&RecordBatch> = run.iter().collect();
        let mut picks = Vec::with_capacity(self.batch_size.min(total));
        for chunk in order.chunks(self.batch_size.max(1)) {
            picks.clear();
            picks.extend(chunk.iter().map(|&i| origin[i]));
            self.ready
                .push_back(interleave_record_batch(&batches, &picks)?);
        }
        self.reservation.free();
        Ok(())
    }
}

/// The numbers of `keys`' rows by key bytes, then by arrival: rows equal on every key keep their
/// input order.
///
/// Where every row's bytes fit 16 (the province job's item and date take 15), each is compared as
/// one big-endian integer, zero-padded: a third of the time of comparing byte slices. Padding
/// keeps the order because the row format is prefix-free (each field's bytes end themselves), so
/// two different rows differ within the shorter one's bytes.
fn sorted_rows(keys: &Rows) -> Vec<usize> {
    const PACKED: usize = size_of::<u128>();
    if keys.iter().all(|row| row.data().len() <= PACKED) {
        let mut packed: Vec<(u128, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut bytes = [0u8; PACKED];
                bytes[..row.data().len()].copy_from_slice(row.data());
                (u128::from_be_bytes(bytes), i)
            })
            .collect();
        packed.sort_unstable();
        return packed.into_iter().map(|(_, i)| i).collect();
    }
    let mut order: Vec<(&[u8], usize)> = keys.iter().map(|row| row.data()).zip(0..).collect();
    order.sort_unstable();
    order.into_iter().map(|(_, i)| i).collect()
}

impl Stream for PrefixSortStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return self.metrics.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let step = match self.input.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(batch))) => {
                    let elapsed = self.metrics.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    self.add_batch(batch)
                }
                Poll::Ready(Some(Err(e))) => Err(e),
                Poll::Ready(None) => {
                    self.done = true;
                    let elapsed = self.metrics.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    self.finish_run()
                }
            };
            if let Err(e) = step {
                self.done = true;
                self.ready.clear();
                return Poll::Ready(Some(Err(e)));
            }
        }
    }
}

impl RecordBatchStream for PrefixSortStream {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.input.schema()
    }
}

/// One partition of its input's partitions, one after another: partition 0's rows, then 1's.
/// As many partitions run at once as the session has target partitions (its cores), started in
/// order as earlier ones end: partition 0's rows stream out as they are made, and a later
/// partition's batches wait in memory until the earlier ones have been read. With more
/// partitions than cores (key ranges are planned so locally), the rows leave in order while
/// the query still runs, for sinks to write beside it, instead of the last ranges' rows all
/// arriving at the end.
#[derive(Debug)]
pub struct RangeConcatExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl RangeConcatExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> RangeConcatExec {
        let properties = PlanProperties::new(
            input.equivalence_properties().clone(),
            Partitioning::UnknownPartitioning(1),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        RangeConcatExec {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for RangeConcatExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RangeConcatExec: {} key-range partitions in order",
            self.input.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for RangeConcatExec {
    fn name(&self) -> &str {
        "RangeConcatExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
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
        let input = only_child(children, "RangeConcatExec has one input")?;
        Ok(Arc::new(RangeConcatExec::new(input)))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "RangeConcatExec has one partition, not {partition}"
            )));
        }
        let partitions = self.input.output_partitioning().partition_count();
        let at_once = ctx.session_config().target_partitions().max(1);
        let mut inputs = Vec::with_capacity(partitions);
        let mut parts = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            inputs.push((self.input.execute(p, Arc::clone(&ctx))?, tx));
            parts.push(tokio_stream_of(rx));
        }
        // The driver starts each partition's task in order once fewer than `at_once` run.
        // Dropping the output stream drops the driver, whose set of tasks aborts them.
        let driver = datafusion::common::runtime::SpawnedTask::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            for (mut stream, tx) in inputs {
                while running.len() >= at_once {
                    running.join_next().await;
                }
                running.spawn(async move {
                    let sender = tx.clone();
                    let work = datafusion::common::runtime::SpawnedTask::spawn(async move {
                        while let Some(batch) = stream.next().await {
                            let failed = batch.is_err();
                            if sender.send(batch).is_err() || failed {
                                break;
                            }
                        }
                    });
                    // A task that panicked ends its partition with the panic as its error,
                    // never silently short of rows.
                    if let Err(e) = work.join().await {
                        let _ = tx.send(Err(DataFusionError::ExecutionJoin(Box::new(e))));
                    }
                });
            }
            while running.join_next().await.is_some() {}
        });
        // The driver is kept (and joined, for a panic of its own) after the last partition.
        let ended = futures::stream::once(async move {
            driver
                .join()
                .await
                .err()
                .map(|e| Err(DataFusionError::ExecutionJoin(Box::new(e))))
        })
        .filter_map(futures::future::ready);
        let ordered = futures::stream::iter(parts).flatten().chain(ended);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            ordered,
        )))
    }
}

/// An unbounded receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, StringArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::DataType;

    /// The order of rows by their bytes and then their number, the plain way.
    fn by_bytes(keys: &Rows) -> Vec<usize> {
        let mut order: Vec<(&[u8], usize)> = keys.iter().map(|r| r.data()).zip(0..).collect();
        order.sort();
        order.into_iter().map(|(_, i)| i).collect()
    }

    #[test]
    fn packed_keys_sort_as_their_bytes_do() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (longest, descending) in [(7, false), (7, true), (30, false), (3, true)] {
            // Short texts sharing prefixes, empty ones, NULLs and repeated keys; `longest` 30
            // makes some rows longer than 16 bytes, which sorts them the byte-slice way.
            let texts: Vec<Option<String>> = (0..3000)
                .map(|_| match rng.u8(0..20) {
                    0 => None,
                    1 => Some(String::new()),
                    _ => {
                        let len = rng.usize(1..=longest);
                        Some(
                            (0..len)
                                .map(|_| rng.choice(['a', 'b', 'z']).unwrap())
                                .collect(),
                        )
                    }
                })
                .collect();
            let days: Vec<Option<i32>> = (0..3000)
                .map(|_| (rng.u8(0..10) > 0).then(|| rng.i32(-3..3)))
                .collect();
            let options = SortOptions {
                descending,
                nulls_first: descending,
            };
            let converter = RowConverter::new(vec![
                SortField::new_with_options(DataType::Utf8, options),
                SortField::new_with_options(DataType::Date32, options),
            ])
            .unwrap();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(texts)),
                Arc::new(Date32Array::from(days)),
            ];
            let keys = converter.convert_columns(&columns).unwrap();
            let packed = keys.iter().all(|r| r.data().len() <= 16);
            assert_eq!(packed, longest <= 7, "longest {longest}");
            assert_eq!(sorted_rows(&keys), by_bytes(&keys), "longest {longest}");
        }
    }
}
