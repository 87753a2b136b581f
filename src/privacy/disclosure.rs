//! Privacy stage, the disclosure check: executed batches + [`Release`] → [`ReleasedResult`].
//!
//! The last gate before anything leaves. For every row and every released column it
//! evaluates the column's guards (contributor count ≥ k, distinct facilities ≥ facility_k,
//! nk-dominance and p% for SUM on per-patient totals, non-negative contributions); an
//! empty cell always fails. The presence and position of a row with a failing cell must
//! not depend on the data: when every group key is released as a bare public-domain
//! column with an enumerable domain ([`Padding::Domains`]) the result is padded to the
//! full product of the key domains (absent combinations appear with every cell null and
//! suppressed) and failing rows follow the fully released ones in domain order; otherwise
//! failing rows are dropped and counted. An ungrouped aggregation keeps its single row.
//! Hidden helper columns never leave. Counts are rounded if the rules ask for it. The
//! row cap is enforced on what is released.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;
use serde_json::Value;

use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;

use crate::catalog::{Catalog, Domain, ScopeDim};
use crate::privacy::result::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;
use crate::sql::rewrite::{Grouping, Guard, KeySource, Release};

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::internal("disclosure check", e.to_string())
}

/// What the released rows are padded to, decided from the release description and the
/// catalogue before the query runs (so it cannot depend on the data).
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    /// Nothing to pad: a reference-only result, or an aggregation without GROUP BY (its
    /// single row always exists).
    NotNeeded,
    /// Every released key column (index into `release.columns`) with its domain, in
    /// domain order; the product of the domain sizes is at most `max_rows`.
    Domains(Vec<(usize, Vec<Value>)>),
    /// The group keys cannot be padded (computed, hidden or non-public keys, no enumerable
    /// domain, or too many combinations): rows with a failing cell are dropped.
    Impossible,
}

/// Decide the padding of a release: enumerate the domain of every released key column.
/// `types` are the executed plan's types of the released columns (padding values are cast
/// to them). Reference-table domains are read from `ctx`, where every extract registers
/// its reference tables.
pub async fn padding(
    ctx: &SessionContext,
    release: &Release,
    catalog: &Catalog,
    types: &[DataType],
    max_rows: usize,
) -> Padding {
    match release.grouping {
        Grouping::Public | Grouping::Ungrouped => return Padding::NotNeeded,
        Grouping::Opaque => return Padding::Impossible,
        Grouping::Keys => {}
    }
    if release.drop_on_fail {
        return Padding::Impossible;
    }
    let mut domains = Vec::new();
    let mut product = 1usize;
    for (k, c) in release.columns.iter().enumerate().filter(|(_, c)| c.key) {
        let Some(t) = types.get(k) else {
            return Padding::Impossible;
        };
        let values = match &c.source {
            Some(KeySource::Literal(v)) => typed_scalars(std::iter::once(v.clone()), t),
            Some(KeySource::Column { table, column }) => {
                key_domain(ctx, catalog, table, column, t, max_rows).await
            }
            None => None,
        };
        let Some(values) = values else {
            return Padding::Impossible;
        };
        let values: Vec<Value> = values.iter().map(scalar_to_json).collect();
        product = product.saturating_mul(values.len());
        if product > max_rows || values.is_empty() {
            return Padding::Impossible;
        }
        domains.push((k, values));
    }
    Padding::Domains(domains)
}

/// The released values of one public-domain key column `table.column`, typed as `t`: its
/// catalogue domain restricted to the session's approved scope, without duplicates, in
/// domain order. `None` when the column has no enumerable public domain, the domain is
/// larger than `max_rows`, or the scope restriction cannot be worked out (fail closed).
/// Used for suppression padding and for DP zero-fill.
pub async fn key_domain(
    ctx: &SessionContext,
    catalog: &Catalog,
    table: &str,
    column: &str,
    t: &DataType,
    max_rows: usize,
) -> Option<Vec<ScalarValue>> {
    let mut values = domain_values(ctx, catalog, table, column, t, max_rows).await?;
    match scope_values(ctx, catalog, table, column, t).await {
        ScopeFilter::Unrestricted => {}
        ScopeFilter::Only(allowed) => values.retain(|v| allowed.contains(&key_text(v))),
        ScopeFilter::Unknown => return None,
    }
    let mut seen = std::collections::HashSet::new();
    values.retain(|v| seen.insert(key_text(v)));
    Some(values)
}

