//! Privacy rewrite rule: SELECT DISTINCT and DISTINCT ON.
//!
//! Over patient rows, `SELECT DISTINCT` is a GROUP BY of its visible columns without
//! aggregates: each released row is a group that is guarded like any other, so a value
//! combination seen on fewer than k patients is not shown. `DISTINCT ON` over patient
//! rows would pick one patient's row per key and is refused. Over a protected aggregate
//! the distinct sees it sealed; over public data it stays public. Exercised by
//! `tests/slt/rewrite/distinct.slt`.

use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};

use super::lineage::{col_at, public_rel};
use super::{Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn distinct(&mut self, plan: &LogicalPlan, d: &Distinct) -> Result<Rel, QueryError> {
        let (input_plan, on) = match d {
            Distinct::All(i) => (i, false),
            Distinct::On(o) => (&o.input, true),
        };
        let input = self.rel(input_plan)?;
        match input.kind {
            Kind::Rows if on => Err(unsupported(
                "DISTINCT ON over patient rows is not supported; use GROUP BY / 患者行への DISTINCT ON には対応していません。GROUP BY を使ってください",
            )),
            Kind::Rows => {
                let group: Vec<Expr> = (0..input.cols.len())
                    .filter(|&i| !input.cols[i].hidden)
                    .map(|i| col_at(&input.plan, i))
                    .collect();
                self.aggregate_rows(input, group, vec![])
            }
            _ => {
                let input = self.publish(input)?;
                let new = plan
                    .with_new_exprs(plan.expressions(), vec![input.plan])
                    .map_err(|e| QueryError::internal("privacy rewrite", e))?;
                Ok(public_rel(new))
            }
        }
    }
}
