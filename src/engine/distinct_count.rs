//! Engine stage, facility counts: `__kura_distinct_count(x)`, the number of distinct
//! non-NULL values of `x` among the rows that feed a cell, which the privacy rewrite puts
//! beside every cell read from a facility-identifying column (the facility threshold,
//! `privacy::disclosure::facility`). Values are held as 64-bit hashes (a fixed seed, so
//! the partial states of one query merge), one hash set per group, with a
//! `GroupsAccumulator` that adds a whole batch in one pass.
//!
//! Guarantees: two different values can only be counted as one if their 64-bit hashes
//! collide; the count is then *lower*, which makes the facility threshold suppress more,
//! never less (fail closed). Not registered in any session: researcher SQL cannot call it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::{DataFusionError, HashSet, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};

use super::accumulate::{binary_state, passes};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility,
};

/// Name of the aggregate.
pub const DISTINCT_COUNT: &str = "__kura_distinct_count";

const SEED: RandomState = RandomState::with_seed(0x6b75_7261);

/// `__kura_distinct_count(x)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistinctCount {
    signature: Signature,
}

impl DistinctCount {
    /// `__kura_distinct_count(e)` as a logical expression.
    pub fn call(e: Expr) -> Expr {
        Arc::new(Self::udaf()).call(vec![e])
    }

    /// The aggregate.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::from(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl AggregateUDFImpl for DistinctCount {
    fn name(&self) -> &str {
        DISTINCT_COUNT
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn is_nullable(&self) -> bool {
        false
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(One(Hashes::default())))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(binary_state(args.name, "hashes"))
    }
    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups::default()))
    }
    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// The hashes of one group's values.
#[derive(Debug, Default)]
struct Hashes(HashSet<u64>);

impl Hashes {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|h| h.to_le_bytes()).collect()
    }
    fn merge(&mut self, bytes: &[u8]) -> Result<()> {
        if !bytes.len().is_multiple_of(8) {
            return Err(DataFusionError::Internal(format!(
                "{DISTINCT_COUNT}: malformed state"
            )));
        }
        for c in bytes.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.0.insert(u64::from_le_bytes(b));
        }
        Ok(())
    }
}

/// The hash of every row's value (NULL rows are skipped by the callers).
fn row_hashes(values: &ArrayRef) -> Result<Vec<u64>> {
    let mut hashes = vec![0; values.len()];
    create_hashes([values], &SEED, &mut hashes)?;
    Ok(hashes)
}

/// Rows that count: value not NULL, filter (when there is one) true.
fn counts(values: &ArrayRef, filter: Option<&BooleanArray>, row: usize) -> bool {
    values.is_valid(row) && passes(filter, row)
}

#[derive(Debug)]
struct One(Hashes);

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let hashes = row_hashes(&values[0])?;
        for (row, h) in hashes.into_iter().enumerate() {
            if counts(&values[0], None, row) {
                self.0.0.insert(h);
            }
        }
        Ok(())
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(self.0.0.len() as i64)))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.0.capacity() * 9
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.0.to_bytes()))])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for bytes in states[0].as_binary::<i32>().iter().flatten() {
            self.0.merge(bytes)?;
        }
        Ok(())
    }
}

/// One hash set per group, and how many hashes they hold together (for the memory
/// estimate: a hash-set slot of a `u64` costs about 16 bytes at hashbrown's load factor).
#[derive(Debug, Default)]
struct Groups {
    sets: Vec<Hashes>,
    members: usize,
}

impl Groups {
    fn grow(&mut self, total: usize) {
        if self.sets.len() < total {
            self.sets.resize_with(total, Hashes::default);
        }
    }
    fn take(&mut self, emit_to: EmitTo) -> Vec<Hashes> {
        let groups = emit_to.take_needed(&mut self.sets);
        let emitted: usize = groups.iter().map(|g| g.0.len()).sum();
        self.members = self.members.saturating_sub(emitted);
        groups
    }
    fn insert(&mut self, g: usize, h: u64) {
        if self.sets[g].0.insert(h) {
            self.members += 1;
        }
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let hashes = row_hashes(&values[0])?;
        for (row, (h, &g)) in hashes.into_iter().zip(group_indices).enumerate() {
            if counts(&values[0], opt_filter, row) {
                self.insert(g, h);
            }
        }
        Ok(())
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = self.take(emit_to);
        let counts: Int64Array = groups.iter().map(|g| Some(g.0.len() as i64)).collect();
        Ok(Arc::new(counts))
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take(emit_to);
        let mut out = BinaryBuilder::with_capacity(groups.len(), 0);
        for g in &groups {
            out.append_value(g.to_bytes());
        }
        Ok(vec![Arc::new(out.finish())])
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let states = values[0].as_binary::<i32>();
        for (bytes, &g) in states.iter().zip(group_indices) {
            if let Some(bytes) = bytes {
                let before = self.sets[g].0.len();
                self.sets[g].merge(bytes)?;
                self.members += self.sets[g].0.len() - before;
            }
        }
        Ok(())
    }
    /// Each row as a state of its own (only called if partial aggregation is skipped,
    /// which this accumulator does not ask for).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut one = Groups::default();
        let rows = values[0].len();
        let groups: Vec<usize> = (0..rows).collect();
        one.update_batch(values, &groups, opt_filter, rows)?;
        one.state(EmitTo::All)
    }
    fn size(&self) -> usize {
        self.sets.capacity() * std::mem::size_of::<Hashes>() + self.members.saturating_mul(16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn groups_count_distinct_non_null_filtered_values_and_merge() {
        let v: ArrayRef = Arc::new(StringArray::from(vec![
            Some("f1"),
            Some("f1"),
            None,
            Some("f2"),
            Some("f3"),
        ]));
        let filter = BooleanArray::from(vec![true, true, true, true, false]);
        let mut a = Groups::default();
        a.update_batch(std::slice::from_ref(&v), &[0, 0, 0, 0, 1], Some(&filter), 2)
            .unwrap();
        let mut b = Groups::default();
        b.update_batch(&[v], &[1, 1, 1, 1, 1], None, 2).unwrap();
        let state = b.state(EmitTo::All).unwrap();
        a.merge_batch(&state, &[0, 1], 2).unwrap();
        let out = a.evaluate(EmitTo::All).unwrap();
        let out = out.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(out.values().to_vec(), vec![2, 3]);
    }
}
