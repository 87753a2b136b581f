//! Privacy stage, differential privacy: the L1 sensitivities of the supported aggregates,
//! over all cells, for one patient added or removed, under the contribution bounds the DP
//! rewrite enforces in the plan (`sql::rewrite::dp`): a patient feeds at most `L` groups
//! and at most `m` rows per group, and values are clamped to `[lo, hi]`. OpenDP trusts the
//! sensitivity it is given, so these formulas are where correctness lives;
//! `tests/it/dp_engine.rs` checks them against a patient with 1,000 rows.

use crate::privacy::result::DpBounds;

fn lm(b: DpBounds) -> f64 {
    f64::from(b.max_groups_per_patient) * f64::from(b.max_rows_per_group)
}

/// COUNT(*) / COUNT(col): at most m rows in each of at most L groups.
pub fn count(b: DpBounds) -> f64 {
    lm(b)
}

/// COUNT(DISTINCT pid), and the hidden patient count behind the release threshold.
pub fn distinct_patients(b: DpBounds) -> f64 {
    f64::from(b.max_groups_per_patient)
}

/// SUM of values clamped to `[lo, hi]`.
pub fn sum(b: DpBounds, lo: f64, hi: f64) -> f64 {
    lm(b) * lo.abs().max(hi.abs())
}

/// The sum inside an AVG: values are clamped and centred on the midpoint.
pub fn centred_sum(b: DpBounds, lo: f64, hi: f64) -> f64 {
    lm(b) * (hi - lo) / 2.0
}
