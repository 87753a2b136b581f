//! The query path in differential-privacy mode, the orchestration of the DP stage:
//! prepare (SQL → guard → error hardening → DP rewrite with contribution bounding → key
//! domains → the release priced as a value, `privacy::dp::make_release`) → grid execution
//! (the bounded plan, zero-filled over the public key domain) → release (noise by OpenDP,
//! release threshold) → post-processing (the query's own projection, HAVING, ORDER BY,
//! LIMIT on the noisy values) → [`QueryOutcome`].
//!
//! Guarantees:
//! - every released value derived from patient data went through exactly one noised
//!   quantity whose sensitivity holds under the bounds enforced in the plan, and the ε of
//!   all quantities adds up to the requested ε (OpenDP's privacy map confirms each share);
//! - the released rows are the whole key domain (approved scope applied) whatever the data:
//!   groups without patients are released as noisy zeros, groups outside the domain are
//!   never released, so neither the presence nor the order of a row depends on the data;
//! - a row is shown only if its noisy patient count reaches the release threshold
//!   (the regulation's <k rule under DP); its other cells are null and listed as suppressed;
//! - HAVING, ORDER BY and LIMIT run after the noise, on released values only.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, SubqueryAlias, col};

use super::{QueryError, QueryOutcome};
use crate::catalog::Catalog;
use crate::engine::Limits;
use crate::engine::exec::collect_limited;
use crate::privacy::disclosure::{cell_to_json, key_domain};
use crate::privacy::dp::{ExactCell, Noised, Release, make_release};
use crate::privacy::result::{
    Disclosure, DisclosureMode, DpBounds, DpDisclosure, DpInterval, DpParams, ReleasedColumn,
    ReleasedResult,
};
use crate::privacy::rules::DisclosureRules;
use crate::sql::rewrite::dp::{self as rewrite, DpPlan, KeyDomain, MeasureKind};

/// A DP query checked and priced, before any patient data is read.
#[derive(Debug, Clone)]
pub struct Prepared {
    dp: DpPlan,
    /// Values of each group key (approved scope applied), in domain order.
    domains: Vec<Vec<ScalarValue>>,
    release: Release,
    pub params: DpParams,
    /// Bounds as enforced (an ungrouped query has one group per patient).
    pub effective: DpBounds,
    pub plan_fingerprint: String,
    pub release_key: String,
    pub tables: Vec<String>,
    /// Released column names and the preview of the DP disclosure.
    pub disclosure: DpDisclosure,
}

impl Prepared {
    /// The rewritten plan that computes the exact bounded quantities (for golden files and
    /// the audit log).
    pub fn bounded_plan(&self) -> &LogicalPlan {
        &self.dp.bounded
    }

    /// Number of rows the release will have before HAVING/LIMIT (the key domain product).
    pub fn domain_rows(&self) -> usize {
        self.domains.iter().map(Vec::len).product()
    }
}

/// Check and price a DP query over the session's extract without running it.
pub async fn prepare(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
    params: DpParams,
) -> Result<Prepared, QueryError> {
    if !(params.epsilon.is_finite() && params.epsilon > 0.0) {
        return Err(QueryError::UnsupportedQuery {
            message: "DP queries need a positive, finite epsilon / DP クエリには正の有限な epsilon が必要です".into(),
        });
    }
    // The same guard, rules and fingerprint as the suppression path; DP needs k and the
    // second-line defences (the relation walk below the aggregation applies them).
    let guarded = super::suppression::guarded(ctx, sql, catalog, rules).await?;
    let index = crate::engine::session::patient_index(ctx, catalog).await?;
    let dp = rewrite::plan(
        &guarded.plan,
        catalog,
        params.bounds,
        guarded.rules.defences,
        index,
    )?;
    let domains = key_domains(ctx, catalog, &dp, limits).await?;
    let release = make_release(&dp, params.bounds, params.epsilon, guarded.rules.k)?;
    Ok(Prepared {
        disclosure: release.price(&dp),
        release_key: release.key(&guarded.plan),
        effective: release.bounds,
        dp,
        domains,
        release,
        params,
        plan_fingerprint: guarded.fingerprint,
        tables: guarded.tables,
    })
}

