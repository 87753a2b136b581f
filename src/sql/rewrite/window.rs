//! Privacy rewrite rule: window functions.
//!
//! Over patient rows a window must be `PARTITION BY pid`: it then computes within one
//! patient's own rows (e.g. a change since the previous visit) and keeps the unit;
//! any other window would mix patients into each row and is refused. Over a protected
//! aggregate the window sees it sealed, so a share or a rank can be computed only from
//! cells that could be released. Exercised by `tests/slt/accepted.slt` ("Shares with a
//! window over the aggregate", "A window within one patient (PARTITION BY pid)…") and
//! `tests/slt/refusals.slt` (`lag(birth_year) OVER (ORDER BY pid)`).

use std::sync::Arc;

use datafusion::logical_expr::{Expr, LogicalPlan, Window};

use super::lineage::{index_of, plain_col, strip_alias};
use super::{Col, Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn window(&mut self, w: &Window) -> Result<Rel, QueryError> {
        let mut input = self.rel(&w.input)?;
        if input.kind == (Kind::Protected { sealed: false }) {
            input = self.seal(input)?;
        }
        let exprs = self.subqueries(w.window_expr.clone(), &input)?;
        if input.kind == Kind::Rows {
            for e in &exprs {
                if !partitioned_by_pid(e, &input)? {
                    return Err(unsupported(
                        "window functions over patient rows must be PARTITION BY pid; otherwise aggregate first and apply the window to the aggregate / 患者行へのウィンドウ関数は PARTITION BY pid が必要です。先に集計してください",
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

fn partitioned_by_pid(e: &Expr, input: &Rel) -> Result<bool, QueryError> {
    let Expr::WindowFunction(wf) = strip_alias(e) else {
        return Ok(false);
    };
    for p in &wf.params.partition_by {
        if let Some(c) = plain_col(p)
            && input.cols[index_of(input.plan.schema(), c)?].pid
        {
            return Ok(true);
        }
    }
    Ok(false)
}
