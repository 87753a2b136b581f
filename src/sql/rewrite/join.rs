//! Privacy rewrite rule: joins (including the semi/anti joins that IN and EXISTS become).
//!
//! Two patient relations may be joined only by an equi-join on `pid`, so every joined row
//! is still one patient's and the unit is kept; any other join would mix patients. A
//! patient relation may never filter a reference table (a semi or anti join that keeps
//! only the public side would reveal through the reference rows which values some
//! patient has). Protected inputs are sealed before they are joined. The result is
//! patient rows if either kept side is, otherwise public.
//!
//! A join is a filter too, so with `rules.defences.subqueries` (on outside attack-test
//! controls) patient rows may be joined only to patient rows (on `pid`) and to reference
//! data: never to a result computed from patient rows (a sealed aggregate, even one that
//! passes k), whose rows and values would let other patients decide which patient rows
//! are kept (`JOIN (SELECT sex … GROUP BY sex HAVING count(*) > 30)`); and a join
//! condition may hold no subquery (it would not be rewritten; put it in WHERE). The
//! semi and anti joins that DataFusion makes from IN and EXISTS appear only after the
//! optimizer, which runs on the rewritten plan: here they come from INTERSECT / EXCEPT,
//! and between patient relations they must be on `pid` like any other join, on a `pid`
//! that cannot be NULL (they match NULL with NULL, so a NULL from an outer join on one
//! side would decide about the NULL rows of the other). Exercised by
//! `tests/slt/accepted.slt` ("Join with a reference table for names", "Disease x fiscal
//! year x sex, joining two patient tables on pid"), `tests/slt/refusals.slt` (a join on
//! `prefecture_code`; `disease_no IN (SELECT disease_no FROM nanbyo_survey …)`; a join to
//! a sealed aggregate) and `tests/it/ordering.rs`.

use datafusion::common::{JoinType, NullEquality};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, Join, LogicalPlan, Operator};

use super::lineage::{has_subquery, plain_col};
use super::{Col, Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn join(&mut self, plan: &LogicalPlan, j: &Join) -> Result<Rel, QueryError> {
        let left = self.rel(&j.left)?;
        let right = self.rel(&j.right)?;
        let left = self.seal_if_protected(left)?;
        let right = self.seal_if_protected(right)?;
        if self.rules.defences.subqueries {
            self.check_join_filter(plan, j, &left, &right)?;
        }
        let (keep_l, keep_r) = match j.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => (true, false),
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => (false, true),
            _ => (true, true),
        };
        let (lr, rr) = (left.kind == Kind::Rows, right.kind == Kind::Rows);
        if ((lr && !keep_l) || (rr && !keep_r)) && !(lr && rr) {
            return Err(unsupported(
                "patient rows may not be used to filter a reference table (semi/anti join, IN/EXISTS); join the other way round / 患者行で参照テーブルを絞り込むことはできません",
            ));
        }
        if lr && rr && !joined_on_pid(j, &left, &right) {
            return Err(unsupported(
                "joins between patient tables must be equi-joins on pid (… JOIN t2 ON t1.pid = t2.pid); other joins mix patients / 患者テーブル同士の結合は pid による等価結合に限られます",
            ));
        }
        let new = plan
            .with_new_exprs(plan.expressions(), vec![left.plan, right.plan])
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        let (mut left_cols, mut right_cols) = (left.cols, right.cols);
        // A NULL-extended side can be matched on some rows of a patient and not on others
        // (an extra ON condition): its columns are no longer a function of the patient.
        let (null_l, null_r) = match j.join_type {
            JoinType::Left => (false, true),
            JoinType::Right => (true, false),
            JoinType::Full => (true, true),
            _ => (false, false),
        };
        for (extended, cols) in [(null_l, &mut left_cols), (null_r, &mut right_cols)] {
            if extended {
                cols.iter_mut().for_each(|c| c.unit_level = false);
            }
        }
        let mut cols = Vec::new();
        if keep_l {
            cols.extend(left_cols);
        }
        if keep_r {
            cols.extend(right_cols);
        }
        while cols.len() < new.schema().fields().len() {
            cols.push(Col::default()); // mark column of mark joins
        }
        let kind = if (lr && keep_l) || (rr && keep_r) {
            Kind::Rows
        } else {
            Kind::Public
        };
        if kind == Kind::Public {
            for c in &mut cols {
                c.public = true;
            }
        }
        Ok(Rel {
            plan: new,
            kind,
            cols,
            drop_on_fail: false,
        })
    }
}

