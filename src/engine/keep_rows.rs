//! Engine stage, the random choice of rows per patient and group (DP contribution bounding,
//! P1 and P2 in one): `__kura_keep_rows(v₁…vₙ)`, aggregated by (patient, group), keeps at
//! most `m` of the pair's rows, each drawn a random 64-bit priority (the `m` smallest
//! stay), and adds up each value over the kept rows: a count of its non-NULL values, a sum,
//! or both, as one struct. That is one hash aggregation over the rows, holding at most
//! `m + 1` rows per pair, where `row_number() OVER (PARTITION BY patient, group ORDER BY
//! random())` sorted every row in memory and a second aggregation added them up.
//!
//! Guarantees: every partial adds up at most `m` rows of the pair, whatever the data; the
//! choice is random and independent of other patients. A tie of two priorities at the
//! boundary (a 64-bit collision) fails the query rather than add `m + 1` rows (fail
//! closed). Partial states merge exactly (a row among the pair's `m` smallest overall is
//! among the `m` smallest of the partial state that drew it). Values are the per-row
//! values of `sql::rewrite::dp::clamping`, `Int64` or `Float64`; a sum keeps its value's
//! type and is NULL when no kept row has a value, as SUM is. Never registered in a session.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Float64Builder, Int64Builder,
    StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};

use super::accumulate::{Add, MAX_VALUES, binary_state, grouped_only, passes, value_word};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Name of the aggregate.
pub const KEEP_ROWS: &str = "__kura_keep_rows";

/// One output field: which value, what of it, and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Output {
    pub value: usize,
    pub add: Add,
    pub name: String,
}

/// `__kura_keep_rows(values…)` keeping `limit` rows per (patient, group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeepRows {
    limit: u32,
    values: usize,
    outputs: Vec<Output>,
    signature: Signature,
}

impl KeepRows {
    /// The aggregate over `values`, with one field per output.
    pub fn call(limit: u32, values: Vec<Expr>, outputs: Vec<Output>) -> Expr {
        Arc::new(Self::udaf(limit, values.len(), outputs)).call(values)
    }

    /// The aggregate itself over `values` arguments.
    pub fn udaf(limit: u32, values: usize, outputs: Vec<Output>) -> AggregateUDF {
        AggregateUDF::from(Self {
            limit,
            values,
            outputs,
            signature: Signature::any(values, Volatility::Volatile),
        })
    }

    /// `(limit, values, outputs)`, what the Ballista codec carries.
    pub fn parts(&self) -> (u32, usize, &[Output]) {
        (self.limit, self.values, &self.outputs)
    }

    fn fields(&self, types: &[DataType]) -> Result<Fields> {
        if types.is_empty() || types.len() > MAX_VALUES {
            return Err(internal(format!("{} values", types.len())));
        }
        let mut fields = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            let t = types
                .get(o.value)
                .and_then(|t| o.add.output_type(t))
                .ok_or_else(|| {
                    internal(format!("output {} over {:?}", o.name, types.get(o.value)))
                })?;
            fields.push(Field::new(&o.name, t, true));
        }
        Ok(fields.into())
    }

    fn groups(&self, args: &AccumulatorArgs) -> Result<Groups> {
        let types: Vec<DataType> = args
            .expr_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let fields = self.fields(&types)?;
        Ok(Groups {
            limit: self.limit as usize,
            width: types.len() + 2,
            floats: types.iter().map(|t| *t == DataType::Float64).collect(),
            outputs: self.outputs.clone(),
            fields,
            kept: Vec::new(),
            words: 0,
            rng: ChaCha8Rng::from_rng(&mut rand::rng()),
        })
    }
}

fn internal(what: String) -> DataFusionError {
    DataFusionError::Internal(format!("{KEEP_ROWS}: {what}"))
}

impl AggregateUDFImpl for KeepRows {
    fn name(&self) -> &str {
        KEEP_ROWS
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields(types)?))
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        // Only ever planned grouped by (patient, group), where the groups accumulator runs.
        Err(grouped_only(KEEP_ROWS))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(binary_state(args.name, "rows"))
    }
    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.groups(&args)?))
    }
}

