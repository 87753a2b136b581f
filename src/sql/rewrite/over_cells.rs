//! Privacy rewrite rule: no computation across the cells of an aggregation over patients.
//!
//! An outer aggregate or an aggregate window over the cells of a protected aggregation
//! combines some of its cells into one number: `SELECT region, sum(n) FROM (… GROUP BY
//! region, prefecture_code) GROUP BY region`, `sum(n) OVER (PARTITION BY sex)`, or a total
//! over the cells a `CASE` or a filter keeps. Sealing removes the cells below k first, so
//! such a number is a released total *minus the sealed small groups*: put beside the same
//! total asked directly (in this answer or an earlier one), it gives the small groups by
//! subtraction. Its patients are the union of the cells it combines, which no check sees,
//! so these shapes are refused (with `rules.defences.differencing`; off only in
//! attack-test controls). Every cell of the aggregation is released in its own right, so
//! totals, shares and ranks over them can be computed from the answer; ranking windows
//! (`rank()`, `row_number()`, `lag()` …) over the cells stay allowed, since they only
//! order or repeat cells that are released anyway. Exercised by
//! `tests/it/differencing.rs` (`attack_*_over_sealed_cells`) and `tests/slt/refusals.slt`.

use datafusion::logical_expr::{Expr, WindowFunctionDefinition};

use super::lineage::strip_alias;
use super::{Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

const REFUSAL: &str = "an aggregate or an aggregate window (sum(…) OVER …) over the cells of another aggregation over patients is not supported: the small groups removed from those cells could be found by subtracting the result from a total asked directly. Ask the total or the coarser groups directly from the patient rows (e.g. GROUP BY region instead of summing prefectures), or compute totals and shares from the released cells / 患者の集計結果のセルをさらに集計すること（外側の集計や sum(…) OVER … などの集計ウィンドウ）には対応していません。秘匿された小さな集団が、直接求めた合計との差から分かってしまうためです。合計や粗い区分は患者の行から直接集計するか（都道府県の合計ではなく GROUP BY 地域など）、公開されたセルから合計や割合を計算してください";

impl Rewriter<'_> {
    /// Whether `r` is, or is computed from, the cells of an aggregation over patients.
    fn over_cells(&self, r: &Rel) -> bool {
        match r.kind {
            Kind::Protected { .. } => true,
            Kind::Public => self.patient_derived(r),
            Kind::Rows => false,
        }
    }

    /// An aggregation over `input` (not patient rows) may not read protected cells.
    pub(super) fn check_aggregate_over_cells(&self, input: &Rel) -> Result<(), QueryError> {
        if self.rules.defences.differencing && self.over_cells(input) {
            return Err(unsupported(REFUSAL));
        }
        Ok(())
    }

    /// Aggregate window functions may not read protected cells; ranking windows may.
    pub(super) fn check_window_over_cells(
        &self,
        input: &Rel,
        exprs: &[Expr],
    ) -> Result<(), QueryError> {
        let aggregating = exprs.iter().any(|e| {
            matches!(strip_alias(e), Expr::WindowFunction(w)
                if matches!(w.fun, WindowFunctionDefinition::AggregateUDF(_)))
        });
        if aggregating && self.rules.defences.differencing && self.over_cells(input) {
            return Err(unsupported(REFUSAL));
        }
        Ok(())
    }
}
