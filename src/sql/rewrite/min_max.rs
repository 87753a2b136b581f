//! Privacy rewrite check: MIN and MAX over patients only on public-domain columns, and
//! extreme percentiles count as MIN/MAX.
//!
//! An extreme value over patients is, by definition, one patient's value; it is released
//! only when the column takes its values from a public domain (e.g. `fiscal_year`), where
//! the value itself reveals nothing about a patient. Inside a per-patient `GROUP BY pid`
//! (not released) the caller skips this check. Exercised by `tests/slt/refusals.slt`
//! (`max(birth_year)`) and `tests/slt/rewrite/aggregate.slt` (`max(fiscal_year)`).
//!
//! `percentile_cont(p)` and `approx_percentile_cont(p)` interpolate at row position
//! p · (n − 1) of the n sorted values, so p = 0 or 1 is MIN or MAX, and p = 0.001 over a
//! group of five is MIN but for 0.4 % of the gap to the next value. A released cell has at
//! least k rows, so a fraction p with p · (k − 1) ≥ 1 and (1 − p) · (k − 1) ≥ 1 — the
//! range [1/(k−1), 1 − 1/(k−1)], [0.25, 0.75] at k = 5 — interpolates between the second
//! smallest and the second largest value only: neither extreme enters it. A fraction
//! outside that range, or one that is not a literal, is treated as MIN/MAX (with
//! `defences.percentiles`). k is the query's threshold, at least 5.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Cast, Expr, TryCast};

use super::lineage::refs;
use super::{Rel, Rewriter};
use crate::query::QueryError;

/// The smallest k the safe percentile range is computed for (the policy minimum).
const MIN_K: u32 = 5;

/// Refuse MIN/MAX (`name`, lower case) over a column of `input` that is not public-domain.
pub(super) fn check_public_only(
    name: &str,
    f: &AggregateFunction,
    input: &Rel,
) -> Result<(), QueryError> {
    if name != "min" && name != "max" {
        return Ok(());
    }
    if reads_non_public(f, input)? {
        return Err(QueryError::UnsupportedAggregate {
            message: format!(
                "{} is allowed only on public-domain columns (e.g. fiscal_year); an extreme value identifies one patient — use median or approx_percentile_cont / MIN・MAX は公開ドメインの列にのみ使えます。median などを使ってください",
                name.to_ascii_uppercase()
            ),
        });
    }
    Ok(())
}

impl Rewriter<'_> {
    /// Refuse a percentile over patients whose fraction lies outside the safe range (or is
    /// not a literal) when it reads a column that is not public-domain.
    pub(super) fn check_percentile(
        &self,
        f: &AggregateFunction,
        input: &Rel,
    ) -> Result<(), QueryError> {
        let name = f.func.name().to_ascii_lowercase();
        if !self.rules.defences.percentiles
            || !matches!(name.as_str(), "percentile_cont" | "approx_percentile_cont")
        {
            return Ok(());
        }
        let (lo, hi) = safe_range(self.rules.k);
        let inside = fraction(f).is_some_and(|p| p >= lo && p <= hi);
        if inside || !reads_non_public(f, input)? {
            return Ok(());
        }
        Err(QueryError::UnsupportedAggregate {
            message: format!(
                "{name} with a fraction outside [{lo:.3}, {hi:.3}] (or not a literal) is close to MIN/MAX, which identifies one patient; use a literal fraction inside that range, e.g. 0.25, 0.5 or 0.75 / {name} の割合は [{lo:.3}, {hi:.3}] の範囲の定数にしてください（範囲外は MIN・MAX と同じ扱いです）"
            ),
        })
    }
}

/// The fractions whose interpolation never uses the smallest or largest of k values.
pub fn safe_range(k: u32) -> (f64, f64) {
    let lo = 1.0 / f64::from(k.max(MIN_K) - 1);
    (lo, 1.0 - lo)
}

/// The literal fraction of a percentile (its second argument), if it is one.
fn fraction(f: &AggregateFunction) -> Option<f64> {
    literal_f64(f.params.args.get(1)?)
}

fn literal_f64(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(v, _) => match v.cast_to(&DataType::Float64).ok()? {
            ScalarValue::Float64(Some(p)) if p.is_finite() => Some(p),
            _ => None,
        },
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => literal_f64(expr),
        _ => None,
    }
}

/// Whether any argument or ORDER BY value of `f` reads a column of `input` that is not
/// public-domain.
fn reads_non_public(f: &AggregateFunction, input: &Rel) -> Result<bool, QueryError> {
    let schema = input.plan.schema();
    let exprs = f
        .params
        .args
        .iter()
        .chain(f.params.order_by.iter().map(|s| &s.expr));
    let mut read = Vec::new();
    for e in exprs {
        read.extend(refs(e, schema)?);
    }
    Ok(read.iter().any(|&i| !input.cols[i].public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_range_keeps_both_extremes_out_of_the_interpolation() {
        assert_eq!(safe_range(5), (0.25, 0.75));
        assert_eq!(safe_range(1), (0.25, 0.75), "never wider than at k = 5");
        let (lo, hi) = safe_range(10);
        assert!((lo - 1.0 / 9.0).abs() < 1e-12 && (hi - 8.0 / 9.0).abs() < 1e-12);
        for k in 5..50u32 {
            let (lo, hi) = safe_range(k);
            // Position p·(k−1) of the k sorted values lies in [1, k−2].
            assert!(lo * f64::from(k - 1) >= 1.0 - 1e-12);
            assert!(hi * f64::from(k - 1) <= f64::from(k - 2) + 1e-12);
        }
    }
}