/// Per pair, the `limit + 1` rows of smallest priority seen so far, ascending by priority
/// (one more than kept, to see a tie at the boundary). A row is `width` words: its
/// priority, the validity bits of its values, then each value's bits (`i64` or `f64`).
#[derive(Debug)]
struct Groups {
    limit: usize,
    width: usize,
    floats: Vec<bool>,
    outputs: Vec<Output>,
    fields: Fields,
    kept: Vec<Vec<u64>>,
    /// Words held over all pairs (for the memory estimate).
    words: usize,
    rng: ChaCha8Rng,
}

impl Groups {
    fn grow(&mut self, total: usize) {
        if self.kept.len() < total {
            self.kept.resize_with(total, Vec::new);
        }
    }

    /// Offer one row (`width` words, priority first) to pair `g`.
    fn offer(&mut self, g: usize, row: &[u64]) {
        let w = self.width;
        let kept = &mut self.kept[g];
        let rows = kept.len() / w;
        let at = position(kept, w, row[0]);
        if at > self.limit {
            return;
        }
        kept.splice(at * w..at * w, row.iter().copied());
        if rows + 1 > self.limit + 1 {
            kept.truncate((self.limit + 1) * w);
        } else {
            self.words += w;
        }
    }

    /// One row of the batch as words, with a fresh priority.
    fn row(&mut self, values: &[ArrayRef], i: usize, out: &mut Vec<u64>) {
        out.clear();
        out.push(self.rng.random());
        out.push(0);
        for (j, v) in values.iter().enumerate() {
            if v.is_valid(i) {
                out[1] |= 1 << j;
            }
            out.push(value_word(v, i, self.floats[j]));
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<u64>> {
        let taken = emit_to.take_needed(&mut self.kept);
        let emitted: usize = taken.iter().map(Vec::len).sum();
        self.words = self.words.saturating_sub(emitted);
        taken
    }

    /// The kept rows of one pair: at most `limit`, and no tie at the boundary.
    fn chosen<'a>(&self, kept: &'a [u64]) -> Result<&'a [u64]> {
        let w = self.width;
        if kept.len() / w > self.limit && kept[(self.limit - 1) * w] == kept[self.limit * w] {
            return Err(DataFusionError::Execution(format!(
                "{KEEP_ROWS}: two rows of one patient drew the same priority; run the query again"
            )));
        }
        Ok(&kept[..kept.len().min(self.limit * w)])
    }

    /// Each output over the chosen rows of every taken pair.
    fn partials(&self, taken: &[Vec<u64>]) -> Result<Vec<ArrayRef>> {
        let chosen: Vec<&[u64]> = taken
            .iter()
            .map(|k| self.chosen(k))
            .collect::<Result<_>>()?;
        Ok(self
            .outputs
            .iter()
            .map(|o| self.partial(o, &chosen))
            .collect())
    }