impl Rewriter<'_> {
    /// Patient rows meet only patient rows and reference data, and the condition holds no
    /// subquery.
    fn check_join_filter(
        &self,
        plan: &LogicalPlan,
        j: &Join,
        left: &Rel,
        right: &Rel,
    ) -> Result<(), QueryError> {
        if plan.expressions().iter().any(has_subquery) {
            return Err(unsupported(
                "subqueries in a join condition are not supported; join first and put the condition in WHERE / 結合条件の中のサブクエリには対応していません。結合してから WHERE 句に条件を書いてください",
            ));
        }
        let derived_public = |r: &Rel| r.kind == Kind::Public && self.patient_derived(r);
        if (left.kind == Kind::Rows && derived_public(right))
            || (right.kind == Kind::Rows && derived_public(left))
        {
            return Err(unsupported(
                "patient rows cannot be joined to a result computed from patient rows (such as an aggregate): its rows and values would let other patients decide which patients are kept. Join patient tables on pid and reference tables on their keys, filter by conditions on the rows, or aggregate per patient first (GROUP BY pid) and join on pid / 患者行を、患者データから計算した結果（集計など）と結合することはできません。他の患者によって残る患者が決まるためです。患者テーブル同士は pid で、参照テーブルはそのキーで結合し、行の条件で絞り込むか、先に患者ごとに集計して pid で結合してください",
            ));
        }
        if null_pid_decides(j, left, right) {
            return Err(unsupported(
                "INTERSECT / EXCEPT of patient rows whose pid can be NULL (the outer side of a join) would let a NULL from another patient's rows decide which rows are kept; intersect rows that always have a pid (an inner join), or restrict patients with pid IN (SELECT pid …) / pid が NULL になり得る患者行（外部結合の外側）の INTERSECT・EXCEPT では、他の患者の行の NULL で残る行が決まります。常に pid を持つ行（内部結合）を使うか、pid IN (SELECT pid …) で絞り込んでください",
            ));
        }
        Ok(())
    }
}

/// A semi or anti join between patient relations that matches NULL with NULL (INTERSECT,
/// EXCEPT) on a pid that can be NULL: the NULL "patient" of one side is then kept or
/// dropped by a NULL that any patient's rows put on the other side.
fn null_pid_decides(j: &Join, left: &Rel, right: &Rel) -> bool {
    let filtering = matches!(
        j.join_type,
        JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    );
    let nullable_pid = |e: &Expr, r: &Rel| -> bool {
        plain_col(e)
            .and_then(|c| r.plan.schema().index_of_column(c).ok())
            .is_some_and(|i| r.cols[i].pid && r.plan.schema().field(i).is_nullable())
    };
    filtering
        && left.kind == Kind::Rows
        && right.kind == Kind::Rows
        && j.null_equality == NullEquality::NullEqualsNull
        && j.on
            .iter()
            .any(|(l, r)| nullable_pid(l, left) || nullable_pid(r, right))
}

/// Whether the join condition equates the two sides' privacy units (in `ON` keys or in
/// a conjunct of the join filter).
fn joined_on_pid(j: &Join, left: &Rel, right: &Rel) -> bool {
    let is_pid = |e: &Expr, r: &Rel| -> bool {
        plain_col(e)
            .and_then(|c| r.plan.schema().index_of_column(c).ok())
            .is_some_and(|i| r.cols[i].pid)
    };
    if j.on
        .iter()
        .any(|(l, r)| is_pid(l, left) && is_pid(r, right))
    {
        return true;
    }
    j.filter.iter().flat_map(split_conjunction).any(|c| {
        matches!(c, Expr::BinaryExpr(b)
            if b.op == Operator::Eq
                && ((is_pid(&b.left, left) && is_pid(&b.right, right))
                    || (is_pid(&b.right, left) && is_pid(&b.left, right))))
    })
}