/// A key value as text, for comparing domain values with scope values across types.
fn key_text(v: &ScalarValue) -> String {
    scalar_to_json(v).to_string()
}

/// A scalar as the JSON value a released result would carry.
pub fn scalar_to_json(v: &ScalarValue) -> Value {
    v.to_array()
        .map(|a| cell_to_json(&a, 0))
        .unwrap_or(Value::Null)
}

/// How the session's approved scope restricts the values of one key column.
enum ScopeFilter {
    /// The column carries no restricted scope dimension: the whole domain applies.
    Unrestricted,
    /// Only these values (rendered as JSON text) are in scope.
    Only(std::collections::HashSet<String>),
    /// The restriction could not be worked out: do not pad (fail closed).
    Unknown,
}

/// The values of `table.column` that the session's scope (set by `open_extract`) admits.
/// Padding beyond them would show key values outside the approval: not a leak, since the
/// domains are public, but misleading rows about data the researcher cannot see. Products
/// are restricted through their manufacturer.
async fn scope_values(
    ctx: &SessionContext,
    catalog: &Catalog,
    table: &str,
    column: &str,
    t: &DataType,
) -> ScopeFilter {
    let Some(dim) = catalog
        .table(table)
        .and_then(|tb| tb.column(column))
        .and_then(|c| c.scope)
    else {
        return ScopeFilter::Unrestricted;
    };
    let Some(scope) = ctx
        .state()
        .config()
        .get_extension::<crate::sql::scope::Scope>()
    else {
        return ScopeFilter::Unrestricted;
    };
    let render = |vals: Vec<ScalarValue>| match typed_scalars(vals.into_iter(), t) {
        Some(v) => ScopeFilter::Only(v.iter().map(key_text).collect()),
        None => ScopeFilter::Unknown,
    };
    match dim {
        ScopeDim::FiscalYear => {
            scope
                .fiscal_years
                .as_ref()
                .map_or(ScopeFilter::Unrestricted, |v| {
                    render(
                        v.iter()
                            .map(|y| ScalarValue::Int64(Some(i64::from(*y))))
                            .collect(),
                    )
                })
        }
        ScopeDim::Disease => scope
            .diseases
            .as_ref()
            .map_or(ScopeFilter::Unrestricted, |v| {
                render(
                    v.iter()
                        .map(|d| ScalarValue::Int64(Some(i64::from(*d))))
                        .collect(),
                )
            }),
        ScopeDim::Region => scope
            .prefectures
            .as_ref()
            .map_or(ScopeFilter::Unrestricted, |v| {
                render(v.iter().cloned().map(ScalarValue::from).collect())
            }),
        ScopeDim::Manufacturer => scope
            .manufacturers
            .as_ref()
            .map_or(ScopeFilter::Unrestricted, |v| {
                render(v.iter().cloned().map(ScalarValue::from).collect())
            }),
        ScopeDim::Product => {
            let Some(makers) = scope.manufacturers.as_ref() else {
                return ScopeFilter::Unrestricted;
            };
            let Some(product_table) = catalog.table("product") else {
                return ScopeFilter::Unknown;
            };
            let (Some(code), Some(maker)) = (
                product_table.scope_column(ScopeDim::Product),
                product_table.scope_column(ScopeDim::Manufacturer),
            ) else {
                return ScopeFilter::Unknown;
            };
            let list = makers
                .iter()
                .map(|m| format!("'{}'", m.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = if list.is_empty() {
                format!(
                    "SELECT {c} FROM product WHERE false",
                    c = quote_ident(&code.name)
                )
            } else {
                format!(
                    "SELECT DISTINCT {c} FROM product WHERE {m} IN ({list})",
                    c = quote_ident(&code.name),
                    m = quote_ident(&maker.name)
                )
            };
            match column_values(ctx, &sql, t).await {
                Some(values) => ScopeFilter::Only(values.iter().map(key_text).collect()),
                None => ScopeFilter::Unknown,
            }
        }
    }
}

/// A SQL identifier in double quotes (catalogue names are plain, but quote anyway).
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Run `sql` (over reference tables) and return its first column cast to the key type `t`;
/// `None` if anything fails (callers fail closed).
async fn column_values(ctx: &SessionContext, sql: &str, t: &DataType) -> Option<Vec<ScalarValue>> {
    let batches = ctx.sql(sql).await.ok()?.collect().await.ok()?;
    let mut out = Vec::new();
    for b in &batches {
        let arr = cast(b.column(0), t).ok()?;
        for r in 0..arr.len() {
            out.push(ScalarValue::try_from_array(&arr, r).ok()?);
        }
    }
    Some(out)
}

/// Cast scalars to the key column's type; `None` if any value does not fit the type or is
/// null (fail closed: no padding).
fn typed_scalars(
    values: impl Iterator<Item = ScalarValue>,
    t: &DataType,
) -> Option<Vec<ScalarValue>> {
    values
        .map(|v| v.cast_to(t).ok().filter(|v| !v.is_null()))
        .collect()
}

/// [`typed_scalars`] rendered as released JSON values.
#[cfg(test)]
fn typed(values: impl Iterator<Item = ScalarValue>, t: &DataType) -> Option<Vec<Value>> {
    typed_scalars(values, t).map(|v| v.iter().map(scalar_to_json).collect())
}

/// The catalogue domain of a public-domain column, typed like the key column.
async fn domain_values(
    ctx: &SessionContext,
    catalog: &Catalog,
    table: &str,
    column: &str,
    t: &DataType,
    max_rows: usize,
) -> Option<Vec<ScalarValue>> {
    let tb = catalog.table(table)?;
    let col = tb.column(column)?;
    if !col.public_domain {
        return None;
    }
    // A public-domain column of a reference table without a declared domain: the table is
    // public, so its own values are the domain.
    let own = Domain::Ref {
        table: table.to_string(),
        column: column.to_string(),
    };
    let domain = match (&col.domain, &tb.kind) {
        (Some(d), _) => d,
        (None, crate::catalog::TableKind::Reference) => &own,
        (None, _) => return None,
    };
    match domain {
        Domain::Values { values } => {
            typed_scalars(values.iter().cloned().map(ScalarValue::from), t)
        }
        Domain::Range { range: [lo, hi] } => {
            let size = hi.checked_sub(*lo)?.checked_add(1)?;
            if size <= 0 || size as u64 > max_rows as u64 {
                return None;
            }
            typed_scalars((*lo..=*hi).map(|i| ScalarValue::Int64(Some(i))), t)
        }
        Domain::Ref { table, column } => {
            let sql = format!(
                "SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY {c} LIMIT {n}",
                c = quote_ident(column),
                t = quote_ident(table),
                n = max_rows.saturating_add(1)
            );
            let out = column_values(ctx, &sql, t).await?;
            (out.len() <= max_rows && !out.iter().any(ScalarValue::is_null)).then_some(out)
        }
    }
}

/// One checked row before ordering and padding.
struct Checked {
    values: Vec<Value>,
    /// Released-column indices of suppressed cells.
    suppressed: Vec<usize>,
}

/// Apply the disclosure rules to an executed result.
///
/// With [`Padding::Domains`], fully released rows keep the query's order and are followed
/// by one row per combination of key values in domain order that is not fully released:
/// the data row if it had a failing cell, otherwise an all-null padding row. Neither the
/// presence nor the position of a row with a suppressed cell depends on the data.
pub fn check(
    batches: &[RecordBatch],
    release: &Release,
    rules: &RuleSet,
    max_rows: usize,
    types: &[DataType],
    padding: &Padding,
) -> Result<ReleasedResult, QueryError> {
    let columns: Vec<ReleasedColumn> = release
        .columns
        .iter()
        .enumerate()
        .map(|(k, c)| ReleasedColumn {
            name: c.name.clone(),
            type_name: types
                .get(k)
                .map_or_else(|| "Null".to_string(), DataType::to_string),
        })
        .collect();
    let drop_failing = match padding {
        Padding::NotNeeded => {
            release.drop_on_fail || release.columns.iter().any(|c| c.key && !c.public)
        }
        Padding::Domains(_) | Padding::Impossible => true,
    };
    let pad = match padding {
        Padding::Domains(d) => Some(d),
        _ => None,
    };
    let too_many = || QueryError::ResourceLimit {
        message: format!(
            "the result has more than {max_rows} rows; aggregate more coarsely or add a filter / 結果が {max_rows} 行を超えました。集計単位を粗くするか条件を追加してください"
        ),
    };

    let mut released: Vec<Checked> = Vec::new();
    // Rows with a failing cell, by their key values (padding mode only).
    let mut failing_by_key: HashMap<String, Checked> = HashMap::new();
    let mut dropped_rows = 0usize;
    let mut dropped_outside = 0usize;

    // Guards of inner aggregates that were sealed in the plan have no columns here.
    let used: std::collections::BTreeSet<usize> = release
        .columns
        .iter()
        .flat_map(|c| c.guards.iter().copied())
        .collect();
    for batch in batches {
        let helpers = Helpers::new(batch, &release.guards, &used)?;
        let arrays: Vec<ArrayRef> = release
            .columns
            .iter()
            .map(|c| normalize(batch.column(c.index)))
            .collect();
        for r in 0..batch.num_rows() {
            let pass: Vec<bool> = (0..release.guards.len())
                .map(|g| !used.contains(&g) || helpers.pass(g, r, rules))
                .collect();
            let fails: Vec<usize> = release
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.guards.iter().any(|&g| !pass[g]))
                .map(|(k, _)| k)
                .collect();
            let row_fails = !fails.is_empty();
            if row_fails && drop_failing && pad.is_none() {
                dropped_rows += 1;
                continue;
            }
            // Key values stay visible (they are public-domain values; when padding, they
            // are exactly the domain combination the row stands for).
            let failing: Vec<usize> = fails
                .into_iter()
                .filter(|&k| {
                    let c = &release.columns[k];
                    !(c.key && (c.public || pad.is_some()))
                })
                .collect();
            let mut values = Vec::with_capacity(release.columns.len());
            for (k, c) in release.columns.iter().enumerate() {
                if failing.contains(&k) {
                    values.push(Value::Null);
                    continue;
                }
                let mut v = json_value(&arrays[k], r);
                if c.count_like
                    && let (Some(base), Some(n)) = (rules.rounding, v.as_i64())
                {
                    v = Value::from(round_to(n, base));
                }
                values.push(v);
            }
            let row = Checked {
                values,
                suppressed: failing,
            };
            match pad {
                Some(domains) if row_fails => {
                    let inside = domains.iter().all(|(k, d)| d.contains(&row.values[*k]));
                    let key = key_of(domains, &row.values);
                    if !inside || failing_by_key.contains_key(&key) {
                        dropped_outside += 1;
                        continue;
                    }
                    failing_by_key.insert(key, row);
                }
                _ => released.push(row),
            }
            if released.len() + failing_by_key.len() > max_rows {
                return Err(too_many());
            }
        }
    }

    // Rows that passed every rule; in padding mode they come first.
    let fully_released = released.len();
    let mut padded_rows = 0usize;
    if let Some(domains) = pad {
        let released_keys: std::collections::HashSet<String> = released
            .iter()
            .map(|r| key_of(domains, &r.values))
            .collect();
        let ncols = release.columns.len();
        let total: usize = domains.iter().map(|(_, d)| d.len()).product();
        for n in 0..total {
            // Mixed-radix decoding: the last key varies fastest (domain order).
            let mut values = vec![Value::Null; ncols];
            let mut rest = n;
            for (k, d) in domains.iter().rev() {
                values[*k] = d[rest % d.len()].clone();
                rest /= d.len();
            }
            let key = key_of(domains, &values);
            if released_keys.contains(&key) {
                continue;
            }
            let row = failing_by_key.remove(&key).unwrap_or_else(|| {
                padded_rows += 1;
                Checked {
                    suppressed: (0..ncols).filter(|&k| !release.columns[k].key).collect(),
                    values,
                }
            });
            released.push(row);
            if released.len() > max_rows {
                return Err(too_many());
            }
        }
        // Every failing row is inside the domain, so all were placed; defensive anyway.
        dropped_outside += failing_by_key.len();
    }
    if released.len() > max_rows {
        return Err(too_many());
    }

    let mut rows = Vec::with_capacity(released.len());
    let mut suppressed: Vec<[usize; 2]> = Vec::new();
    for (i, r) in released.into_iter().enumerate() {
        suppressed.extend(r.suppressed.iter().map(|&k| [i, k]));
        rows.push(r.values);
    }
    let dropped_total = dropped_rows + dropped_outside;

    let mut notes = Vec::new();
    if !suppressed.is_empty() {
        notes.push(format!(
            "{} cell(s) were suppressed: fewer than {} contributing patients (an empty cell counts as suppressed), fewer than {} facilities, or one or two patients dominating a sum. / {} 個のセルを秘匿しました（寄与患者数 {} 未満（0 人のセルを含む）、施設数 {} 未満、または少数の患者が合計の大半を占めるため）。",
            suppressed.len(), rules.k, rules.facility_k, suppressed.len(), rules.k, rules.facility_k
        ));
    }
    if pad.is_some() {
        notes.push(format!(
            "The result lists every combination of the group keys' public domains ({padded_rows} row(s) without data were added); rows with a suppressed cell follow the fully released rows, in domain order, so neither their presence nor their position reveals data. / 集計キーの公開ドメインのすべての組み合わせを表示しています（データのない {padded_rows} 行を追加）。秘匿セルを含む行は、すべて公開できる行の後にドメイン順で並べているため、行の有無や位置からデータは分かりません。"
        ));
    }
    if pad.is_some() && key_only(release) {
        // Without an aggregate column a padded row looks like a data row; say which rows
        // are released (the same information the non-null cells carry in other results).
        notes.push(format!(
            "This result has no aggregate column: only the first {fully_released} row(s) are groups with enough patients; the rows after them are the rest of the key domain and say nothing about whether data exists. Add count(DISTINCT pid) to see the counts. / 集計列がないため、先頭の {fully_released} 行のみが十分な患者数のあるグループです。以降の行はキーの残りのドメインで、データの有無を示しません。件数は count(DISTINCT pid) を追加して確認してください。"
        ));
    }
    if dropped_outside > 0 {
        notes.push(format!(
            "{dropped_outside} row(s) with a suppressed cell were removed because their key values are outside the public domain (e.g. NULL). / 秘匿セルを含み、キーの値が公開ドメイン外（NULL など）の {dropped_outside} 行を除外しました。"
        ));
    }
    if dropped_rows > 0 {
        if matches!(padding, Padding::Impossible) {
            notes.push(format!(
                "{dropped_rows} row(s) with a suppressed cell were removed: the group keys could not be padded to their domain (a computed or non-public key, or too many combinations), and showing such a row would reveal that its group is non-empty. Use public-domain keys such as sex, prefecture_code, fiscal_year, disease_no, age_band to keep suppressed rows visible. / 秘匿セルを含む {dropped_rows} 行を除外しました。集計キーを公開ドメインの全組み合わせに補完できない（計算されたキー・非公開のキー・組み合わせが多すぎる）ため、行を表示すると該当者の存在が分かってしまいます。秘匿行を表示するには sex、prefecture_code、fiscal_year、disease_no、age_band など公開ドメインの列をキーにしてください。"
            ));
        } else {
            notes.push(format!(
                "{dropped_rows} row(s) were removed because a cell failed the rules and their keys are not public-domain values. / 規則を満たさないセルを含み、かつキーが公開ドメインの値でない {dropped_rows} 行を除外しました。"
            ));
        }
    }
    if release.inner_sealed {
        notes.push("Cells of an inner aggregation that failed the rules were removed before the outer computation. / 内側の集計で規則を満たさないセルは、外側の計算の前に除外しました。".to_string());
    }
    if let Some(base) = rules.rounding {
        notes.push(format!(
            "Counts are rounded to a multiple of {base}. / 件数は {base} の倍数に丸めています。"
        ));
    }
    Ok(ReleasedResult {
        columns,
        rows,
        disclosure: Disclosure {
            mode: DisclosureMode::Suppression,
            threshold: rules.k,
            suppressed_cells: suppressed.len(),
            suppressed,
            dropped_rows: dropped_total,
            rounding: rules.rounding,
            epsilon_spent: None,
            epsilon_remaining: None,
            notes,
            dp: None,
        },
    })
}

/// Every released column is a group key (e.g. `SELECT DISTINCT sex …`).
fn key_only(release: &Release) -> bool {
    release.columns.iter().all(|c| c.key)
}

/// The key values of a row, as a map key.
fn key_of(domains: &[(usize, Vec<Value>)], values: &[Value]) -> String {
    let keys: Vec<&Value> = domains.iter().map(|(k, _)| &values[*k]).collect();
    serde_json::to_string(&keys).unwrap_or_default()
}

fn round_to(n: i64, base: u32) -> i64 {
    let b = base as i64;
    ((n + b / 2).div_euclid(b)) * b
}

/// Helper columns of one batch, cast once.
struct Helpers<'a> {
    guards: &'a [Guard],
    ints: HashMap<String, ArrayRef>,
    floats: HashMap<String, ArrayRef>,
}

