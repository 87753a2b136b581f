//! Disclosure check, rule inputs: the hidden helper columns the privacy rewrite adds for
//! every guard (contributor sets, distinct facilities, per-patient SUM contributions),
//! read from one executed batch and cast once. A helper the plan does not carry is an
//! internal error; a NULL helper reads as `None`, and every rule fails closed on `None`.
//! The helper columns are only read here: they never reach a released row.

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use roaring::RoaringBitmap;

use crate::engine::contributors::deserialise;
use crate::query::QueryError;
use crate::sql::rewrite::Guard;

/// Helper columns of one batch: contributor sets as Binary, counts as Int64,
/// contributions as Float64.
pub(super) struct Helpers {
    sets: HashMap<String, ArrayRef>,
    ints: HashMap<String, ArrayRef>,
    floats: HashMap<String, ArrayRef>,
}

impl Helpers {
    /// Read the helpers of the guards in `used` (guards of inner aggregates that were
    /// sealed in the plan have no columns in the batch).
    pub(super) fn new(
        batch: &RecordBatch,
        guards: &[Guard],
        used: &BTreeSet<usize>,
    ) -> Result<Self, QueryError> {
        let mut sets = HashMap::new();
        let mut ints = HashMap::new();
        let mut floats = HashMap::new();
        let read = |name: &str, t: &DataType| -> Result<ArrayRef, QueryError> {
            let column = batch.column_by_name(name).ok_or_else(|| {
                QueryError::internal("disclosure check", format!("helper column {name} missing"))
            })?;
            cast(column, t).map_err(|e| QueryError::internal("disclosure check", e))
        };
        for g in used.iter().map(|&i| &guards[i]) {
            sets.insert(g.n.clone(), read(&g.n, &DataType::Binary)?);
            for n in &g.facilities {
                ints.insert(n.clone(), read(n, &DataType::Int64)?);
            }
            if let Some(d) = &g.dominance {
                for n in [&d.top1, &d.top2, &d.total, &d.min] {
                    floats.insert(n.clone(), read(n, &DataType::Float64)?);
                }
            }
        }
        Ok(Self { sets, ints, floats })
    }

    /// A contributor set at row `r`; `None` if absent, NULL or malformed (every rule fails
    /// closed on `None`).
    pub(super) fn set(&self, name: &str, r: usize) -> Option<RoaringBitmap> {
        let a = self.sets.get(name)?.as_binary::<i32>();
        a.is_valid(r)
            .then(|| deserialise(a.value(r)).ok())
            .flatten()
    }

    /// A count helper at row `r`; `None` if absent or NULL.
    pub(super) fn int(&self, name: &str, r: usize) -> Option<i64> {
        let a = self.ints.get(name)?.as_primitive::<Int64Type>();
        a.is_valid(r).then(|| a.value(r))
    }

    /// A contribution helper at row `r`; `None` if absent or NULL.
    pub(super) fn float(&self, name: &str, r: usize) -> Option<f64> {
        let a = self.floats.get(name)?.as_primitive::<Float64Type>();
        a.is_valid(r).then(|| a.value(r))
    }
}
