//! Privacy rewrite rule: subqueries inside expressions (scalar, EXISTS, IN, ANY/ALL).
//!
//! Every expression subquery is rewritten by the same recursive rewrite, then consumed
//! only where it cannot let one patient decide about another. Guarantees (with
//! `rules.defences.subqueries`, on outside attack-test controls):
//! - patient rows may appear only as the per-patient semi-join `pid IN (SELECT pid …)`
//!   (the outer side the unit of patient rows, the subquery patient rows showing only
//!   their unit, not negated) at a *positive* place of a filter: the predicate itself or
//!   its AND/OR branches (an aggregate's FILTER cannot run a subquery in DataFusion 55,
//!   so it is refused there too). Each patient is then kept by that
//!   same patient's rows only, and NULLs inside the subquery cannot matter (a filter
//!   treats NULL like false, and AND/OR never turn a NULL into true). `NOT IN`, `NOT
//!   (… IN …)`, `(… IN …) IS NULL`, CASE and select-list uses could all turn a NULL that
//!   other patients' rows put into the subquery into a kept row, so they are refused;
//! - a subquery whose result is computed from patient rows — an aggregate, even sealed
//!   and passing k — may decide nothing about rows: it is refused in filters, sort keys,
//!   limits and windows, and anywhere over patient rows or over a protected aggregate.
//!   A threshold taken from such an aggregate (`birth_year > (SELECT avg(…) FROM patient
//!   WHERE …)`) is a differencing channel: the attacker adds or removes one patient
//!   through the inner WHERE and watches the outer answer flip, and neither the outer
//!   cell's contributors nor the (never released) inner cell show it. Such a subquery is
//!   kept only as a value shown per reference row (`SELECT d.name_en, (SELECT count(…) …
//!   WHERE s.disease_no = d.disease_no) FROM disease d`), sealed, like a released cell;
//! - any other subquery over patient rows (EXISTS, scalar, IN over another column) is
//!   refused; subqueries over reference data only are public and stay.
//!
//! Exercised by `tests/slt/accepted.slt` ("Patients restricted by another patient table
//! through pid IN (…)", "Correlated scalar subquery over patients, per reference row…"),
//! `tests/slt/refusals.slt` and `tests/it/ordering.rs` (one attack and its control per
//! shape).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::InSubquery;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};

use super::lineage::{plain_col, visible_only};
use super::{Kind, Rel, Rewriter, unsupported};
use crate::catalog::TableKind;
use crate::query::QueryError;

/// What the expressions holding a subquery do with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Site {
    /// A filter predicate (WHERE, HAVING): only rows for which it is true are kept.
    Predicate,
    /// A value computed per row (select list, group keys, aggregate arguments).
    Value,
    /// Sort keys, limits and window functions: they order or pick rows.
    Order,
}

const PER_PATIENT_IN: &str = "a subquery over patient rows may only restrict patients as `pid IN (SELECT pid FROM … WHERE …)` (or `… GROUP BY pid HAVING …`), as a condition of WHERE (alone or joined by AND / OR), not negated: then each patient is kept by that patient's own rows. Instead of NOT IN, keep patients by their own rows: `pid IN (SELECT pid FROM … GROUP BY pid HAVING count(*) FILTER (WHERE …) = 0)` / 患者行のサブクエリは WHERE 句の条件（単独または AND・OR で結合）として、否定せずに `pid IN (SELECT pid FROM … WHERE …)`（または `… GROUP BY pid HAVING …`）の形でのみ使えます。NOT IN の代わりに `pid IN (SELECT pid FROM … GROUP BY pid HAVING count(*) FILTER (WHERE …) = 0)` のように患者ごとの条件を使ってください";

const ROWS_VALUE: &str = "a subquery over patient rows cannot feed a value, an EXISTS test or a comparison: its result would depend on other patients' rows. Restrict patients by their own rows with `pid IN (SELECT pid FROM … WHERE …)` in WHERE, or run the subquery as its own aggregate query / 患者行のサブクエリは値・EXISTS・比較には使えません（他の患者の行で結果が決まるため）。WHERE 句の `pid IN (SELECT pid FROM … WHERE …)` で絞り込むか、別の集計クエリとして実行してください";

const DERIVED: &str = "a subquery whose result is computed from patient rows (even an aggregate that passes the threshold) cannot decide which rows an outer query keeps, orders or computes on: adding or removing one patient inside it could flip the outer answer. Filter by a condition on the rows themselves, aggregate per patient first (GROUP BY pid) and join on pid, or run the subquery as its own query / 患者データから計算したサブクエリ（閾値を満たす集計を含む）の結果で、外側のクエリの行の選択・並び・計算を決めることはできません。行そのものの条件で絞り込むか、先に患者ごとに集計して（GROUP BY pid）pid で結合するか、サブクエリを別のクエリとして実行してください";

