//! Privacy rewrite rule: dominance statistics for SUM cells.
//!
//! The nk-dominance and p% rules must be applied to patients, not rows: a second plan
//! sums each SUM cell's values per (group, patient), ranks those per-patient sums and
//! keeps, per group, the largest, the two largest together, the total and the smallest.
//! They are joined back onto the protected aggregate as hidden columns and recorded in the
//! cell's [`Guard`](super::Guard), so the disclosure check (and the in-plan seal) can
//! suppress a sum that one or two patients dominate, or that a negative contribution
//! could hide. Exercised by
//! `tests/slt/accepted.slt` ("A dominated sum is suppressed, the count beside it is not").

use std::sync::Arc;

use datafusion::common::{Column, NullEquality};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprFunctionExt, JoinType, LogicalPlan, LogicalPlanBuilder, SubqueryAlias,
    Window, lit, when,
};

use super::lineage::{col_at, pid_index};
use super::{Col, Dominance, Rel, Rewriter};
use crate::query::QueryError;

impl Rewriter<'_> {
    /// Join per-patient SUM statistics onto the main aggregate; `sums` are the SUM cells'
    /// `(guard id, per-row value)`, whose guards get the statistics' column names.
    pub(super) fn dominance(
        &mut self,
        main: LogicalPlan,
        input: &Rel,
        group: Vec<Expr>,
        ngroup: usize,
        sums: Vec<(usize, Expr)>,
    ) -> Result<(LogicalPlan, Vec<Col>), QueryError> {
        let ranked = self.ranked_sums(input, group, ngroup, &sums)?;
        let (stats, doms) = self.group_stats(ranked, ngroup, sums.len())?;
        let (plan, extra) = join_stats(main, stats, ngroup, doms.len())?;
        for ((gid, _), d) in sums.iter().zip(doms) {
            self.guards[*gid].dominance = Some(d);
        }
        Ok((plan, extra))
    }

    /// Per (group, patient): each SUM cell's sum, then its rank within the group (largest
    /// first). Output: group keys, pid, one sum per cell, one rank per cell.
    fn ranked_sums(
        &mut self,
        input: &Rel,
        mut group: Vec<Expr>,
        ngroup: usize,
        sums: &[(usize, Expr)],
    ) -> Result<LogicalPlan, QueryError> {
        let pid = col_at(&input.plan, pid_index(input)?);
        let pid_name = self.fresh("dpid");
        group.push(pid.alias(&pid_name));
        let s_names: Vec<String> = sums.iter().map(|_| self.fresh("s")).collect();
        let aggr: Vec<Expr> = sums
            .iter()
            .zip(&s_names)
            .map(|((_, v), n)| sum(v.clone()).alias(n))
            .collect();
        let per_patient = LogicalPlan::Aggregate(
            Aggregate::try_new(Arc::new(input.plan.clone()), group, aggr)
                .map_err(|e| QueryError::internal("privacy rewrite", e))?,
        );
        let gcols: Vec<Expr> = (0..ngroup).map(|i| col_at(&per_patient, i)).collect();
        // One window node per SUM: DataFusion requires the same sort keys within a node.
        let mut ranked = per_patient.clone();
        for k in 0..sums.len() {
            let rn = self.fresh("r");
            let s = col_at(&per_patient, ngroup + 1 + k);
            let w = row_number()
                .partition_by(gcols.clone())
                .order_by(vec![s.sort(false, false)])
                .build()
                .map_err(|e| QueryError::internal("privacy rewrite", e))?
                .alias(rn);
            ranked = LogicalPlan::Window(
                Window::try_new(vec![w], Arc::new(ranked))
                    .map_err(|e| QueryError::internal("privacy rewrite", e))?,
            );
        }
        Ok(ranked)
    }

    /// Per group: the largest, two largest, total and smallest per-patient sum of each of
    /// the `nsums` cells, under a fresh alias.
    fn group_stats(
        &mut self,
        ranked: LogicalPlan,
        ngroup: usize,
        nsums: usize,
    ) -> Result<(LogicalPlan, Vec<Dominance>), QueryError> {
        // The ranks follow the group keys, pid and the per-patient sums.
        let base = ngroup + 1 + nsums;
        // Fresh names: an unqualified group name (e.g. `substr(x, 1, 2)`) next to the same
        // name under the alias would make the join schema ambiguous.
        let mut keys = Vec::new();
        for i in 0..ngroup {
            let n = self.fresh("k");
            keys.push(col_at(&ranked, i).alias(n));
        }
        let mut aggr = Vec::new();
        let mut doms = Vec::new();
        for k in 0..nsums {
            let s = col_at(&ranked, ngroup + 1 + k);
            let r = col_at(&ranked, base + k);
            let d = Dominance {
                top1: self.fresh("top1"),
                top2: self.fresh("top2"),
                total: self.fresh("tot"),
                min: self.fresh("min"),
            };
            aggr.push(max(s.clone()).alias(&d.top1));
            let top2 = when(r.lt_eq(lit(2u64)), s.clone())
                .end()
                .map_err(|e| QueryError::internal("privacy rewrite", e))?;
            aggr.push(sum(top2).alias(&d.top2));
            aggr.push(sum(s.clone()).alias(&d.total));
            aggr.push(min(s).alias(&d.min));
            doms.push(d);
        }
        let stats = LogicalPlan::Aggregate(
            Aggregate::try_new(Arc::new(ranked), keys, aggr)
                .map_err(|e| QueryError::internal("privacy rewrite", e))?,
        );
        let alias = self.fresh("d");
        let stats = LogicalPlan::SubqueryAlias(
            SubqueryAlias::try_new(Arc::new(stats), alias)
                .map_err(|e| QueryError::internal("privacy rewrite", e))?,
        );
        Ok((stats, doms))
    }
}

/// Join the group statistics onto the main aggregate by group key (NULL keys equal), keep
/// the main columns and append the `ndoms` × 4 statistics as hidden columns.
fn join_stats(
    main: LogicalPlan,
    stats: LogicalPlan,
    ngroup: usize,
    ndoms: usize,
) -> Result<(LogicalPlan, Vec<Col>), QueryError> {
    let keys = |p: &LogicalPlan| -> Vec<Column> {
        (0..ngroup)
            .map(|i| Column::from(p.schema().qualified_field(i)))
            .collect()
    };
    let (lkeys, rkeys) = (keys(&main), keys(&stats));
    let nmain = main.schema().fields().len();
    let builder = LogicalPlanBuilder::from(main);
    let joined = if ngroup == 0 {
        builder.cross_join(stats)
    } else {
        builder.join_detailed(
            stats,
            JoinType::Left,
            (lkeys, rkeys),
            None,
            NullEquality::NullEqualsNull,
        )
    }
    .and_then(|b| b.build())
    .map_err(|e| QueryError::internal("privacy rewrite", e))?;
    let mut proj: Vec<Expr> = (0..nmain).map(|i| col_at(&joined, i)).collect();
    let mut extra = Vec::new();
    for k in 0..ndoms * 4 {
        proj.push(col_at(&joined, nmain + ngroup + k));
        extra.push(Col {
            hidden: true,
            ..Col::default()
        });
    }
    let plan = LogicalPlanBuilder::from(joined)
        .project(proj)
        .and_then(|b| b.build())
        .map_err(|e| QueryError::internal("privacy rewrite", e))?;
    Ok((plan, extra))
}