/// The values of every group key, from the catalogue (approved scope applied) or the
/// constants of its CASE expression; refused if a domain is empty or cannot be listed, or
/// if the keys together span more groups than a result may have rows.
async fn key_domains(
    ctx: &SessionContext,
    catalog: &Catalog,
    dp: &DpPlan,
    limits: &Limits,
) -> Result<Vec<Vec<ScalarValue>>, QueryError> {
    let mut domains = Vec::new();
    let mut product = 1usize;
    for key in &dp.keys {
        let values = match &key.domain {
            KeyDomain::Column { table, column } => {
                key_domain(ctx, catalog, table, column, &key.data_type, limits.max_rows).await
            }
            KeyDomain::Literals(v) => literal_domain(v, &key.data_type),
        };
        let Some(values) = values.filter(|v| !v.is_empty()) else {
            return Err(QueryError::UnsupportedQuery {
                message: format!(
                    "GROUP BY `{}`: its public domain cannot be enumerated in this approval's scope (or has more than {} values); group by a coarser public-domain column / キー `{}` の公開ドメインを列挙できません",
                    key.name, limits.max_rows, key.name
                ),
            });
        };
        product = product.saturating_mul(values.len());
        domains.push(values);
    }
    if product > limits.max_rows {
        return Err(QueryError::ResourceLimit {
            message: format!(
                "the keys span {product} groups, more than the {} rows a result may have; group by fewer keys or filter the key values / キーの組み合わせが {product} 通りあり、上限 {} 行を超えます。キーを減らしてください",
                limits.max_rows, limits.max_rows
            ),
        });
    }
    Ok(domains)
}

/// The distinct constants of a CASE key cast to the key's type, in order; `None` if one
/// does not cast.
fn literal_domain(values: &[ScalarValue], data_type: &DataType) -> Option<Vec<ScalarValue>> {
    let mut seen = Vec::<ScalarValue>::new();
    let mut ok = true;
    for x in values {
        match x.cast_to(data_type) {
            Ok(y) if !seen.contains(&y) => seen.push(y),
            Ok(_) => {}
            Err(_) => ok = false,
        }
    }
    ok.then_some(seen)
}

/// Run one DP query over the tables registered in `ctx` (the caller's extract).
pub async fn run_dp_query(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
    params: DpParams,
) -> Result<QueryOutcome, QueryError> {
    let started = Instant::now();
    crate::engine::exec::within_timeout(limits, async {
        let prepared = prepare(ctx, sql, catalog, rules, limits, params)
            .instrument(tracing::info_span!("kura.dp.prepare"))
            .await?;
        let result = release(ctx, &prepared, limits)
            .instrument(tracing::info_span!("kura.dp.release"))
            .await?;
        Ok(QueryOutcome {
            result,
            plan_fingerprint: prepared.plan_fingerprint,
            tables: prepared.tables,
            duration: started.elapsed(),
            released_sets: Vec::new(),
            trace: Default::default(),
        })
    })
    .await
}

/// The key domain rows (first key slowest) with the exact bounded quantities of each.
struct Grid {
    rows: Vec<Vec<ScalarValue>>,
    cells: Vec<ExactCell>,
}

/// Execute the bounded plan and zero-fill its groups over the key domain. Groups outside
/// the domain (NULL keys, values outside the approved scope) are dropped here.
async fn grid(ctx: &SessionContext, p: &Prepared, limits: &Limits) -> Result<Grid, QueryError> {
    let batches = collect_limited(ctx, p.dp.bounded.clone(), &limits.for_raw_output()).await?;
    let mut exact = HashMap::new();
    for b in &batches {
        read_groups(b, &p.dp, &mut exact)?;
    }
    let rows = domain_product(&p.domains);
    let cells = rows
        .iter()
        .map(|k| {
            exact
                .remove(k)
                .unwrap_or_else(|| ExactCell::empty(p.dp.measures.len()))
        })
        .collect();
    Ok(Grid { rows, cells })
}

/// Every combination of the key domains, first key slowest.
fn domain_product(domains: &[Vec<ScalarValue>]) -> Vec<Vec<ScalarValue>> {
    domains.iter().fold(vec![Vec::new()], |acc, domain| {
        acc.iter()
            .flat_map(|prefix| {
                domain.iter().map(move |v| {
                    let mut r = prefix.clone();
                    r.push(v.clone());
                    r
                })
            })
            .collect()
    })
}

