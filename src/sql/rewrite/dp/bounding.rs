//! DP rewrite, contribution bounding: in the bounded plan every patient contributes at
//! most `m` rows to each group and to at most `L` groups, whatever the data. Every row is
//! tagged with its patient, its group and its clamped values (P0); at most `m` rows per
//! patient and group are kept, chosen at random (P1), and added up per patient and group
//! (P2), in one hash aggregation (`engine::keep_rows`); at most `L` groups per patient are
//! kept, chosen at random (P3, `engine::keep_groups`, a hash aggregation by patient whose
//! list of kept pairs is unnested; when only distinct patients are counted it adds up P2
//! itself); only then are the groups aggregated (P4). The sensitivities of `privacy::dp::sensitivity` hold
//! because of these steps. P1 is left out when only COUNT(DISTINCT pid) is asked (a
//! patient counts once per group however many rows it has), P3 when there is no GROUP BY
//! (one group, so `L` is effectively 1).
//!
//! Golden cases in `tests/slt/dp/rewrite.slt`: "COUNT(*) needs the row bound m too" (P0 to
//! P4), "COUNT(DISTINCT pid) by a public-domain key" (no P1), "No GROUP BY" (no P3) and
//! "AVG is a noisy centred sum over a noisy count" (a sum and a count per AVG).

use std::sync::Arc;

use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{
    Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, Projection, col, lit, when,
};

use super::clamping::Spec;
use super::{Measure, MeasureKind, Rows, unsupported};
use crate::engine::PatientIndex;
use crate::engine::accumulate::MAX_VALUES;
use crate::engine::keep_groups::{Add, KeepGroups, KeepGroupsParts};
use crate::engine::keep_rows::{KeepRows, Output};
use crate::engine::patient_no::PatientNo;
use crate::privacy::result::DpBounds;
use crate::query::QueryError;
use crate::sql::rewrite::{col_at, strip_alias};

/// The bounded plan and where it computes each measure.
pub(super) struct Bounded {
    pub(super) plan: LogicalPlan,
    pub(super) measures: Vec<Measure>,
    /// Column with the number of (patient, group) pairs kept.
    pub(super) patients: usize,
}

/// `L` and `m` must be positive (a zero bound would release nothing but noise) and at most
/// [`DpBounds::MAX`].
pub(super) fn check(bounds: DpBounds) -> Result<(), QueryError> {
    if bounds.max_groups_per_patient == 0
        || bounds.max_rows_per_group == 0
        || bounds.max_groups_per_patient > DpBounds::MAX
        || bounds.max_rows_per_group > DpBounds::MAX
    {
        return Err(unsupported(format!(
            "max_groups_per_patient and max_rows_per_group must be between 1 and {m} / max_groups_per_patient と max_rows_per_group は 1 から {m} の範囲で指定してください",
            m = DpBounds::MAX
        )));
    }
    Ok(())
}

fn pid() -> Expr {
    col("__kura_pid")
}

/// The patient column followed by the group key columns.
fn pid_and_keys(gnames: &[String]) -> Vec<Expr> {
    let mut out = vec![pid()];
    out.extend(gnames.iter().map(|n| col(n.as_str())));
    out
}

/// Build the bounded plan (P0 to P4) for the aggregation's measures.
pub(super) fn bounded(
    aggregate: &Aggregate,
    rows: &Rows,
    specs: &[Spec],
    bounds: DpBounds,
    index: Arc<PatientIndex>,
) -> Result<Bounded, QueryError> {
    let ngroup = aggregate.group_expr.len();
    let gnames: Vec<String> = (0..ngroup).map(|j| format!("__kura_g{j}")).collect();
    if partial_names(specs).len() > MAX_VALUES {
        return Err(unsupported(format!(
            "too many aggregates: at most {MAX_VALUES} counts and sums in DP mode (an AVG is a sum and a count) / 集計が多すぎます: DP モードでは件数と合計で {MAX_VALUES} 個までです（AVG は合計と件数の 2 個）"
        )));
    }
    let plan = tagged_rows(aggregate, rows, specs, &gnames, index)?;
    let plan = bounded_pairs(plan, rows, specs, &gnames, bounds)?;
    let (p4, measures, patients) = per_group(specs, ngroup)?;
    let keys = gnames.iter().map(|n| col(n.as_str())).collect();
    Ok(Bounded {
        plan: aggregate_by(plan, keys, p4)?,
        measures,
        patients,
    })
}

