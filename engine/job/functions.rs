//! SQL functions tally adds for jobs, registered in every session a job runs in.
//!
//! `newest_sum(value, version)` — an aggregate: the sum of `value` over the rows of the group's
//! largest `version`, rows of older versions ignored. With `version = source_rank` (each input
//! file's rank, oldest first; see [`crate::sources`]), it is "the newest cumulative file's total"
//! in one hash aggregation:
//!
//! ```sql
//! SELECT store_id, newest_sum(amount, source_rank) AS total, max(source_rank) AS source_rank
//! FROM transactions GROUP BY store_id
//! ```
//!
//! gives, per store, the same total as summing per (store, file) and then keeping each store's
//! newest file — without the intermediate rows per file, the sort by file and the window. Every
//! `newest_sum` in a query over the same rows and versions uses the same newest version per group
//! (the version of a row counts even where its value is NULL), so sums of several columns, and
//! `max(version)`, agree on which file they come from.
//!
//! Invariants: exact (integers and decimals only; an overflowing sum is an error, never a wrapped
//! value); NULL when the newest version's values are all NULL or the group has no row with a
//! version; the result type is that of SQL `SUM` (`DECIMAL(min(38, p + 10), s)` for `DECIMAL(p, s)`,
//! `BIGINT` for integers). Partial and final aggregation agree: a partial state is (newest version,
//! its sum), and merging keeps the larger version or adds equal ones.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::datatypes::{
    ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Decimal128Type, Field, FieldRef, Int64Type,
    DECIMAL128_MAX_PRECISION,
};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// Registers tally's job functions in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(NewestSum::new()));
}

/// `newest_sum(value, version)`; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NewestSum {
    signature: Signature,
}

impl NewestSum {
    /// The function's name in SQL.
    pub const NAME: &'static str = "newest_sum";

    pub fn new() -> NewestSum {
        NewestSum {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for NewestSum {
    fn default() -> Self {
        NewestSum::new()
    }
}

impl AggregateUDFImpl for NewestSum {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [value, version] = arg_types else {
            return plan_err!(
                "newest_sum(value, version) takes 2 arguments, not {}",
                arg_types.len()
            );
        };
        let value = match value {
            DataType::Decimal128(..) => value.clone(),
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
            t if t.is_integer() || t.is_null() => DataType::Int64,
            t => {
                return plan_err!(
                    "newest_sum(value, version): value must be an integer or a DECIMAL (sums stay exact), not {t}"
                )
            }
        };
        if !(version.is_integer() || version.is_null()) {
            return plan_err!(
                "newest_sum(value, version): version must be an integer (such as source_rank), not {version}"
            );
        }
        Ok(vec![value, DataType::Int64])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(DataType::Decimal128(p, s)) => Ok(DataType::Decimal128(
                DECIMAL128_MAX_PRECISION.min(p + 10),
                *s,
            )),
            Some(DataType::Int64) => Ok(DataType::Int64),
            other => plan_err!("newest_sum: unsupported value type {other:?}"),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "version"),
                DataType::Int64,
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "sum"),
                args.return_type().clone(),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let data_type = args.return_field.data_type().clone();
        match data_type {
            DataType::Decimal128(..) => {
                Ok(Box::new(NewestSumAccumulator(
                    NewestSums::<Decimal128Type>::new(data_type),
                )))
            }
            DataType::Int64 => Ok(Box::new(NewestSumAccumulator(
                NewestSums::<Int64Type>::new(data_type),
            ))),
            other => plan_err!("newest_sum: unsupported result type {other}"),
        }
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type().clone();
        match data_type {
            DataType::Decimal128(..) => Ok(Box::new(NewestSums::<Decimal128Type>::new(data_type))),
            DataType::Int64 => Ok(Box::new(NewestSums::<Int64Type>::new(data_type))),
            other => plan_err!("newest_sum: unsupported result type {other}"),
        }
    }
}

