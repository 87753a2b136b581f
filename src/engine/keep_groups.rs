//! Engine stage, the random choice of groups per patient (DP contribution bounding, P3, with
//! the per-(patient, group) sums of P2 when no row choice precedes it):
//! `__kura_keep_groups(patient, k₁…kₙ, v₁…vₘ)`, aggregated by patient, adds up each value
//! per (patient, group) — a count of its non-NULL values or a sum — keeps at most `L` of
//! the patient's groups and returns them as a list of structs (keys, then sums), which the
//! rewrite unnests. Each (patient, group) pair gets a priority, a 64-bit hash of the patient
//! and the group keys under a seed drawn for the query; a patient keeps the `L` pairs of
//! smallest priority. That is one hash aggregation by patient, with at most `L + 1` pairs
//! held per patient, where an aggregation by (patient, group) followed by
//! `row_number() OVER (PARTITION BY patient ORDER BY random())` sorted every pair in memory.
//!
//! Guarantees: a patient keeps at most `L` groups, whatever the data; which ones depends only
//! on that patient's own pairs and the seed, never on other patients (what the sensitivity
//! of a bounded sum needs). The sums of a kept pair are complete: a pair among a patient's
//! `L` smallest priorities is among the `L + 1` smallest of every subset of pairs, so it
//! was held from its first row on, in every partial state (partial states merge exactly).
//! Two pairs of one patient with equal priority at the boundary (a 64-bit collision) fail
//! the query rather than keep `L + 1` (fail closed). Never registered in a session, so
//! researcher SQL cannot call it (the guard refuses the `__kura` prefix).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Builder, Int64Builder, ListArray,
    StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};

pub use super::accumulate::Add;
use super::accumulate::{MAX_VALUES, binary_state, grouped_only, passes, value_word};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Name of the aggregate.
pub const KEEP_GROUPS: &str = "__kura_keep_groups";

/// `__kura_keep_groups(patient, keys…, values…)` keeping `limit` groups per patient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeepGroups {
    limit: u32,
    /// Names of the struct fields: the group keys, then the sums.
    names: Vec<String>,
    /// How many of the fields are group keys (hashed into the priority).
    keys: usize,
    /// How each value after the keys is added up.
    adds: Vec<Add>,
    seed: u64,
    signature: Signature,
}

/// What the Ballista codec carries of a [`KeepGroups`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepGroupsParts {
    pub limit: u32,
    pub names: Vec<String>,
    pub keys: usize,
    pub adds: Vec<Add>,
    pub seed: u64,
}

impl KeepGroups {
    /// The aggregate over `patient` and `inputs` (the first `keys` of them group keys, the
    /// others values added up as `adds` says, struct fields named by `names`).
    pub fn call(parts: KeepGroupsParts, patient: Expr, inputs: Vec<Expr>) -> Expr {
        let mut args = vec![patient];
        args.extend(inputs);
        Arc::new(Self::udaf(parts)).call(args)
    }

    /// The aggregate itself.
    pub fn udaf(p: KeepGroupsParts) -> AggregateUDF {
        AggregateUDF::from(Self {
            limit: p.limit,
            signature: Signature::any(p.names.len() + 1, Volatility::Volatile),
            names: p.names,
            keys: p.keys,
            adds: p.adds,
            seed: p.seed,
        })
    }

    /// What the Ballista codec carries.
    pub fn parts(&self) -> KeepGroupsParts {
        KeepGroupsParts {
            limit: self.limit,
            names: self.names.clone(),
            keys: self.keys,
            adds: self.adds.clone(),
            seed: self.seed,
        }
    }

