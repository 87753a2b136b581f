//! Privacy rewrite rule: a per-patient pre-aggregation (`… GROUP BY pid`).
//!
//! Grouped by the unit, every output row is still one patient's, so the result stays
//! [`Kind::Rows`] and keeps `pid`: nothing is released from it directly, and the
//! aggregation over patients above it is protected as usual. Any allow-listed aggregate,
//! MIN/MAX on any column and the per-patient-only ones (slopes, correlations) may run
//! here. A patient seen at several facilities keeps one of them (the smallest), which can
//! only undercount facilities later and so only suppress more. Exercised by
//! `tests/slt/accepted.slt` ("Per-patient pre-aggregation, then a distribution over
//! patients") and `tests/slt/refusals.slt` (`SELECT pid, count(*) … GROUP BY pid`: rows at
//! the top).

use std::sync::Arc;

use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

use super::aggregate::{check_aggregate, facility_indices};
use super::lineage::col_at;
use super::{Col, Kind, Rel, Rewriter};
use crate::query::QueryError;

impl Rewriter<'_> {
    /// Aggregate patient rows grouped by `pid`; `cols` is the lineage of the group keys.
    pub(super) fn per_patient(
        &mut self,
        input: Rel,
        group: Vec<Expr>,
        aggr: Vec<Expr>,
        mut cols: Vec<Col>,
    ) -> Result<Rel, QueryError> {
        let mut exprs = aggr.clone();
        // Grouped by the patient (and keys that depend on the patient only): one row per
        // patient, so its aggregates are values of the patient.
        let one_row = cols.iter().all(|c| c.unit_level);
        for e in &aggr {
            check_aggregate(e, &input, true)?;
            cols.push(Col {
                unit_level: one_row,
                ..Col::default()
            });
        }
        for i in facility_indices(&input) {
            let name = self.fresh("fac");
            exprs.push(min(col_at(&input.plan, i)).alias(name));
            cols.push(Col {
                hidden: true,
                facility: true,
                ..Col::default()
            });
        }
        let agg = Aggregate::try_new(Arc::new(input.plan), group, exprs)
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        Ok(Rel {
            plan: LogicalPlan::Aggregate(agg),
            kind: Kind::Rows,
            cols,
            drop_on_fail: false,
        })
    }
}