/// P1 to P3: the (patient, group) pairs with their partials, at most `m` rows each and at
/// most `L` per patient, with the steps the data makes unnecessary left out.
fn bounded_pairs(
    plan: LogicalPlan,
    rows: &Rows,
    specs: &[Spec],
    gnames: &[String],
    bounds: DpBounds,
) -> Result<LogicalPlan, QueryError> {
    let choose_groups = !gnames.is_empty() && !rows.shape.one_group;
    let limit = bounds.max_groups_per_patient;
    let plan = if rows.shape.one_row {
        // One row per patient: the row is its patient's only (patient, group) pair.
        one_row_partials(plan, specs, gnames)?
    } else if specs
        .iter()
        .any(|s| s.kind != MeasureKind::CountDistinctPid)
    {
        // Only the row-counting aggregates care how many rows a patient has in a group.
        keep_rows(plan, specs, gnames, bounds.max_rows_per_group)?
    } else if choose_groups {
        // Distinct counts only: P2 and P3 in one aggregation by patient.
        let values = (0..specs.len())
            .map(|j| (format!("__kura_v{j}"), format!("__kura_c{j}")))
            .collect();
        return keep_groups(plan, gnames, values, Add::CountNonNull, limit);
    } else {
        aggregate_by(plan, pid_and_keys(gnames), per_patient_and_group(specs))?
    };
    if !choose_groups {
        return Ok(plan);
    }
    let sums = partial_names(specs)
        .into_iter()
        .map(|n| (n.clone(), n))
        .collect();
    keep_groups(plan, gnames, sums, Add::Sum, limit)
}

/// `plan` aggregated by `by` (P2, P4).
fn aggregate_by(
    plan: LogicalPlan,
    by: Vec<Expr>,
    aggregates: Vec<Expr>,
) -> Result<LogicalPlan, QueryError> {
    Ok(LogicalPlan::Aggregate(
        Aggregate::try_new(Arc::new(plan), by, aggregates)
            .map_err(|e| QueryError::internal("dp rewrite", e))?,
    ))
}

/// P0: the patient (its number in the extract's index), keys and the per-row values.
fn tagged_rows(
    aggregate: &Aggregate,
    rows: &Rows,
    specs: &[Spec],
    gnames: &[String],
    index: Arc<PatientIndex>,
) -> Result<LogicalPlan, QueryError> {
    let input = &rows.rel.plan;
    // The patient as its dense number: the bounding steps group and sort integers.
    let patient = PatientNo::call(index, col_at(input, rows.pid));
    let mut p0 = vec![patient.alias("__kura_pid")];
    for (g, n) in aggregate.group_expr.iter().zip(gnames) {
        p0.push(strip_alias(g).clone().alias(n));
    }
    for (j, s) in specs.iter().enumerate() {
        p0.push(s.value.clone().alias(format!("__kura_v{j}")));
    }
    Ok(LogicalPlan::Projection(
        Projection::try_new(p0, Arc::new(input.clone()))
            .map_err(|e| QueryError::internal("dp rewrite", e))?,
    ))
}

/// The partial aggregates per patient and group a measure needs, in order: `s`, the sum
/// of its values, and `c`, their count. A COUNT needs the count, a SUM the sum, an AVG
/// both; P4 adds each up over the patients of the group.
fn partials(kind: MeasureKind) -> &'static [char] {
    match kind {
        MeasureKind::Count | MeasureKind::CountDistinctPid => &['c'],
        MeasureKind::Sum => &['s'],
        MeasureKind::Avg => &['s', 'c'],
    }
}

/// P2: the values of each patient and group added up.
fn per_patient_and_group(specs: &[Spec]) -> Vec<Expr> {
    let mut p2 = Vec::new();
    for (j, s) in specs.iter().enumerate() {
        let v = col(format!("__kura_v{j}"));
        for &p in partials(s.kind) {
            let partial = if p == 'c' {
                count(v.clone())
            } else {
                sum(v.clone())
            };
            p2.push(partial.alias(format!("__kura_{p}{j}")));
        }
    }
    p2
}

/// P2 for rows that are one per patient: the partials of a single row, computed on the
/// row (a count is 1 for a non-NULL value, a sum the value itself), with the same names.
fn one_row_partials(
    plan: LogicalPlan,
    specs: &[Spec],
    gnames: &[String],
) -> Result<LogicalPlan, QueryError> {
    let mut exprs = pid_and_keys(gnames);
    for (j, s) in specs.iter().enumerate() {
        let v = col(format!("__kura_v{j}"));
        for &p in partials(s.kind) {
            let partial = if p == 'c' {
                when(v.clone().is_not_null(), lit(1i64))
                    .otherwise(lit(0i64))
                    .map_err(|e| QueryError::internal("dp rewrite", e))?
            } else {
                v.clone()
            };
            exprs.push(partial.alias(format!("__kura_{p}{j}")));
        }
    }
    Ok(LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(plan))
            .map_err(|e| QueryError::internal("dp rewrite", e))?,
    ))
}