    /// The struct fields (keys as they come, sums typed by `adds`).
    fn fields(&self, types: &[DataType]) -> Result<Fields> {
        let fits = types.len() == self.names.len() + 1
            && self.keys + self.adds.len() == self.names.len()
            && self.adds.len() <= MAX_VALUES;
        if !fits {
            return Err(internal(format!(
                "{} arguments for {} fields",
                types.len(),
                self.names.len()
            )));
        }
        let mut fields = Vec::with_capacity(self.names.len());
        for (i, (n, t)) in self.names.iter().zip(&types[1..]).enumerate() {
            let t = match i.checked_sub(self.keys).map(|j| self.adds[j]) {
                None => t.clone(),
                Some(add) => add
                    .output_type(t)
                    .ok_or_else(|| internal(format!("{add:?} of {t}")))?,
            };
            fields.push(Field::new(n, t, true));
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
        let sort: Vec<SortField> = types[1..=self.keys]
            .iter()
            .map(|t| SortField::new(t.clone()))
            .collect();
        Ok(Groups {
            limit: self.limit as usize,
            keys: self.keys,
            adds: self.adds.clone(),
            floats: types[self.keys + 1..]
                .iter()
                .map(|t| *t == DataType::Float64)
                .collect(),
            seed: RandomState::with_seed(self.seed),
            converter: RowConverter::new(sort)?,
            fields,
            kept: Vec::new(),
            keys_arena: Vec::new(),
            sums: Vec::new(),
            pairs: 0,
        })
    }
}

fn internal(what: String) -> DataFusionError {
    DataFusionError::Internal(format!("{KEEP_GROUPS}: {what}"))
}

impl AggregateUDFImpl for KeepGroups {
    fn name(&self) -> &str {
        KEEP_GROUPS
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        let item = DataType::Struct(self.fields(types)?);
        Ok(DataType::List(Arc::new(Field::new_list_field(item, true))))
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        // Only ever planned grouped by patient, where the groups accumulator runs.
        Err(grouped_only(KEEP_GROUPS))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(binary_state(args.name, "pairs"))
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

/// One held (patient, group) pair: its priority, its group keys (bytes of the row
/// converter in the key arena) and its sums (a validity mask, then one word per value, in
/// the sums arena).
#[derive(Debug, Clone, Copy)]
struct Pair {
    priority: u64,
    key_start: usize,
    key_len: usize,
    sums: usize,
}

/// Most patients fall in one or two groups: their pairs live inline.
type Held = SmallVec<[Pair; 2]>;

/// Per patient, the `limit + 1` pairs of smallest priority seen so far, ascending (one
/// more than kept, to see a tie at the boundary).
#[derive(Debug)]
struct Groups {
    limit: usize,
    keys: usize,
    adds: Vec<Add>,
    floats: Vec<bool>,
    seed: RandomState,
    converter: RowConverter,
    fields: Fields,
    kept: Vec<Held>,
    keys_arena: Vec<u8>,
    sums: Vec<u64>,
    pairs: usize,
}

/// One pair's contribution as it arrives: from a row (one value per add) or from a partial
/// state (sums already added up).
struct Offer<'a> {
    priority: u64,
    key: &'a [u8],
    mask: u64,
    words: &'a [u64],
    /// The words are sums of a partial state (counts already counted).
    summed: bool,
}

impl Groups {
    fn grow(&mut self, total: usize) {
        if self.kept.len() < total {
            self.kept.resize_with(total, Held::new);
        }
    }

    fn width(&self) -> usize {
        self.adds.len() + 1
    }

    /// Add one contribution to patient `g`: to its pair if held, else as a new pair if
    /// among the `limit + 1` smallest priorities.
    fn offer(&mut self, g: usize, o: &Offer) {
        let held = &self.kept[g];
        let found = held.iter().position(|p| {
            p.priority == o.priority
                && self.keys_arena[p.key_start..p.key_start + p.key_len] == *o.key
        });
        let sums = match found {
            Some(i) => held[i].sums,
            None => {
                let at = held.partition_point(|p| p.priority < o.priority);
                if at > self.limit {
                    return;
                }
                self.hold(g, at, o)
            }
        };
        self.add(sums, o);
    }

    /// A new pair for patient `g` at position `at`, with empty sums; where its sums are.
    fn hold(&mut self, g: usize, at: usize, o: &Offer) -> usize {
        let pair = Pair {
            priority: o.priority,
            key_start: self.keys_arena.len(),
            key_len: o.key.len(),
            sums: self.sums.len(),
        };
        self.keys_arena.extend_from_slice(o.key);
        let width = self.width();
        self.sums.resize(self.sums.len() + width, 0);
        let held = &mut self.kept[g];
        held.insert(at, pair);
        if held.len() > self.limit + 1 {
            held.pop();
        } else {
            self.pairs += 1;
        }
        pair.sums
    }

