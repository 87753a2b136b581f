//! Disclosure check, rule `k` (policies/disclosure.toml `k`, docs/privacy.md §4): a cell is
//! released only if at least k distinct patients contribute to it. An empty cell (no
//! contributor, or a NULL count) never passes, whatever k is, because its presence alone
//! would say something about the data.

use super::helpers::Helpers;
use crate::privacy::rules::RuleSet;
use crate::sql::rewrite::Guard;

/// The cell's distinct-patient count is known, non-zero and at least `rules.k`.
pub(super) fn passes(helpers: &Helpers, guard: &Guard, r: usize, rules: &RuleSet) -> bool {
    helpers
        .int(&guard.n, r)
        .is_some_and(|n| !empty(n) && n >= i64::from(rules.k))
}

/// No patient contributes: a property of the cell, not a threshold of the rules.
fn empty(patients: i64) -> bool {
    patients <= 0
}