/// The exact bounded quantities of each group in one batch of the bounded plan, by key.
fn read_groups(
    b: &RecordBatch,
    dp: &DpPlan,
    exact: &mut HashMap<Vec<ScalarValue>, ExactCell>,
) -> Result<(), QueryError> {
    let numbers = |i: usize| -> Result<Float64Array, QueryError> {
        let a = cast(b.column(i), &DataType::Float64)
            .map_err(|e| QueryError::internal("dp release", e))?;
        Ok(a.as_primitive::<Float64Type>().clone())
    };
    let values: Vec<(Float64Array, Option<Float64Array>)> = dp
        .measures
        .iter()
        .map(|m| Ok((numbers(m.value)?, m.count.map(numbers).transpose()?)))
        .collect::<Result<_, QueryError>>()?;
    let patients = numbers(dp.patients)?;
    let get = |a: &Float64Array, r: usize| if a.is_null(r) { 0.0 } else { a.value(r) };
    for r in 0..b.num_rows() {
        let mut key = Vec::with_capacity(dp.keys.len());
        for (j, k) in dp.keys.iter().enumerate() {
            let v = ScalarValue::try_from_array(b.column(j), r)
                .and_then(|v| v.cast_to(&k.data_type))
                .map_err(|e| QueryError::internal("dp release", e))?;
            key.push(v);
        }
        let cell = ExactCell {
            values: values
                .iter()
                .map(|(v, c)| (get(v, r), c.as_ref().map_or(0.0, |c| get(c, r))))
                .collect(),
            patients: get(&patients, r),
        };
        exact.insert(key, cell);
    }
    Ok(())
}

/// The exact quantities that the release would noise, one vector over the key domain per
/// quantity, named `<column>` (count, distinct count, sum or centred sum), `<column>#count`
/// (the count inside an AVG) and `#patients` (the release-threshold count). For
/// sensitivity tests and operators; never released.
pub async fn exact_quantities(
    ctx: &SessionContext,
    p: &Prepared,
    limits: &Limits,
) -> Result<Vec<(String, Vec<f64>)>, QueryError> {
    let g = grid(ctx, p, limits).await?;
    let mut out = Vec::new();
    for (j, m) in p.dp.measures.iter().enumerate() {
        out.push((
            m.name.clone(),
            g.cells.iter().map(|c| c.values[j].0).collect(),
        ));
        if m.count.is_some() {
            out.push((
                format!("{}#count", m.name),
                g.cells.iter().map(|c| c.values[j].1).collect(),
            ));
        }
    }
    out.push((
        "#patients".into(),
        g.cells.iter().map(|c| c.patients).collect(),
    ));
    Ok(out)
}

/// The sensitivity each quantity of [`exact_quantities`] is noised for.
pub fn quantity_sensitivities(p: &Prepared) -> Vec<f64> {
    p.release.sensitivities()
}

/// Execute the bounded plan, zero-fill, noise, threshold and post-process.
pub async fn release(
    ctx: &SessionContext,
    p: &Prepared,
    limits: &Limits,
) -> Result<ReleasedResult, QueryError> {
    let dp = &p.dp;
    let Grid { rows, cells } = grid(ctx, p, limits).await?;
    let noised = p.release.run(&cells)?;
    let aggregate = noisy_aggregate(ctx, dp, &rows, &noised)?;
    let finished = rebuild(&dp.top, &aggregate)?;
    let out = collect_limited(ctx, finished, limits).await?;
    let measures = measures_behind(dp);
    let released = released_rows(dp, &noised, &measures, &out)?;
    if released.rows.len() > limits.max_rows {
        return Err(QueryError::ResourceLimit {
            message: format!(
                "the result has more than {} rows; aggregate further or add filters / 結果が {} 行を超えました",
                limits.max_rows, limits.max_rows
            ),
        });
    }
    let columns = released_columns(dp);
    let notes = notes(p, &columns, &measures);
    let mut disclosure = p.disclosure.clone();
    disclosure.intervals = released.intervals;
    Ok(ReleasedResult {
        columns,
        rows: released.rows,
        disclosure: Disclosure {
            mode: DisclosureMode::Dp,
            threshold: p.release.k,
            suppressed_cells: released.suppressed.len(),
            differencing: Vec::new(),
            suppressed: released.suppressed,
            dropped_rows: 0,
            rounding: None,
            epsilon_spent: Some(p.params.epsilon),
            epsilon_remaining: None,
            notes,
            dp: Some(disclosure),
        },
    })
}