    /// Add a contribution's values into the sums at `at`.
    fn add(&mut self, at: usize, o: &Offer) {
        for (j, add) in self.adds.iter().enumerate() {
            let bit = 1u64 << j;
            if o.mask & bit == 0 {
                continue;
            }
            let w = &mut self.sums[at + 1 + j];
            let v = o.words[j];
            *w = match (add, o.summed, self.floats[j]) {
                (Add::CountNonNull, false, _) => *w + 1,
                (Add::CountNonNull, true, _) => w.wrapping_add(v),
                (Add::Sum, _, true) => (f64::from_bits(*w) + f64::from_bits(v)).to_bits(),
                (Add::Sum, _, false) => w.wrapping_add(v),
            };
            self.sums[at] |= bit;
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Held> {
        let taken = emit_to.take_needed(&mut self.kept);
        let emitted: usize = taken.iter().map(|h| h.len()).sum();
        self.pairs = self.pairs.saturating_sub(emitted);
        taken
    }

    /// The kept pairs of one patient: at most `limit`, and no tie at the boundary.
    fn chosen<'a>(&self, held: &'a [Pair]) -> Result<&'a [Pair]> {
        if held.len() > self.limit && held[self.limit - 1].priority == held[self.limit].priority {
            return Err(DataFusionError::Execution(format!(
                "{KEEP_GROUPS}: two groups of one patient drew the same priority; run the query again"
            )));
        }
        Ok(&held[..held.len().min(self.limit)])
    }

    /// Every row's priority (hash of patient and keys) and its keys as rows.
    fn prepare(&self, values: &[ArrayRef]) -> Result<(Vec<u64>, Rows)> {
        let mut priorities = vec![0; values[0].len()];
        create_hashes(&values[..=self.keys], &self.seed, &mut priorities)?;
        let rows = self.converter.convert_columns(&values[1..=self.keys])?;
        Ok((priorities, rows))
    }

    /// A row's values as words, and which are not NULL.
    fn row_words(&self, values: &[ArrayRef], i: usize, words: &mut Vec<u64>) -> u64 {
        words.clear();
        let mut mask = 0;
        for (j, v) in values[self.keys + 1..].iter().enumerate() {
            if v.is_valid(i) {
                mask |= 1 << j;
            }
            // A count reads only the validity (its values need not be numbers).
            let read = self.floats[j] || self.adds[j] == Add::Sum;
            words.push(if read {
                value_word(v, i, self.floats[j])
            } else {
                0
            });
        }
        mask
    }

    /// The sum columns of the chosen pairs, in order.
    fn sum_columns(&self, chosen: &[Pair]) -> Vec<ArrayRef> {
        let mut out: Vec<ArrayRef> = Vec::with_capacity(self.adds.len());
        for (j, add) in self.adds.iter().enumerate() {
            let bit = 1u64 << j;
            let valid = |p: &Pair| self.sums[p.sums] & bit != 0;
            let word = |p: &Pair| self.sums[p.sums + 1 + j];
            if *add == Add::Sum && self.floats[j] {
                let mut b = Float64Builder::with_capacity(chosen.len());
                for p in chosen {
                    b.append_option(valid(p).then(|| f64::from_bits(word(p))));
                }
                out.push(Arc::new(b.finish()));
            } else {
                let mut b = Int64Builder::with_capacity(chosen.len());
                for p in chosen {
                    let n = word(p) as i64;
                    b.append_option((*add == Add::CountNonNull || valid(p)).then_some(n));
                }
                out.push(Arc::new(b.finish()));
            }
        }
        out
    }

