//! Privacy rewrite rule: aggregation over patient rows.
//!
//! - Grouped by `pid`: a per-patient pre-aggregation; the result still carries the unit
//!   (rows of one patient), so any allow-listed aggregate (MIN/MAX included) may run here —
//!   nothing is released from it directly.
//! - Otherwise: a protected aggregate. Beside every user aggregate a hidden
//!   `count(DISTINCT CASE WHEN <its FILTER> AND <its argument IS NOT NULL> [AND argument <> 0
//!   for SUM] THEN pid END)` counts the patients who actually feed *that* cell, and the same
//!   for each facility column. For SUM a second plan computes per-(group, patient) sums,
//!   ranks them, and joins back the largest, the two largest, the total and the smallest,
//!   so the disclosure check can apply nk-dominance and the p% rule on patients, not rows.
//!   The group itself gets a guard too (distinct patients and facilities of the group), so
//!   a group that exists because of one patient cannot show its key.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::functions_aggregate::expr_fn::{count_distinct, max, min, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprFunctionExt, JoinType, LogicalPlan, LogicalPlanBuilder, SubqueryAlias,
    Window, lit, when,
};

use super::{Col, Dominance, Guard, Kind, Rel, Rewriter, col_at, internal, pid_index, plain_col};
use crate::query::QueryError;

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

