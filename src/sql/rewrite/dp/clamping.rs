//! DP rewrite, clamping: every aggregate becomes a per-row value whose size is bounded
//! before anything is added up. COUNT and COUNT(DISTINCT pid) read 1 or NULL per row; SUM
//! and AVG read their argument clamped to the column's catalogue DP bounds `[lo, hi]` (for
//! AVG also centred on the midpoint, so a row moves the sum by at most `(hi − lo) / 2`).
//! An argument without catalogue bounds cannot be clamped, so SUM and AVG of it are
//! refused, as are aggregates whose per-patient contribution is not bounded (DISTINCT of
//! other columns, MIN, MAX, …). `FILTER (WHERE …)` only turns values into NULL.
//!
//! Golden cases in `tests/slt/dp/`: `rewrite.slt` "AVG is a noisy centred sum over a noisy
//! count" (the clamping CASE expressions in the plan) and "FILTER and a CASE bucket";
//! `refusals.slt` "avg(severity * 2)" (no bounds), "count(DISTINCT prefecture_code)" and
//! "max(severity)".

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, cast, lit, when};

use super::{MeasureKind, Rows, SUPPORTED, unsupported};
use crate::catalog::Catalog;
use crate::query::QueryError;
use crate::sql::rewrite::{KeySource, col_at, has_subquery, strip_alias};

/// One aggregate of the protected aggregation, as a value per row.
pub(super) struct Spec {
    pub(super) kind: MeasureKind,
    pub(super) name: String,
    pub(super) clamp: Option<(f64, f64)>,
    pub(super) filter: Option<Expr>,
    /// Per-row value expression (NULL when the row does not count).
    pub(super) value: Expr,
    /// COUNT(DISTINCT pid) on the relation's own privacy unit (never NULL).
    pub(super) primary: bool,
}

