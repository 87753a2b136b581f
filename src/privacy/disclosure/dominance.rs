//! Disclosure check, dominance rules for SUM cells (policies/disclosure.toml
//! `dominance_n`, `dominance_k`, `p_ratio`; docs/privacy.md §4): nk-dominance (the two
//! largest per-patient contributions are at most dominance_k of the total) and the p% rule
//! (the total minus the two largest is at least p_ratio × the largest), so that no one or
//! two patients can estimate another's contribution. The contributions are per-patient
//! sums computed by the rewrite, so splitting a value over rows does not escape the rule.
//! Both rules are defined for non-negative contributions only: a negative one fails, and so
//! does any missing or NULL input (fail closed).

use super::helpers::Helpers;
use crate::privacy::rules::RuleSet;
use crate::sql::rewrite::Guard;

/// The cell is not a SUM, the rules are switched off, or both rules hold.
pub(super) fn passes(helpers: &Helpers, guard: &Guard, r: usize, rules: &RuleSet) -> bool {
    let Some(d) = &guard.dominance else {
        return true;
    };
    if !rules.dominance_enabled() {
        return true;
    }
    let (Some(top1), Some(top2), Some(total), Some(min)) = (
        helpers.float(&d.top1, r),
        helpers.float(&d.top2, r),
        helpers.float(&d.total, r),
        helpers.float(&d.min, r),
    ) else {
        return false;
    };
    // Stated as the failures (not their negation) so a NaN input decides as it always has.
    let negative = min < 0.0;
    let dominated = top2 > rules.dominance_k * total;
    let estimable = total - top2 < rules.p_ratio * top1;
    !(negative || dominated || estimable)
}
