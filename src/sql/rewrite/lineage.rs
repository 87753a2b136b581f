//! Privacy rewrite, shared lineage: how the per-column tags of [`Col`] follow an
//! expression from a rule's input to its output, and the plan helpers every rule uses.
//!
//! The property kept here is that a derived column is never *more* public than what it
//! reads: it is public (or a key) only when every column it reads is, it inherits every
//! guard of those columns, and it keeps the exact value source (for domain padding) only
//! when it is the same column, unchanged, or a literal. A column derived from patient
//! rows is never a key. Exercised by every case of `tests/slt/accepted.slt`.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};

use super::{Col, KeySource, Kind, Rel, Rewriter};
use crate::query::QueryError;

/// A qualified reference to field `i` of a plan's output.
pub(crate) fn col_at(plan: &LogicalPlan, i: usize) -> Expr {
    Expr::Column(Column::from(plan.schema().qualified_field(i)))
}

pub(crate) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// The column an expression is, if it is a plain (possibly aliased) column reference.
pub(super) fn plain_col(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Alias(a) => plain_col(&a.expr),
        Expr::Column(c) => Some(c),
        _ => None,
    }
}

pub(crate) fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_)
                | Expr::InSubquery(_)
                | Expr::Exists(_)
                | Expr::SetComparison(_)
        ))
    })
    .unwrap_or(true)
}

/// The input index of a column reference.
pub(super) fn index_of(schema: &DFSchema, c: &Column) -> Result<usize, QueryError> {
    schema
        .index_of_column(c)
        .map_err(|e| QueryError::internal("privacy rewrite", e))
}

/// Input column indices an expression reads.
pub(super) fn refs(e: &Expr, schema: &DFSchema) -> Result<Vec<usize>, QueryError> {
    e.column_refs()
        .into_iter()
        .map(|c| index_of(schema, c))
        .collect()
}

pub(crate) fn pid_index(r: &Rel) -> Result<usize, QueryError> {
    r.cols.iter().position(|c| c.pid).ok_or_else(|| {
        QueryError::internal("privacy rewrite", "patient relation without privacy unit")
    })
}

/// A relation that is safe to release and compute on as it is: every column is a public key.
pub(super) fn public_rel(plan: LogicalPlan) -> Rel {
    let n = plan.schema().fields().len();
    Rel {
        plan,
        kind: Kind::Public,
        cols: (0..n)
            .map(|_| Col {
                public: true,
                key: true,
                ..Col::default()
            })
            .collect(),
        drop_on_fail: false,
    }
}

/// Project away hidden columns (keeping qualifiers).
pub(super) fn visible_only(r: &Rel) -> Result<LogicalPlan, QueryError> {
    if r.cols.iter().all(|c| !c.hidden) {
        return Ok(r.plan.clone());
    }
    let exprs = (0..r.cols.len())
        .filter(|&i| !r.cols[i].hidden)
        .map(|i| col_at(&r.plan, i))
        .collect();
    let p = Projection::try_new(exprs, Arc::new(r.plan.clone()))
        .map_err(|e| QueryError::internal("privacy rewrite", e))?;
    Ok(LogicalPlan::Projection(p))
}

impl Rewriter<'_> {
    /// Lineage of a derived expression over `input`.
    pub(super) fn derive(&self, e: &Expr, input: &Rel) -> Result<Col, QueryError> {
        let schema = input.plan.schema();
        let r = refs(e, schema)?;
        let sub = has_subquery(e);
        let plain = plain_col(e).map(|c| index_of(schema, c)).transpose()?;
        let mut col = Col {
            public: !sub && r.iter().all(|&i| input.cols[i].public),
            key: !sub && r.iter().all(|&i| input.cols[i].key),
            unit_level: !sub && !e.is_volatile() && r.iter().all(|&i| input.cols[i].unit_level),
            ..Col::default()
        };
        for &i in &r {
            col.guards.extend(input.cols[i].guards.iter().copied());
            col.sets.extend(input.cols[i].sets.iter().copied());
        }
        if let Some(i) = plain {
            col.pid = input.cols[i].pid;
            col.facility = input.cols[i].facility;
            col.count_like = input.cols[i].count_like;
            col.source = input.cols[i].source.clone();
            col.group_of = input.cols[i].group_of;
        } else if !sub && let Expr::Literal(v, _) = strip_alias(e) {
            col.source = Some(KeySource::Literal(v.clone()));
        }
        if input.kind == Kind::Rows {
            col.key = false;
        }
        Ok(col)
    }
}