impl<'a> Helpers<'a> {
    fn new(
        batch: &RecordBatch,
        guards: &'a [Guard],
        used: &std::collections::BTreeSet<usize>,
    ) -> Result<Self, QueryError> {
        let mut ints = HashMap::new();
        let mut floats = HashMap::new();
        let get = |name: &str| -> Result<ArrayRef, QueryError> {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| internal(format!("helper column {name} missing")))
        };
        for g in used.iter().map(|&i| &guards[i]) {
            for n in std::iter::once(&g.n).chain(g.facilities.iter()) {
                ints.insert(
                    n.clone(),
                    cast(&get(n)?, &DataType::Int64).map_err(internal)?,
                );
            }
            if let Some(d) = &g.dominance {
                for n in [&d.top1, &d.top2, &d.total, &d.min] {
                    floats.insert(
                        n.clone(),
                        cast(&get(n)?, &DataType::Float64).map_err(internal)?,
                    );
                }
            }
        }
        Ok(Self {
            guards,
            ints,
            floats,
        })
    }

    fn int(&self, name: &str, r: usize) -> Option<i64> {
        let a = self.ints.get(name)?.as_primitive::<Int64Type>();
        a.is_valid(r).then(|| a.value(r))
    }

    fn float(&self, name: &str, r: usize) -> Option<f64> {
        let a = self.floats.get(name)?.as_primitive::<Float64Type>();
        a.is_valid(r).then(|| a.value(r))
    }

    /// Fail closed: a missing or NULL helper fails the guard.
    fn pass(&self, g: usize, r: usize, rules: &RuleSet) -> bool {
        let guard = &self.guards[g];
        // An empty cell (no contributor) never passes, whatever k is.
        if self
            .int(&guard.n, r)
            .is_none_or(|n| n < rules.k.max(1) as i64)
        {
            return false;
        }
        for f in &guard.facilities {
            if self.int(f, r).is_none_or(|n| n < rules.facility_k as i64) {
                return false;
            }
        }
        if let Some(d) = &guard.dominance
            && (rules.dominance_k < 1.0 || rules.p_ratio > 0.0)
        {
            let (Some(t1), Some(t2), Some(tot), Some(mn)) = (
                self.float(&d.top1, r),
                self.float(&d.top2, r),
                self.float(&d.total, r),
                self.float(&d.min, r),
            ) else {
                return false;
            };
            // The rules are defined for non-negative contributions only.
            if mn < 0.0 || t2 > rules.dominance_k * tot || tot - t2 < rules.p_ratio * t1 {
                return false;
            }
        }
        true
    }
}

