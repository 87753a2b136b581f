//! Disclosure check, rule `k` (policies/disclosure.toml `k`, docs/privacy.md §4): a cell is
//! released only if at least k distinct patients contribute to it. An empty cell (no
//! contributor, or a NULL count) never passes, whatever k is, because its presence alone
//! would say something about the data. The count is the size of the cell's contributor
//! set (`engine::contributors`).

use roaring::RoaringBitmap;

use crate::privacy::rules::RuleSet;

/// The cell's contributor set is known, non-empty and holds at least `rules.k` patients.
pub(super) fn passes(set: Option<&RoaringBitmap>, rules: &RuleSet) -> bool {
    set.is_some_and(|s| !s.is_empty() && s.len() >= u64::from(rules.k))
}
