//! Privacy rewrite rule: sealing a protected aggregate inside the plan.
//!
//! Before an aggregate's cells feed any further computation (HAVING, ORDER BY, windows,
//! joins, unions, outer aggregates, subqueries) the disclosure rules are evaluated in the
//! plan itself: every row with a failing cell is removed (even with public-domain keys,
//! whose mere presence would reveal that some patient has those values), and the
//! remaining cells are additionally guarded to NULL. What the later computation sees is
//! therefore only what could have been released — an inner small group cannot pass
//! through an outer query. The hidden helper columns are kept; the final disclosure check
//! pads public-domain keys back to their full domain. A sealed aggregation that is then
//! published (its cells leave only through a public result) is also kept as a
//! [`SideRelease`], so that the differencing check sees its cells' contributor sets.
//! Exercised by `tests/slt/accepted.slt` ("HAVING sees sealed values…", "Per reference row
//! through a join of the grouped aggregate"); a correlated subquery over patients is refused
//! (`tests/slt/refusals.slt`), since its cells cannot run alone for the differencing check.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, cast, col, lit, when};

use super::lineage::{col_at, public_rel, visible_only};
use super::{Guard, Kind, Rel, Rewriter, SideRelease, unsupported};
use crate::engine::contributors::ContributorCount;
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;