/// Per group: the newest version seen and the sum of its values.
#[derive(Debug)]
struct NewestSums<T: ArrowPrimitiveType> {
    /// The result type (a decimal's precision and scale).
    data_type: DataType,
    /// Whether the group has seen a row with a version (only then is `versions[g]` meaningful).
    seen: Vec<bool>,
    versions: Vec<i64>,
    /// Whether the newest version had a non-NULL value (otherwise the result is NULL).
    has_sum: Vec<bool>,
    sums: Vec<T::Native>,
}

impl<T: ArrowPrimitiveType> NewestSums<T> {
    fn new(data_type: DataType) -> NewestSums<T> {
        NewestSums {
            data_type,
            seen: Vec::new(),
            versions: Vec::new(),
            has_sum: Vec::new(),
            sums: Vec::new(),
        }
    }

    fn resize(&mut self, groups: usize) {
        self.seen.resize(groups, false);
        self.versions.resize(groups, 0);
        self.has_sum.resize(groups, false);
        self.sums.resize(groups, T::Native::ZERO);
    }

    /// Takes one (version, value) into group `g`: a newer version starts the sum over, the same
    /// version adds to it, an older one is ignored.
    #[inline]
    fn take(&mut self, g: usize, version: i64, value: Option<T::Native>) -> Result<()> {
        if !self.seen[g] || version > self.versions[g] {
            self.seen[g] = true;
            self.versions[g] = version;
            self.has_sum[g] = value.is_some();
            self.sums[g] = value.unwrap_or(T::Native::ZERO);
        } else if version == self.versions[g] {
            if let Some(value) = value {
                self.sums[g] = self.sums[g].add_checked(value)?;
                self.has_sum[g] = true;
            }
        }
        Ok(())
    }

    /// Takes rows of (value, version) arrays, or of (version, sum) states, into their groups.
    fn take_all(
        &mut self,
        values: &PrimitiveArray<T>,
        versions: &PrimitiveArray<Int64Type>,
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.resize(total_num_groups);
        if opt_filter.is_none() && versions.null_count() == 0 {
            // The common cases, without per-row checks of the filter and the versions: values
            // without NULLs, or NULL where a `CASE` without `ELSE` left a row out of the sum.
            let (sums, versions) = (values.values(), versions.values());
            match values.nulls().filter(|nulls| nulls.null_count() > 0) {
                None => {
                    for (row, &g) in group_indices.iter().enumerate() {
                        self.take(g, versions[row], Some(sums[row]))?;
                    }
                }
                Some(nulls) => {
                    for (row, &g) in group_indices.iter().enumerate() {
                        let value = nulls.is_valid(row).then(|| sums[row]);
                        self.take(g, versions[row], value)?;
                    }
                }
            }
            return Ok(());
        }
        for (row, &g) in group_indices.iter().enumerate() {
            let filtered_out = opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row));
            if filtered_out || versions.is_null(row) {
                continue;
            }
            let value = values.is_valid(row).then(|| values.value(row));
            self.take(g, versions.value(row), value)?;
        }
        Ok(())
    }

    /// The sums of the emitted groups, NULL where there is none.
    fn emit_sums(&mut self, emit_to: EmitTo) -> PrimitiveArray<T> {
        let sums = emit_to.take_needed(&mut self.sums);
        let has_sum = emit_to.take_needed(&mut self.has_sum);
        PrimitiveArray::<T>::new(sums.into(), Some(NullBuffer::from(has_sum)))
            .with_data_type(self.data_type.clone())
    }
}

