//! SQL stage 3, the privacy rewrite in differential-privacy mode: guarded logical plan →
//! a *bounded* plan that computes the exact per-group quantities to be noised, plus what
//! the DP release (`engine::dp`) needs to noise them and to finish the query.
//!
//! Supported: one aggregation over patient rows (WHERE on any column, joins on `pid`
//! between patient tables and to reference tables below it) with `COUNT(*)`,
//! `COUNT(expr)`, `COUNT(DISTINCT pid)`, `SUM(col)` and `AVG(col)` for columns with
//! catalogue bounds, optional `FILTER (WHERE …)`; group keys that are public-domain
//! catalogue columns or `CASE` expressions with constant results (their domain is the
//! constants); above it only projections, aliases, HAVING, ORDER BY and LIMIT, which run
//! on the noisy values (post-processing). Everything else is refused with a message that
//! says what would work.
//!
//! Contribution bounding, in the plan: every row is tagged with its patient, its group
//! and the (clamped, centred for AVG) values; at most `m` rows per patient and group are
//! kept (`row_number() OVER (PARTITION BY pid, keys ORDER BY random())`), then the rows
//! are summed per patient and group, and at most `L` groups per patient are kept
//! (`row_number() OVER (PARTITION BY pid ORDER BY random())`). Only then are the groups
//! aggregated. The sensitivities in `privacy::dp::sensitivity` hold because of these
//! steps.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue};
use datafusion::functions::math::expr_fn::random;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprFunctionExt, Filter, LogicalPlan, Projection, Window, cast, col, lit, when,
};

use crate::catalog::Catalog;
use crate::privacy::result::DpBounds;
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;
use crate::sql::rewrite::{
    KeySource, Kind, Rewriter, col_at, has_subquery, internal, pid_index, strip_alias,
};

/// The values a group key can take, known without reading patient data.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDomain {
    /// A public-domain catalogue column (domain from the catalogue, restricted to scope).
    Column { table: String, column: String },
    /// The constant results of a CASE expression (NULL included when it has no ELSE).
    Literals(Vec<ScalarValue>),
}

/// One group key of the protected aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct DpKey {
    /// The key as the researcher wrote it (for messages).
    pub name: String,
    pub domain: KeyDomain,
    pub data_type: DataType,
}

/// The aggregates DP mode answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    /// COUNT(*) or COUNT(expr).
    Count,
    /// COUNT(DISTINCT pid).
    CountDistinctPid,
    Sum,
    Avg,
}

impl MeasureKind {
    pub fn name(self) -> &'static str {
        match self {
            MeasureKind::Count => "count",
            MeasureKind::CountDistinctPid => "count_distinct_pid",
            MeasureKind::Sum => "sum",
            MeasureKind::Avg => "avg",
        }
    }
}

/// One aggregate of the protected aggregation and where the bounded plan computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub kind: MeasureKind,
    /// Output field name of the aggregate in the user's plan.
    pub name: String,
    /// `[lo, hi]` clamp (SUM, AVG).
    pub clamp: Option<(f64, f64)>,
    /// Column of the bounded plan: the count, distinct count or (centred) sum.
    pub value: usize,
    /// AVG: column of the bounded plan with the count of values.
    pub count: Option<usize>,
}

/// Output of the DP rewrite.
#[derive(Debug, Clone)]
pub struct DpPlan {
    /// Output: the group keys (in order), then the measure columns, then the number of
    /// (patient, group) pairs kept (the patient count behind the release threshold).
    pub bounded: LogicalPlan,
    pub keys: Vec<DpKey>,
    pub measures: Vec<Measure>,
    /// Column of the bounded plan with the distinct patients per group after bounding.
    pub patients: usize,
    /// A measure that is exactly the distinct patients of the group (unfiltered COUNT
    /// DISTINCT of the privacy unit): its noisy value doubles as the release-threshold count.
    pub gate_measure: Option<usize>,
    /// The user's aggregation (its schema is what the release rebuilds).
    pub aggregate: Aggregate,
    /// The user's plan above and including the aggregation.
    pub top: LogicalPlan,
    /// For every output column of `top`: the aggregate output columns it is computed from.
    pub lineage: Vec<BTreeSet<usize>>,
    /// For every output column of `top`: the aggregate output column it passes unchanged.
    pub passes: Vec<Option<usize>>,
}