/// Whether any node of `plan` (subqueries included) refers to an outer query.
fn refers_outward(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found = node.contains_outer_reference();
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// A correlated subquery's cells cannot be run alone, so their contributor sets can be
/// neither checked against the release ledger nor recorded in it.
const CORRELATED: &str = "a correlated subquery over patient rows (one aggregate per outer row) is not supported: its cells cannot be checked against earlier answers. Join the aggregate instead: … LEFT JOIN (SELECT disease_no, count(DISTINCT pid) AS n FROM … GROUP BY disease_no) s ON s.disease_no = d.disease_no / 患者の行に対する相関サブクエリ（外側の行ごとの集計）には対応していません。そのセルを以前の回答と照合できないためです。GROUP BY した集計を結合してください（… LEFT JOIN (SELECT disease_no, count(DISTINCT pid) AS n FROM … GROUP BY disease_no) s ON s.disease_no = d.disease_no）";

fn c(name: &str) -> Expr {
    col(datafusion::common::Column::new_unqualified(name))
}

fn f64c(name: &str) -> Expr {
    cast(c(name), DataType::Float64)
}

/// The in-plan test "this guard passes the rules" (NULL counts as failing).
pub fn pass_expr(g: &Guard, rules: &RuleSet) -> Expr {
    // An empty cell (no contributor) never passes, whatever k is.
    let mut conds = vec![ContributorCount::call(c(&g.n)).gt_eq(lit(rules.k.max(1) as i64))];
    for f in &g.facilities {
        conds.push(c(f).gt_eq(lit(rules.facility_k as i64)));
    }
    if let Some(d) = &g.dominance
        && (rules.dominance_k < 1.0 || rules.p_ratio > 0.0)
    {
        conds.push(f64c(&d.min).gt_eq(lit(0.0)));
        conds.push(f64c(&d.top2).lt_eq(lit(rules.dominance_k) * f64c(&d.total)));
        conds.push((f64c(&d.total) - f64c(&d.top2)).gt_eq(lit(rules.p_ratio) * f64c(&d.top1)));
    }
    conjunction(conds).expect("at least one condition")
}

impl Rewriter<'_> {
    pub(super) fn seal_if_protected(&mut self, r: Rel) -> Result<Rel, QueryError> {
        match r.kind {
            Kind::Protected { .. } => self.publish(r),
            _ => Ok(r),
        }
    }

    /// Seal a protected relation and keep only its visible columns: the result is safe
    /// to compute on further.
    pub(super) fn publish(&mut self, r: Rel) -> Result<Rel, QueryError> {
        match r.kind {
            Kind::Public => Ok(r),
            Kind::Rows => Err(QueryError::internal(
                "privacy rewrite",
                "publish on patient rows",
            )),
            Kind::Protected { .. } => {
                let sealed = if r.kind == (Kind::Protected { sealed: true }) {
                    r
                } else {
                    self.seal(r)?
                };
                self.inner_sealed = true;
                let side = self.side_release(&sealed);
                if side.correlated && self.rules.defences.differencing {
                    return Err(unsupported(CORRELATED));
                }
                self.side.push(side);
                let plan = visible_only(&sealed)?;
                Ok(public_rel(plan))
            }
        }
    }

    /// The sealed relation as a side release: its plan and the set columns of the
    /// guards its visible cells are computed from.
    fn side_release(&self, sealed: &Rel) -> SideRelease {
        let guards: BTreeSet<usize> = sealed
            .cols
            .iter()
            .filter(|c| !c.hidden && !c.key)
            .flat_map(|c| c.sets.iter().copied())
            .collect();
        SideRelease {
            plan: sealed.plan.clone(),
            sets: guards.iter().map(|&g| self.guards[g].n.clone()).collect(),
            correlated: refers_outward(&sealed.plan),
        }
    }

    pub(super) fn seal(&mut self, r: Rel) -> Result<Rel, QueryError> {
        self.seal_with(r, true)
    }

    /// Null the failing cells for a sort only. Rows stay (a failing row with public keys is
    /// then moved and padded by the final check, and any later consumer seals again), so a
    /// sorted row keeps its passing cells. The result is still unsealed for what follows.
    pub(super) fn seal_for_sort(&mut self, r: Rel) -> Result<Rel, QueryError> {
        self.seal_with(r, false)
    }

    fn seal_with(&mut self, r: Rel, drop_all: bool) -> Result<Rel, QueryError> {
        let schema = r.plan.schema().clone();
        let visible_guards: BTreeSet<usize> = r
            .cols
            .iter()
            .filter(|c| !c.hidden)
            .flat_map(|c| c.guards.iter().copied())
            .collect();
        // Failing rows are removed in-plan before any computation: a row that stays with null
        // cells would let a later count, filter, limit or join learn that some patient has
        // those key values.
        let drop_rows =
            drop_all || r.drop_on_fail || r.cols.iter().any(|c| !c.hidden && c.key && !c.public);
        let mut plan = r.plan;
        if drop_rows && !visible_guards.is_empty() {
            let pred = conjunction(
                visible_guards
                    .iter()
                    .map(|&g| pass_expr(&self.guards[g], &self.rules)),
            )
            .expect("non-empty");
            plan = LogicalPlan::Filter(
                Filter::try_new(pred, Arc::new(plan))
                    .map_err(|e| QueryError::internal("privacy rewrite", e))?,
            );
        }
        let mut exprs = Vec::new();
        for (i, col) in r.cols.iter().enumerate() {
            let e = col_at(&plan, i);
            if col.hidden || col.guards.is_empty() || (col.key && col.public) {
                exprs.push(e);
                continue;
            }
            let pass = conjunction(
                col.guards
                    .iter()
                    .map(|&g| pass_expr(&self.guards[g], &self.rules)),
            )
            .expect("non-empty");
            let (q, f) = schema.qualified_field(i);
            exprs.push(
                when(pass, e)
                    .end()
                    .map_err(|e| QueryError::internal("privacy rewrite", e))?
                    .alias_qualified(q.cloned(), f.name()),
            );
        }
        let plan = LogicalPlan::Projection(
            Projection::try_new(exprs, Arc::new(plan))
                .map_err(|e| QueryError::internal("privacy rewrite", e))?,
        );
        Ok(Rel {
            plan,
            kind: Kind::Protected { sealed: drop_all },
            cols: r.cols,
            drop_on_fail: r.drop_on_fail,
        })
    }
}
