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
// annual reports (issue 13 §3): per-cell sets and the publication's margins rule
mod cell_sets;
pub mod differencing;
mod domain;
mod dominance;
mod facility;
mod helpers;
pub mod margins;
mod notes;
mod padding;
mod rounding;
mod scope;
mod threshold;

use std::collections::BTreeSet;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use roaring::RoaringBitmap;
use serde_json::Value;

pub use cell_sets::{RowSets, cell_sets};
pub use cells::{cell_to_json, scalar_to_json};
pub use differencing::Earlier;
pub use domain::key_domain;
pub use padding::{Padding, padding};

use crate::privacy::result::{Disclosure, DisclosureMode, ReleasedColumn, ReleasedResult};
use crate::privacy::rules::RuleSet;
use crate::query::QueryError;
use crate::sql::rewrite::{Guard, Release};
use differencing::Candidate;
use helpers::Helpers;
use padding::{Placed, Rows};

/// One checked row before ordering and padding.
struct Checked {
    values: Vec<Value>,
    /// Released-column indices of suppressed cells.
    suppressed: Vec<usize>,
    /// Of those, the ones suppressed only for differencing.
    differencing: Vec<usize>,
    /// The contributor sets of the cells released in this row (what the ledger records).
    sets: Vec<RoaringBitmap>,
}

/// One executed row with its guards' verdicts: the primary rules first, then
/// differencing. Sets are kept only for guards that passed the primary rules.
struct Evaluated {
    batch: usize,
    row: usize,
    primary: Vec<bool>,
    differencing: Vec<bool>,
    sets: Vec<Option<RoaringBitmap>>,
}

/// The checked answer and the contributor sets it releases.
pub struct CheckedRelease {
    pub result: ReleasedResult,
    /// Distinct contributor sets of the released cells, for the release ledger.
    pub released_sets: Vec<RoaringBitmap>,
}

/// The contributor sets in column `name` of `batch` (NULL rows skipped).
pub fn read_sets(batch: &RecordBatch, name: &str) -> Result<Vec<RoaringBitmap>, QueryError> {
    let internal = |e: String| QueryError::internal("disclosure check", e);
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| internal(format!("set column {name} missing")))?;
    let sets = datafusion::arrow::array::AsArray::as_binary_opt::<i32>(column.as_ref())
        .ok_or_else(|| internal(format!("set column {name} is not binary")))?;
    sets.iter()
        .flatten()
        .map(|bytes| crate::engine::contributors::deserialise(bytes).map_err(internal))
        .collect()
}

/// The executed rows with the primary verdicts and contributor sets of their guards,
/// computed once per answer: the ledger is read for sets near their sizes, then the
/// check runs over them.
pub struct Evaluation(Vec<Evaluated>);

impl Evaluation {
    /// Every executed row of `batches`, each guard judged by the primary rules.
    pub fn of(
        batches: &[RecordBatch],
        release: &Release,
        rules: &RuleSet,
    ) -> Result<Self, QueryError> {
        evaluate(batches, release, rules).map(Self)
    }

