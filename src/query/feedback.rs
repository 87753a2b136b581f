//! Query stage, the figures of a facility feedback report (`report::feedback`): for each
//! measure and each value of its public key domain, the national distinct patients and
//! facilities, the facility's own patients, and the patients (and facilities) it does
//! not have — the numbers the report's disclosure rules decide on.
//!
//! Guarantees: runs fixed SQL over the ingested registry in the enclave (no caller SQL);
//! the facility code is a bound parameter, never spliced into SQL; every key of the
//! public domain gets a row (zero where no patient), read from the catalogue and the
//! public reference tables, so the rows do not depend on the data; nothing here leaves
//! the enclave except through `report::feedback::build`.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use crate::catalog::{Catalog, Domain};
use crate::engine::Limits;
use crate::engine::session::{empty_session, register_table};
use crate::query::QueryError;
use crate::report::feedback::{MEASURES, Measure, RawFigure};

/// The raw figures of facility `facility` over the registry at `registry`.
pub async fn facility_figures(
    registry: &Path,
    catalog: &Catalog,
    limits: &Limits,
    facility: &str,
) -> Result<Vec<RawFigure>, QueryError> {
    let ctx = empty_session(limits)?;
    for m in MEASURES {
        if ctx.table_exist(m.table).unwrap_or(false) {
            continue;
        }
        register_table(&ctx, registry, m.table, catalog)?;
    }
    for t in ["disease", "product"] {
        register_table(&ctx, registry, t, catalog)?;
    }
    let mut out = Vec::new();
    for m in MEASURES {
        let counts = counts(&ctx, m, facility).await?;
        for (key, (ja, en)) in key_domain(&ctx, catalog, m).await? {
            let c = counts.get(&key).copied().unwrap_or_default();
            out.push(RawFigure {
                measure: m.id.into(),
                key,
                label_ja: ja,
                label_en: en,
                national: c[0],
                national_facilities: c[1],
                own: c[2],
                others: c[3],
                other_facilities: c[4],
            });
        }
    }
    Ok(out)
}

fn engine(e: datafusion::error::DataFusionError) -> QueryError {
    QueryError::internal("facility feedback figures", e)
}

async fn collect(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<Vec<RecordBatch>, QueryError> {
    ctx.sql(sql)
        .await
        .and_then(|df| df.with_param_values(params))
        .map_err(engine)?
        .collect()
        .await
        .map_err(engine)
}

/// A column as plain Utf8 (the engine may read strings as views).
fn texts(col: &ArrayRef) -> Result<StringArray, QueryError> {
    let utf8 = cast(col, &DataType::Utf8)
        .map_err(|e| QueryError::internal("facility feedback figures", e))?;
    Ok(utf8.as_string::<i32>().clone())
}

/// Per key: [national, national facilities, own, others, other facilities].
async fn counts(
    ctx: &SessionContext,
    m: &Measure,
    facility: &str,
) -> Result<BTreeMap<String, [i64; 5]>, QueryError> {
    // Table and key come from the fixed MEASURES list, the facility is a parameter.
    let sql = format!(
        "WITH r AS (SELECT CAST({key} AS VARCHAR) AS k, pid, facility_id FROM {table} WHERE {key} IS NOT NULL), \
         own AS (SELECT DISTINCT k, pid FROM r WHERE facility_id = $1) \
         SELECT r.k, count(DISTINCT r.pid), count(DISTINCT r.facility_id), count(DISTINCT own.pid), \
                count(DISTINCT CASE WHEN own.pid IS NULL THEN r.pid END), \
                count(DISTINCT CASE WHEN own.pid IS NULL THEN r.facility_id END) \
         FROM r LEFT JOIN own ON r.k = own.k AND r.pid = own.pid GROUP BY r.k",
        key = m.key,
        table = m.table,
    );
    let batches = collect(ctx, &sql, vec![ScalarValue::from(facility)]).await?;
    let mut out = BTreeMap::new();
    for b in &batches {
        let keys = texts(b.column(0))?;
        for row in 0..b.num_rows() {
            if keys.is_null(row) {
                continue;
            }
            let mut c = [0i64; 5];
            for (i, slot) in c.iter_mut().enumerate() {
                *slot = b.column(i + 1).as_primitive::<Int64Type>().value(row);
            }
            out.insert(keys.value(row).to_string(), c);
        }
    }
    Ok(out)
}

/// The public key domain of a measure with its labels (ja, en), in domain order.
async fn key_domain(
    ctx: &SessionContext,
    catalog: &Catalog,
    m: &Measure,
) -> Result<Vec<(String, (String, String))>, QueryError> {
    let column = catalog
        .table(m.table)
        .and_then(|t| t.column(m.key))
        .ok_or_else(|| {
            QueryError::internal(
                "facility feedback figures",
                format!("{}.{} is not in the catalogue", m.table, m.key),
            )
        })?;
    match &column.domain {
        Some(Domain::Values { values }) => {
            Ok(values.iter().map(|v| (v.clone(), value_label(v))).collect())
        }
        Some(Domain::Ref { table, column }) => {
            let sql = format!(
                "SELECT DISTINCT CAST({column} AS VARCHAR) AS k, name_ja, name_en FROM {table} ORDER BY 1"
            );
            let batches = collect(ctx, &sql, Vec::new()).await?;
            let mut out = Vec::new();
            for b in &batches {
                let (k, ja, en) = (
                    texts(b.column(0))?,
                    texts(b.column(1))?,
                    texts(b.column(2))?,
                );
                for row in 0..b.num_rows() {
                    out.push((
                        k.value(row).to_string(),
                        (ja.value(row).to_string(), en.value(row).to_string()),
                    ));
                }
            }
            // Numeric keys (disease numbers) in numeric order.
            out.sort_by_key(|(k, _)| (k.parse::<i64>().unwrap_or(i64::MAX), k.clone()));
            Ok(out)
        }
        _ => Err(QueryError::internal(
            "facility feedback figures",
            format!("{}.{} has no enumerable public domain", m.table, m.key),
        )),
    }
}

/// Labels (ja, en) of the fixed-list keys: event kinds, outcomes and adverse event terms.
fn value_label(v: &str) -> (String, String) {
    let en = match v {
        "niv" => "non-invasive ventilation",
        "gastrostomy" => "gastrostomy",
        "tracheostomy" => "tracheostomy",
        "death" => "death",
        "recovered" => "recovered",
        "recovering" => "recovering",
        "not_recovered" => "not recovered",
        "sequelae" => "recovered with sequelae",
        "unknown" => "unknown",
        "発熱" => "fever",
        "感染症" => "infection",
        "移植片対宿主病" => "graft-versus-host disease",
        "サイトカイン放出症候群" => "cytokine release syndrome",
        "神経毒性" => "neurotoxicity",
        "腫瘍形成" => "tumour formation",
        "拒絶反応" => "rejection",
        "注射部位反応" => "injection-site reaction",
        "肝機能障害" => "liver dysfunction",
        "血球減少" => "cytopenia",
        other => other,
    };
    let ja = match v {
        "niv" => "非侵襲的換気",
        "gastrostomy" => "胃瘻",
        "tracheostomy" => "気管切開",
        "death" => "死亡",
        "recovered" => "回復",
        "recovering" => "軽快",
        "not_recovered" => "未回復",
        "sequelae" => "後遺症あり",
        "unknown" => "不明",
        other => other,
    };
    (ja.to_string(), en.to_string())
}
