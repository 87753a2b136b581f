//! Privacy rewrite rule: UNION [ALL].
//!
//! Protected branches are sealed first. A union of public branches is public. A union with
//! patient branches is patient rows again, with every branch aligned to `visible…, pid,
//! facilities…`; a public branch gets a NULL unit and NULL facilities, so its rows never
//! count as contributors to an aggregate above and can only lower the counts that guard
//! it. A public branch computed from patient rows (a sealed aggregate) may not join patient
//! branches (with `rules.defences.subqueries`, on outside attack-test controls): how many
//! of its rows survive sealing, and what they hold, depends on other patients, and those
//! rows would add to the values (not the contributors) of the aggregate above. Exercised
//! by `tests/slt/rewrite/union.slt` and `tests/it/ordering.rs`.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, Union};

use super::lineage::{col_at, pid_index, public_rel};
use super::{Col, Kind, Rel, Rewriter, unsupported};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn union(&mut self, u: &Union) -> Result<Rel, QueryError> {
        let mut branches = Vec::new();
        for i in &u.inputs {
            let r = self.rel(i)?;
            branches.push(self.seal_if_protected(r)?);
        }
        if branches.iter().all(|b| b.kind == Kind::Public) {
            let inputs = branches.into_iter().map(|b| Arc::new(b.plan)).collect();
            let new =
                Union::try_new(inputs).map_err(|e| QueryError::internal("privacy rewrite", e))?;
            return Ok(public_rel(LogicalPlan::Union(new)));
        }
        if self.rules.defences.subqueries
            && branches
                .iter()
                .any(|b| b.kind == Kind::Public && self.patient_derived(b))
        {
            return Err(unsupported(
                "a UNION may not mix patient rows with a result computed from patient rows (such as an aggregate): its rows would depend on other patients. Union patient rows with patient rows or reference data, or aggregate each branch as its own query / UNION で患者行と患者データから計算した結果（集計など）を混ぜることはできません。患者行同士か参照データと組み合わせるか、各部分を別のクエリとして集計してください",
            ));
        }
        self.union_rows(branches)
    }

    /// UNION with patient branches: align every branch to `visible…, pid, facilities…`.
    fn union_rows(&mut self, branches: Vec<Rel>) -> Result<Rel, QueryError> {
        let nfac = branches
            .iter()
            .map(|b| {
                b.cols
                    .iter()
                    .filter(|c| c.facility && c.hidden)
                    .count()
                    .max(b.cols.iter().filter(|c| c.facility).count())
            })
            .max()
            .unwrap_or(0);
        let pid_name = self.fresh("pid");
        let fac_names: Vec<String> = (0..nfac).map(|_| self.fresh("fac")).collect();
        let nvis = branches[0].cols.iter().filter(|c| !c.hidden).count();
        let mut public = vec![true; nvis];
        let mut inputs = Vec::new();
        for b in &branches {
            let vis: Vec<usize> = (0..b.cols.len()).filter(|&i| !b.cols[i].hidden).collect();
            if vis.len() != nvis {
                return Err(QueryError::internal(
                    "privacy rewrite",
                    "union branches differ in width",
                ));
            }
            for (k, &i) in vis.iter().enumerate() {
                public[k] &= b.cols[i].public;
            }
            inputs.push(Arc::new(aligned(b, &vis, &pid_name, &fac_names)?));
        }
        let new = Union::try_new_with_loose_types(inputs)
            .map_err(|e| QueryError::internal("privacy rewrite", e))?;
        let mut cols: Vec<Col> = public
            .into_iter()
            .map(|p| Col {
                public: p,
                ..Col::default()
            })
            .collect();
        cols.push(Col {
            hidden: true,
            pid: true,
            ..Col::default()
        });
        for _ in 0..nfac {
            cols.push(Col {
                hidden: true,
                facility: true,
                ..Col::default()
            });
        }
        Ok(Rel {
            plan: LogicalPlan::Union(new),
            kind: Kind::Rows,
            cols,
            drop_on_fail: false,
        })
    }
}

/// One union branch as `visible…, pid, facilities…` (NULL unit and facilities unless the
/// branch is patient rows).
fn aligned(
    b: &Rel,
    vis: &[usize],
    pid_name: &str,
    fac_names: &[String],
) -> Result<LogicalPlan, QueryError> {
    let null_utf8 = || Expr::Literal(ScalarValue::Utf8(None), None);
    let mut exprs: Vec<Expr> = vis.iter().map(|&i| col_at(&b.plan, i)).collect();
    if b.kind == Kind::Rows {
        exprs.push(col_at(&b.plan, pid_index(b)?).alias(pid_name));
    } else {
        exprs.push(null_utf8().alias(pid_name));
    }
    let facs: Vec<usize> = (0..b.cols.len()).filter(|&i| b.cols[i].facility).collect();
    for (k, name) in fac_names.iter().enumerate() {
        match facs.get(k) {
            Some(&i) if b.kind == Kind::Rows => exprs.push(col_at(&b.plan, i).alias(name)),
            _ => exprs.push(null_utf8().alias(name)),
        }
    }
    let p = Projection::try_new(exprs, Arc::new(b.plan.clone()))
        .map_err(|e| QueryError::internal("privacy rewrite", e))?;
    Ok(LogicalPlan::Projection(p))
}
