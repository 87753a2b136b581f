//! The released result: exactly what leaves the enclave for one query, in the shape of
//! `shared/API.md` (`columns`, `rows`, `disclosure`). Suppressed cells are `null` in
//! `rows` and listed in `disclosure.suppressed`; they are never silently altered. Rows
//! padded to the key domains carry every non-key cell suppressed.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisclosureMode {
    Suppression,
    Dp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedColumn {
    pub name: String,
    /// Arrow type name, e.g. `Utf8`, `Int64`, `Float64`.
    #[serde(rename = "type")]
    pub type_name: String,
}

impl ReleasedColumn {
    /// The released columns of an Arrow schema: names and type names as they are.
    pub fn of_schema(schema: &datafusion::arrow::datatypes::Schema) -> Vec<ReleasedColumn> {
        schema
            .fields()
            .iter()
            .map(|f| ReleasedColumn {
                name: f.name().clone(),
                type_name: f.data_type().to_string(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disclosure {
    pub mode: DisclosureMode,
    /// k: minimum distinct patients per released cell.
    pub threshold: u32,
    /// `[row, column]` of every suppressed cell (0-based, in released row order).
    pub suppressed: Vec<[usize; 2]>,
    pub suppressed_cells: usize,
    /// The cells of `suppressed` that passed every rule on their own and were suppressed
    /// for `differencing`: their contributors differ from another released cell's (in
    /// this answer or earlier in the application's release ledger) by fewer than k
    /// patients. Same `[row, column]` form.
    #[serde(default)]
    pub differencing: Vec<[usize; 2]>,
    /// Always 0 since issue 11: a count of removed rows would count groups of fewer than
    /// k patients. Kept so that clients reading it keep working; a note says when rows
    /// with failing cells are removed.
    pub dropped_rows: usize,
    /// Rounding base applied to counts, if any.
    pub rounding: Option<u32>,
    pub epsilon_spent: Option<f64>,
    pub epsilon_remaining: Option<f64>,
    /// Human-readable notes (ja / en) about what was done to the result.
    pub notes: Vec<String>,
    /// Differential privacy: how every noised column was computed (mode `dp` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpDisclosure>,
}

/// Per-patient contribution bounds of a DP release. OpenDP trusts the sensitivity it is
/// given; these bounds, enforced in the rewritten plan, are what make it true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpBounds {
    /// L: a patient contributes to at most this many groups (the rest are dropped at random).
    pub max_groups_per_patient: u32,
    /// m: at most this many rows per patient and group (the rest are dropped at random).
    pub max_rows_per_group: u32,
}

impl DpBounds {
    /// Largest accepted value of either bound (a typo guard; larger bounds only add noise).
    pub const MAX: u32 = 1_000;
}

impl Default for DpBounds {
    /// Documented defaults (docs/privacy.md): L = 5 groups, m = 3 rows per group.
    fn default() -> Self {
        Self {
            max_groups_per_patient: 5,
            max_rows_per_group: 3,
        }
    }
}

/// What a DP query asks for: the ε to spend and the contribution bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpParams {
    pub epsilon: f64,
    pub bounds: DpBounds,
}

/// How one released column was noised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpColumn {
    /// Index of the released column.
    pub index: usize,
    pub name: String,
    /// `count`, `count_distinct_pid`, `sum`, `avg`.
    pub aggregate: String,
    /// ε spent on this column (an AVG spends on its noisy sum and its noisy count).
    pub epsilon: f64,
    /// L1 sensitivity of the noised quantity under the contribution bounds (for AVG, of its sum).
    pub sensitivity: f64,
    /// Laplace scale b of the noise added to each cell (for AVG, of its sum).
    pub noise_scale: f64,
    /// Half-width of the 95% interval around each cell, when the same for every cell
    /// (counts and sums); AVG cells carry their own interval in `DpDisclosure::intervals`.
    pub ci95_half_width: Option<f64>,
    /// Clamping bounds `[lo, hi]` applied to the values (SUM, AVG).
    pub clamp: Option<[f64; 2]>,
}

/// A per-cell 95% interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpInterval {
    pub row: usize,
    pub column: usize,
    pub low: f64,
    pub high: f64,
}

/// The DP part of a release's disclosure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpDisclosure {
    /// ε of this release: what the budget is charged, unless `cached`.
    pub epsilon: f64,
    /// A stored answer re-released for an identical query on the same extract: nothing spent.
    pub cached: bool,
    /// `laplace` (discrete Laplace on counts, Laplace on sums; pure ε-DP).
    pub mechanism: String,
    pub bounds: DpBounds,
    /// Rows whose noisy patient count is below this are suppressed (the <5 rule under DP).
    pub release_threshold: f64,
    pub columns: Vec<DpColumn>,
    /// 95% intervals of cells whose interval is cell-specific (AVG).
    pub intervals: Vec<DpInterval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedResult {
    pub columns: Vec<ReleasedColumn>,
    /// Row-major JSON values; `null` marks a suppressed (or genuinely null) cell.
    pub rows: Vec<Vec<serde_json::Value>>,
    pub disclosure: Disclosure,
}

impl std::fmt::Display for DisclosureMode {
    /// The API name of the mode (`suppression`, `dp`), as serde spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DisclosureMode::Suppression => "suppression",
            DisclosureMode::Dp => "dp",
        })
    }
}