fn unsupported(msg: String) -> QueryError {
    QueryError::UnsupportedQuery { message: msg }
}

const SUPPORTED: &str = "DP mode answers one aggregation over patient rows with COUNT(*), COUNT(col), COUNT(DISTINCT pid), SUM(col) or AVG(col) (col with catalogue bounds), GROUP BY public-domain columns or CASE buckets, and ORDER BY / LIMIT / HAVING on the result / DP 方式で回答できるのは、患者行に対する 1 回の集計（COUNT(*)、COUNT(列)、COUNT(DISTINCT pid)、範囲が定義された列の SUM・AVG、公開ドメイン列または CASE による GROUP BY）と、その結果への ORDER BY・LIMIT・HAVING です";

/// Plan a DP query: find the protected aggregation, check it, and build its bounded plan.
pub fn plan(user: &LogicalPlan, catalog: &Catalog, bounds: DpBounds) -> Result<DpPlan, QueryError> {
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
    let aggregate = find_aggregate(user)?.clone();
    let (lineage, passes) = lineage(user)?;

    let mut rw = Rewriter {
        catalog,
        rules: RuleSet::off(),
        counter: 0,
        guards: Vec::new(),
        inner_sealed: false,
        aggs: Vec::new(),
    };
    let input = rw.rel(&aggregate.input)?;
    if !rw.guards.is_empty() || rw.inner_sealed || matches!(input.kind, Kind::Protected { .. }) {
        return Err(unsupported(format!(
            "nested aggregations over patients are not supported in DP mode (one aggregation per query; pre-aggregation GROUP BY pid is allowed). {SUPPORTED}"
        )));
    }
    if input.kind != Kind::Rows {
        return Err(unsupported(format!(
            "this aggregation reads no patient rows (only reference tables); browse reference tables in the catalogue. {SUPPORTED}"
        )));
    }
    let in_schema = input.plan.schema().clone();
    let pid_i = pid_index(&input)?;

    // Group keys.
    let mut keys = Vec::new();
    for (j, g) in aggregate.group_expr.iter().enumerate() {
        let name = aggregate.schema.field(j).name().clone();
        if has_subquery(g) {
            return Err(unsupported(format!(
                "GROUP BY `{name}`: subqueries in keys are not supported in DP mode. {SUPPORTED}"
            )));
        }
        let data_type = aggregate.schema.field(j).data_type().clone();
        let domain = match strip_alias(g) {
            Expr::Column(c) => {
                let i = in_schema.index_of_column(c).map_err(internal)?;
                let lin = &input.cols[i];
                if lin.pid {
                    return Err(QueryError::RowLevelOutput {
                        message: "GROUP BY pid releases one row per patient; group by public-domain columns / pid による GROUP BY は患者単位の出力になります".into(),
                    });
                }
                match (&lin.source, lin.public) {
                    (Some(KeySource::Column { table, column }), true) => KeyDomain::Column {
                        table: table.clone(),
                        column: column.clone(),
                    },
                    _ => {
                        return Err(unsupported(format!(
                            "GROUP BY `{name}`: under DP a group key must be a public-domain catalogue column (its values are then released in full, zero-filled) or a CASE expression with constant results; `{name}` has no public domain. Bucket it with CASE WHEN … THEN '…' END, or use a public-domain column / DP 方式では公開ドメインの列か定数を返す CASE 式でのみグループ化できます"
                        )));
                    }
                }
            }
            e => match constant_results(e) {
                Some(values) => KeyDomain::Literals(values),
                None => {
                    return Err(unsupported(format!(
                        "GROUP BY `{name}`: under DP a computed key must be a CASE expression whose results are constants (e.g. CASE WHEN age < 40 THEN '00-39' ELSE '40+' END), so its values are known without the data / 計算したキーは結果が定数の CASE 式にしてください"
                    )));
                }
            },
        };
        keys.push(DpKey {
            name,
            domain,
            data_type,
        });
    }

    // Aggregates and the values they read, per row.
    struct Spec {
        kind: MeasureKind,
        name: String,
        clamp: Option<(f64, f64)>,
        filter: Option<Expr>,
        /// Per-row value expression (NULL when the row does not count).
        value: Expr,
        /// COUNT(DISTINCT pid) on the relation's own privacy unit (never NULL).
        primary: bool,
    }
    let ngroup = aggregate.group_expr.len();
    let mut specs = Vec::new();
    for (j, a) in aggregate.aggr_expr.iter().enumerate() {
        let name = aggregate.schema.field(ngroup + j).name().clone();
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
        let mut primary = false;
        let arg = f.params.args.first();
        let (kind, clamp, value) = match (fname.as_str(), f.params.distinct) {
            ("count", true) => {
                let pid_col = (f.params.args.len() == 1)
                    .then_some(arg)
                    .flatten()
                    .and_then(|e| match strip_alias(e) {
                        Expr::Column(c) => in_schema.index_of_column(c).ok(),
                        _ => None,
                    })
                    .filter(|&i| input.cols[i].pid);
                let Some(i) = pid_col else {
                    return Err(unsupported(format!(
                        "`{name}`: COUNT(DISTINCT …) is only supported on pid under DP (distinct values of other columns are not bounded per patient). {SUPPORTED}"
                    )));
                };
                primary = i == pid_i;
                // Patient tables join on pid only, so a non-null pid of any joined table is
                // the row's patient; NULL (the outer side of a join) does not count.
                let value = if primary {
                    lit(1i64)
                } else {
                    when(col_at(&input.plan, i).is_not_null(), lit(1i64))
                        .end()
                        .map_err(internal)?
                };
                (MeasureKind::CountDistinctPid, None, value)
            }
            ("count", false) => {
                let value = match arg.map(strip_alias) {
                    None | Some(Expr::Literal(_, _)) => lit(1i64),
                    Some(e) => when(e.clone().is_not_null(), lit(1i64))
                        .end()
                        .map_err(internal)?,
                };
                (MeasureKind::Count, None, value)
            }
            ("sum" | "avg", false) => {
                let (lo, hi) = arg
                    .and_then(|e| bounds_of(e, &input, &in_schema, catalog))
                    .ok_or_else(|| {
                        unsupported(format!(
                            "`{name}`: under DP, SUM and AVG need a bare catalogue column with DP bounds (e.g. alsfrs_r, bounds [0, 48]) so each value can be clamped; this argument has none. {SUPPORTED}"
                        ))
                    })?;
                let x = cast(arg.cloned().expect("checked above"), DataType::Float64);
                let clamped = when(x.clone().lt(lit(lo)), lit(lo))
                    .when(x.clone().gt(lit(hi)), lit(hi))
                    .otherwise(x)
                    .map_err(internal)?;
                if fname == "sum" {
                    (MeasureKind::Sum, Some((lo, hi)), clamped)
                } else {
                    let mid = (lo + hi) / 2.0;
                    (MeasureKind::Avg, Some((lo, hi)), clamped - lit(mid))
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
            Some(flt) => when(flt.clone(), value).end().map_err(internal)?,
            None => value,
        };
        specs.push(Spec {
            kind,
            name,
            clamp,
            filter,
            value,
            primary,
        });
    }
    if specs.is_empty() {
        return Err(unsupported(format!(
            "the query has no aggregate (a SELECT DISTINCT or a GROUP BY without aggregates shows which groups exist); add COUNT(DISTINCT pid). {SUPPORTED}"
        )));
    }

    // P0: pid, keys, per-row values.
    let mut p0 = vec![col_at(&input.plan, pid_i).alias("__kura_pid")];
    let gnames: Vec<String> = (0..ngroup).map(|j| format!("__kura_g{j}")).collect();
    for (g, n) in aggregate.group_expr.iter().zip(&gnames) {
        p0.push(strip_alias(g).clone().alias(n));
    }
    for (j, s) in specs.iter().enumerate() {
        p0.push(s.value.clone().alias(format!("__kura_v{j}")));
    }
    let mut plan = LogicalPlan::Projection(
        Projection::try_new(p0, Arc::new(input.plan.clone())).map_err(internal)?,
    );
    let pid = || col("__kura_pid");
    let gcols = || gnames.iter().map(|n| col(n.as_str())).collect::<Vec<_>>();

    // P1: at most m rows per patient and group (only the row-counting aggregates care).
    let rows_matter = specs
        .iter()
        .any(|s| s.kind != MeasureKind::CountDistinctPid);
    if rows_matter {
        let mut part = vec![pid()];
        part.extend(gcols());
        plan = keep_first(plan, part, "__kura_rn_rows", bounds.max_rows_per_group)?;
    }

    // P2: per patient and group.
    let mut by = vec![pid()];
    by.extend(gcols());
    let mut p2 = Vec::new();
    for (j, s) in specs.iter().enumerate() {
        let v = col(format!("__kura_v{j}"));
        match s.kind {
            MeasureKind::Count | MeasureKind::CountDistinctPid => {
                p2.push(count(v).alias(format!("__kura_c{j}")))
            }
            MeasureKind::Sum => p2.push(sum(v).alias(format!("__kura_s{j}"))),
            MeasureKind::Avg => {
                p2.push(sum(v.clone()).alias(format!("__kura_s{j}")));
                p2.push(count(v).alias(format!("__kura_c{j}")));
            }
        }
    }
    plan = LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(plan), by, p2).map_err(internal)?);

    // P3: at most L groups per patient.
    if ngroup > 0 {
        plan = keep_first(
            plan,
            vec![pid()],
            "__kura_rn_groups",
            bounds.max_groups_per_patient,
        )?;
    }

    // P4: per group.
    let mut p4 = Vec::new();
    let mut measures = Vec::new();
    let mut next = ngroup;
    for (j, s) in specs.iter().enumerate() {
        let (value, cnt) = match s.kind {
            MeasureKind::Count => {
                p4.push(sum(col(format!("__kura_c{j}"))).alias(format!("__kura_m{j}")));
                (next, None)
            }
            MeasureKind::CountDistinctPid => {
                let any = when(col(format!("__kura_c{j}")).gt(lit(0i64)), lit(1i64))
                    .otherwise(lit(0i64))
                    .map_err(internal)?;
                p4.push(sum(any).alias(format!("__kura_m{j}")));
                (next, None)
            }
            MeasureKind::Sum => {
                p4.push(sum(col(format!("__kura_s{j}"))).alias(format!("__kura_m{j}")));
                (next, None)
            }
            MeasureKind::Avg => {
                p4.push(sum(col(format!("__kura_s{j}"))).alias(format!("__kura_m{j}")));
                p4.push(sum(col(format!("__kura_c{j}"))).alias(format!("__kura_n{j}")));
                next += 1;
                (next - 1, Some(next))
            }
        };
        next += 1;
        measures.push(Measure {
            kind: s.kind,
            name: s.name.clone(),
            clamp: s.clamp,
            value,
            count: cnt,
        });
    }
    p4.push(count(lit(1i64)).alias("__kura_patients"));
    let patients = next;
    plan =
        LogicalPlan::Aggregate(Aggregate::try_new(Arc::new(plan), gcols(), p4).map_err(internal)?);
    let gate_measure = specs
        .iter()
        .position(|s| s.kind == MeasureKind::CountDistinctPid && s.filter.is_none() && s.primary);
    Ok(DpPlan {
        bounded: plan,
        keys,
        measures,
        patients,
        gate_measure,
        aggregate,
        top: user.clone(),
        lineage,
        passes,
    })
}