/// Cast integer columns to Int64 and float/decimal columns to Float64 once per batch.
fn normalize(arr: &ArrayRef) -> ArrayRef {
    let target = match arr.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => DataType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Decimal128(..) => DataType::Float64,
        _ => return arr.clone(),
    };
    cast(arr, &target).unwrap_or_else(|_| arr.clone())
}

/// One cell of any Arrow array as the JSON value a released result would carry.
pub fn cell_to_json(arr: &ArrayRef, r: usize) -> Value {
    json_value(&normalize(arr), r)
}

/// One cell as JSON: numbers stay numbers, dates as ISO strings, other types as text.
fn json_value(arr: &ArrayRef, r: usize) -> Value {
    if arr.is_null(r) {
        return Value::Null;
    }
    match arr.data_type() {
        DataType::Int64 => Value::from(arr.as_primitive::<Int64Type>().value(r)),
        DataType::UInt64 => Value::from(
            arr.as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                .value(r),
        ),
        DataType::Float64 => {
            serde_json::Number::from_f64(arr.as_primitive::<Float64Type>().value(r))
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        DataType::Boolean => Value::Bool(arr.as_boolean().value(r)),
        _ => array_value_to_string(arr, r)
            .map(Value::String)
            .unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_values_are_typed_like_the_key_column() {
        let strs = |v: &[&str]| v.iter().map(|s| ScalarValue::from(*s)).collect::<Vec<_>>();
        assert_eq!(
            typed(strs(&["true", "false"]).into_iter(), &DataType::Boolean),
            Some(vec![Value::Bool(true), Value::Bool(false)])
        );
        assert_eq!(
            typed(strs(&["2", "97"]).into_iter(), &DataType::Int32),
            Some(vec![Value::from(2), Value::from(97)])
        );
        assert_eq!(
            typed(
                [ScalarValue::Int64(Some(2015))].into_iter(),
                &DataType::Utf8
            ),
            Some(vec![Value::from("2015")])
        );
        // A value that does not fit the key type disables padding (fail closed).
        assert_eq!(typed(strs(&["x"]).into_iter(), &DataType::Int32), None);
    }

    #[test]
    fn rounding_is_to_nearest_multiple() {
        assert_eq!(round_to(12, 5), 10);
        assert_eq!(round_to(13, 5), 15);
        assert_eq!(round_to(0, 5), 0);
    }
}
