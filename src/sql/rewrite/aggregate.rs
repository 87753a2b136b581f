//! Privacy rewrite rule: aggregation over patient rows (a protected aggregate).
//!
//! Beside every user aggregate a hidden `__kura_contributors(CASE WHEN <its FILTER> AND
//! <its argument IS NOT NULL> [AND argument <> 0 for SUM] THEN pid END)` collects the set
//! of patients who actually feed *that* cell (its size is the contributor count), and the same for each facility column; the group itself
//! gets a guard too (distinct patients and facilities of the group), so a group that
//! exists because of one patient cannot show its key. For SUM the per-patient statistics
//! of `dominance` are joined on. The result is [`Kind::Protected`]: none of its cells can
//! be released or computed on without passing its guards. Only allow-listed aggregates
//! run (`allow_list`), MIN/MAX only on public-domain columns (`min_max`). A GROUP BY pid is
//! a per-patient pre-aggregation instead (`per_patient`), and an aggregate over public (or
//! sealed) data stays public. Exercised by `tests/slt/accepted.slt` ("Counts by a
//! public-domain key…", "Averages and medians of lab values by severity", "Facility
//! threshold…", "Conditional aggregate on a single patient is suppressed per cell",
//! "Non-public keys with small groups are dropped, not shown", "Nested aggregate…").

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, lit, when};

use super::allow_list::check_allowed;
use super::lineage::{col_at, pid_index, plain_col, public_rel, strip_alias};
use super::min_max::check_public_only;
use super::{Col, Guard, Kind, Rel, Rewriter};
use crate::engine::distinct_count::DistinctCount;
use crate::query::QueryError;

/// What an aggregate's cell needs beyond its contributor count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AggKind {
    /// Rounded on release.
    Count,
    /// Zero rows do not contribute; dominance rules apply.
    Sum,
    /// The ORDER BY value must be non-null to contribute.
    Percentile,
    Other,
}

/// The hidden columns of one protected aggregation, while its cells are added.
struct Cells<'r> {
    input: &'r Rel,
    pid: Expr,
    fac_idx: Vec<usize>,
    /// The user aggregates, then the hidden helper aggregates.
    exprs: Vec<Expr>,
    /// The guard of the whole group.
    group_guard: usize,
    /// Cells fed by the same rows share one guard (e.g. count(*) and avg(x) with no
    /// FILTER over a non-null x share the group guard): fewer distinct counts to compute.
    shared: HashMap<String, usize>,
    /// `(guard id, per-row value fed to SUM)`, for the dominance statistics.
    sums: Vec<(usize, Expr)>,
}

