//! Privacy rewrite rule: ORDER BY and LIMIT/OFFSET.
//!
//! Over patient rows a sort or limit keeps the unit (what it keeps is still aggregated
//! above). Over a protected aggregate, a plain sort may not order by a failing cell, so
//! its failing cells are nulled first (rows stay, and the final check re-orders and pads
//! them); a limit (or a sort with a fetch) must not pick rows by a failing cell either, so
//! it sees the aggregate fully sealed. Exercised by `tests/slt/accepted.slt` (every
//! `ORDER BY` over an aggregate, e.g. "Counts by a public-domain key…") and by
//! `tests/slt/rewrite/sort_limit.slt` (LIMIT over an aggregate).

use datafusion::logical_expr::LogicalPlan;

use super::{Kind, Rel, Rewriter};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn sort_limit(&mut self, plan: &LogicalPlan) -> Result<Rel, QueryError> {
        let mut input = self.rel(plan.inputs()[0])?;
        let sort_only = matches!(plan, LogicalPlan::Sort(s) if s.fetch.is_none());
        if input.kind == (Kind::Protected { sealed: false }) {
            input = if sort_only {
                self.seal_for_sort(input)?
            } else {
                self.seal(input)?
            };
        }
        let exprs = self.subqueries(plan.expressions(), &input)?;
        let new = plan
            .with_new_exprs(exprs, vec![input.plan])
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        Ok(Rel { plan: new, ..input })
    }
}