/// The aggregate's output rebuilt from the noisy values (withheld cells null), plus a
/// hidden row id, under the aggregate's own qualified names so that the query's
/// post-processing plan binds to it.
fn noisy_aggregate(
    ctx: &SessionContext,
    dp: &DpPlan,
    rows: &[Vec<ScalarValue>],
    noised: &Noised<'_>,
) -> Result<LogicalPlan, QueryError> {
    let schema = &dp.aggregate.schema;
    let ngroup = dp.keys.len();
    let mut arrays = key_arrays(dp, rows)?;
    for (j, m) in dp.measures.iter().enumerate() {
        let target = schema.field(ngroup + j).data_type();
        arrays.push(measure_array(m.kind, target, noised, j, rows.len())?);
    }
    arrays.push(Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)));

    // Registered under neutral names; a projection restores the qualified ones.
    let mut fields: Vec<Field> = (0..schema.fields().len())
        .map(|i| Field::new(format!("__kura_f{i}"), arrays[i].data_type().clone(), true))
        .collect();
    fields.push(Field::new("__kura_row", DataType::Int64, false));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| QueryError::internal("dp release", e))?;
    let scan = ctx
        .read_batch(batch)
        .map_err(|e| QueryError::internal("dp release", e))?
        .into_unoptimized_plan();
    let mut exprs: Vec<Expr> = Vec::new();
    for i in 0..schema.fields().len() {
        let (q, f) = schema.qualified_field(i);
        exprs.push(col(format!("__kura_f{i}")).alias_qualified(q.cloned(), f.name()));
    }
    exprs.push(col("__kura_row"));
    Ok(LogicalPlan::Projection(
        Projection::try_new(exprs, Arc::new(scan))
            .map_err(|e| QueryError::internal("dp release", e))?,
    ))
}

/// The key columns of the aggregate's output, one row per key domain row.
fn key_arrays(dp: &DpPlan, rows: &[Vec<ScalarValue>]) -> Result<Vec<ArrayRef>, QueryError> {
    let schema = &dp.aggregate.schema;
    (0..dp.keys.len())
        .map(|j| {
            let target = schema.field(j).data_type();
            let arr = ScalarValue::iter_to_array(rows.iter().map(|r| r[j].clone()))
                .or_else(|_| {
                    // All-null key column (CASE without ELSE only): typed nulls.
                    ScalarValue::try_from(target).and_then(|nul| nul.to_array_of_size(rows.len()))
                })
                .map_err(|e| QueryError::internal("dp release", e))?;
            cast(&arr, target).map_err(|e| QueryError::internal("dp release", e))
        })
        .collect()
}

/// The noisy column of measure `j` in the aggregate's output type: counts as integers, a
/// SUM of an integer column rounded, an AVG as its estimate; withheld cells null.
fn measure_array(
    kind: MeasureKind,
    target: &DataType,
    noised: &Noised<'_>,
    j: usize,
    n: usize,
) -> Result<ArrayRef, QueryError> {
    let cells = (0..n).map(|r| noised.cell(j, r));
    let arr: ArrayRef = match kind {
        MeasureKind::Count | MeasureKind::CountDistinctPid => {
            Arc::new(cells.map(|v| v.map(|x| x as i64)).collect::<Int64Array>())
        }
        MeasureKind::Sum => {
            let int = target.is_integer();
            let round = |x: f64| if int { x.round() } else { x };
            Arc::new(cells.map(|v| v.map(round)).collect::<Float64Array>())
        }
        MeasureKind::Avg => Arc::new(cells.collect::<Float64Array>()),
    };
    cast(&arr, target).map_err(|e| QueryError::internal("dp release", e))
}

/// For every output column of the query: the measures (by index) it is computed from.
fn measures_behind(dp: &DpPlan) -> Vec<BTreeSet<usize>> {
    let ngroup = dp.keys.len();
    dp.lineage
        .iter()
        .map(|l| {
            l.iter()
                .filter(|&&a| a >= ngroup)
                .map(|a| a - ngroup)
                .collect()
        })
        .collect()
}

