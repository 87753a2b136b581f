//! The query path in differential-privacy mode: SQL → guard → error hardening → DP
//! rewrite (contribution bounding) → execute → zero-fill over the public key domain →
//! noise (OpenDP) → release threshold → post-processing (the query's own projection,
//! HAVING, ORDER BY, LIMIT on the noisy values) → [`QueryOutcome`].
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

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, SubqueryAlias, col};

use super::{QueryError, QueryOutcome};
use crate::catalog::Catalog;
use crate::engine::Limits;
use crate::privacy::disclosure::{cell_to_json, key_domain};
use crate::privacy::dp::{self as mech, Noise, sensitivity};
use crate::privacy::result::{
    Disclosure, DisclosureMode, DpBounds, DpColumn, DpDisclosure, DpInterval, DpParams,
    ReleasedColumn, ReleasedResult,
};
use crate::privacy::rules::DisclosureRules;
use crate::sql::guard;
use crate::sql::rewrite::dp::{self as rewrite, DpPlan, KeyDomain, MeasureKind};

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::internal("dp release", e.to_string())
}

/// Version of the DP release procedure; part of the cache key so that a change of
/// procedure never re-releases answers computed by an older one.
const PROCEDURE: &str = "kura-dp-1";

/// The noise of one measure: its value (count or sum) and, for AVG, its count.
#[derive(Debug, Clone)]
struct MeasureNoise {
    value: Noise,
    count: Option<Noise>,
}

/// A DP query checked and priced, before any patient data is read.
#[derive(Debug, Clone)]
pub struct Prepared {
    dp: DpPlan,
    /// Values of each group key (approved scope applied), in domain order.
    domains: Vec<Vec<ScalarValue>>,
    noises: Vec<MeasureNoise>,
    gate: Noise,
    threshold: f64,
    k: u32,
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
    let plan = guard::plan_guarded(ctx, sql, catalog).await?;
    let tables = guard::tables_read(&plan);
    let datasets: Vec<&str> = tables
        .iter()
        .filter_map(|t| catalog.table(t))
        .flat_map(|t| t.datasets.iter().map(String::as_str))
        .collect();
    let k = rules.effective(datasets).k;
    let plan = guard::harden(plan)?;
    let plan_fingerprint = super::suppression::fingerprint(&plan);
    let dp = rewrite::plan(&plan, catalog, params.bounds)?;