impl Rewriter<'_> {
    pub(super) fn aggregate(&mut self, a: &Aggregate) -> Result<Rel, QueryError> {
        let input = self.rel(&a.input)?;
        let group = self.subqueries(a.group_expr.clone(), &input)?;
        let aggr = self.subqueries(a.aggr_expr.clone(), &input)?;
        if input.kind == Kind::Rows {
            return self.aggregate_rows(input, group, aggr);
        }
        self.check_aggregate_over_cells(&input)?;
        let input = self.publish(input)?;
        let agg = Aggregate::try_new(Arc::new(input.plan), group, aggr)
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        Ok(public_rel(LogicalPlan::Aggregate(agg)))
    }

    /// Aggregate patient rows: per patient when grouped by `pid`, protected otherwise.
    pub(super) fn aggregate_rows(
        &mut self,
        input: Rel,
        group: Vec<Expr>,
        aggr: Vec<Expr>,
    ) -> Result<Rel, QueryError> {
        let schema = input.plan.schema().clone();
        let pid = col_at(&input.plan, pid_index(&input)?);
        let per_patient = group.iter().any(|g| {
            plain_col(g)
                .and_then(|c| schema.index_of_column(c).ok())
                .is_some_and(|i| input.cols[i].pid)
        });
        let agg_id = self.aggs.len();
        let mut group_cols = Vec::new();
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
            return self.per_patient(input, group, aggr, group_cols);
        }
        self.protected(input, pid, group, aggr, group_cols)
    }

    fn protected(
        &mut self,
        input: Rel,
        pid: Expr,
        group: Vec<Expr>,
        aggr: Vec<Expr>,
        mut cols: Vec<Col>,
    ) -> Result<Rel, QueryError> {
        let drop_on_fail = cols.iter().any(|c| !c.public);
        self.aggs.push((self.guards.len(), group.len()));
        let mut cells = Cells {
            input: &input,
            pid,
            fac_idx: facility_indices(&input),
            exprs: aggr.clone(),
            group_guard: 0,
            shared: HashMap::new(),
            sums: Vec::new(),
        };
        cells.group_guard = self.push_guard(&mut cells, None)?;
        for c in cols.iter_mut() {
            c.guards.insert(cells.group_guard);
        }
        // User `count(DISTINCT pid)` cells that are exactly the size of their own set.
        let mut from_sets = Vec::new();
        for (j, e) in aggr.iter().enumerate() {
            let c = self.cell(&mut cells, e)?;
            // The cell's one set is the guard of exactly the rows it counts.
            if counts_distinct_pid(e, &input)
                && let Some(&gid) = c.sets.first()
            {
                from_sets.push((j, self.guards[gid].n.clone()));
            }
            cols.push(c);
        }
        let Cells { exprs, sums, .. } = cells;
        let nhelpers = exprs.len() - aggr.len();
        cols.extend((0..nhelpers).map(|_| Col {
            hidden: true,
            ..Col::default()
        }));
        let ngroup = group.len();
        let main = super::set_sizes::aggregate_reusing_sets(
            input.plan.clone(),
            group.clone(),
            exprs,
            &from_sets,
        )?;
        // Without dominance rules (k = 1 equivalence runs, or a policy that turns them off)
        // the per-patient second plan would be computed for nothing.
        let dominance_on = self.rules.dominance_k < 1.0 || self.rules.p_ratio > 0.0;
        let plan = if sums.is_empty() || !dominance_on {
            main
        } else {
            let (plan, extra) = self.dominance(main, &input, group, ngroup, sums)?;
            cols.extend(extra);
            plan
        };
        Ok(Rel {
            plan,
            kind: Kind::Protected { sealed: false },
            cols,
            drop_on_fail,
        })
    }

    /// The lineage of one user aggregate's cell, adding its own guard unless it shares one.
    fn cell(&mut self, cells: &mut Cells, e: &Expr) -> Result<Col, QueryError> {
        let kind = check_aggregate(e, cells.input, false)?;
        let f = aggregate_function(e)?;
        self.check_percentile(f, cells.input)?;
        let cond = feeding_condition(f, kind, cells.input.plan.schema());
        let share_key = match &cond {
            None => Some(String::new()),
            Some(c) if kind != AggKind::Sum => Some(format!("{c}")),
            Some(_) => None,
        };
        let existing = match share_key.as_deref() {
            Some("") => Some(cells.group_guard),
            Some(key) => cells.shared.get(key).copied(),
            None => None,
        };
        let gid = match existing {
            Some(gid) => gid,
            None => {
                let gid = self.push_guard(cells, cond.as_ref())?;
                if let Some(key) = share_key {
                    cells.shared.insert(key, gid);
                }
                if kind == AggKind::Sum {
                    cells.sums.push((gid, summed_value(f)?));
                }
                gid
            }
        };
        let mut c = Col {
            count_like: kind == AggKind::Count,
            ..Col::default()
        };
        c.guards.insert(cells.group_guard);
        c.guards.insert(gid);
        c.sets.insert(gid);
        Ok(c)
    }

    /// Add the hidden distinct counts of the patients (and facilities) whose rows meet
    /// `cond` (all rows without one), as a new guard.
    fn push_guard(&mut self, cells: &mut Cells, cond: Option<&Expr>) -> Result<usize, QueryError> {
        let fed = |x: Expr| -> Result<Expr, QueryError> {
            match cond {
                Some(c) => when(c.clone(), x)
                    .end()
                    .map_err(|e| QueryError::internal("privacy rewrite", e)),
                None => Ok(x),
            }
        };
        let n = self.fresh("n");
        let set = self.contributors.call(vec![fed(cells.pid.clone())?]);
        cells.exprs.push(set.alias(&n));
        let mut facilities = Vec::new();
        for &i in &cells.fac_idx {
            let name = self.fresh("f");
            let fac = col_at(&cells.input.plan, i);
            cells
                .exprs
                .push(DistinctCount::call(fed(fac)?).alias(&name));
            facilities.push(name);
        }
        self.guards.push(Guard {
            n,
            facilities,
            dominance: None,
        });
        Ok(self.guards.len() - 1)
    }
}

