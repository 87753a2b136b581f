//! Privacy rewrite rule: subqueries inside expressions (scalar, EXISTS, IN, ANY/ALL).
//!
//! Every expression subquery is rewritten by the same recursive rewrite, then consumed
//! only in a safe form: a protected subquery is sealed and published (its value or its
//! existence can then reveal only releasable cells), a public one stays public, and patient
//! rows may appear only as `pid IN (SELECT pid …)` over patient rows, which restricts each
//! patient by that same patient's rows and so keeps the unit. Any other subquery over
//! patient rows is refused. Exercised by `tests/slt/accepted.slt` ("Patients restricted by
//! another patient table through pid IN (…)", "Correlated scalar subquery over patients,
//! per reference row…") and `tests/slt/refusals.slt` (`(SELECT birth_year FROM patient
//! WHERE pid = 'p07')`).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::InSubquery;
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::lineage::{plain_col, visible_only};
use super::{Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

impl Rewriter<'_> {
    /// Rewrite subqueries inside expressions of a node over `input`.
    pub(super) fn subqueries(
        &mut self,
        exprs: Vec<Expr>,
        input: &Rel,
    ) -> Result<Vec<Expr>, QueryError> {
        exprs
            .into_iter()
            .map(|e| {
                // `transform_down` only carries DataFusion errors: the first refusal is kept
                // aside (and the rest of the walk skipped) so its code reaches the user.
                let mut err = None;
                let out = e
                    .transform_down(|x| {
                        if err.is_some() {
                            return Ok(Transformed::no(x));
                        }
                        match self.subquery_expr(x, input) {
                            Ok(t) => Ok(t),
                            Err(q) => {
                                err = Some(q);
                                Ok(Transformed::no(Expr::Literal(ScalarValue::Null, None)))
                            }
                        }
                    })
                    .map_err(|e| QueryError::internal("privacy rewrite", e))?
                    .data;
                match err {
                    Some(q) => Err(q),
                    None => Ok(out),
                }
            })
            .collect()
    }

    fn subquery_expr(&mut self, x: Expr, input: &Rel) -> Result<Transformed<Expr>, QueryError> {
        match x {
            Expr::ScalarSubquery(mut sq) => {
                let r = self.rel(&sq.subquery)?;
                sq.subquery = Arc::new(self.subquery_plan(r)?);
                Ok(Transformed::yes(Expr::ScalarSubquery(sq)))
            }
            Expr::Exists(mut ex) => {
                let r = self.rel(&ex.subquery.subquery)?;
                ex.subquery.subquery = Arc::new(self.subquery_plan(r)?);
                Ok(Transformed::yes(Expr::Exists(ex)))
            }
            Expr::SetComparison(mut sc) => {
                let r = self.rel(&sc.subquery.subquery)?;
                sc.subquery.subquery = Arc::new(self.subquery_plan(r)?);
                Ok(Transformed::yes(Expr::SetComparison(sc)))
            }
            Expr::InSubquery(ins) => self.in_subquery(ins, input),
            other => Ok(Transformed::no(other)),
        }
    }

    fn in_subquery(
        &mut self,
        mut ins: InSubquery,
        input: &Rel,
    ) -> Result<Transformed<Expr>, QueryError> {
        let r = self.rel(&ins.subquery.subquery)?;
        if r.kind == Kind::Rows {
            // `pid IN (SELECT pid …)` keeps each patient's rows decided by that same
            // patient's rows, so the unit is preserved; nothing else is.
            let outer_is_pid = plain_col(&ins.expr)
                .and_then(|c| input.plan.schema().index_of_column(c).ok())
                .is_some_and(|i| input.kind == Kind::Rows && input.cols[i].pid);
            let vis: Vec<usize> = (0..r.cols.len()).filter(|&i| !r.cols[i].hidden).collect();
            if !(outer_is_pid && vis.len() == 1 && r.cols[vis[0]].pid) {
                return Err(unsupported(
                    "a subquery over patient rows may only be used as `pid IN (SELECT pid …)`; aggregate it otherwise / 患者行のサブクエリは `pid IN (SELECT pid …)` の形でのみ使えます",
                ));
            }
            ins.subquery.subquery = Arc::new(visible_only(&r)?);
        } else {
            ins.subquery.subquery = Arc::new(self.subquery_plan(r)?);
        }
        Ok(Transformed::new(
            Expr::InSubquery(ins),
            true,
            TreeNodeRecursion::Jump,
        ))
    }

    fn subquery_plan(&mut self, r: Rel) -> Result<LogicalPlan, QueryError> {
        match r.kind {
            Kind::Rows => Err(unsupported(
                "a subquery over patient rows cannot feed a value or an EXISTS test; aggregate it (its cells then follow the disclosure rules) / 患者行のサブクエリは値や EXISTS に使えません。集計してください",
            )),
            Kind::Public => visible_only(&r),
            Kind::Protected { .. } => Ok(self.publish(r)?.plan),
        }
    }
}