impl Rewriter<'_> {
    pub(crate) fn aggregate(
        &mut self,
        input: Rel,
        group: Vec<Expr>,
        aggr: Vec<Expr>,
    ) -> Result<Rel, QueryError> {
        let schema = input.plan.schema().clone();
        let pid_i = pid_index(&input)?;
        let per_patient = group.iter().any(|g| {
            plain_col(g)
                .and_then(|c| schema.index_of_column(c).ok())
                .is_some_and(|i| input.cols[i].pid)
        });
        let fac_idx: Vec<usize> = (0..input.cols.len())
            .filter(|&i| input.cols[i].facility)
            .collect();
        let pid = col_at(&input.plan, pid_i);

        let mut group_cols = Vec::new();
        let agg_id = self.aggs.len();
        for (j, g) in group.iter().enumerate() {
            let mut c = self.derive(g, &input)?;
            c.key = true;
            // Per-patient keys feed an outer aggregation; they are never released as-is.
            c.group_of = (!per_patient).then_some((agg_id, j));
            c.hidden = false;
            c.count_like = false;
            if !c.pid {
                c.facility = false;
            }
            group_cols.push(c);
        }

        if per_patient {
            let mut exprs = aggr.clone();
            let mut cols = group_cols;
            for e in &aggr {
                check_aggregate(e, &input, true)?;
                cols.push(Col::default());
            }
            // A patient may be seen at several facilities; keeping one of them undercounts
            // facilities later, which can only suppress more.
            for &i in &fac_idx {
                let name = self.fresh("fac");
                exprs.push(min(col_at(&input.plan, i)).alias(name));
                cols.push(Col {
                    hidden: true,
                    facility: true,
                    ..Col::default()
                });
            }
            let agg = Aggregate::try_new(Arc::new(input.plan), group, exprs).map_err(internal)?;
            return Ok(Rel {
                plan: LogicalPlan::Aggregate(agg),
                kind: Kind::Rows,
                cols,
                drop_on_fail: false,
            });
        }

        let drop_on_fail = group_cols.iter().any(|c| !c.public);
        let mut exprs = aggr.clone();
        let mut cols = group_cols;
        let mut helper_cols = Vec::new();

        // Guard of the whole group.
        self.aggs.push((self.guards.len(), group.len()));
        let gname = self.fresh("n");
        exprs.push(count_distinct(pid.clone()).alias(&gname));
        let mut gfac = Vec::new();
        for &i in &fac_idx {
            let name = self.fresh("f");
            exprs.push(count_distinct(col_at(&input.plan, i)).alias(&name));
            gfac.push(name);
        }
        let g0 = self.guards.len();
        self.guards.push(Guard {
            n: gname,
            facilities: gfac,
            dominance: None,
        });
        for c in cols.iter_mut() {
            c.guards.insert(g0);
        }

        let mut sums: Vec<(usize, Expr)> = Vec::new(); // (guard id, per-row value fed to SUM)
        // Cells fed by the same rows share one guard (e.g. count(*) and avg(x) with no
        // FILTER over a non-null x share the group guard): fewer distinct counts to compute.
        let mut shared: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for e in &aggr {
            let kind = check_aggregate(e, &input, false)?;
            let Expr::AggregateFunction(f) = strip_alias(e) else {
                return Err(internal(
                    "aggregate expression is not an aggregate function",
                ));
            };
            let mut conds: Vec<Expr> = Vec::new();
            if let Some(filter) = &f.params.filter {
                conds.push((**filter).clone());
            }
            for a in &f.params.args {
                // A literal or a non-nullable column (pid) never excludes a row.
                let never_null = match a {
                    Expr::Literal(v, _) => !v.is_null(),
                    other => !other.nullable(schema.as_ref()).unwrap_or(true),
                };
                if !never_null {
                    conds.push(a.clone().is_not_null());
                }
            }
            if kind == AggKind::Percentile {
                for s in &f.params.order_by {
                    conds.push(s.expr.clone().is_not_null());
                }
            }
            if kind == AggKind::Sum
                && let Some(a) = f.params.args.first()
            {
                conds.push(a.clone().not_eq(lit(0)));
            }
            let cond = conjunction(conds);
            let share_key = match &cond {
                None => Some(String::new()),
                Some(c) if kind != AggKind::Sum => Some(format!("{c}")),
                Some(_) => None,
            };
            if let Some(key) = &share_key {
                let existing = if key.is_empty() {
                    Some(g0)
                } else {
                    shared.get(key).copied()
                };
                if let Some(gid) = existing {
                    let mut c = Col {
                        count_like: kind == AggKind::Count,
                        ..Col::default()
                    };
                    c.guards.insert(g0);
                    c.guards.insert(gid);
                    cols.push(c);
                    continue;
                }
            }
            let fed = |x: Expr| -> Result<Expr, QueryError> {
                Ok(match &cond {
                    Some(c) => when(c.clone(), x).end().map_err(internal)?,
                    None => x,
                })
            };
            let nname = self.fresh("n");
            exprs.push(count_distinct(fed(pid.clone())?).alias(&nname));
            let mut facs = Vec::new();
            for &i in &fac_idx {
                let name = self.fresh("f");
                exprs.push(count_distinct(fed(col_at(&input.plan, i))?).alias(&name));
                facs.push(name);
            }
            let gid = self.guards.len();
            self.guards.push(Guard {
                n: nname,
                facilities: facs,
                dominance: None,
            });
            if let Some(key) = share_key {
                shared.insert(key, gid);
            }
            if kind == AggKind::Sum {
                let arg = f.params.args.first().cloned().unwrap_or(lit(0));
                let value = match &f.params.filter {
                    Some(flt) => when((**flt).clone(), arg).end().map_err(internal)?,
                    None => arg,
                };
                sums.push((gid, value));
            }
            let mut c = Col {
                count_like: kind == AggKind::Count,
                ..Col::default()
            };
            c.guards.insert(g0);
            c.guards.insert(gid);
            cols.push(c);
        }
        let nhelpers = exprs.len() - aggr.len();
        for _ in 0..nhelpers {
            helper_cols.push(Col {
                hidden: true,
                ..Col::default()
            });
        }
        let ngroup = group.len();
        let main = LogicalPlan::Aggregate(
            Aggregate::try_new(Arc::new(input.plan.clone()), group.clone(), exprs)
                .map_err(internal)?,
        );
        cols.extend(helper_cols);

        // Without dominance rules (k = 1 equivalence runs, or a policy that turns them off)
        // the per-patient second plan would be computed for nothing.
        let dominance_on = self.rules.dominance_k < 1.0 || self.rules.p_ratio > 0.0;
        if sums.is_empty() || !dominance_on {
            return Ok(Rel {
                plan: main,
                kind: Kind::Protected { sealed: false },
                cols,
                drop_on_fail,
            });
        }
        let (plan, extra) = self.dominance(main, &input, group, ngroup, sums)?;
        cols.extend(extra);
        Ok(Rel {
            plan,
            kind: Kind::Protected { sealed: false },
            cols,
            drop_on_fail,
        })
    }

    /// Join per-patient SUM statistics onto the main aggregate.
    fn dominance(
        &mut self,
        main: LogicalPlan,
        input: &Rel,
        group: Vec<Expr>,
        ngroup: usize,
        sums: Vec<(usize, Expr)>,
    ) -> Result<(LogicalPlan, Vec<Col>), QueryError> {
        let pid = col_at(&input.plan, pid_index(input)?);
        let pid_name = self.fresh("dpid");
        let mut d1_group = group.clone();
        d1_group.push(pid.alias(&pid_name));
        let s_names: Vec<String> = sums.iter().map(|_| self.fresh("s")).collect();
        let d1_aggr: Vec<Expr> = sums
            .iter()
            .zip(&s_names)
            .map(|((_, v), n)| sum(v.clone()).alias(n))
            .collect();
        let d1 = LogicalPlan::Aggregate(
            Aggregate::try_new(Arc::new(input.plan.clone()), d1_group, d1_aggr)
                .map_err(internal)?,
        );
        let gcols: Vec<Expr> = (0..ngroup).map(|i| col_at(&d1, i)).collect();
        // One window node per SUM: DataFusion requires the same sort keys within a node.
        let mut d2 = d1.clone();
        for k in 0..sums.len() {
            let rn = self.fresh("r");
            let s = col_at(&d1, ngroup + 1 + k);
            let w = row_number()
                .partition_by(gcols.clone())
                .order_by(vec![s.sort(false, false)])
                .build()
                .map_err(internal)?
                .alias(rn);
            d2 = LogicalPlan::Window(Window::try_new(vec![w], Arc::new(d2)).map_err(internal)?);
        }
        let base = d1.schema().fields().len();
        // Fresh names: an unqualified group name (e.g. `substr(x, 1, 2)`) next to the same
        // name under the alias would make the join schema ambiguous.
        let mut g2 = Vec::new();
        for i in 0..ngroup {
            let n = self.fresh("k");
            g2.push(col_at(&d2, i).alias(n));
        }
        let mut d3_aggr = Vec::new();
        let mut doms = Vec::new();
        for k in 0..sums.len() {
            let s = col_at(&d2, ngroup + 1 + k);
            let r = col_at(&d2, base + k);
            let names = (
                self.fresh("top1"),
                self.fresh("top2"),
                self.fresh("tot"),
                self.fresh("min"),
            );
            d3_aggr.push(max(s.clone()).alias(&names.0));
            d3_aggr.push(
                sum(when(r.lt_eq(lit(2u64)), s.clone())
                    .end()
                    .map_err(internal)?)
                .alias(&names.1),
            );
            d3_aggr.push(sum(s.clone()).alias(&names.2));
            d3_aggr.push(min(s).alias(&names.3));
            doms.push(names);
        }
        let d3 = LogicalPlan::Aggregate(
            Aggregate::try_new(Arc::new(d2), g2, d3_aggr).map_err(internal)?,
        );
        let alias = self.fresh("d");
        let d = LogicalPlan::SubqueryAlias(
            SubqueryAlias::try_new(Arc::new(d3), alias).map_err(internal)?,
        );

        let lkeys: Vec<datafusion::common::Column> = (0..ngroup)
            .map(|i| datafusion::common::Column::from(main.schema().qualified_field(i)))
            .collect();
        let rkeys: Vec<datafusion::common::Column> = (0..ngroup)
            .map(|i| datafusion::common::Column::from(d.schema().qualified_field(i)))
            .collect();
        let nmain = main.schema().fields().len();
        let joined = if ngroup == 0 {
            LogicalPlanBuilder::from(main.clone())
                .cross_join(d.clone())
                .map_err(internal)?
                .build()
                .map_err(internal)?
        } else {
            LogicalPlanBuilder::from(main.clone())
                .join_detailed(
                    d.clone(),
                    JoinType::Left,
                    (lkeys, rkeys),
                    None,
                    NullEquality::NullEqualsNull,
                )
                .map_err(internal)?
                .build()
                .map_err(internal)?
        };
        let mut proj: Vec<Expr> = (0..nmain).map(|i| col_at(&joined, i)).collect();
        let mut extra = Vec::new();
        for k in 0..doms.len() * 4 {
            proj.push(col_at(&joined, nmain + ngroup + k));
            extra.push(Col {
                hidden: true,
                ..Col::default()
            });
        }
        let plan = LogicalPlanBuilder::from(joined)
            .project(proj)
            .map_err(internal)?
            .build()
            .map_err(internal)?;
        for ((gid, _), (t1, t2, tot, mn)) in sums.iter().zip(doms) {
            self.guards[*gid].dominance = Some(Dominance {
                top1: t1,
                top2: t2,
                total: tot,
                min: mn,
            });
        }
        Ok((plan, extra))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Count,
    Sum,
    Percentile,
    Other,
}