/// `count(DISTINCT <the unit's pid column>)` with at most a FILTER: the size of the
/// cell's contributor set. Only the very column the sets are built from qualifies (after
/// an outer join another pid column can be NULL where this one is not).
fn counts_distinct_pid(e: &Expr, input: &Rel) -> bool {
    let Expr::AggregateFunction(f) = strip_alias(e) else {
        return false;
    };
    let schema = input.plan.schema();
    f.func.name().eq_ignore_ascii_case("count")
        && f.params.distinct
        && f.params.args.len() == 1
        && plain_col(&f.params.args[0])
            .and_then(|c| schema.index_of_column(c).ok())
            .is_some_and(|i| pid_index(input).is_ok_and(|p| p == i))
}

pub(super) fn facility_indices(r: &Rel) -> Vec<usize> {
    (0..r.cols.len()).filter(|&i| r.cols[i].facility).collect()
}

fn aggregate_function(e: &Expr) -> Result<&AggregateFunction, QueryError> {
    match strip_alias(e) {
        Expr::AggregateFunction(f) => Ok(f),
        _ => Err(QueryError::internal(
            "privacy rewrite",
            "aggregate expression is not an aggregate function",
        )),
    }
}

/// Aggregate rules over patient rows. `per_patient`: inside a GROUP BY pid, where the
/// result is not released, MIN/MAX are fine.
pub(super) fn check_aggregate(
    e: &Expr,
    input: &Rel,
    per_patient: bool,
) -> Result<AggKind, QueryError> {
    let f = aggregate_function(e)?;
    let name = f.func.name().to_ascii_lowercase();
    check_allowed(&name, f.params.distinct, per_patient)?;
    if !per_patient {
        check_public_only(&name, f, input)?;
    }
    Ok(match name.as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "approx_percentile_cont" | "percentile_cont" => AggKind::Percentile,
        _ => AggKind::Other,
    })
}

/// The condition under which a row feeds the cell (its FILTER, its arguments non-null,
/// for SUM a non-zero value); `None` when every row of the group does.
fn feeding_condition(f: &AggregateFunction, kind: AggKind, schema: &DFSchema) -> Option<Expr> {
    let mut conds: Vec<Expr> = Vec::new();
    if let Some(filter) = &f.params.filter {
        conds.push((**filter).clone());
    }
    for a in &f.params.args {
        // A literal or a non-nullable column (pid) never excludes a row.
        let never_null = match a {
            Expr::Literal(v, _) => !v.is_null(),
            other => !other.nullable(schema).unwrap_or(true),
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
    conjunction(conds)
}

/// The per-row value a SUM adds up (its FILTER applied).
fn summed_value(f: &AggregateFunction) -> Result<Expr, QueryError> {
    let arg = f.params.args.first().cloned().unwrap_or(lit(0));
    match &f.params.filter {
        Some(flt) => when((**flt).clone(), arg)
            .end()
            .map_err(|e| QueryError::internal("privacy rewrite", e)),
        None => Ok(arg),
    }
}
