//! DP rewrite, post-processing: above the protected aggregation the query may only
//! project, alias, filter (HAVING), sort and limit, without subqueries, so everything it
//! computes there is a function of the noisy aggregate alone and costs no ε. The lineage
//! of each output column (which aggregate columns it is computed from, and which one it
//! passes unchanged) lets the release null every cell derived from a withheld value and
//! attach intervals only to cells that show a noisy value as it is.
//!
//! Golden cases in `tests/slt/dp/`: `rewrite.slt` "Join to a reference table … arithmetic
//! on the noisy count afterwards"; `refusals.slt` "SELECT pid, sex FROM patient"
//! (row-level output), "SELECT DISTINCT sex" and the scalar subquery in the select list.

use std::collections::BTreeSet;

use datafusion::common::Column;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};

use super::{SUPPORTED, unsupported};
use crate::query::QueryError;
use crate::sql::rewrite::{has_subquery, strip_alias};

/// For every output column of the post-processing chain: the aggregate output columns it
/// is computed from, and the one it passes unchanged (if any).
type Lineage = (Vec<BTreeSet<usize>>, Vec<Option<usize>>);

/// Nodes that may sit above the protected aggregation: they only post-process its
/// (noisy) output.
fn is_post_processing(p: &LogicalPlan) -> bool {
    matches!(
        p,
        LogicalPlan::Projection(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
    )
}

/// The protected aggregation: the first aggregation below a chain of post-processing nodes
/// (none of which may hold a subquery).
pub(super) fn find_aggregate(plan: &LogicalPlan) -> Result<&Aggregate, QueryError> {
    match plan {
        LogicalPlan::Aggregate(a) => Ok(a),
        p if is_post_processing(p) => {
            if p.expressions().iter().any(has_subquery) {
                return Err(unsupported(format!(
                    "subqueries are not supported in DP mode. {SUPPORTED}"
                )));
            }
            find_aggregate(p.inputs()[0])
        }
        LogicalPlan::Distinct(_) => Err(unsupported(format!(
            "SELECT DISTINCT shows which groups exist; use GROUP BY with COUNT(DISTINCT pid). {SUPPORTED}"
        ))),
        LogicalPlan::TableScan(_) | LogicalPlan::Join(_) | LogicalPlan::Values(_) => {
            Err(QueryError::RowLevelOutput {
                message: "the query releases rows without aggregating them; aggregate with GROUP BY and COUNT(DISTINCT pid), SUM, AVG … / 集計せずに行を出力することはできません。GROUP BY と COUNT(DISTINCT pid) などで集計してください".into(),
            })
        }
        other => Err(unsupported(format!(
            "`{}` is not supported in DP mode. {SUPPORTED}",
            other.display()
        ))),
    }
}

/// The [`Lineage`] of the post-processing chain down to the protected aggregation.
pub(super) fn lineage(plan: &LogicalPlan) -> Result<Lineage, QueryError> {
    match plan {
        LogicalPlan::Aggregate(a) => {
            let n = a.schema.fields().len();
            Ok((
                (0..n).map(|i| BTreeSet::from([i])).collect(),
                (0..n).map(Some).collect(),
            ))
        }
        LogicalPlan::Projection(p) => {
            let (lin, pass) = lineage(&p.input)?;
            let schema = p.input.schema();
            let index = |c: &Column| {
                schema
                    .index_of_column(c)
                    .map_err(|e| QueryError::internal("dp rewrite", e))
            };
            let mut out_lin = Vec::new();
            let mut out_pass = Vec::new();
            for e in &p.expr {
                let mut set = BTreeSet::new();
                for c in e.column_refs() {
                    set.extend(lin[index(c)?].iter().copied());
                }
                out_lin.push(set);
                out_pass.push(match strip_alias(e) {
                    Expr::Column(c) => pass[index(c)?],
                    _ => None,
                });
            }
            Ok((out_lin, out_pass))
        }
        p if is_post_processing(p) => lineage(p.inputs()[0]),
        other => Err(QueryError::internal(
            "dp rewrite",
            format!("lineage through {}", other.display()),
        )),
    }
}