/// The released rows, with the suppressed cells and the intervals of AVG cells.
#[derive(Default)]
struct Released {
    rows: Vec<Vec<serde_json::Value>>,
    suppressed: Vec<[usize; 2]>,
    intervals: Vec<DpInterval>,
}

/// Read the post-processed output: a cell computed from a withheld value is null and
/// listed as suppressed; a cell that shows an AVG as it is gets its interval.
fn released_rows(
    dp: &DpPlan,
    noised: &Noised<'_>,
    measures: &[BTreeSet<usize>],
    out: &[RecordBatch],
) -> Result<Released, QueryError> {
    let ngroup = dp.keys.len();
    let width = dp.top.schema().fields().len();
    let mut released = Released::default();
    for b in out {
        let ids = cast(b.column(width), &DataType::Int64)
            .map_err(|e| QueryError::internal("dp release", e))?;
        let ids = ids.as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let id = ids.value(r) as usize;
            let row_no = released.rows.len();
            let mut row = Vec::with_capacity(width);
            for (c, lin) in measures.iter().enumerate() {
                let hidden = lin.iter().any(|&j| noised.withheld(j, id));
                if hidden {
                    released.suppressed.push([row_no, c]);
                    row.push(serde_json::Value::Null);
                } else {
                    row.push(cell_to_json(b.column(c), r));
                }
                if let Some(a) = dp.passes[c].filter(|&a| a >= ngroup)
                    && !hidden
                    && let Some((low, high)) = noised.interval(a - ngroup, id)
                {
                    released.intervals.push(DpInterval {
                        row: row_no,
                        column: c,
                        low,
                        high,
                    });
                }
            }
            released.rows.push(row);
        }
    }
    Ok(released)
}

/// The released column names and types.
fn released_columns(dp: &DpPlan) -> Vec<ReleasedColumn> {
    ReleasedColumn::of_schema(dp.top.schema().as_arrow())
}

/// The release's note, and which columns are computed from noisy values (so carry no
/// interval).
fn notes(p: &Prepared, columns: &[ReleasedColumn], measures: &[BTreeSet<usize>]) -> Vec<String> {
    let ngroup = p.dp.keys.len();
    let mut notes = vec![p.release.note()];
    let derived: Vec<&str> = (0..columns.len())
        .filter(|&c| !measures[c].is_empty() && p.dp.passes[c].is_none_or(|a| a < ngroup))
        .map(|c| columns[c].name.as_str())
        .collect();
    if !derived.is_empty() {
        notes.push(format!(
            "Computed from noisy values, without an interval: {} / ノイズを加えた値から計算した列（区間なし）: {}",
            derived.join(", "),
            derived.join(", ")
        ));
    }
    notes
}

/// The query's post-processing chain over `replacement` instead of the aggregation, with
/// the hidden row id carried as the last column through every projection.
fn rebuild(plan: &LogicalPlan, replacement: &LogicalPlan) -> Result<LogicalPlan, QueryError> {
    let last = |p: &LogicalPlan| {
        Expr::Column(datafusion::common::Column::from(
            p.schema().qualified_field(p.schema().fields().len() - 1),
        ))
    };
    match plan {
        LogicalPlan::Aggregate(_) => Ok(replacement.clone()),
        LogicalPlan::Projection(p) => {
            let input = rebuild(&p.input, replacement)?;
            let mut exprs = p.expr.clone();
            exprs.push(last(&input));
            Ok(LogicalPlan::Projection(
                Projection::try_new(exprs, Arc::new(input))
                    .map_err(|e| QueryError::internal("dp release", e))?,
            ))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let input = rebuild(&a.input, replacement)?;
            Ok(LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(Arc::new(input), a.alias.clone())
                    .map_err(|e| QueryError::internal("dp release", e))?,
            ))
        }
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Filter(_) => {
            let input = rebuild(plan.inputs()[0], replacement)?;
            plan.with_new_exprs(plan.expressions(), vec![input])
                .map_err(|e| QueryError::internal("dp release", e))
        }
        other => Err(QueryError::internal(
            "dp release",
            format!("post-processing node {}", other.display()),
        )),
    }
}
