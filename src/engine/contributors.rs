//! Engine stage, contributor sets: the aggregate `__kura_contributors(pid)` that the privacy
//! rewrite puts beside every released cell (`sql::rewrite::aggregate`), and the scalar
//! `__kura_contributor_count(set)` that in-plan sealing (`sql::rewrite::seal`) compares with k.
//!
//! The aggregate maps each non-NULL pid through the extract's [`PatientIndex`] and collects
//! the indices in a roaring bitmap, returned serialised (portable format) as `Binary`: the
//! *set* of patients whose rows feed the cell (the rewrite passes `CASE WHEN <feeds the cell>
//! THEN pid END`, so NULL rows do not count, exactly as `count(DISTINCT …)` did). Its size is
//! the contributor count; the set itself feeds secondary suppression and the release ledger.
//!
//! Guarantees: a pid outside the index fails the query (internal error, no value in the
//! message), never silently drops a contributor; the functions are not registered in any
//! session, so researcher SQL cannot call them (and the guard refuses the `__kura` prefix).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};

use super::accumulate::binary_state;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, GroupsAccumulator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::patient_index::PatientIndex;
use super::set_groups::SetGroups;

/// Name of the contributor-set aggregate.
pub const CONTRIBUTORS: &str = "__kura_contributors";
/// Name of the set-size scalar.
pub const CONTRIBUTOR_COUNT: &str = "__kura_contributor_count";

/// `__kura_contributors(pid)` over one extract's index.
#[derive(Debug, Clone)]
pub struct Contributors {
    index: Arc<PatientIndex>,
    signature: Signature,
}

impl PartialEq for Contributors {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.index, &other.index)
    }
}
impl Eq for Contributors {}
impl Hash for Contributors {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index.id.hash(state);
    }
}

impl Contributors {
    pub fn new(index: Arc<PatientIndex>) -> Self {
        Self {
            index,
            signature: Signature::uniform(
                1,
                vec![DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8],
                Volatility::Immutable,
            ),
        }
    }

    /// The patient index the sets are taken over.
    pub fn index(&self) -> &Arc<PatientIndex> {
        &self.index
    }

    /// The aggregate as a logical function, for the rewrite to call.
    pub fn udaf(index: Arc<PatientIndex>) -> Arc<AggregateUDF> {
        Arc::new(AggregateUDF::from(Self::new(index)))
    }
}

impl AggregateUDFImpl for Contributors {
    fn name(&self) -> &str {
        CONTRIBUTORS
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn is_nullable(&self) -> bool {
        false
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SetAccumulator {
            index: self.index.clone(),
            set: RoaringBitmap::new(),
            cursor: 0,
        }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(binary_state(args.name, "set"))
    }
    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SetGroups::new(self.index.clone())))
    }
    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(serialise(&RoaringBitmap::new()))))
    }
}

#[derive(Debug)]
struct SetAccumulator {
    index: Arc<PatientIndex>,
    set: RoaringBitmap,
    /// Where the last pid was found (`PatientIndex::get_near`).
    cursor: u32,
}

impl SetAccumulator {
    fn add(&mut self, pid: Option<&str>) -> Result<()> {
        let Some(pid) = pid else { return Ok(()) };
        match self.index.get_near(pid.as_bytes(), &mut self.cursor) {
            Some(i) => {
                self.set.insert(i);
                Ok(())
            }
            None => Err(missing_pid()),
        }
    }
}

impl Accumulator for SetAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let a = &values[0];
        match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().iter().try_for_each(|p| self.add(p)),
            DataType::LargeUtf8 => a.as_string::<i64>().iter().try_for_each(|p| self.add(p)),
            DataType::Utf8View => a.as_string_view().iter().try_for_each(|p| self.add(p)),
            DataType::Null => Ok(()),
            other => Err(DataFusionError::Internal(format!(
                "{CONTRIBUTORS} over a {other} column"
            ))),
        }
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(serialise(&self.set))))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.set.serialized_size()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let a = states[0].as_binary::<i32>();
        for bytes in a.iter().flatten() {
            self.set |= deserialise(bytes).map_err(DataFusionError::Internal)?;
        }
        Ok(())
    }
}

/// The error for a pid outside the extract's index (never names the pid).
pub fn missing_pid() -> DataFusionError {
    DataFusionError::Internal(
        "a pid is missing from the extract's patient index; rebuild the extract".into(),
    )
}

/// A set in the portable roaring format.
pub fn serialise(set: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(set.serialized_size());
    set.serialize_into(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// A set from the portable roaring format (validated).
pub fn deserialise(bytes: &[u8]) -> Result<RoaringBitmap, String> {
    RoaringBitmap::deserialize_from(bytes).map_err(|e| format!("malformed contributor set: {e}"))
}

/// `__kura_contributor_count(set)`: the size of a serialised set (NULL stays NULL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContributorCount {
    signature: Signature,
}

impl Default for ContributorCount {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        }
    }
}

impl ContributorCount {
    /// `__kura_contributor_count(e)`.
    pub fn call(e: Expr) -> Expr {
        ScalarUDF::from(Self::default()).call(vec![e])
    }
}

impl ScalarUDFImpl for ContributorCount {
    fn name(&self) -> &str {
        CONTRIBUTOR_COUNT
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let sets: &BinaryArray = arrays[0].as_binary::<i32>();
        let counts = sets
            .iter()
            .map(|b| {
                b.map(|bytes| deserialise(bytes).map(|s| s.len() as i64))
                    .transpose()
            })
            .collect::<std::result::Result<Int64Array, String>>()
            .map_err(DataFusionError::Internal)?;
        Ok(ColumnarValue::Array(Arc::new(counts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_collect_indices_ignore_nulls_and_refuse_unknown_pids() {
        let index = Arc::new(
            PatientIndex::from_pids("t", vec!["a".into(), "b".into(), "c".into()]).unwrap(),
        );
        let mut acc = SetAccumulator {
            index,
            set: RoaringBitmap::new(),
            cursor: 0,
        };
        let pids: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec![
            Some("c"),
            None,
            Some("a"),
            Some("c"),
        ]));
        acc.update_batch(&[pids]).unwrap();
        assert_eq!(acc.set.iter().collect::<Vec<_>>(), vec![0, 2]);
        let ScalarValue::Binary(Some(bytes)) = acc.evaluate().unwrap() else {
            panic!("binary")
        };
        assert_eq!(deserialise(&bytes).unwrap().len(), 2);
        let unknown: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from(vec!["z"]));
        let e = acc.update_batch(&[unknown]).unwrap_err().to_string();
        assert!(!e.contains('z'), "no value in the error: {e}");
    }
}
