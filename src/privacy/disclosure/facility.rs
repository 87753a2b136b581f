//! Disclosure check, rule `facility_k` (policies/disclosure.toml `facility_k`,
//! docs/privacy.md §4): where a facility-identifying column feeds a cell, at least
//! facility_k distinct facilities contribute to it, so that no hospital's figures can be
//! read off a cell. A missing or NULL facility count fails (fail closed).

use super::helpers::Helpers;
use crate::privacy::rules::RuleSet;
use crate::sql::rewrite::Guard;

/// Every facility count of the cell is known and at least `rules.facility_k`.
pub(super) fn passes(helpers: &Helpers, guard: &Guard, r: usize, rules: &RuleSet) -> bool {
    guard.facilities.iter().all(|f| {
        helpers
            .int(f, r)
            .is_some_and(|n| n >= i64::from(rules.facility_k))
    })
}
