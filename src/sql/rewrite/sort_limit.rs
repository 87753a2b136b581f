//! Privacy rewrite rule: ORDER BY and LIMIT/OFFSET.
//!
//! Over patient rows a plain sort keeps the unit and selects nothing (the aggregate above
//! counts every row it sorted), so it stays. A limit or offset (a `Limit` node, a sort
//! with a fetch) over patient rows is refused (with `rules.defences.ordering`, on outside
//! attack-test controls): which patients it keeps depends on other patients' values (ORDER
//! BY birth_year LIMIT 10 lets one patient's birth year push another out of an outer
//! count), or on the engine's row order when there is no ORDER BY. Over a protected
//! aggregate, a plain sort may not order by a failing cell, so its failing cells are
//! nulled first (rows stay, and the final check re-orders and pads them); a limit (or a
//! sort with a fetch) must not pick rows by a failing cell either, so it sees the
//! aggregate fully sealed: limits over released rows stay allowed. Subqueries in sort keys
//! and limits may not be computed from patient rows (`subquery`). Exercised by
//! `tests/slt/accepted.slt` (every `ORDER BY` over an aggregate, e.g. "Counts by a
//! public-domain key…"), `tests/slt/rewrite/sort_limit.slt` (LIMIT over an aggregate, and
//! the refusal over patient rows) and `tests/it/ordering.rs`.

use datafusion::logical_expr::LogicalPlan;

use super::subquery::Site;
use super::{Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

const ORDERED_SELECTION: &str = "LIMIT / OFFSET (with or without ORDER BY) over patient rows is not supported: which patients it keeps would depend on other patients' values or on the row order. Select patients by a condition (WHERE …), aggregate per patient first (GROUP BY pid, or row_number() OVER (PARTITION BY pid ORDER BY …) = 1 for each patient's first record), or apply ORDER BY / LIMIT to the aggregated result / 患者行に対する LIMIT・OFFSET（ORDER BY の有無を問わず）には対応していません。残る患者が他の患者の値や行の順序で決まるためです。条件（WHERE）で絞り込むか、先に患者ごとに集計する（GROUP BY pid、患者ごとの最初の記録なら row_number() OVER (PARTITION BY pid ORDER BY …) = 1）か、集計結果に ORDER BY・LIMIT を適用してください";

impl Rewriter<'_> {
    pub(super) fn sort_limit(&mut self, plan: &LogicalPlan) -> Result<Rel, QueryError> {
        let mut input = self.rel(plan.inputs()[0])?;
        let sort_only = matches!(plan, LogicalPlan::Sort(s) if s.fetch.is_none());
        if input.kind == Kind::Rows && !sort_only && self.rules.defences.ordering {
            return Err(unsupported(ORDERED_SELECTION));
        }
        if input.kind == (Kind::Protected { sealed: false }) {
            input = if sort_only {
                self.seal_for_sort(input)?
            } else {
                self.seal(input)?
            };
        }
        let exprs = self.subqueries_at(plan.expressions(), &input, Site::Order)?;
        let new = plan
            .with_new_exprs(exprs, vec![input.plan])
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        Ok(Rel { plan: new, ..input })
    }
}
