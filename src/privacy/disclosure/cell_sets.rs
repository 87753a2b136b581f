//! Disclosure check, report support: the contributor set behind every cell of an executed
//! result, by the row's key values — for standard reports that publish several queries as
//! one document (the annual report) and must check their cells *together* (`margins.rs`).
//! The sets are read from the same hidden helper columns the check reads (`helpers.rs`).
//!
//! Guarantees: read-only; every executed row is listed, including rows whose cells fail
//! (their sets are needed to know what a subtraction would reveal); the sets are internal
//! values of the report's own secondary suppression and never leave the process — no
//! released row, note or error carries them.

use std::collections::BTreeSet;

use datafusion::arrow::array::RecordBatch;
use roaring::RoaringBitmap;
use serde_json::Value;

use super::cells;
use super::helpers::Helpers;
use crate::query::QueryError;
use crate::sql::rewrite::Release;

/// One executed row: its key values (as a released row shows them) and, per released
/// column, the union of the contributor sets its number is computed from (`None` for a
/// key or public column).
#[derive(Debug, Clone)]
pub struct RowSets {
    pub keys: Vec<Value>,
    pub sets: Vec<Option<RoaringBitmap>>,
}

/// The contributor sets of every executed row of `batches`.
pub fn cell_sets(batches: &[RecordBatch], release: &Release) -> Result<Vec<RowSets>, QueryError> {
    let used: BTreeSet<usize> = release
        .columns
        .iter()
        .flat_map(|c| c.sets.iter().copied())
        .collect();
    let mut out = Vec::new();
    for batch in batches {
        let helpers = Helpers::new(batch, &release.guards, &used)?;
        let keys: Vec<_> = release
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| cells::normalize(batch.column(c.index)))
            .collect();
        for r in 0..batch.num_rows() {
            let sets = release
                .columns
                .iter()
                .map(|c| {
                    (!c.sets.is_empty()).then(|| {
                        let mut union = RoaringBitmap::new();
                        for &g in &c.sets {
                            if let Some(s) = helpers.set(&release.guards[g].n, r) {
                                union |= s;
                            }
                        }
                        union
                    })
                })
                .collect();
            out.push(RowSets {
                keys: keys.iter().map(|a| cells::json_value(a, r)).collect(),
                sets,
            });
        }
    }
    Ok(out)
}