    let mut domains = Vec::new();
    let mut product = 1usize;
    for key in &dp.keys {
        let values = match &key.domain {
            KeyDomain::Column { table, column } => {
                key_domain(ctx, catalog, table, column, &key.data_type, limits.max_rows).await
            }
            KeyDomain::Literals(v) => {
                let mut seen = Vec::<ScalarValue>::new();
                let mut ok = true;
                for x in v {
                    match x.cast_to(&key.data_type) {
                        Ok(y) if !seen.contains(&y) => seen.push(y),
                        Ok(_) => {}
                        Err(_) => ok = false,
                    }
                }
                ok.then_some(seen)
            }
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

    let effective = if dp.keys.is_empty() {
        DpBounds {
            max_groups_per_patient: 1,
            ..params.bounds
        }
    } else {
        params.bounds
    };
    let shares: usize = dp
        .measures
        .iter()
        .map(|m| if m.kind == MeasureKind::Avg { 2 } else { 1 })
        .sum::<usize>()
        + usize::from(dp.gate_measure.is_none());
    let eps_i = params.epsilon / shares as f64;
    let mut noises = Vec::new();
    for m in &dp.measures {
        let (lo, hi) = m.clamp.unwrap_or((0.0, 0.0));
        let n = match m.kind {
            MeasureKind::Count => MeasureNoise {
                value: Noise::new(sensitivity::count(effective), eps_i)?,
                count: None,
            },
            MeasureKind::CountDistinctPid => MeasureNoise {
                value: Noise::new(sensitivity::distinct_patients(effective), eps_i)?,
                count: None,
            },
            MeasureKind::Sum => MeasureNoise {
                value: Noise::new(sensitivity::sum(effective, lo, hi), eps_i)?,
                count: None,
            },
            MeasureKind::Avg => MeasureNoise {
                value: Noise::new(sensitivity::centred_sum(effective, lo, hi), eps_i)?,
                count: Some(Noise::new(sensitivity::count(effective), eps_i)?),
            },
        };
        noises.push(n);
    }
    let gate = match dp.gate_measure {
        Some(j) => noises[j].value,
        None => Noise::new(sensitivity::distinct_patients(effective), eps_i)?,
    };
    let threshold = mech::release_threshold(k, &gate);

    let ngroup = dp.keys.len();
    let names: Vec<String> = dp
        .top
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut columns = Vec::new();
    for (c, pass) in dp.passes.iter().enumerate() {
        let Some(a) = pass.filter(|&a| a >= ngroup) else {
            continue;
        };
        let j = a - ngroup;
        let m = &dp.measures[j];
        let n = &noises[j];
        columns.push(DpColumn {
            index: c,
            name: names[c].clone(),
            aggregate: m.kind.name().into(),
            epsilon: n.value.epsilon + n.count.map_or(0.0, |x| x.epsilon),
            sensitivity: n.value.sensitivity,
            noise_scale: n.value.scale,
            ci95_half_width: (m.kind != MeasureKind::Avg).then(|| n.value.ci95_half_width()),
            clamp: m.clamp.map(|(lo, hi)| [lo, hi]),
        });
    }
    let release_key = release_key(&plan, &params, k);
    let disclosure = DpDisclosure {
        epsilon: params.epsilon,
        cached: false,
        mechanism: mech::MECHANISM.into(),
        bounds: effective,
        release_threshold: threshold,
        columns,
        intervals: Vec::new(),
    };
    Ok(Prepared {
        dp,
        domains,
        noises,
        gate,
        threshold,
        k,
        params,
        effective,
        plan_fingerprint,
        release_key,
        tables,
        disclosure,
    })
}

/// SHA-256 over the procedure version, the normalised plan with its constants, the DP
/// parameters and k: the same question asked the same way.
fn release_key(plan: &LogicalPlan, p: &DpParams, k: u32) -> String {
    let text = format!(
        "{PROCEDURE}\n{}\nepsilon={:016x}\nL={}\nm={}\nk={k}",
        plan.display_indent(),
        p.epsilon.to_bits(),
        p.bounds.max_groups_per_patient,
        p.bounds.max_rows_per_group
    );
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
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
    let work = async {
        let prepared = prepare(ctx, sql, catalog, rules, limits, params).await?;
        let result = release(ctx, &prepared, limits).await?;
        Ok::<_, QueryError>(QueryOutcome {
            result,
            plan_fingerprint: prepared.plan_fingerprint.clone(),
            tables: prepared.tables.clone(),
            duration: started.elapsed(),
        })
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(QueryError::ResourceLimit {
            message: format!(
                "the query ran longer than {} s and was cancelled; narrow it / クエリが {} 秒を超えたため中止しました。条件を絞ってください",
                limits.timeout.as_secs(),
                limits.timeout.as_secs()
            ),
        }),
    }
}

/// Exact bounded values per group, as read from the executed plan.
struct Exact {
    /// Per measure: value (count as f64 or sum) and AVG count.
    values: Vec<(f64, f64)>,
    patients: f64,
}

/// The key domain rows (first key slowest) with the exact bounded quantities of each.
struct Grid {
    rows: Vec<Vec<ScalarValue>>,
    cells: Vec<Exact>,
}

/// Execute the bounded plan and zero-fill its groups over the key domain. Groups outside
/// the domain (NULL keys, values outside the approved scope) are dropped here.
async fn grid(ctx: &SessionContext, p: &Prepared, limits: &Limits) -> Result<Grid, QueryError> {
    let dp = &p.dp;
    let ngroup = dp.keys.len();
    // Groups outside the domain are read but never released, so allow for them when
    // capping the raw output.
    let raw = Limits {
        max_rows: limits
            .max_rows
            .saturating_mul(4)
            .max(limits.max_rows + 1000),
        ..limits.clone()
    };
    let batches = crate::engine::exec::collect_limited(ctx, dp.bounded.clone(), &raw).await?;
    let mut exact: HashMap<Vec<ScalarValue>, Exact> = HashMap::new();
    for b in &batches {
        let numbers = |i: usize| -> Result<Float64Array, QueryError> {
            let a = cast(b.column(i), &DataType::Float64).map_err(internal)?;
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
            let mut key = Vec::with_capacity(ngroup);
            for (j, k) in dp.keys.iter().enumerate() {
                let v = ScalarValue::try_from_array(b.column(j), r).map_err(internal)?;
                key.push(v.cast_to(&k.data_type).map_err(internal)?);
            }
            let cell = Exact {
                values: values
                    .iter()
                    .map(|(v, c)| (get(v, r), c.as_ref().map_or(0.0, |c| get(c, r))))
                    .collect(),
                patients: get(&patients, r),
            };
            exact.insert(key, cell);
        }
    }
    let rows: Vec<Vec<ScalarValue>> = p.domains.iter().fold(vec![Vec::new()], |acc, domain| {
        acc.iter()
            .flat_map(|prefix| {
                domain.iter().map(move |v| {
                    let mut r = prefix.clone();
                    r.push(v.clone());
                    r
                })
            })
            .collect()
    });
    let cells = rows
        .iter()
        .map(|k| {
            exact.remove(k).unwrap_or_else(|| Exact {
                values: vec![(0.0, 0.0); dp.measures.len()],
                patients: 0.0,
            })
        })
        .collect();
    Ok(Grid { rows, cells })
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
    let mut out = Vec::new();
    for n in &p.noises {
        out.push(n.value.sensitivity);
        if let Some(c) = n.count {
            out.push(c.sensitivity);
        }
    }
    out.push(p.gate.sensitivity);
    out
}

/// Execute the bounded plan, zero-fill, noise, threshold and post-process.
pub async fn release(
    ctx: &SessionContext,
    p: &Prepared,
    limits: &Limits,
) -> Result<ReleasedResult, QueryError> {
    let dp = &p.dp;
    let ngroup = dp.keys.len();
    let Grid { rows, cells } = grid(ctx, p, limits).await?;
    let n = rows.len();

    // Noise: one vector per quantity.
    let mut noisy_value: Vec<Vec<f64>> = Vec::new();
    let mut noisy_count: Vec<Option<Vec<f64>>> = Vec::new();
    let mut spent = 0.0;
    for (j, m) in dp.measures.iter().enumerate() {
        let nz = &p.noises[j];
        match m.kind {
            MeasureKind::Count | MeasureKind::CountDistinctPid => {
                let v: Vec<i64> = cells.iter().map(|c| c.values[j].0 as i64).collect();
                let (out, e) = mech::noisy_counts(&v, &nz.value)?;
                spent += e;
                noisy_value.push(out.into_iter().map(|x| x as f64).collect());
                noisy_count.push(None);
            }
            MeasureKind::Sum => {
                let v: Vec<f64> = cells.iter().map(|c| c.values[j].0).collect();
                let (out, e) = mech::noisy_sums(&v, &nz.value)?;
                spent += e;
                noisy_value.push(out);
                noisy_count.push(None);
            }
            MeasureKind::Avg => {
                let v: Vec<f64> = cells.iter().map(|c| c.values[j].0).collect();
                let (out, e) = mech::noisy_sums(&v, &nz.value)?;
                spent += e;
                let cn = nz
                    .count
                    .as_ref()
                    .ok_or_else(|| internal("avg without count"))?;
                let c: Vec<i64> = cells.iter().map(|c| c.values[j].1 as i64).collect();
                let (outc, e2) = mech::noisy_counts(&c, cn)?;
                spent += e2;
                noisy_value.push(out);
                noisy_count.push(Some(outc.into_iter().map(|x| x as f64).collect()));
            }
        }
    }
    let gate: Vec<f64> = match dp.gate_measure {
        Some(j) => noisy_value[j].clone(),
        None => {
            let v: Vec<i64> = cells.iter().map(|c| c.patients as i64).collect();
            let (out, e) = mech::noisy_counts(&v, &p.gate)?;
            spent += e;
            out.into_iter().map(|x| x as f64).collect()
        }
    };
    if spent > p.params.epsilon * (1.0 + 1e-9) {
        return Err(internal(format!(
            "composition spent {spent} above the requested {}",
            p.params.epsilon
        )));
    }
    let passed: Vec<bool> = gate.iter().map(|g| *g >= p.threshold).collect();

    // The aggregate's output, rebuilt from the noisy values.
    let schema = dp.aggregate.schema.clone();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut withheld: Vec<Vec<bool>> = vec![vec![false; dp.measures.len()]; n];
    let mut avg_parts: HashMap<(usize, usize), (f64, f64)> = HashMap::new();
    for (j, _) in dp.keys.iter().enumerate() {
        let arr = ScalarValue::iter_to_array(rows.iter().map(|r| r[j].clone()))
            .or_else(|_| {
                // All-null key column (CASE without ELSE only): typed nulls.
                ScalarValue::try_from(schema.field(j).data_type())
                    .and_then(|nul| nul.to_array_of_size(n))
            })
            .map_err(internal)?;
        arrays.push(cast(&arr, schema.field(j).data_type()).map_err(internal)?);
    }
    for (j, m) in dp.measures.iter().enumerate() {
        let target = schema.field(ngroup + j).data_type();
        let arr: ArrayRef = match m.kind {
            MeasureKind::Count | MeasureKind::CountDistinctPid => {
                let a: Int64Array = (0..n)
                    .map(|r| {
                        if passed[r] {
                            Some(noisy_value[j][r] as i64)
                        } else {
                            withheld[r][j] = true;
                            None
                        }
                    })
                    .collect();
                Arc::new(a)
            }
            MeasureKind::Sum => {
                let int = target.is_integer();
                let a: Float64Array = (0..n)
                    .map(|r| {
                        if passed[r] {
                            let v = noisy_value[j][r];
                            Some(if int { v.round() } else { v })
                        } else {
                            withheld[r][j] = true;
                            None
                        }
                    })
                    .collect();
                Arc::new(a)
            }
            MeasureKind::Avg => {
                let (lo, hi) = m.clamp.ok_or_else(|| internal("avg without clamp"))?;
                let counts = noisy_count[j]
                    .as_ref()
                    .ok_or_else(|| internal("avg count"))?;
                let a: Float64Array = (0..n)
                    .map(|r| {
                        let s = noisy_value[j][r];
                        let c = counts[r];
                        if passed[r] && c >= 1.0 {
                            avg_parts.insert((r, j), (s, c));
                            Some(((lo + hi) / 2.0 + s / c).clamp(lo, hi))
                        } else {
                            withheld[r][j] = true;
                            None
                        }
                    })
                    .collect();
                Arc::new(a)
            }
        };
        arrays.push(cast(&arr, target).map_err(internal)?);
    }
    arrays.push(Arc::new(Int64Array::from_iter_values(0..n as i64)));

    // Register the noisy aggregate under neutral names and restore the aggregate's
    // qualified names with a projection, so the query's own post-processing plan binds.
    let mut fields: Vec<Field> = (0..schema.fields().len())
        .map(|i| Field::new(format!("__kura_f{i}"), arrays[i].data_type().clone(), true))
        .collect();
    fields.push(Field::new("__kura_row", DataType::Int64, false));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(internal)?;
    let scan = ctx
        .read_batch(batch)
        .map_err(internal)?
        .into_unoptimized_plan();
    let mut exprs: Vec<Expr> = Vec::new();
    for i in 0..schema.fields().len() {
        let (q, f) = schema.qualified_field(i);
        exprs.push(col(format!("__kura_f{i}")).alias_qualified(q.cloned(), f.name()));
    }
    exprs.push(col("__kura_row"));
    let replacement =
        LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(scan)).map_err(internal)?);
    let finished = rebuild(&dp.top, &replacement)?;
    let out = crate::engine::exec::collect_limited(ctx, finished, limits).await?;

