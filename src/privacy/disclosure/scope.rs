//! Disclosure check, scope of padding values (docs/privacy.md §4, "Domain padding"): a
//! key column with a scope dimension (fiscal year, disease, prefecture, manufacturer;
//! products through their manufacturer) is padded only with the values the session's
//! approval (`Scope`, set by `open_extract`) admits. Padding beyond them would show key
//! values outside the approval: not a leak, since the domains are public, but misleading
//! rows about data the researcher cannot see. The scope is part of the approval and known
//! to the researcher, so the restriction depends on no data. When it cannot be worked out
//! the answer is [`ScopeFilter::Unknown`] and the caller does not pad (fail closed).

use std::collections::HashSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;

use super::domain::{column_values, key_text, quote_ident, typed_scalars};
use crate::catalog::{Catalog, ScopeDim};
use crate::sql::scope::Scope;

/// How the session's approved scope restricts the values of one key column.
pub(super) enum ScopeFilter {
    /// The column carries no restricted scope dimension: the whole domain applies.
    Unrestricted,
    /// Only these values (rendered as JSON text) are in scope.
    Only(HashSet<String>),
    /// The restriction could not be worked out: do not pad (fail closed).
    Unknown,
}

/// The values of `table.column` (typed as `t`) that the session's scope admits.
pub(super) async fn scope_values(
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
    let Some(scope) = ctx.state().config().get_extension::<Scope>() else {
        return ScopeFilter::Unrestricted;
    };
    let ints = |v: &Vec<i32>| -> Vec<ScalarValue> {
        v.iter()
            .map(|x| ScalarValue::Int64(Some(i64::from(*x))))
            .collect()
    };
    let texts = |v: &Vec<String>| -> Vec<ScalarValue> {
        v.iter().cloned().map(ScalarValue::from).collect()
    };
    let admitted = match dim {
        ScopeDim::FiscalYear => scope.fiscal_years.as_ref().map(ints),
        ScopeDim::Disease => scope.diseases.as_ref().map(ints),
        ScopeDim::Region => scope.prefectures.as_ref().map(texts),
        ScopeDim::Manufacturer => scope.manufacturers.as_ref().map(texts),
        ScopeDim::Product => return product_scope(ctx, catalog, &scope, t).await,
    };
    match admitted.map(|v| typed_scalars(v.into_iter(), t)) {
        None => ScopeFilter::Unrestricted,
        Some(Some(v)) => ScopeFilter::Only(v.iter().map(key_text).collect()),
        Some(None) => ScopeFilter::Unknown,
    }
}

/// Products are restricted through their manufacturer: the product codes of the approved
/// manufacturers, read from the `product` reference table of the extract.
async fn product_scope(
    ctx: &SessionContext,
    catalog: &Catalog,
    scope: &Scope,
    t: &DataType,
) -> ScopeFilter {
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