    /// Drop the arenas once every patient has been emitted.
    fn release_if_done(&mut self) {
        if self.kept.is_empty() {
            self.keys_arena = Vec::new();
            self.sums = Vec::new();
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
        let (priorities, rows) = self.prepare(values)?;
        let mut words = Vec::with_capacity(self.adds.len());
        for (i, (&g, &priority)) in group_indices.iter().zip(&priorities).enumerate() {
            if passes(opt_filter, i) {
                let mask = self.row_words(values, i, &mut words);
                let row = rows.row(i);
                let offer = Offer {
                    priority,
                    key: row.as_ref(),
                    mask,
                    words: &words,
                    summed: false,
                };
                self.offer(g, &offer);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        let mut chosen = Vec::with_capacity(taken.len());
        let mut offsets = Vec::with_capacity(taken.len() + 1);
        offsets.push(0i32);
        for held in &taken {
            chosen.extend_from_slice(self.chosen(held)?);
            offsets.push(i32::try_from(chosen.len()).map_err(|_| too_many())?);
        }
        let parser = self.converter.parser();
        let keys = chosen
            .iter()
            .map(|p| parser.parse(&self.keys_arena[p.key_start..p.key_start + p.key_len]));
        let mut columns = self.converter.convert_rows(keys)?;
        columns.extend(self.sum_columns(&chosen));
        let columns = columns
            .iter()
            .zip(self.fields.iter())
            .map(|(c, f)| cast(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let items = StructArray::try_new(self.fields.clone(), columns, None)?;
        let field = Arc::new(Field::new_list_field(items.data_type().clone(), true));
        let offsets = OffsetBuffer::new(offsets.into());
        let list = ListArray::try_new(field, offsets, Arc::new(items), None)?;
        self.release_if_done();
        Ok(Arc::new(list))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        let width = self.width();
        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(taken.len() + 1);
        offsets.push(0i32);
        for held in &taken {
            for p in held {
                let key = &self.keys_arena[p.key_start..p.key_start + p.key_len];
                let sums = &self.sums[p.sums..p.sums + width];
                put_pair(&mut data, p.priority, key, sums);
            }
            offsets.push(i32::try_from(data.len()).map_err(|_| too_many())?);
        }
        self.release_if_done();
        state_column(offsets, data)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let width = self.width();
        let states = values[0].as_binary::<i32>();
        let mut words = Vec::with_capacity(width);
        for (bytes, &g) in states.iter().zip(group_indices) {
            let mut rest = bytes.unwrap_or_default();
            while !rest.is_empty() {
                let (priority, key, tail) = split_pair(rest, width, &mut words)?;
                let offer = Offer {
                    priority,
                    key,
                    mask: words[0],
                    words: &words[1..],
                    summed: true,
                };
                self.offer(g, &offer);
                rest = tail;
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
        let (priorities, rows) = self.prepare(values)?;
        let mut data = Vec::new();
        let mut offsets = vec![0i32];
        let mut words = Vec::with_capacity(self.adds.len());
        for (i, &priority) in priorities.iter().enumerate() {
            if passes(opt_filter, i) {
                let mask = self.row_words(values, i, &mut words);
                let mut sums = vec![mask];
                sums.extend(
                    words
                        .iter()
                        .zip(&self.adds)
                        .enumerate()
                        .map(|(j, (w, a))| match a {
                            Add::CountNonNull => (mask >> j) & 1,
                            Add::Sum => *w,
                        }),
                );
                put_pair(&mut data, priority, rows.row(i).as_ref(), &sums);
            }
            offsets.push(i32::try_from(data.len()).map_err(|_| too_many())?);
        }
        state_column(offsets, data)
    }

    fn size(&self) -> usize {
        self.kept.capacity() * std::mem::size_of::<Held>()
            + self.pairs.saturating_mul(std::mem::size_of::<Pair>())
            + self.keys_arena.capacity()
            + self.sums.capacity() * 8
            + self.converter.size()
    }
}

fn too_many() -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{KEEP_GROUPS}: more than 2 GiB of pairs in one batch"
    ))
}

/// The partial states of consecutive patients: `data` cut at `offsets`.
fn state_column(offsets: Vec<i32>, data: Vec<u8>) -> Result<Vec<ArrayRef>> {
    let offsets = OffsetBuffer::new(offsets.into());
    Ok(vec![Arc::new(BinaryArray::try_new(
        offsets,
        data.into(),
        None,
    )?)])
}

/// Append one pair to a partial state: priority, key length, key, then its sums (mask
/// first).
fn put_pair(data: &mut Vec<u8>, priority: u64, key: &[u8], sums: &[u64]) {
    data.extend_from_slice(&priority.to_le_bytes());
    data.extend_from_slice(&(key.len() as u64).to_le_bytes());
    data.extend_from_slice(key);
    for w in sums {
        data.extend_from_slice(&w.to_le_bytes());
    }
}

/// One pair of a partial state (its `width` sum words into `words`); then the rest.
fn split_pair<'a>(
    bytes: &'a [u8],
    width: usize,
    words: &mut Vec<u64>,
) -> Result<(u64, &'a [u8], &'a [u8])> {
    let malformed = || internal("malformed state".into());
    let word = |b: &[u8]| -> Result<u64> {
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| malformed())?))
    };
    let (head, rest) = bytes.split_at_checked(16).ok_or_else(malformed)?;
    let priority = word(&head[..8])?;
    let len = usize::try_from(word(&head[8..])?).map_err(|_| malformed())?;
    let (key, rest) = rest.split_at_checked(len).ok_or_else(malformed)?;
    let (sums, tail) = rest.split_at_checked(width * 8).ok_or_else(malformed)?;
    words.clear();
    for w in sums.chunks_exact(8) {
        words.push(word(w)?);
    }
    Ok((priority, key, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringViewArray, UInt32Array};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};