impl Rewriter<'_> {
    /// Rewrite subqueries inside value expressions of a node over `input`.
    pub(super) fn subqueries(
        &mut self,
        exprs: Vec<Expr>,
        input: &Rel,
    ) -> Result<Vec<Expr>, QueryError> {
        self.subqueries_at(exprs, input, Site::Value)
    }

    /// Rewrite subqueries inside expressions of a node over `input`, used at `site`.
    pub(super) fn subqueries_at(
        &mut self,
        exprs: Vec<Expr>,
        input: &Rel,
        site: Site,
    ) -> Result<Vec<Expr>, QueryError> {
        exprs
            .into_iter()
            .map(|e| self.walk(e, input, site, site == Site::Predicate))
            .collect()
    }

    /// Whether a relation's rows or values come from patient rows (patient rows, a
    /// protected aggregate, or a public result sealed from one).
    pub(super) fn patient_derived(&self, r: &Rel) -> bool {
        r.kind != Kind::Public || self.reads_patients(&r.plan)
    }

    fn reads_patients(&self, plan: &LogicalPlan) -> bool {
        let mut found = false;
        let walked = plan.apply_with_subqueries(|p| {
            if let LogicalPlan::TableScan(s) = p
                && self
                    .catalog
                    .table(s.table_name.table())
                    .is_none_or(|t| t.kind == TableKind::Patient)
            {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found || walked.is_err()
    }

    /// One expression, top down. `positive`: the expression's truth alone decides whether
    /// a row is kept (a filter predicate or an AND/OR branch of one).
    fn walk(
        &mut self,
        e: Expr,
        input: &Rel,
        site: Site,
        positive: bool,
    ) -> Result<Expr, QueryError> {
        match e {
            Expr::BinaryExpr(b) if positive && matches!(b.op, Operator::And | Operator::Or) => {
                let left = self.walk(*b.left, input, site, true)?;
                let right = self.walk(*b.right, input, site, true)?;
                Ok(Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(left),
                    b.op,
                    Box::new(right),
                )))
            }
            Expr::Alias(mut a) => {
                a.expr = Box::new(self.walk(*a.expr, input, site, positive)?);
                Ok(Expr::Alias(a))
            }
            Expr::InSubquery(mut ins) => {
                ins.expr = Box::new(self.walk(*ins.expr, input, site, false)?);
                self.in_subquery(ins, input, positive)
            }
            Expr::ScalarSubquery(mut sq) => {
                let r = self.rel(&sq.subquery)?;
                sq.subquery = Arc::new(self.consumed(r, input, site)?);
                Ok(Expr::ScalarSubquery(sq))
            }
            Expr::Exists(mut ex) => {
                let r = self.rel(&ex.subquery.subquery)?;
                ex.subquery.subquery = Arc::new(self.consumed(r, input, site)?);
                Ok(Expr::Exists(ex))
            }
            Expr::SetComparison(mut sc) => {
                sc.expr = Box::new(self.walk(*sc.expr, input, site, false)?);
                let r = self.rel(&sc.subquery.subquery)?;
                sc.subquery.subquery = Arc::new(self.consumed(r, input, site)?);
                Ok(Expr::SetComparison(sc))
            }
            other => self.walk_children(other, input, site),
        }
    }

    /// Any other expression: its children are never positive places.
    fn walk_children(&mut self, e: Expr, input: &Rel, site: Site) -> Result<Expr, QueryError> {
        // `map_children` only carries DataFusion errors: the first refusal is kept aside
        // (and the rest skipped) so that its code reaches the user.
        let mut err = None;
        let out = e
            .map_children(|c| {
                if err.is_some() {
                    return Ok(Transformed::no(c));
                }
                match self.walk(c, input, site, false) {
                    Ok(x) => Ok(Transformed::yes(x)),
                    Err(q) => {
                        err = Some(q);
                        Ok(Transformed::no(Expr::Literal(ScalarValue::Null, None)))
                    }
                }
            })
            .map_err(|e| QueryError::internal("privacy rewrite", e))?
            .data;
        match err {
            Some(q) => Err(q),
            None => Ok(out),
        }
    }

    fn in_subquery(
        &mut self,
        mut ins: InSubquery,
        input: &Rel,
        positive: bool,
    ) -> Result<Expr, QueryError> {
        let r = self.rel(&ins.subquery.subquery)?;
        let on = self.rules.defences.subqueries;
        if r.kind == Kind::Rows {
            if on && !(positive && !ins.negated && per_patient_in(&ins, input, &r)) {
                return Err(unsupported(PER_PATIENT_IN));
            }
            ins.subquery.subquery = Arc::new(visible_only(&r)?);
        } else {
            ins.subquery.subquery = Arc::new(self.consumed(r, input, Site::Predicate)?);
        }
        Ok(Expr::InSubquery(ins))
    }

    /// The plan of a subquery whose result (value, existence, set) is used at `site` over
    /// `input`: public data as it is, a protected aggregate sealed; patient rows, and
    /// anything computed from them where it would decide about rows, refused.
    fn consumed(&mut self, r: Rel, input: &Rel, site: Site) -> Result<LogicalPlan, QueryError> {
        let on = self.rules.defences.subqueries;
        match r.kind {
            Kind::Rows if on => Err(unsupported(ROWS_VALUE)),
            Kind::Rows => visible_only(&r),
            _ if on
                && self.patient_derived(&r)
                && !(site == Site::Value && input.kind == Kind::Public) =>
            {
                Err(unsupported(DERIVED))
            }
            Kind::Public => visible_only(&r),
            Kind::Protected { .. } => Ok(self.publish(r)?.plan),
        }
    }
}

/// `pid IN (SELECT pid …)`: the outer side is the unit of patient rows, the subquery shows
/// only its own unit.
fn per_patient_in(ins: &InSubquery, input: &Rel, r: &Rel) -> bool {
    let outer_is_pid = plain_col(&ins.expr)
        .and_then(|c| input.plan.schema().index_of_column(c).ok())
        .is_some_and(|i| input.kind == Kind::Rows && input.cols[i].pid);
    let vis: Vec<usize> = (0..r.cols.len()).filter(|&i| !r.cols[i].hidden).collect();
    outer_is_pid && vis.len() == 1 && r.cols[vis[0]].pid
}
