//! Privacy rewrite rule: projections and subquery aliases.
//!
//! A projection over patient rows keeps the unit: when the query drops `pid` (or a
//! facility column) it is carried on as a hidden column, so an aggregate above can still
//! count distinct contributors. A projection over a protected aggregate carries its
//! hidden contributor counts along and each derived cell inherits the guards of every
//! column it reads (see `lineage`), so computing on a cell never frees it from its
//! guards. An alias only renames. Exercised by `tests/slt/accepted.slt` ("Per-patient
//! pre-aggregation, then a distribution over patients"; "Shares with a window over the
//! aggregate", whose `round(n * 100.0 / …)` is a derived cell) and `tests/slt/refusals.slt`
//! ("SELECT pid, sex FROM patient").

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::logical_expr::{Expr, LogicalPlan, Projection, SubqueryAlias};

use super::lineage::{col_at, pid_index, plain_col};
use super::{Col, Kind, Rel, Rewriter};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn projection(&mut self, p: &Projection) -> Result<Rel, QueryError> {
        let input = self.rel(&p.input)?;
        let exprs = self.subqueries(p.expr.clone(), &input)?;
        self.project(input, exprs)
    }

    pub(super) fn subquery_alias(&mut self, a: &SubqueryAlias) -> Result<Rel, QueryError> {
        let input = self.rel(&a.input)?;
        let new = SubqueryAlias::try_new(Arc::new(input.plan), a.alias.clone())
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        Ok(Rel {
            plan: LogicalPlan::SubqueryAlias(new),
            ..input
        })
    }

    /// Project `exprs` over `input`, adding the hidden columns its kind must keep.
    fn project(&mut self, input: Rel, mut exprs: Vec<Expr>) -> Result<Rel, QueryError> {
        let mut cols = exprs
            .iter()
            .map(|e| self.derive(e, &input))
            .collect::<Result<Vec<_>, _>>()?;
        match input.kind {
            Kind::Rows => self.keep_unit(&input, &mut exprs, &mut cols)?,
            Kind::Protected { .. } => {
                for (i, c) in input.cols.iter().enumerate() {
                    if c.hidden {
                        exprs.push(col_at(&input.plan, i));
                        cols.push(c.clone());
                    }
                }
            }
            Kind::Public => {}
        }
        let plan = LogicalPlan::Projection(
            Projection::try_new(exprs, Arc::new(input.plan))
                .map_err(|e| QueryError::internal("privacy rewrite", e))?,
        );
        Ok(Rel {
            plan,
            kind: input.kind,
            cols,
            drop_on_fail: input.drop_on_fail,
        })
    }

    /// Keep the unit (and facilities) even when the query drops them: an aggregate above
    /// must still count contributors.
    fn keep_unit(
        &mut self,
        input: &Rel,
        exprs: &mut Vec<Expr>,
        cols: &mut Vec<Col>,
    ) -> Result<(), QueryError> {
        let schema = input.plan.schema().clone();
        let passed: BTreeSet<usize> = exprs
            .iter()
            .filter_map(plain_col)
            .filter_map(|c| schema.index_of_column(c).ok())
            .collect();
        let mut carried = Vec::new();
        if !cols.iter().any(|c| c.pid) {
            carried.push(("pid", pid_index(input)?));
        }
        carried.extend(
            (0..input.cols.len())
                .filter(|i| input.cols[*i].facility && !passed.contains(i))
                .map(|i| ("fac", i)),
        );
        for (what, i) in carried {
            let name = self.fresh(what);
            exprs.push(col_at(&input.plan, i).alias(name));
            cols.push(Col {
                hidden: true,
                pid: what == "pid",
                facility: what == "fac",
                ..Col::default()
            });
        }
        Ok(())
    }
}
