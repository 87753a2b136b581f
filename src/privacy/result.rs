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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disclosure {
    pub mode: DisclosureMode,
    /// k: minimum distinct patients per released cell.
    pub threshold: u32,
    /// `[row, column]` of every suppressed cell (0-based, in released row order).
    pub suppressed: Vec<[usize; 2]>,
    pub suppressed_cells: usize,
    /// Rows with a failing cell that were removed because their keys could not be padded
    /// to their public domain (or lay outside it).
    pub dropped_rows: usize,
    /// Rounding base applied to counts, if any.
    pub rounding: Option<u32>,
    pub epsilon_spent: Option<f64>,
    pub epsilon_remaining: Option<f64>,
    /// Human-readable notes (ja / en) about what was done to the result.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedResult {
    pub columns: Vec<ReleasedColumn>,
    /// Row-major JSON values; `null` marks a suppressed (or genuinely null) cell.
    pub rows: Vec<Vec<serde_json::Value>>,
    pub disclosure: Disclosure,
}