    // Released rows, with the suppressed cells of withheld rows.
    let out_schema = dp.top.schema();
    let width = out_schema.fields().len();
    let columns: Vec<ReleasedColumn> = out_schema
        .fields()
        .iter()
        .map(|f| ReleasedColumn {
            name: f.name().clone(),
            type_name: f.data_type().to_string(),
        })
        .collect();
    let noised: Vec<BTreeSet<usize>> = dp
        .lineage
        .iter()
        .map(|l| {
            l.iter()
                .filter(|&&a| a >= ngroup)
                .map(|a| a - ngroup)
                .collect()
        })
        .collect();
    let mut released_rows = Vec::new();
    let mut suppressed = Vec::new();
    let mut intervals = Vec::new();
    for b in &out {
        let ids = b.column(width);
        let ids = cast(ids, &DataType::Int64).map_err(internal)?;
        let ids = ids.as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let id = ids.value(r) as usize;
            let row_no = released_rows.len();
            let mut row = Vec::with_capacity(width);
            for (c, lin) in noised.iter().enumerate() {
                let hidden = lin.iter().any(|&j| withheld[id][j]);
                if hidden {
                    suppressed.push([row_no, c]);
                    row.push(serde_json::Value::Null);
                } else {
                    row.push(cell_to_json(b.column(c), r));
                }
                if let Some(a) = dp.passes[c].filter(|&a| a >= ngroup) {
                    let j = a - ngroup;
                    if let (Some((s, cnt)), Some((lo, hi)), Some(cn)) = (
                        avg_parts.get(&(id, j)),
                        dp.measures[j].clamp,
                        p.noises[j].count.as_ref(),
                    ) && !hidden
                    {
                        let (low, high) =
                            mech::avg_interval(*s, *cnt, &p.noises[j].value, cn, lo, hi);
                        intervals.push(DpInterval {
                            row: row_no,
                            column: c,
                            low,
                            high,
                        });
                    }
                }
            }
            released_rows.push(row);
        }
    }
    if released_rows.len() > limits.max_rows {
        return Err(QueryError::ResourceLimit {
            message: format!(
                "the result has more than {} rows; aggregate further or add filters / 結果が {} 行を超えました",
                limits.max_rows, limits.max_rows
            ),
        });
    }

    let shares = p
        .noises
        .iter()
        .map(|x| 1 + usize::from(x.count.is_some()))
        .sum::<usize>()
        + usize::from(dp.gate_measure.is_none());
    let mut notes = vec![format!(
        "Differential privacy: ε = {eps} spent over {shares} noised quantities (Laplace); each patient counts in at most {l} group(s) and {m} row(s) per group; rows whose noisy patient count is below {tau:.1} are suppressed (the <{k} rule). / 差分プライバシー: ε = {eps} を {shares} 個の量に配分しラプラスノイズを加えました。患者 1 人あたり最大 {l} グループ・各 {m} 行まで集計し、ノイズ付き患者数が {tau:.1} 未満の行は秘匿しました（{k} 未満ルール）。",
        eps = p.params.epsilon,
        l = p.effective.max_groups_per_patient,
        m = p.effective.max_rows_per_group,
        tau = p.threshold,
        k = p.k,
    )];
    let derived: Vec<&str> = (0..width)
        .filter(|&c| !noised[c].is_empty() && dp.passes[c].is_none_or(|a| a < ngroup))
        .map(|c| columns[c].name.as_str())
        .collect();
    if !derived.is_empty() {
        notes.push(format!(
            "Computed from noisy values, without an interval: {} / ノイズを加えた値から計算した列（区間なし）: {}",
            derived.join(", "),
            derived.join(", ")
        ));
    }
    let mut disclosure = p.disclosure.clone();
    disclosure.intervals = intervals;
    Ok(ReleasedResult {
        columns,
        rows: released_rows,
        disclosure: Disclosure {
            mode: DisclosureMode::Dp,
            threshold: p.k,
            suppressed_cells: suppressed.len(),
            suppressed,
            dropped_rows: 0,
            rounding: None,
            epsilon_spent: Some(p.params.epsilon),
            epsilon_remaining: None,
            notes,
            dp: Some(disclosure),
        },
    })
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
                Projection::try_new(exprs, Arc::new(input)).map_err(internal)?,
            ))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let input = rebuild(&a.input, replacement)?;
            Ok(LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(Arc::new(input), a.alias.clone()).map_err(internal)?,
            ))
        }
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Filter(_) => {
            let input = rebuild(plan.inputs()[0], replacement)?;
            plan.with_new_exprs(plan.expressions(), vec![input])
                .map_err(internal)
        }
        other => Err(internal(format!(
            "post-processing node {}",
            other.display()
        ))),
    }
}
