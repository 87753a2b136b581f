//! Engine stage, contributor sets per group: the `GroupsAccumulator` of
//! `__kura_contributors` (`contributors.rs`). A grouped query keeps one roaring bitmap per
//! group in one vector and adds a whole batch in one pass over its rows, instead of one
//! row accumulator per group fed through per-group slices (DataFusion's fallback adapter,
//! which copied every batch once per group it touched).
//!
//! Guarantees: the same sets as the row accumulator — a row counts when it passes the
//! aggregate's filter and its pid is not NULL; a pid outside the index fails the query
//! (fail closed, no value in the message); partial states merge by union.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, StringArray, StringViewArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use roaring::RoaringBitmap;

use super::accumulate::passes;
use super::contributors::{CONTRIBUTORS, deserialise, missing_pid, serialise};
use super::patient_index::PatientIndex;

/// One contributor set per group.
#[derive(Debug)]
pub struct SetGroups {
    index: Arc<PatientIndex>,
    sets: Vec<RoaringBitmap>,
    /// Members over all sets (for the memory estimate).
    members: u64,
    /// Where the last pid was found in the index (`PatientIndex::get_near`).
    cursor: u32,
}

impl SetGroups {
    pub fn new(index: Arc<PatientIndex>) -> Self {
        Self {
            index,
            sets: Vec::new(),
            members: 0,
            cursor: 0,
        }
    }

    /// Add each row's pid to its group's set. Rows of one patient usually come together
    /// (registries are exported patient by patient), so the last lookup is reused.
    fn add<'a>(
        &mut self,
        pids: impl Iterator<Item = Option<&'a str>>,
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let mut last: Option<(&[u8], u32)> = None;
        for (row, (pid, &g)) in pids.zip(groups).enumerate() {
            if !passes(filter, row) {
                continue;
            }
            let Some(pid) = pid.map(str::as_bytes) else {
                continue;
            };
            let i = match last {
                Some((p, i)) if p == pid => i,
                _ => {
                    let i = self
                        .index
                        .get_near(pid, &mut self.cursor)
                        .ok_or_else(missing_pid)?;
                    last = Some((pid, i));
                    i
                }
            };
            if self.sets[g].insert(i) {
                self.members += 1;
            }
        }
        Ok(())
    }

    fn grow(&mut self, total: usize) {
        if self.sets.len() < total {
            self.sets.resize_with(total, RoaringBitmap::new);
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let sets = emit_to.take_needed(&mut self.sets);
        let mut out = BinaryBuilder::with_capacity(sets.len(), 0);
        for s in &sets {
            self.members = self.members.saturating_sub(s.len());
            out.append_value(serialise(s));
        }
        Arc::new(out.finish())
    }
}

impl GroupsAccumulator for SetGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let a = &values[0];
        match a.data_type() {
            DataType::Utf8 => {
                let a: &StringArray = a.as_string::<i32>();
                self.add(a.iter(), group_indices, opt_filter)
            }
            DataType::LargeUtf8 => self.add(a.as_string::<i64>().iter(), group_indices, opt_filter),
            DataType::Utf8View => {
                let a: &StringViewArray = a.as_string_view();
                self.add(a.iter(), group_indices, opt_filter)
            }
            DataType::Null => Ok(()),
            other => Err(DataFusionError::Internal(format!(
                "{CONTRIBUTORS} over a {other} column"
            ))),
        }
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
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
            let Some(bytes) = bytes else { continue };
            let before = self.sets[g].len();
            self.sets[g] |= deserialise(bytes).map_err(DataFusionError::Internal)?;
            self.members += self.sets[g].len() - before;
        }
        Ok(())
    }

    /// Each row as a state of its own: the set of its patient (empty when it does not
    /// count). Only called if partial aggregation is skipped, which this accumulator
    /// does not ask for (`supports_convert_to_state` stays false).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut one = SetGroups::new(self.index.clone());
        let rows = values[0].len();
        let groups: Vec<usize> = (0..rows).collect();
        one.update_batch(values, &groups, opt_filter, rows)?;
        Ok(vec![one.emit(EmitTo::All)])
    }

    fn size(&self) -> usize {
        // An array container holds a member in 2 bytes; bitmap containers hold more for
        // less. An estimate that grows with the data is what the memory pool needs.
        self.sets.capacity() * std::mem::size_of::<RoaringBitmap>()
            + usize::try_from(self.members)
                .unwrap_or(usize::MAX)
                .saturating_mul(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    fn index() -> Arc<PatientIndex> {
        Arc::new(PatientIndex::from_pids("t", vec!["a".into(), "b".into(), "c".into()]).unwrap())
    }

    fn sets(acc: &mut SetGroups) -> Vec<Vec<u32>> {
        let out = acc.evaluate(EmitTo::All).unwrap();
        out.as_binary::<i32>()
            .iter()
            .map(|b| deserialise(b.unwrap()).unwrap().iter().collect())
            .collect()
    }

    #[test]
    fn rows_go_to_their_group_filtered_and_without_nulls() {
        let mut acc = SetGroups::new(index());
        let pids: ArrayRef = Arc::new(StringArray::from(vec![
            Some("c"),
            Some("c"),
            None,
            Some("a"),
            Some("b"),
        ]));
        let filter = BooleanArray::from(vec![Some(true), Some(true), Some(true), None, Some(true)]);
        acc.update_batch(&[pids], &[0, 1, 1, 1, 1], Some(&filter), 3)
            .unwrap();
        assert_eq!(sets(&mut acc), vec![vec![2], vec![1, 2], vec![]]);
    }

    #[test]
    fn partial_states_merge_by_union_and_unknown_pids_fail_without_the_value() {
        let mut a = SetGroups::new(index());
        let mut b = SetGroups::new(index());
        let p: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        a.update_batch(std::slice::from_ref(&p), &[0, 0], None, 1)
            .unwrap();
        b.update_batch(&[p], &[0, 1], None, 2).unwrap();
        let state = b.state(EmitTo::All).unwrap();
        a.merge_batch(&state, &[0, 0], 1).unwrap();
        assert_eq!(sets(&mut a), vec![vec![0, 1]]);
        let unknown: ArrayRef = Arc::new(StringArray::from(vec!["zz-secret"]));
        let e = a
            .update_batch(&[unknown], &[0], None, 1)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("zz-secret"), "no value in the error: {e}");
    }
}
