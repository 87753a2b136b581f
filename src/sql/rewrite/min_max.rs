//! Privacy rewrite check: MIN and MAX over patients only on public-domain columns.
//!
//! An extreme value over patients is, by definition, one patient's value; it is released
//! only when the column takes its values from a public domain (e.g. `fiscal_year`), where
//! the value itself reveals nothing about a patient. Inside a per-patient `GROUP BY pid`
//! (not released) the caller skips this check. Exercised by `tests/slt/refusals.slt`
//! (`max(birth_year)`) and `tests/slt/rewrite/aggregate.slt` (`max(fiscal_year)`).

use datafusion::logical_expr::expr::AggregateFunction;

use super::Rel;
use super::lineage::refs;
use crate::query::QueryError;

/// Refuse MIN/MAX (`name`, lower case) over a column of `input` that is not public-domain.
pub(super) fn check_public_only(
    name: &str,
    f: &AggregateFunction,
    input: &Rel,
) -> Result<(), QueryError> {
    if name != "min" && name != "max" {
        return Ok(());
    }
    let schema = input.plan.schema();
    let read = f
        .params
        .args
        .iter()
        .map(|a| refs(a, schema))
        .collect::<Result<Vec<_>, _>>()?;
    if read.concat().iter().any(|&i| !input.cols[i].public) {
        return Err(QueryError::UnsupportedAggregate {
            message: format!(
                "{} is allowed only on public-domain columns (e.g. fiscal_year); an extreme value identifies one patient — use median or approx_percentile_cont / MIN・MAX は公開ドメインの列にのみ使えます。median などを使ってください",
                name.to_ascii_uppercase()
            ),
        });
    }
    Ok(())
}