/// The aggregates of the aggregation, in order, as bounded per-row values.
pub(super) fn specs(
    aggregate: &Aggregate,
    rows: &Rows,
    catalog: &Catalog,
) -> Result<Vec<Spec>, QueryError> {
    let ngroup = aggregate.group_expr.len();
    let specs = aggregate
        .aggr_expr
        .iter()
        .enumerate()
        .map(|(j, a)| {
            let name = aggregate.schema.field(ngroup + j).name().clone();
            spec(name, a, rows, catalog)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err(unsupported(format!(
            "the query has no aggregate (a SELECT DISTINCT or a GROUP BY without aggregates shows which groups exist); add COUNT(DISTINCT pid). {SUPPORTED}"
        )));
    }
    Ok(specs)
}

fn spec(name: String, a: &Expr, rows: &Rows, catalog: &Catalog) -> Result<Spec, QueryError> {
    let Expr::AggregateFunction(f) = strip_alias(a) else {
        return Err(unsupported(format!(
            "`{name}` is not supported. {SUPPORTED}"
        )));
    };
    if has_subquery(a) {
        return Err(unsupported(format!(
            "`{name}`: subqueries inside aggregates are not supported in DP mode. {SUPPORTED}"
        )));
    }
    if !f.params.order_by.is_empty() || f.params.null_treatment.is_some() {
        return Err(unsupported(format!(
            "`{name}`: ORDER BY / IGNORE NULLS inside an aggregate is not supported in DP mode. {SUPPORTED}"
        )));
    }
    let filter = f.params.filter.as_deref().cloned();
    let fname = f.func.name().to_ascii_lowercase();
    let arg = f.params.args.first();
    let (kind, clamp, value, primary) = match (fname.as_str(), f.params.distinct) {
        ("count", true) => {
            let (value, primary) = distinct_patients(&name, f, rows)?;
            (MeasureKind::CountDistinctPid, None, value, primary)
        }
        ("count", false) => (MeasureKind::Count, None, counted(arg)?, false),
        ("sum" | "avg", false) => {
            let (lo, hi) = arg
                .and_then(|e| bounds_of(e, rows, catalog))
                .ok_or_else(|| {
                    unsupported(format!(
                        "`{name}`: under DP, SUM and AVG need a bare catalogue column with DP bounds (e.g. alsfrs_r, bounds [0, 48]) so each value can be clamped; this argument has none. {SUPPORTED}"
                    ))
                })?;
            let x = cast(arg.cloned().expect("checked above"), DataType::Float64);
            let clamped = when(x.clone().lt(lit(lo)), lit(lo))
                .when(x.clone().gt(lit(hi)), lit(hi))
                .otherwise(x)
                .map_err(|e| QueryError::internal("dp rewrite", e))?;
            if fname == "sum" {
                (MeasureKind::Sum, Some((lo, hi)), clamped, false)
            } else {
                let mid = (lo + hi) / 2.0;
                (MeasureKind::Avg, Some((lo, hi)), clamped - lit(mid), false)
            }
        }
        ("sum" | "avg", true) => {
            return Err(unsupported(format!(
                "`{name}`: SUM/AVG(DISTINCT …) is not supported under DP. {SUPPORTED}"
            )));
        }
        _ => {
            return Err(QueryError::UnsupportedAggregate {
                message: format!("`{fname}` is not available in DP mode; {SUPPORTED}"),
            });
        }
    };
    let value = match &filter {
        Some(flt) => when(flt.clone(), value)
            .end()
            .map_err(|e| QueryError::internal("dp rewrite", e))?,
        None => value,
    };
    Ok(Spec {
        kind,
        name,
        clamp,
        filter,
        value,
        primary,
    })
}

/// COUNT(DISTINCT pid): 1 for every row with a patient, and whether that patient is the
/// relation's own privacy unit.
fn distinct_patients(
    name: &str,
    f: &AggregateFunction,
    rows: &Rows,
) -> Result<(Expr, bool), QueryError> {
    let input = &rows.rel;
    let pid_col = (f.params.args.len() == 1)
        .then_some(f.params.args.first())
        .flatten()
        .and_then(|e| match strip_alias(e) {
            Expr::Column(c) => input.plan.schema().index_of_column(c).ok(),
            _ => None,
        })
        .filter(|&i| input.cols[i].pid);
    let Some(i) = pid_col else {
        return Err(unsupported(format!(
            "`{name}`: COUNT(DISTINCT …) is only supported on pid under DP (distinct values of other columns are not bounded per patient). {SUPPORTED}"
        )));
    };
    let primary = i == rows.pid;
    // Patient tables join on pid only, so a non-null pid of any joined table is the row's
    // patient; NULL (the outer side of a join) does not count.
    let value = if primary {
        lit(1i64)
    } else {
        when(col_at(&input.plan, i).is_not_null(), lit(1i64))
            .end()
            .map_err(|e| QueryError::internal("dp rewrite", e))?
    };
    Ok((value, primary))
}

/// COUNT(*) / COUNT(expr): 1 for every row where the argument is not NULL.
fn counted(arg: Option<&Expr>) -> Result<Expr, QueryError> {
    match arg.map(strip_alias) {
        None | Some(Expr::Literal(_, _)) => Ok(lit(1i64)),
        Some(e) => when(e.clone().is_not_null(), lit(1i64))
            .end()
            .map_err(|e| QueryError::internal("dp rewrite", e)),
    }
}

/// Catalogue DP bounds of a bare (possibly cast) column argument.
fn bounds_of(e: &Expr, rows: &Rows, catalog: &Catalog) -> Option<(f64, f64)> {
    let c: &Column = match strip_alias(e) {
        Expr::Column(c) => c,
        Expr::Cast(x) => match strip_alias(&x.expr) {
            Expr::Column(c) => c,
            _ => return None,
        },
        Expr::TryCast(x) => match strip_alias(&x.expr) {
            Expr::Column(c) => c,
            _ => return None,
        },
        _ => return None,
    };
    let i = rows.rel.plan.schema().index_of_column(c).ok()?;
    let lin = &rows.rel.cols[i];
    if lin.pid {
        return None;
    }
    let Some(KeySource::Column { table, column }) = &lin.source else {
        return None;
    };
    let [lo, hi] = catalog.table(table)?.column(column)?.bounds?;
    Some((lo, hi))
}