    const SEED: u64 = 7;

    /// Arguments: patient (UInt32), one key (Utf8View), a count and a sum of one Int64.
    fn groups(limit: usize) -> Groups {
        let udf = KeepGroups::udaf(KeepGroupsParts {
            limit: limit as u32,
            names: vec!["k".into(), "c".into(), "s".into()],
            keys: 1,
            adds: vec![Add::CountNonNull, Add::Sum],
            seed: SEED,
        });
        let k = udf.inner().as_ref().downcast_ref::<KeepGroups>().unwrap();
        let types = [
            DataType::UInt32,
            DataType::Utf8View,
            DataType::Int64,
            DataType::Int64,
        ];
        Groups {
            limit,
            keys: 1,
            adds: k.adds.clone(),
            floats: vec![false, false],
            seed: RandomState::with_seed(SEED),
            converter: RowConverter::new(vec![SortField::new(DataType::Utf8View)]).unwrap(),
            fields: k.fields(&types).unwrap(),
            kept: Vec::new(),
            keys_arena: Vec::new(),
            sums: Vec::new(),
            pairs: 0,
        }
    }

    type Row<'a> = (u32, Option<&'a str>, Option<i64>);

    fn batch(rows: &[Row]) -> Vec<ArrayRef> {
        let v: ArrayRef = Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2)));
        vec![
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringViewArray::from_iter(rows.iter().map(|r| r.1))),
            v.clone(),
            v,
        ]
    }

    fn run(acc: &mut Groups, rows: &[Row], patients: usize) {
        let idx: Vec<usize> = rows.iter().map(|r| r.0 as usize).collect();
        acc.update_batch(&batch(rows), &idx, None, patients)
            .unwrap();
    }

    /// Per patient, its kept (key, count, sum), sorted.
    type Kept = Vec<Vec<(Option<String>, i64, Option<i64>)>>;

    fn kept(out: &ArrayRef) -> Kept {
        let list = out.as_list::<i32>();
        (0..list.len())
            .map(|g| {
                let items = list.value(g);
                let s = items.as_struct();
                let keys = s.column(0).as_string_view();
                let c = s.column(1).as_primitive::<Int64Type>();
                let sum = s.column(2).as_primitive::<Int64Type>();
                let mut v: Vec<_> = (0..s.len())
                    .map(|i| {
                        (
                            keys.is_valid(i).then(|| keys.value(i).to_string()),
                            c.value(i),
                            sum.is_valid(i).then(|| sum.value(i)),
                        )
                    })
                    .collect();
                v.sort();
                v
            })
            .collect()
    }

    /// The keys among `rows` (all of one patient) of the `l` smallest priorities.
    fn smallest(rows: &[Row], l: usize, seed: u64) -> Vec<Option<String>> {
        let cols = batch(rows);
        let mut h = vec![0; rows.len()];
        create_hashes(&cols[..2], &RandomState::with_seed(seed), &mut h).unwrap();
        let mut by: Vec<_> = h.into_iter().zip(rows).collect();
        by.sort_by_key(|(h, _)| *h);
        by.dedup_by_key(|(h, _)| *h);
        let mut v: Vec<_> = by[..l]
            .iter()
            .map(|(_, r)| r.1.map(str::to_string))
            .collect();
        v.sort();
        v
    }

    fn keys_of(k: &[(Option<String>, i64, Option<i64>)]) -> Vec<Option<String>> {
        k.iter().map(|x| x.0.clone()).collect()
    }

    const A: [Row; 6] = [
        (0, Some("a"), Some(1)),
        (0, Some("b"), Some(2)),
        (0, None, Some(3)),
        (0, Some("d"), Some(4)),
        (0, Some("e"), Some(5)),
        (0, Some("f"), Some(6)),
    ];

    #[test]
    fn a_patient_keeps_its_l_groups_of_smallest_priority_whatever_the_others_have() {
        let mut acc = groups(2);
        run(&mut acc, &A, 2);
        run(
            &mut acc,
            &[(1, Some("a"), Some(9)), (1, Some("z"), Some(8))],
            2,
        );
        let out = kept(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!(keys_of(&out[0]), smallest(&A, 2, SEED));
        assert_eq!(out[1].len(), 2, "a patient with L groups keeps them all");
        // Another patient with many more groups, before and after: patient 0's choice is
        // the same (it depends on its own pairs and the seed only).
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let many: Vec<Row> = (0..200)
            .map(|i| (1, Some(keys[i].as_str()), Some(i as i64)))
            .collect();
        let mut acc = groups(2);
        run(&mut acc, &many, 2);
        run(&mut acc, &A, 2);
        let out = kept(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!(keys_of(&out[0]), smallest(&A, 2, SEED));
        assert_eq!(out[1].len(), 2);
        // Control: with L = 1,000 the same patients keep every group (the bound is what
        // holds them to 2).
        let mut acc = groups(1000);
        run(&mut acc, &many, 2);
        run(&mut acc, &A, 2);
        let out = kept(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!((out[0].len(), out[1].len()), (6, 200));
        // Control: the choice is random, not the first L seen: under another seed, the
        // choice differs.
        let differs = (0..10).any(|_| smallest(&A, 2, rand::random()) != smallest(&A, 2, SEED));
        assert!(differs);
    }

    #[test]
    fn the_rows_of_a_kept_group_are_added_up_whenever_they_come() {
        // Three rows of group "a" (one NULL value), spread among other groups' rows; L is
        // large enough to keep everything.
        let rows: [Row; 6] = [
            (0, Some("a"), Some(1)),
            (0, Some("b"), Some(10)),
            (0, Some("a"), None),
            (0, Some("c"), Some(100)),
            (0, Some("a"), Some(4)),
            (0, Some("b"), None),
        ];
        let mut acc = groups(5);
        run(&mut acc, &rows, 1);
        let out = kept(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!(
            out[0],
            vec![
                (Some("a".into()), 2, Some(5)),
                (Some("b".into()), 1, Some(10)),
                (Some("c".into()), 1, Some(100)),
            ]
        );
        // A group with no non-NULL value: count 0, sum NULL (as SUM).
        let mut acc = groups(5);
        run(&mut acc, &[(0, Some("a"), None)], 1);
        assert_eq!(
            kept(&acc.evaluate(EmitTo::All).unwrap())[0],
            vec![(Some("a".into()), 0, None)]
        );
    }

    #[test]
    fn partial_states_merge_to_the_single_pass_choice_and_sums() {
        // Rows of the same groups in both partial states.
        let rows: Vec<Row> = (0..40)
            .map(|i| (0, Some(["a", "b", "c", "d", "e"][i % 5]), Some(i as i64)))
            .collect();
        let mut whole = groups(3);
        run(&mut whole, &rows, 1);
        let expected = kept(&whole.evaluate(EmitTo::All).unwrap());
        assert_eq!(expected[0].len(), 3);
        let (x, y) = rows.split_at(17);
        let (mut a, mut b) = (groups(3), groups(3));
        run(&mut a, x, 1);
        run(&mut b, y, 1);
        let mut merged = groups(3);
        merged
            .merge_batch(&a.state(EmitTo::All).unwrap(), &[0], 1)
            .unwrap();
        merged
            .merge_batch(&b.state(EmitTo::All).unwrap(), &[0], 1)
            .unwrap();
        assert_eq!(kept(&merged.evaluate(EmitTo::All).unwrap()), expected);
        // Each row as its own state merges the same way.
        let mut one = groups(3);
        let state = one.convert_to_state(&batch(&rows), None).unwrap();
        one.merge_batch(&state, &[0; 40], 1).unwrap();
        assert_eq!(kept(&one.evaluate(EmitTo::All).unwrap()), expected);
    }

    fn offer(acc: &mut Groups, priority: u64, key: &[u8]) {
        let o = Offer {
            priority,
            key,
            mask: 0b11,
            words: &[0, 1],
            summed: false,
        };
        acc.offer(0, &o);
    }

    #[test]
    fn a_tie_at_the_boundary_fails_instead_of_keeping_one_more() {
        let key = |s: &str| {
            let a: ArrayRef = Arc::new(StringViewArray::from(vec![s]));
            groups(1)
                .converter
                .convert_columns(&[a])
                .unwrap()
                .row(0)
                .as_ref()
                .to_vec()
        };
        let mut acc = groups(1);
        acc.grow(1);
        offer(&mut acc, 5, &key("x"));
        offer(&mut acc, 5, &key("y"));
        let e = acc.evaluate(EmitTo::All).unwrap_err().to_string();
        assert!(e.contains("same priority"), "{e}");
        // Control: distinct priorities keep the smaller one; an evicted group's later rows
        // are not let back in.
        let mut acc = groups(1);
        acc.grow(1);
        offer(&mut acc, 6, &key("x"));
        offer(&mut acc, 5, &key("y"));
        offer(&mut acc, 9, &key("z"));
        offer(&mut acc, 9, &key("z"));
        let out = kept(&acc.evaluate(EmitTo::All).unwrap());
        assert_eq!(out[0], vec![(Some("y".into()), 1, Some(1))]);
    }

    #[test]
    fn keys_come_back_with_their_types_and_nulls_and_float_sums_add() {
        let udf = KeepGroups::udaf(KeepGroupsParts {
            limit: 5,
            names: vec!["k".into(), "s".into()],
            keys: 1,
            adds: vec![Add::Sum],
            seed: SEED,
        });
        let k = udf.inner().as_ref().downcast_ref::<KeepGroups>().unwrap();
        let types = [DataType::UInt32, DataType::Utf8View, DataType::Float64];
        let mut acc = Groups {
            floats: vec![true],
            adds: vec![Add::Sum],
            fields: k.fields(&types).unwrap(),
            ..groups(5)
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![0, 0, 0])),
            Arc::new(StringViewArray::from(vec![None, Some("鈴木"), None])),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(2.25)])),
        ];
        acc.update_batch(&cols, &[0, 0, 0], None, 1).unwrap();
        let out = acc.evaluate(EmitTo::All).unwrap();
        let items = out.as_list::<i32>().value(0);
        let s = items.as_struct();
        assert_eq!(s.column(0).data_type(), &DataType::Utf8View);
        assert_eq!(s.column(0).null_count(), 1);
        let sums = s.column(1).as_primitive::<Float64Type>();
        let mut got: Vec<Option<f64>> = (0..2)
            .map(|i| sums.is_valid(i).then(|| sums.value(i)))
            .collect();
        got.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(got, vec![None, Some(3.75)]);
        assert!(
            acc.sums.is_empty(),
            "memory released after the last patient"
        );
    }
}
