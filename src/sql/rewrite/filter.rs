//! Privacy rewrite rule: filters (WHERE, and HAVING over an aggregate).
//!
//! A filter over patient rows keeps the unit and never releases anything: it only
//! removes rows, so the aggregate above counts the patients that remain. A filter over
//! a protected aggregate (HAVING) sees it sealed: rows with a failing cell are removed
//! and the other cells nulled first, so the predicate can neither select nor count a
//! suppressed cell. Subqueries in the predicate are rewritten as well, as a predicate's
//! (`subquery`: only a per-patient `pid IN (SELECT pid …)` may select patient rows, and
//! nothing computed from patient rows may select any row). Exercised by
//! `tests/slt/accepted.slt` ("Error hardening: division by zero…" for WHERE, "HAVING sees
//! sealed values…" for HAVING, "Patients restricted by another patient table through
//! pid IN (…)" for a subquery predicate).

use std::sync::Arc;

use datafusion::logical_expr::{Filter, LogicalPlan};

use super::subquery::Site;
use super::{Kind, Rel, Rewriter};
use crate::query::QueryError;

impl Rewriter<'_> {
    pub(super) fn filter(&mut self, f: &Filter) -> Result<Rel, QueryError> {
        let mut input = self.rel(&f.input)?;
        if input.kind == (Kind::Protected { sealed: false }) {
            input = self.seal(input)?;
        }
        let pred = self
            .subqueries_at(vec![f.predicate.clone()], &input, Site::Predicate)?
            .pop()
            .expect("one predicate");
        let plan = LogicalPlan::Filter(
            Filter::try_new(pred, Arc::new(input.plan))
                .map_err(|e| QueryError::internal("privacy rewrite", e))?,
        );
        Ok(Rel { plan, ..input })
    }
}