    fn partial(&self, o: &Output, chosen: &[&[u64]]) -> ArrayRef {
        let w = self.width;
        let bit = 1u64 << o.value;
        match (o.add, self.floats[o.value]) {
            (Add::CountNonNull, _) => {
                let mut b = Int64Builder::with_capacity(chosen.len());
                for rows in chosen {
                    b.append_value(present(rows, w, bit).count() as i64);
                }
                Arc::new(b.finish())
            }
            (Add::Sum, true) => {
                let mut b = Float64Builder::with_capacity(chosen.len());
                for rows in chosen {
                    let mut vals = present(rows, w, bit).map(|r| f64::from_bits(r[2 + o.value]));
                    b.append_option(vals.next().map(|first| vals.fold(first, |a, x| a + x)));
                }
                Arc::new(b.finish())
            }
            (Add::Sum, false) => {
                let mut b = Int64Builder::with_capacity(chosen.len());
                for rows in chosen {
                    let mut vals = present(rows, w, bit).map(|r| r[2 + o.value] as i64);
                    b.append_option(vals.next().map(|first| vals.fold(first, i64::wrapping_add)));
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// Where a row of `priority` goes among `kept` rows of `w` words (ascending priorities).
fn position(kept: &[u64], w: usize, priority: u64) -> usize {
    let (mut lo, mut hi) = (0, kept.len() / w);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if kept[mid * w] < priority {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The rows among `rows` (of `w` words) where the value of validity `bit` is not NULL.
fn present(rows: &[u64], w: usize, bit: u64) -> impl Iterator<Item = &[u64]> {
    rows.chunks_exact(w).filter(move |r| r[1] & bit != 0)
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
        let mut row = Vec::with_capacity(self.width);
        for (i, &g) in group_indices.iter().enumerate() {
            if passes(opt_filter, i) {
                self.row(values, i, &mut row);
                self.offer(g, &row);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        let columns = self.partials(&taken)?;
        Ok(Arc::new(StructArray::try_new(
            self.fields.clone(),
            columns,
            None,
        )?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        let mut out = BinaryBuilder::with_capacity(taken.len(), 0);
        for kept in &taken {
            let bytes: Vec<u8> = kept.iter().flat_map(|w| w.to_le_bytes()).collect();
            out.append_value(bytes);
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
        let row_bytes = self.width * 8;
        let states = values[0].as_binary::<i32>();
        let mut row = Vec::with_capacity(self.width);
        for (bytes, &g) in states.iter().zip(group_indices) {
            let bytes = bytes.unwrap_or_default();
            if !bytes.len().is_multiple_of(row_bytes) {
                return Err(internal("malformed state".into()));
            }
            for r in bytes.chunks_exact(row_bytes) {
                row.clear();
                row.extend(
                    r.chunks_exact(8)
                        .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8 bytes"))),
                );
                self.offer(g, &row);
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
        let mut one = Groups {
            kept: Vec::new(),
            words: 0,
            rng: ChaCha8Rng::from_rng(&mut rand::rng()),
            fields: self.fields.clone(),
            outputs: self.outputs.clone(),
            floats: self.floats.clone(),
            ..*self
        };
        let rows = values[0].len();
        let groups: Vec<usize> = (0..rows).collect();
        one.update_batch(values, &groups, opt_filter, rows)?;
        one.state(EmitTo::All)
    }

    fn size(&self) -> usize {
        self.kept.capacity() * std::mem::size_of::<Vec<u64>>() + self.words.saturating_mul(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};

    fn outputs() -> Vec<Output> {
        let o = |value, add, name: &str| Output {
            value,
            add,
            name: name.into(),
        };
        vec![
            o(0, Add::CountNonNull, "c0"),
            o(1, Add::Sum, "s1"),
            o(1, Add::CountNonNull, "c1"),
        ]
    }

    fn groups(limit: usize) -> Groups {
        let udf = KeepRows {
            limit: limit as u32,
            values: 2,
            outputs: outputs(),
            signature: Signature::any(2, Volatility::Volatile),
        };
        let types = [DataType::Int64, DataType::Float64];
        Groups {
            limit,
            width: 4,
            floats: vec![false, true],
            outputs: outputs(),
            fields: udf.fields(&types).unwrap(),
            kept: Vec::new(),
            words: 0,
            rng: ChaCha8Rng::seed_from_u64(1),
        }
    }

    /// `n` rows: a count value of 1 and a float value `x` (NULL every third row).
    fn values(n: usize, x: f64) -> Vec<ArrayRef> {
        vec![
            Arc::new(Int64Array::from(vec![1; n])),
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 3 != 2).then_some(x)),
            )),
        ]
    }

    /// (c0, s1, c1) per pair.
    fn out(acc: &mut Groups) -> Vec<(i64, Option<f64>, i64)> {
        let a = acc.evaluate(EmitTo::All).unwrap();
        let s = a.as_struct();
        let c0 = s.column(0).as_primitive::<Int64Type>();
        let s1 = s.column(1).as_primitive::<Float64Type>();
        let c1 = s.column(2).as_primitive::<Int64Type>();
        (0..s.len())
            .map(|i| {
                (
                    c0.value(i),
                    s1.is_valid(i).then(|| s1.value(i)),
                    c1.value(i),
                )
            })
            .collect()
    }

    #[test]
    fn a_pair_adds_up_at_most_m_of_its_rows_and_small_pairs_all_of_theirs() {
        let mut acc = groups(3);
        // Pair 0: 1,000 rows; pair 1: 2 rows, one with a NULL value.
        let v = values(1000, 10.0);
        let mut g = vec![0; 1000];
        g[1] = 1;
        g[2] = 1;
        acc.update_batch(&v, &g, None, 2).unwrap();
        let o = out(&mut acc);
        assert_eq!(o[0].0, 3, "m rows counted, not 1,000");
        assert!(o[0].2 <= 3 && o[0].1.unwrap_or(0.0) <= 30.0);
        assert_eq!(
            o[1],
            (2, Some(10.0), 1),
            "rows 1 (value) and 2 (NULL value)"
        );
        // Control: with m = 1,000 the same pair adds up all its rows (the bound is what
        // holds it to 3).
        let mut acc = groups(1000);
        acc.update_batch(&v, &g, None, 2).unwrap();
        assert_eq!(out(&mut acc)[0].0, 998);
        // Sum of no value is NULL, as SUM is; its count is 0.
        let mut acc = groups(3);
        let v: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Float64Array::from(vec![None::<f64>])),
        ];
        acc.update_batch(&v, &[0], None, 1).unwrap();
        assert_eq!(out(&mut acc), vec![(1, None, 0)]);
    }

    #[test]
    fn the_choice_is_random_and_partial_states_merge_exactly() {
        // Values 0..n: which rows are kept shows in the sum.
        let n = 50;
        let v: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1; n])),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
        ];
        let sums: std::collections::HashSet<i64> = (0..8)
            .map(|seed| {
                let mut acc = groups(2);
                acc.rng = ChaCha8Rng::seed_from_u64(seed);
                acc.update_batch(&v, &vec![0; n], None, 1).unwrap();
                out(&mut acc)[0].1.unwrap() as i64
            })
            .collect();
        assert!(sums.len() > 1, "not always the same rows: {sums:?}");
        // Two partial states merged keep the 2 rows of smallest priority of all 50.
        let (mut a, mut b) = (groups(2), groups(2));
        b.rng = ChaCha8Rng::seed_from_u64(2);
        let half = |from: usize| -> Vec<ArrayRef> {
            vec![
                Arc::new(Int64Array::from(vec![1; 25])),
                Arc::new(Float64Array::from_iter_values(
                    (from..from + 25).map(|i| i as f64),
                )),
            ]
        };
        a.update_batch(&half(0), &[0; 25], None, 1).unwrap();
        b.update_batch(&half(25), &[0; 25], None, 1).unwrap();
        let mut all: Vec<u64> = a.kept[0].clone();
        all.extend(&b.kept[0]);
        let mut rows: Vec<&[u64]> = all.chunks_exact(4).collect();
        rows.sort_by_key(|r| r[0]);
        let want: f64 = rows[..2].iter().map(|r| f64::from_bits(r[3])).sum();
        let mut merged = groups(2);
        merged
            .merge_batch(&a.state(EmitTo::All).unwrap(), &[0], 1)
            .unwrap();
        merged
            .merge_batch(&b.state(EmitTo::All).unwrap(), &[0], 1)
            .unwrap();
        assert_eq!(out(&mut merged), vec![(2, Some(want), 2)]);
    }

    #[test]
    fn a_tie_at_the_boundary_fails_instead_of_adding_one_more_row() {
        let mut acc = groups(1);
        acc.grow(1);
        acc.offer(0, &[5, 3, 1, 1.0f64.to_bits()]);
        acc.offer(0, &[5, 3, 1, 2.0f64.to_bits()]);
        let e = acc.evaluate(EmitTo::All).unwrap_err().to_string();
        assert!(e.contains("same priority"), "{e}");
        // Control: distinct priorities keep the smaller one.
        let mut acc = groups(1);
        acc.grow(1);
        acc.offer(0, &[6, 3, 1, 1.0f64.to_bits()]);
        acc.offer(0, &[5, 3, 1, 2.0f64.to_bits()]);
        assert_eq!(out(&mut acc), vec![(1, Some(2.0), 1)]);
    }
}