impl<T: ArrowPrimitiveType + Send> GroupsAccumulator for NewestSums<T> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.take_all(
            values[0].as_primitive::<T>(),
            values[1].as_primitive::<Int64Type>(),
            group_indices,
            opt_filter,
            total_num_groups,
        )
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        // States are (version, sum).
        self.take_all(
            values[1].as_primitive::<T>(),
            values[0].as_primitive::<Int64Type>(),
            group_indices,
            None,
            total_num_groups,
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = self.emit_sums(emit_to);
        emit_to.take_needed(&mut self.seen);
        emit_to.take_needed(&mut self.versions);
        Ok(Arc::new(sums))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let sums = self.emit_sums(emit_to);
        let seen = emit_to.take_needed(&mut self.seen);
        let versions = emit_to.take_needed(&mut self.versions);
        let versions =
            PrimitiveArray::<Int64Type>::new(versions.into(), Some(NullBuffer::from(seen)));
        Ok(vec![Arc::new(versions), Arc::new(sums)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row is its own state; a filtered-out row gets no version, so merging skips it.
        let versions = values[1].as_primitive::<Int64Type>();
        let kept = opt_filter.map(|f| {
            let passed: BooleanBuffer = match f.nulls() {
                Some(nulls) => f.values() & nulls.inner(),
                None => f.values().clone(),
            };
            NullBuffer::new(passed)
        });
        let versions = PrimitiveArray::<Int64Type>::new(
            versions.values().clone(),
            NullBuffer::union(versions.nulls(), kept.as_ref()),
        );
        let sums = values[0]
            .as_primitive::<T>()
            .clone()
            .with_data_type(self.data_type.clone());
        Ok(vec![Arc::new(versions), Arc::new(sums)])
    }

    fn size(&self) -> usize {
        self.seen.capacity() * 2
            + self.versions.capacity() * size_of::<i64>()
            + self.sums.capacity() * size_of::<T::Native>()
    }
}

/// The same aggregate for one group (DataFusion uses it where it cannot group, e.g. windows).
#[derive(Debug)]
struct NewestSumAccumulator<T: ArrowPrimitiveType>(NewestSums<T>);

impl<T: ArrowPrimitiveType + Send + Sync + std::fmt::Debug> Accumulator
    for NewestSumAccumulator<T>
{
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; values[0].len()];
        self.0.update_batch(values, &groups, None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; states[0].len()];
        self.0.merge_batch(states, &groups, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let sums = &self.0;
        let sum = (sums.has_sum.first() == Some(&true)).then(|| sums.sums[0]);
        ScalarValue::new_primitive::<T>(sum, &sums.data_type)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sums = &self.0;
        let version = (sums.seen.first() == Some(&true)).then(|| sums.versions[0]);
        Ok(vec![ScalarValue::Int64(version), self.evaluate()?])
    }

    fn size(&self) -> usize {
        size_of::<Self>() + GroupsAccumulator::size(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Int64Array};

    fn decimals(values: &[Option<i128>]) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values.to_vec())
                .with_precision_and_scale(18, 2)
                .unwrap(),
        )
    }

    fn versions(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn result(array: &ArrayRef) -> Vec<Option<i128>> {
        array.as_primitive::<Decimal128Type>().iter().collect()
    }

    fn groups() -> NewestSums<Decimal128Type> {
        NewestSums::new(DataType::Decimal128(28, 2))
    }

    #[test]
    fn the_newest_version_wins_and_its_rows_add_up() {
        let mut acc = groups();
        // Group 0: versions 1, 3, 3, 2 → 3's rows (5 + 7); group 1: only version 1 (10 + 1).
        acc.update_batch(
            &[
                decimals(&[Some(100), Some(5), Some(10), Some(7), Some(50), Some(1)]),
                versions(&[Some(1), Some(3), Some(1), Some(3), Some(2), Some(1)]),
            ],
            &[0, 0, 1, 0, 0, 1],
            None,
            2,
        )
        .unwrap();
        let out = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(result(&out), vec![Some(12), Some(11)]);
        assert_eq!(out.data_type(), &DataType::Decimal128(28, 2));
    }

    #[test]
    fn null_values_count_for_the_version_but_not_the_sum() {
        let mut acc = groups();
        // Group 0: newest version 2 has only a NULL value → NULL, although version 1 had 9.
        // Group 1: a row without a version is ignored. Group 2: filtered out entirely.
        acc.update_batch(
            &[
                decimals(&[Some(9), None, Some(4), Some(8), Some(6)]),
                versions(&[Some(1), Some(2), Some(1), None, Some(5)]),
            ],
            &[0, 0, 1, 1, 2],
            Some(&BooleanArray::from(vec![true, true, true, true, false])),
            3,
        )
        .unwrap();
        assert_eq!(
            result(&acc.evaluate(EmitTo::All).unwrap()),
            vec![None, Some(4), None]
        );
    }

    #[test]
    fn rows_a_case_left_null_count_for_the_version_and_add_nothing() {
        // The province job's form: `newest_sum(CASE WHEN code = 4 THEN amount END, rank)`, no
        // filter and every row versioned. Group 0: its newest version 3 has only a NULL → NULL
        // (COALESCE makes it 0.00), not version 1's 9. Group 1: version 2's 4 + 6, its NULL
        // adding nothing. Group 2: a NULL first, then a value of the same version.
        let mut acc = groups();
        acc.update_batch(
            &[
                decimals(&[
                    Some(9),
                    None,
                    Some(4),
                    None,
                    Some(6),
                    None,
                    Some(8),
                    Some(1),
                ]),
                versions(&[
                    Some(1),
                    Some(3),
                    Some(2),
                    Some(2),
                    Some(2),
                    Some(5),
                    Some(5),
                    Some(1),
                ]),
            ],
            &[0, 0, 1, 1, 1, 2, 2, 1],
            None,
            3,
        )
        .unwrap();
        assert_eq!(
            result(&acc.evaluate(EmitTo::All).unwrap()),
            vec![None, Some(10), Some(8)]
        );
    }

    #[test]
    fn partial_states_merge_to_the_same_result() {
        let values = decimals(&[Some(1), Some(2), Some(4), Some(8), Some(16)]);
        let vers = versions(&[Some(2), Some(1), Some(2), Some(3), Some(1)]);
        let all_groups = [0, 0, 0, 1, 1];
        let mut whole = groups();
        whole
            .update_batch(&[values.clone(), vers.clone()], &all_groups, None, 2)
            .unwrap();
        let expected = result(&whole.evaluate(EmitTo::All).unwrap());
        assert_eq!(expected, vec![Some(5), Some(8)]);

        // Rows split over two partial aggregations, and a third input as raw converted states.
        let mut first = groups();
        first
            .update_batch(&[values.slice(0, 2), vers.slice(0, 2)], &[0, 0], None, 1)
            .unwrap();
        let mut second = groups();
        second
            .update_batch(&[values.slice(2, 2), vers.slice(2, 2)], &[0, 1], None, 2)
            .unwrap();
        let raw = second
            .convert_to_state(&[values.slice(4, 1), vers.slice(4, 1)], None)
            .unwrap();
        let mut last = groups();
        last.merge_batch(&first.state(EmitTo::All).unwrap(), &[0], 2)
            .unwrap();
        last.merge_batch(&second.state(EmitTo::All).unwrap(), &[0, 1], 2)
            .unwrap();
        last.merge_batch(&raw, &[1], 2).unwrap();
        assert_eq!(result(&last.evaluate(EmitTo::All).unwrap()), expected);
    }

    #[test]
    fn an_overflowing_sum_is_an_error_not_a_wrapped_value() {
        let mut acc = NewestSums::<Int64Type>::new(DataType::Int64);
        let values: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX, 1]));
        let err = acc
            .update_batch(&[values, versions(&[Some(1), Some(1)])], &[0, 0], None, 1)
            .unwrap_err();
        assert!(err.to_string().contains("Overflow"), "{err}");
    }

    #[tokio::test]
    async fn sql_sees_the_newest_files_sum_and_refuses_floats() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql(
                "SELECT k, newest_sum(CAST(v AS DECIMAL(18,2)), r) AS s, max(r) AS r FROM (VALUES \
                 ('a', CAST(1.50 AS DECIMAL(18,2)), 1), ('a', 2.25, 2), ('a', 0.75, 2), \
                 ('b', 3.00, 1)) AS t(k, v, r) GROUP BY k ORDER BY k",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| a | 3.00 | 2 |"), "{text}");
        assert!(text.contains("| b | 3.00 | 1 |"), "{text}");

        let err = ctx
            .sql("SELECT newest_sum(CAST(1.5 AS DOUBLE), 1)")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("must be an integer or a DECIMAL"),
            "{err}"
        );
    }
}