    /// The sizes of the contributor sets that passed the primary rules: the ledger is
    /// read for sets within k of these (see `differencing`).
    pub fn candidate_sizes(&self) -> Vec<u64> {
        let mut sizes: Vec<u64> = self
            .0
            .iter()
            .flat_map(|e| e.sets.iter().flatten().map(RoaringBitmap::len))
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

/// Apply the disclosure rules to an executed result (`evaluation` of the same batches),
/// `earlier` being the ledger's sets near the candidates' sizes.
///
/// With [`Padding::Domains`], fully released rows keep the query's order (sorted by their
/// values when the query has no ORDER BY) and are followed by one row per combination of
/// key values in domain order that is not fully released: the data row if it had a failing
/// cell, otherwise an all-null padding row. Neither the presence nor the position of a row
/// with a suppressed cell depends on the data.
#[allow(clippy::too_many_arguments)]
pub fn check(
    batches: &[RecordBatch],
    release: &Release,
    rules: &RuleSet,
    max_rows: usize,
    types: &[DataType],
    padding: &Padding,
    evaluation: Evaluation,
    earlier: &Earlier,
) -> Result<CheckedRelease, QueryError> {
    let cap = RowCap(max_rows);
    let Evaluation(mut evaluated) = evaluation;
    if rules.defences.differencing {
        secondary(&mut evaluated, release, earlier, rules.k);
    }
    let mut rows = Rows::new(release, padding);
    let arrays: Vec<Vec<ArrayRef>> = batches
        .iter()
        .map(|b| {
            release
                .columns
                .iter()
                .map(|c| cells::normalize(b.column(c.index)))
                .collect()
        })
        .collect();
    for e in evaluated {
        let (fails, by_differencing) = failing_cells(release, &e);
        if rows.dropped(&fails) {
            continue;
        }
        let failed = !fails.is_empty();
        let suppressed = rows.suppressed(&release.columns, fails);
        let differencing = by_differencing
            .into_iter()
            .filter(|k| suppressed.contains(k))
            .collect();
        let values = cell_values(release, &arrays[e.batch], e.row, &suppressed, rules);
        let sets = released_sets(release, &e, &suppressed);
        let row = Checked {
            values,
            suppressed,
            differencing,
            sets,
        };
        rows.place(row, failed);
        cap.check(rows.len())?;
    }
    let placed = rows.finish(&release.columns, &cap)?;
    Ok(released(release, rules, types, padding, placed))
}

/// Every executed row with the primary verdict of each guard its released cells use.
fn evaluate(
    batches: &[RecordBatch],
    release: &Release,
    rules: &RuleSet,
) -> Result<Vec<Evaluated>, QueryError> {
    // Guards of inner aggregates that were sealed in the plan have no columns here.
    let used: BTreeSet<usize> = release
        .columns
        .iter()
        .flat_map(|c| c.guards.iter().copied())
        .collect();
    let mut out = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let helpers = Helpers::new(batch, &release.guards, &used)?;
        for r in 0..batch.num_rows() {
            let mut primary = vec![true; release.guards.len()];
            let mut sets = vec![None; release.guards.len()];
            for &g in &used {
                let guard = &release.guards[g];
                let set = helpers.set(&guard.n, r);
                primary[g] = guard_passes(guard, set.as_ref(), &helpers, r, rules);
                if primary[g] {
                    sets[g] = set;
                }
            }
            out.push(Evaluated {
                batch: b,
                row: r,
                differencing: vec![true; primary.len()],
                primary,
                sets,
            });
        }
    }
    Ok(out)
}

/// Secondary suppression over the whole answer (see `differencing`): the candidates are
/// the sets of guards whose cells would otherwise be released.
fn secondary(evaluated: &mut [Evaluated], release: &Release, earlier: &Earlier, k: u32) {
    let mut cands = Vec::new();
    for (i, e) in evaluated.iter().enumerate() {
        let releasable: BTreeSet<usize> = release
            .columns
            .iter()
            .filter(|c| c.guards.iter().all(|&g| e.primary[g]))
            .flat_map(|c| c.sets.iter().copied())
            .collect();
        for g in releasable {
            if let Some(set) = &e.sets[g] {
                cands.push(Candidate {
                    row: i,
                    guard: g,
                    set,
                });
            }
        }
    }
    let out = differencing::suppress(&cands, earlier, k);
    let failed: Vec<(usize, usize)> = cands
        .iter()
        .zip(out)
        .filter(|(_, fail)| *fail)
        .map(|(c, _)| (c.row, c.guard))
        .collect();
    for (row, guard) in failed {
        evaluated[row].differencing[guard] = false;
    }
}

/// The released columns (indices) with a failing cell in row `e`, and those of them that
/// fail only for differencing. A cell fails when any of its guards fails.
fn failing_cells(release: &Release, e: &Evaluated) -> (Vec<usize>, Vec<usize>) {
    let mut fails = Vec::new();
    let mut by_differencing = Vec::new();
    for (k, c) in release.columns.iter().enumerate() {
        let primary = c.guards.iter().all(|&g| e.primary[g]);
        // Differencing fails only the cells computed from the unsafe set (a suppressed
        // margin does not take the cells it totals with it).
        let secondary = c.sets.iter().all(|&g| e.differencing[g]);
        if !primary || !secondary {
            fails.push(k);
            if primary {
                by_differencing.push(k);
            }
        }
    }
    (fails, by_differencing)
}

/// The distinct sets behind the released (not suppressed) cells of row `e`.
fn released_sets(release: &Release, e: &Evaluated, suppressed: &[usize]) -> Vec<RoaringBitmap> {
    let guards: BTreeSet<usize> = release
        .columns
        .iter()
        .enumerate()
        .filter(|(k, _)| !suppressed.contains(k))
        .flat_map(|(_, c)| c.sets.iter().copied())
        .collect();
    guards
        .into_iter()
        .filter_map(|g| e.sets[g].clone())
        .collect()
}

/// One guard of a cell at row `r`: every primary rule that applies to it holds. Each rule
/// fails closed on a missing or NULL helper.
fn guard_passes(
    guard: &Guard,
    set: Option<&RoaringBitmap>,
    helpers: &Helpers,
    r: usize,
    rules: &RuleSet,
) -> bool {
    threshold::passes(set, rules)
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
/// cells listed as `[row, column]` in released row order, the notes, and the distinct
/// contributor sets of the released cells.
fn released(
    release: &Release,
    rules: &RuleSet,
    types: &[DataType],
    padding: &Padding,
    placed: Placed,
) -> CheckedRelease {
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
    let mut differencing: Vec<[usize; 2]> = Vec::new();
    for (i, r) in placed.rows.iter().enumerate() {
        suppressed.extend(r.suppressed.iter().map(|&k| [i, k]));
        differencing.extend(r.differencing.iter().map(|&k| [i, k]));
    }
    let notes = notes::notes(
        release,
        rules,
        padding,
        &placed,
        suppressed.len(),
        differencing.len(),
    );
    let mut sets = Vec::new();
    let mut rows = Vec::with_capacity(placed.rows.len());
    for r in placed.rows {
        sets.extend(r.sets);
        rows.push(r.values);
    }
    let released_sets = differencing::distinct(sets);
    let result = ReleasedResult {
        columns,
        rows,
        disclosure: Disclosure {
            mode: DisclosureMode::Suppression,
            threshold: rules.k,
            suppressed_cells: suppressed.len(),
            suppressed,
            differencing,
            dropped_rows: 0,
            rounding: rules.rounding,
            epsilon_spent: None,
            epsilon_remaining: None,
            notes,
            dp: None,
        },
    };
    CheckedRelease {
        result,
        released_sets,
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
