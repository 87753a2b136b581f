//! Disclosure check, the trace of a release: what the check knew about every released
//! column and cell, kept with the stored answer so that a release request (the output
//! airlock, `crate::airlock`) can show each cell's rule outcomes and re-check the
//! released cells against the release ledger before a reviewer approves them.
//!
//! Guarantees: the trace never holds a count finer than the answer itself reveals. A
//! released cell carries the band of its contributor count (`k–9`, `10–19`, …, never the
//! exact count, and no band at all when counts are rounded, since a band could undo the
//! rounding); a suppressed cell carries nothing (its reason is the answer's own
//! `suppressed` / `differencing` lists, which are all the researcher saw). Which rules
//! applied is decided per column by the release description, never per row, so a padded
//! row and a failing row look the same.

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::privacy::rules::RuleSet;
use crate::sql::rewrite::{Release, ReleaseColumn};

/// What a released column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// A group key whose values come from a public domain (shown even when the row's
    /// other cells are suppressed).
    Key,
    /// Computed from public data only: no patient contributes.
    Public,
    /// An aggregate over patients, checked by the disclosure rules.
    Protected,
}

/// The rules that apply to every cell of one released column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnTrace {
    pub kind: ColumnKind,
    /// Minimum distinct facilities (`facility_k`) applies: a facility column feeds it.
    pub facility: bool,
    /// nk-dominance and p% apply: it is a SUM over patients.
    pub dominance: bool,
    /// Secondary suppression against differencing was checked.
    pub differencing: bool,
    /// The rounding base applied to its released values (count-like columns only).
    pub rounding: Option<u32>,
}

/// One released (not suppressed) protected cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellTrace {
    /// Band of the contributor count: `[low, high]`, `high` absent for the top band;
    /// absent when the answer's counts are rounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<(u64, Option<u64>)>,
    /// The ledger sets the cell's numbers are computed from: indices into the answer's
    /// released sets (`QueryOutcome::released_sets`).
    pub sets: Vec<u32>,
}

/// The trace of one answer: one entry per released column, and row-major one entry per
/// cell (`None` for key, public, suppressed and padding cells).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerTrace {
    pub columns: Vec<ColumnTrace>,
    pub cells: Vec<Vec<Option<CellTrace>>>,
}

impl AnswerTrace {
    /// Whether the check left a trace (every suppression answer does; DP answers and
    /// public-only answers need none).
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

/// The lower edges of the contributor bands above k. A band never starts below k.
const EDGES: [u64; 10] = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

/// The band `[low, high]` holding `n` contributors (`n ≥ k`).
pub fn band(n: u64, k: u32) -> (u64, Option<u64>) {
    let k = u64::from(k.max(1));
    let mut low = k;
    let mut high = None;
    for edge in EDGES.into_iter().filter(|&e| e > k) {
        if edge <= n {
            low = edge;
        } else {
            high = Some(edge - 1);
            break;
        }
    }
    (low, high)
}

/// The column traces of a release under `rules`.
pub(super) fn columns(release: &Release, rules: &RuleSet) -> Vec<ColumnTrace> {
    release
        .columns
        .iter()
        .map(|c| {
            let kind = if c.key {
                ColumnKind::Key
            } else if c.guards.is_empty() {
                ColumnKind::Public
            } else {
                ColumnKind::Protected
            };
            let guards = || c.guards.iter().map(|&g| &release.guards[g]);
            ColumnTrace {
                kind,
                facility: guards().any(|g| !g.facilities.is_empty()),
                dominance: guards().any(|g| g.dominance.is_some()),
                differencing: kind == ColumnKind::Protected && rules.defences.differencing,
                rounding: rules.rounding.filter(|_| c.count_like),
            }
        })
        .collect()
}

/// The trace of a released cell of column `c`: its band (from the smallest set of its
/// guards) and which of the row's released sets (`row_sets`, guard indices) it uses.
pub(super) fn cell(
    c: &ReleaseColumn,
    sets: &[Option<RoaringBitmap>],
    row_sets: &[usize],
    rules: &RuleSet,
) -> Option<CellTrace> {
    if c.key || c.guards.is_empty() {
        return None;
    }
    let smallest = c
        .guards
        .iter()
        .filter_map(|&g| sets[g].as_ref().map(RoaringBitmap::len))
        .min()?;
    let band = rules.rounding.is_none().then(|| band(smallest, rules.k));
    let used = c
        .sets
        .iter()
        .filter_map(|g| row_sets.iter().position(|r| r == g))
        .map(|i| i as u32)
        .collect();
    Some(CellTrace { band, sets: used })
}

/// Point the cells' set indices, which index their row's sets, at the answer's distinct
/// sets: `row_index[i][j]` is the distinct index of set `j` of row `i`.
pub(super) fn resolve(cells: &mut [Vec<Option<CellTrace>>], row_index: &[Vec<u32>]) {
    for (row, map) in cells.iter_mut().zip(row_index) {
        for cell in row.iter_mut().flatten() {
            cell.sets = cell
                .sets
                .iter()
                .map(|&s| map[s as usize])
                .filter(|&s| s != super::differencing::NO_SET)
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_start_at_k_and_never_show_the_exact_count() {
        assert_eq!(band(5, 5), (5, Some(9)));
        assert_eq!(band(9, 5), (5, Some(9)));
        assert_eq!(band(10, 5), (10, Some(19)));
        assert_eq!(band(412, 5), (200, Some(499)));
        assert_eq!(band(25_000, 5), (10_000, None));
        // A larger k moves the first band up: no band starts below k.
        assert_eq!(band(12, 10), (10, Some(19)));
        assert_eq!(band(12, 12), (12, Some(19)));
        assert_eq!(band(30, 25), (25, Some(49)));
    }
}
