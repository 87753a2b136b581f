//! Privacy stage, the disclosure check: executed batches + [`Release`] → [`ReleasedResult`].
//!
//! The last gate before anything leaves. It applies the rules of `policies/disclosure.toml`
//! ([`RuleSet`]) as docs/privacy.md §4 describes them, one pass per file, and [`check`] is
//! the one place that composes the passes, in this order:
//! 1. per guard of a cell: contributors ≥ k (`threshold.rs`), facilities ≥ facility_k
//!    (`facility.rs`), nk-dominance and p% for SUM (`dominance.rs`), all read from the
//!    rewrite's hidden helper columns (`helpers.rs`); a cell fails if any guard fails;
//! 2. a row with a failing cell is dropped, or shown with its failing cells null and
//!    listed (`padding.rs`); released counts are rounded (`rounding.rs`);
//! 3. the rows are placed so that neither the presence nor the position of a row with a
//!    failing cell depends on the data (`padding.rs`, over the public key domains of
//!    `domain.rs` cut to the approval's scope, `scope.rs`);
//! 4. the row cap is enforced on what is released, and the notes say what was done
//!    (`notes.rs`).
//!
//! Hidden helper columns never leave. The rule that MIN/MAX apply only to public-domain
//! columns is enforced earlier, by the SQL rewrite (`sql::rewrite::aggregate`), not here.

mod cells;
mod domain;
mod dominance;
mod facility;
mod helpers;
mod notes;
mod padding;
mod rounding;
mod scope;
mod threshold;

use std::collections::BTreeSet;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use serde_json::Value;

pub use cells::{cell_to_json, scalar_to_json};
pub use domain::key_domain;
pub use padding::{Padding, padding};

use crate::privacy::result::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;
use crate::sql::rewrite::{Guard, Release};
use helpers::Helpers;
use padding::{Placed, Rows};

/// One checked row before ordering and padding.
struct Checked {
    values: Vec<Value>,
    /// Released-column indices of suppressed cells.
    suppressed: Vec<usize>,
}

/// Apply the disclosure rules to an executed result.
///
/// With [`Padding::Domains`], fully released rows keep the query's order and are followed
/// by one row per combination of key values in domain order that is not fully released:
/// the data row if it had a failing cell, otherwise an all-null padding row. Neither the
/// presence nor the position of a row with a suppressed cell depends on the data.
pub fn check(
    batches: &[RecordBatch],
    release: &Release,
    rules: &RuleSet,
    max_rows: usize,
    types: &[DataType],
    padding: &Padding,
) -> Result<ReleasedResult, QueryError> {
    let cap = RowCap(max_rows);
    // Guards of inner aggregates that were sealed in the plan have no columns here.
    let used: BTreeSet<usize> = release
        .columns
        .iter()
        .flat_map(|c| c.guards.iter().copied())
        .collect();
    let mut rows = Rows::new(release, padding);
    for batch in batches {
        let helpers = Helpers::new(batch, &release.guards, &used)?;
        let arrays: Vec<ArrayRef> = release
            .columns
            .iter()
            .map(|c| cells::normalize(batch.column(c.index)))
            .collect();
        for r in 0..batch.num_rows() {
            let fails = failing_cells(release, &used, &helpers, r, rules);
            if rows.dropped(&fails) {
                continue;
            }
            let failed = !fails.is_empty();
            let suppressed = rows.suppressed(&release.columns, fails);
            let values = cell_values(release, &arrays, r, &suppressed, rules);
            rows.place(Checked { values, suppressed }, failed);
            cap.check(rows.len())?;
        }
    }
    let placed = rows.finish(&release.columns, &cap)?;
    Ok(released(release, rules, types, padding, placed))
}

/// The released columns (indices) with a failing cell at row `r`: a cell fails when any
/// of its guards fails.
fn failing_cells(
    release: &Release,
    used: &BTreeSet<usize>,
    helpers: &Helpers,
    r: usize,
    rules: &RuleSet,
) -> Vec<usize> {
    let pass: Vec<bool> = (0..release.guards.len())
        .map(|g| !used.contains(&g) || guard_passes(&release.guards[g], helpers, r, rules))
        .collect();
    release
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.guards.iter().any(|&g| !pass[g]))
        .map(|(k, _)| k)
        .collect()
}

/// One guard of a cell at row `r`: every rule that applies to it holds. Each rule fails
/// closed on a missing or NULL helper.
fn guard_passes(guard: &Guard, helpers: &Helpers, r: usize, rules: &RuleSet) -> bool {
    threshold::passes(helpers, guard, r, rules)
        && facility::passes(helpers, guard, r, rules)
        && dominance::passes(helpers, guard, r, rules)
}

/// The cells of row `r` as released: `null` where suppressed, otherwise the value, with
/// counts rounded.
fn cell_values(
    release: &Release,
    arrays: &[ArrayRef],
    r: usize,
    suppressed: &[usize],
    rules: &RuleSet,
) -> Vec<Value> {
    release
        .columns
        .iter()
        .enumerate()
        .map(|(k, c)| {
            if suppressed.contains(&k) {
                Value::Null
            } else {
                rounding::round_cell(cells::json_value(&arrays[k], r), c, rules)
            }
        })
        .collect()
}

/// The released result of placed rows: columns typed by the executed plan, suppressed
/// cells listed as `[row, column]` in released row order, and the notes.
fn released(
    release: &Release,
    rules: &RuleSet,
    types: &[DataType],
    padding: &Padding,
    placed: Placed,
) -> ReleasedResult {
    let columns: Vec<ReleasedColumn> = release
        .columns
        .iter()
        .enumerate()
        .map(|(k, c)| ReleasedColumn {
            name: c.name.clone(),
            type_name: types
                .get(k)
                .map_or_else(|| "Null".to_string(), DataType::to_string),
        })
        .collect();
    let mut suppressed: Vec<[usize; 2]> = Vec::new();
    for (i, r) in placed.rows.iter().enumerate() {
        suppressed.extend(r.suppressed.iter().map(|&k| [i, k]));
    }
    let notes = notes::notes(release, rules, padding, &placed, suppressed.len());
    let dropped_rows = placed.dropped_rows + placed.dropped_outside;
    let rows = placed.rows.into_iter().map(|r| r.values).collect();
    ReleasedResult {
        columns,
        rows,
        disclosure: Disclosure {
            mode: DisclosureMode::Suppression,
            threshold: rules.k,
            suppressed_cells: suppressed.len(),
            suppressed,
            dropped_rows,
            rounding: rules.rounding,
            epsilon_spent: None,
            epsilon_remaining: None,
            notes,
            dp: None,
        },
    }
}

/// The row cap (`Limits::max_rows`) on released rows, checked as rows are added so that a
/// huge result stops early.
struct RowCap(usize);

impl RowCap {
    fn check(&self, rows: usize) -> Result<(), QueryError> {
        let max_rows = self.0;
        if rows <= max_rows {
            return Ok(());
        }
        Err(QueryError::ResourceLimit {
            message: format!(
                "the result has more than {max_rows} rows; aggregate more coarsely or add a filter / 結果が {max_rows} 行を超えました。集計単位を粗くするか条件を追加してください"
            ),
        })
    }
}
