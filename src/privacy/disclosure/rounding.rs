//! Disclosure check, rounding (policies/disclosure.toml `rounding`, docs/privacy.md §4):
//! when the rules set a base, every released count cell (a COUNT-like column) is rounded to
//! the nearest multiple of it (halves up), so small differences between two releases cannot
//! be read exactly. Other cells, suppressed cells and non-integer values are left as they are.

use serde_json::Value;

use crate::privacy::rules::RuleSet;
use crate::sql::rewrite::ReleaseColumn;

/// A released cell of `column`, rounded if the rules ask for it.
pub(super) fn round_cell(value: Value, column: &ReleaseColumn, rules: &RuleSet) -> Value {
    match (column.count_like, rules.rounding, value.as_i64()) {
        (true, Some(base), Some(n)) => Value::from(round_to(n, base)),
        _ => value,
    }
}

fn round_to(n: i64, base: u32) -> i64 {
    let b = i64::from(base);
    ((n + b / 2).div_euclid(b)) * b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_multiple() {
        assert_eq!(round_to(12, 5), 10);
        assert_eq!(round_to(13, 5), 15);
        assert_eq!(round_to(0, 5), 0);
    }
}