/// Keep at most `n` rows per partition, chosen at random, and drop the row number again.
fn keep_first(
    plan: LogicalPlan,
    partition: Vec<Expr>,
    rn: &str,
    n: u32,
) -> Result<LogicalPlan, QueryError> {
    let keep: Vec<Expr> = (0..plan.schema().fields().len())
        .map(|i| col_at(&plan, i))
        .collect();
    let w = row_number()
        .partition_by(partition)
        .order_by(vec![random().sort(true, false)])
        .build()
        .map_err(internal)?
        .alias(rn);
    let windowed = LogicalPlan::Window(Window::try_new(vec![w], Arc::new(plan)).map_err(internal)?);
    let filtered = LogicalPlan::Filter(
        Filter::try_new(col(rn).lt_eq(lit(u64::from(n))), Arc::new(windowed)).map_err(internal)?,
    );
    Ok(LogicalPlan::Projection(
        Projection::try_new(keep, Arc::new(filtered)).map_err(internal)?,
    ))
}

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
fn find_aggregate(plan: &LogicalPlan) -> Result<&Aggregate, QueryError> {
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

/// For every output column of the post-processing chain: which aggregate output columns
/// it is computed from, and which one it passes unchanged (if any).
#[allow(clippy::type_complexity)]
fn lineage(plan: &LogicalPlan) -> Result<(Vec<BTreeSet<usize>>, Vec<Option<usize>>), QueryError> {
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
            let mut out_lin = Vec::new();
            let mut out_pass = Vec::new();
            for e in &p.expr {
                let mut set = BTreeSet::new();
                for c in e.column_refs() {
                    let i = schema.index_of_column(c).map_err(internal)?;
                    set.extend(lin[i].iter().copied());
                }
                out_lin.push(set);
                out_pass.push(match strip_alias(e) {
                    Expr::Column(c) => pass[schema.index_of_column(c).map_err(internal)?],
                    _ => None,
                });
            }
            Ok((out_lin, out_pass))
        }
        p if is_post_processing(p) => lineage(p.inputs()[0]),
        other => Err(internal(format!("lineage through {}", other.display()))),
    }
}

