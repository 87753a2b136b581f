//! Notebooks as documents (issue 15 §2): a kura notebook is an ordered list of SQL and
//! Markdown cells (stored as JSON by `store::notebooks`); this module turns it into a
//! Jupyter notebook (nbformat 4, `ipynb.rs`) with released answers rendered as outputs
//! (`table.rs`), and a Jupyter notebook back into cells.
//!
//! Guarantees: reading stored cells is lenient (a cell kura does not know is skipped,
//! never an error), writing them is strict (only `sql` and `markdown` cells with text
//! sources, within the size limits below); nothing in an imported file is run or trusted
//! but its SQL and Markdown text.

pub mod ipynb;
pub mod table;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Cells per notebook (the HTTP API's limit too).
pub const MAX_CELLS: usize = 500;
/// Characters per cell source.
pub const MAX_SOURCE: usize = 100_000;
/// Characters per notebook title.
pub const MAX_TITLE: usize = 200;

/// What a cell holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    Sql,
    Markdown,
}

/// One cell as kura stores it (`{"type": "sql" | "markdown", "source": "…"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    #[serde(rename = "type")]
    pub kind: CellKind,
    pub source: String,
}

impl Cell {
    pub fn sql(source: impl Into<String>) -> Self {
        Self {
            kind: CellKind::Sql,
            source: source.into(),
        }
    }

    pub fn markdown(source: impl Into<String>) -> Self {
        Self {
            kind: CellKind::Markdown,
            source: source.into(),
        }
    }
}

/// The cells of a stored notebook, in order; entries that are not a known cell are
/// skipped (fields other than `type` and `source`, e.g. a console's saved outputs, are
/// ignored).
pub fn cells_of(stored: &Value) -> Vec<Cell> {
    stored
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| serde_json::from_value::<Cell>(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The cells as kura stores them.
pub fn to_stored(cells: &[Cell]) -> Value {
    serde_json::to_value(cells).unwrap_or(Value::Array(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_cells_are_read_leniently() {
        let stored = json!([
            {"type": "markdown", "source": "# Title"},
            {"type": "sql", "source": "SELECT 1", "output": {"rows": []}},
            {"type": "chart", "source": "x"},
            "not a cell",
        ]);
        assert_eq!(
            cells_of(&stored),
            vec![Cell::markdown("# Title"), Cell::sql("SELECT 1")]
        );
        assert!(cells_of(&json!({"not": "an array"})).is_empty());
        assert_eq!(
            to_stored(&[Cell::sql("SELECT 1")]),
            json!([{"type": "sql", "source": "SELECT 1"}])
        );
    }
}