/// P4: per group, each measure (`m`, and an AVG's count `n`) and the number of (patient,
/// group) pairs kept; also where each measure lands (after the `ngroup` keys) and the
/// column of that number. A distinct count counts the patients with a row in the group.
fn per_group(
    specs: &[Spec],
    ngroup: usize,
) -> Result<(Vec<Expr>, Vec<Measure>, usize), QueryError> {
    let mut p4 = Vec::new();
    let mut measures = Vec::new();
    let mut next = ngroup;
    for (j, s) in specs.iter().enumerate() {
        let value = next;
        for (&p, out) in partials(s.kind).iter().zip(['m', 'n']) {
            let partial = col(format!("__kura_{p}{j}"));
            let added = if s.kind == MeasureKind::CountDistinctPid {
                when(partial.gt(lit(0i64)), lit(1i64))
                    .otherwise(lit(0i64))
                    .map_err(|e| QueryError::internal("dp rewrite", e))?
            } else {
                partial
            };
            p4.push(sum(added).alias(format!("__kura_{out}{j}")));
            next += 1;
        }
        measures.push(Measure {
            kind: s.kind,
            name: s.name.clone(),
            clamp: s.clamp,
            value,
            count: (s.kind == MeasureKind::Avg).then_some(value + 1),
        });
    }
    p4.push(count(lit(1i64)).alias("__kura_patients"));
    Ok((p4, measures, next))
}

/// P3, and P2 when `values` are still rows: per patient, at most `limit` groups, those of
/// smallest keyed random priority, each with its `values` (input column → output name)
/// added up as `add` says (`engine::keep_groups`, one hash aggregation by patient instead
/// of a sort), unnested back into columns.
fn keep_groups(
    plan: LogicalPlan,
    gnames: &[String],
    values: Vec<(String, String)>,
    add: Add,
    limit: u32,
) -> Result<LogicalPlan, QueryError> {
    let mut inputs: Vec<Expr> = gnames.iter().map(|n| col(n.as_str())).collect();
    let mut names = gnames.to_vec();
    for (input, name) in &values {
        inputs.push(col(input.as_str()));
        names.push(name.clone());
    }
    let parts = KeepGroupsParts {
        limit,
        names: names.clone(),
        keys: gnames.len(),
        adds: vec![add; values.len()],
        seed: rand::random::<u64>(),
    };
    let kept = KeepGroups::call(parts, pid(), inputs).alias("__kura_kept");
    let grouped = aggregate_by(plan, vec![pid()], vec![kept])?;
    let unnested = LogicalPlanBuilder::from(grouped)
        .unnest_column("__kura_kept")
        .and_then(LogicalPlanBuilder::build)
        .map_err(|e| QueryError::internal("dp rewrite", e))?;
    let mut columns = vec![pid()];
    columns.extend(
        names
            .iter()
            .map(|n| get_field(col("__kura_kept"), n.as_str()).alias(n)),
    );
    Ok(LogicalPlan::Projection(
        Projection::try_new(columns, Arc::new(unnested))
            .map_err(|e| QueryError::internal("dp rewrite", e))?,
    ))
}

/// The names of the partials P2 computes, in order.
fn partial_names(specs: &[Spec]) -> Vec<String> {
    let mut names = Vec::new();
    for (j, s) in specs.iter().enumerate() {
        names.extend(partials(s.kind).iter().map(|p| format!("__kura_{p}{j}")));
    }
    names
}

/// P1 and P2: at most `limit` rows per patient and group, chosen at random, added up into
/// the partials of each measure (`engine::keep_rows`, one hash pass instead of a sort and a
/// second aggregation), under the names P2 gives them.
fn keep_rows(
    plan: LogicalPlan,
    specs: &[Spec],
    gnames: &[String],
    limit: u32,
) -> Result<LogicalPlan, QueryError> {
    let values = (0..specs.len())
        .map(|j| col(format!("__kura_v{j}")))
        .collect();
    let mut outputs = Vec::new();
    for (j, s) in specs.iter().enumerate() {
        for &p in partials(s.kind) {
            outputs.push(Output {
                value: j,
                add: if p == 'c' {
                    Add::CountNonNull
                } else {
                    Add::Sum
                },
                name: format!("__kura_{p}{j}"),
            });
        }
    }
    let names: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
    let kept = KeepRows::call(limit, values, outputs).alias("__kura_rows");
    let grouped = aggregate_by(plan, pid_and_keys(gnames), vec![kept])?;
    let mut columns = pid_and_keys(gnames);
    columns.extend(
        names
            .iter()
            .map(|n| get_field(col("__kura_rows"), n.as_str()).alias(n)),
    );
    Ok(LogicalPlan::Projection(
        Projection::try_new(columns, Arc::new(grouped))
            .map_err(|e| QueryError::internal("dp rewrite", e))?,
    ))
}
