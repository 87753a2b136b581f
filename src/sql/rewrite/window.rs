//! Privacy rewrite rule: window functions.
//!
//! Over patient rows a window must be `PARTITION BY pid`, on a `pid` that cannot be NULL
//! (not the outer side of a join, whose NULL partition would gather every unmatched
//! patient): it then computes within one
//! patient's own rows (a change since the previous visit, each patient's first record by
//! `row_number() OVER (PARTITION BY pid ORDER BY …) = 1`, `first_value`/`last_value` per
//! patient) and keeps the unit. Any other window would mix patients into each row: a
//! `row_number()`, `rank()` or `ntile()` over all patients, filtered above, is an ORDER BY
//! … LIMIT in disguise (one patient's value decides which others are kept), and `lag`
//! carries another patient's value into a row; so it is refused (the order-dependent
//! selection of `rules.defences.ordering`, on outside attack-test controls). Over a
//! protected aggregate the window sees it sealed, so a share or a rank can be computed
//! only from cells that could be released. Subqueries in window expressions may not be
//! computed from patient rows (`subquery`). Exercised by `tests/slt/accepted.slt`
//! ("Shares with a window over the aggregate", "A window within one patient (PARTITION BY
//! pid)…"), `tests/slt/refusals.slt` (`lag(birth_year) OVER (ORDER BY pid)`, `rank() OVER
//! (ORDER BY birth_year)`) and `tests/it/ordering.rs`.

use std::sync::Arc;

use datafusion::logical_expr::{Expr, LogicalPlan, Window};

use super::lineage::{index_of, plain_col, strip_alias};
use super::subquery::Site;
use super::{Col, Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn window(&mut self, w: &Window) -> Result<Rel, QueryError> {
        let mut input = self.rel(&w.input)?;
        self.check_window_over_cells(&input, &w.window_expr)?;
        if input.kind == (Kind::Protected { sealed: false }) {
            input = self.seal(input)?;
        }
        let exprs = self.subqueries_at(w.window_expr.clone(), &input, Site::Order)?;
        if input.kind == Kind::Rows && self.rules.defences.ordering {
            for e in &exprs {
                if !partitioned_by_pid(e, &input)? {
                    return Err(unsupported(
                        "window functions over patient rows must be PARTITION BY pid, on a pid that cannot be NULL (not the outer side of a join): a window across patients, such as row_number() OVER (ORDER BY …) filtered above, lets one patient decide which others are kept. Compute within each patient (PARTITION BY pid ORDER BY …), or aggregate first and apply the window to the aggregate / 患者行へのウィンドウ関数には、NULL にならない pid（外部結合の外側でないもの）での PARTITION BY が必要です（患者をまたぐウィンドウでは、ある患者の値で他の患者の選択が決まります）。患者ごとに計算するか、先に集計してから集計結果にウィンドウを適用してください",
                    ));
                }
            }
        }
        let n = exprs.len();
        let new = Window::try_new(exprs, Arc::new(input.plan))
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        let mut cols = input.cols;
        cols.extend((0..n).map(|_| Col::default()));
        Ok(Rel {
            plan: LogicalPlan::Window(new),
            kind: input.kind,
            cols,
            drop_on_fail: input.drop_on_fail,
        })
    }
}

/// Whether the window is partitioned by a privacy unit that cannot be NULL: the NULL
/// partition of the outer side of a join would hold the rows of every patient without a
/// match, and a rank in it would order those patients against each other.
fn partitioned_by_pid(e: &Expr, input: &Rel) -> Result<bool, QueryError> {
    let Expr::WindowFunction(wf) = strip_alias(e) else {
        return Ok(false);
    };
    let schema = input.plan.schema();
    for p in &wf.params.partition_by {
        if let Some(c) = plain_col(p) {
            let i = index_of(schema, c)?;
            if input.cols[i].pid && !schema.field(i).is_nullable() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