/// Aggregate rules over patient rows. `per_patient`: inside a GROUP BY pid, where the
/// result is not released, MIN/MAX are fine.
fn check_aggregate(e: &Expr, input: &Rel, per_patient: bool) -> Result<AggKind, QueryError> {
    let Expr::AggregateFunction(f) = strip_alias(e) else {
        return Err(internal(
            "aggregate expression is not an aggregate function",
        ));
    };
    let name = f.func.name().to_ascii_lowercase();
    let per_patient_only = crate::sql::guard::PER_PATIENT_AGGREGATES.contains(&name.as_str());
    if per_patient_only && !per_patient {
        return Err(QueryError::UnsupportedAggregate {
            message: format!(
                "`{name}` over patients would release one patient's values; use it only inside a per-patient subquery (… GROUP BY pid) and aggregate its result / `{name}` は患者ごとの集計（GROUP BY pid）の中でのみ使えます"
            ),
        });
    }
    if !per_patient_only && !crate::sql::guard::ALLOWED_AGGREGATES.contains(&name.as_str()) {
        return Err(QueryError::UnsupportedAggregate {
            message: format!(
                "`{name}` is not allowed over patient data / `{name}` は患者データには使えません"
            ),
        });
    }
    if (name == "min" || name == "max") && !per_patient {
        let schema = input.plan.schema();
        let mut refs: BTreeSet<usize> = BTreeSet::new();
        for a in &f.params.args {
            for c in a.column_refs() {
                refs.insert(schema.index_of_column(c).map_err(internal)?);
            }
        }
        if refs.iter().any(|&i| !input.cols[i].public) {
            return Err(QueryError::UnsupportedAggregate {
                message: format!(
                    "{} is allowed only on public-domain columns (e.g. fiscal_year); an extreme value identifies one patient — use median or approx_percentile_cont / MIN・MAX は公開ドメインの列にのみ使えます。median などを使ってください",
                    name.to_ascii_uppercase()
                ),
            });
        }
    }
    if name == "sum" && f.params.distinct && !per_patient {
        return Err(QueryError::UnsupportedAggregate {
            message: "SUM(DISTINCT …) is not supported over patients; use SUM / SUM(DISTINCT …) には対応していません".into(),
        });
    }
    Ok(match name.as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "approx_percentile_cont" | "percentile_cont" => AggKind::Percentile,
        _ => AggKind::Other,
    })
}
