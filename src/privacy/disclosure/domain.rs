//! Disclosure check, public key domains (catalogue `domain` of a `public_domain` column:
//! `values`, `range`, or `{ table, column }` of a reference table; docs/privacy.md §4): the
//! values a key column may take, enumerated from the catalogue and the public reference
//! tables only, never from the data, restricted to the approval's scope, typed like the key
//! column, without duplicates and in domain order. Whatever cannot be enumerated exactly
//! (a non-public column, a domain larger than the row cap, a value that does not fit the
//! key type, a failing reference read) has no domain, so nothing is padded (fail closed).
//! Used for suppression padding and for DP zero-fill.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;

use super::cells::scalar_to_json;
use super::scope::{ScopeFilter, scope_values};
use crate::catalog::{Catalog, Domain, TableKind};

/// The released values of one public-domain key column `table.column`, typed as `t`: its
/// catalogue domain restricted to the session's approved scope, without duplicates, in
/// domain order. `None` when the column has no enumerable public domain, the domain is
/// larger than `max_rows`, or the scope restriction cannot be worked out (fail closed).
pub async fn key_domain(
    ctx: &SessionContext,
    catalog: &Catalog,
    table: &str,
    column: &str,
    t: &DataType,
    max_rows: usize,
) -> Option<Vec<ScalarValue>> {
    let Some(extract) = extract_of(ctx) else {
        return key_domain_uncached(ctx, catalog, table, column, t, max_rows).await;
    };
    let key = format!("{extract}\u{0}{table}\u{0}{column}\u{0}{t}\u{0}{max_rows}");
    if let Some(hit) = DOMAINS.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return hit;
    }
    let values = key_domain_uncached(ctx, catalog, table, column, t, max_rows).await;
    if let Ok(mut cache) = DOMAINS.lock() {
        // A few extracts with a few key columns each; start over when it grows.
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(key, values.clone());
    }
    values
}

/// Key domains per extract: they depend only on the catalogue (fixed for the process) and
/// the extract's reference tables and scope (fixed by its id), so each is read once.
static DOMAINS: LazyLock<Mutex<HashMap<String, Option<Vec<ScalarValue>>>>> =
    LazyLock::new(Default::default);

/// The extract id of a session opened on an extract (`None` for other sessions, whose
/// tables are not fixed by an id: their domains are read on every query).
fn extract_of(ctx: &SessionContext) -> Option<String> {
    let state = ctx.state_ref();
    let state = state.read();
    let index = state
        .config()
        .get_extension::<crate::engine::PatientIndex>()?;
    index.extract_id().map(str::to_string)
}

async fn key_domain_uncached(
    ctx: &SessionContext,
    catalog: &Catalog,
    table: &str,
    column: &str,
    t: &DataType,
    max_rows: usize,
) -> Option<Vec<ScalarValue>> {
    let domain = public_domain(catalog, table, column)?;
    let mut values = domain_values(ctx, &domain, t, max_rows).await?;
    match scope_values(ctx, catalog, table, column, t).await {
        ScopeFilter::Unrestricted => {}
        ScopeFilter::Only(allowed) => values.retain(|v| allowed.contains(&key_text(v))),
        ScopeFilter::Unknown => return None,
    }
    let mut seen = HashSet::new();
    values.retain(|v| seen.insert(key_text(v)));
    Some(values)
}

/// A key value as text, for comparing domain values with scope values across types.
pub(super) fn key_text(v: &ScalarValue) -> String {
    scalar_to_json(v).to_string()
}

/// A SQL identifier in double quotes (catalogue names are plain, but quote anyway).
pub(super) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Run `sql` (over reference tables) and return its first column cast to the key type `t`;
/// `None` if anything fails (callers fail closed).
pub(super) async fn column_values(
    ctx: &SessionContext,
    sql: &str,
    t: &DataType,
) -> Option<Vec<ScalarValue>> {
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
pub(super) fn typed_scalars(
    values: impl Iterator<Item = ScalarValue>,
    t: &DataType,
) -> Option<Vec<ScalarValue>> {
    values
        .map(|v| v.cast_to(t).ok().filter(|v| !v.is_null()))
        .collect()
}

/// The declared domain of a public-domain column; `None` for a column that is not public
/// or has no enumerable domain.
fn public_domain(catalog: &Catalog, table: &str, column: &str) -> Option<Domain> {
    let tb = catalog.table(table)?;
    let col = tb.column(column)?;
    if !col.public_domain {
        return None;
    }
    match (&col.domain, &tb.kind) {
        (Some(d), _) => Some(d.clone()),
        // A public-domain column of a reference table without a declared domain: the
        // table is public, so its own values are the domain.
        (None, TableKind::Reference) => Some(Domain::Ref {
            table: table.to_string(),
            column: column.to_string(),
        }),
        (None, _) => None,
    }
}

/// The values of a domain, typed like the key column (type `t`); `None` when there are
/// more than `max_rows`.
async fn domain_values(
    ctx: &SessionContext,
    domain: &Domain,
    t: &DataType,
    max_rows: usize,
) -> Option<Vec<ScalarValue>> {
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// [`typed_scalars`] rendered as released JSON values.
    fn typed(values: impl Iterator<Item = ScalarValue>, t: &DataType) -> Option<Vec<Value>> {
        typed_scalars(values, t).map(|v| v.iter().map(scalar_to_json).collect())
    }

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
}