/// The constant results of a CASE expression (with NULL when there is no ELSE), or of a
/// bare constant.
fn constant_results(e: &Expr) -> Option<Vec<ScalarValue>> {
    fn constant(e: &Expr) -> Option<ScalarValue> {
        match e {
            Expr::Literal(v, _) => Some(v.clone()),
            Expr::Alias(a) => constant(&a.expr),
            Expr::Cast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
            Expr::TryCast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
            _ => None,
        }
    }
    match e {
        Expr::Case(c) => {
            let mut out = Vec::new();
            for (_, then) in &c.when_then_expr {
                out.push(constant(then)?);
            }
            match &c.else_expr {
                Some(e) => out.push(constant(e)?),
                None => out.push(ScalarValue::Null),
            }
            Some(out)
        }
        other => constant(other).map(|v| vec![v]),
    }
}

/// Catalogue DP bounds of a bare (possibly cast) column argument.
fn bounds_of(
    e: &Expr,
    input: &crate::sql::rewrite::Rel,
    schema: &datafusion::common::DFSchema,
    catalog: &Catalog,
) -> Option<(f64, f64)> {
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
    let i = schema.index_of_column(c).ok()?;
    let lin = &input.cols[i];
    if lin.pid {
        return None;
    }
    let Some(KeySource::Column { table, column }) = &lin.source else {
        return None;
    };
    let [lo, hi] = catalog.table(table)?.column(column)?.bounds?;
    Some((lo, hi))
}
