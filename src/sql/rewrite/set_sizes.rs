//! Privacy rewrite rule: a researcher's `count(DISTINCT pid)` is the size of the
//! contributor set the rewrite computes for that cell anyway (`aggregate`), so it is not
//! computed twice. The aggregation runs without the user's distinct count, and a
//! projection above it puts `__kura_contributor_count(<the cell's set>)` in its place,
//! under the same output name and position.
//!
//! Guarantees: the released number is the same (a set holds each non-NULL pid of the rows
//! that pass the cell's FILTER once, exactly what `count(DISTINCT pid)` counts); the
//! output schema keeps every name, qualifier and position, so the rules above it see the
//! plan they would have seen. A `count(DISTINCT pid)` over no rows is 0 either way (the
//! empty set's size).

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};

use crate::engine::contributors::ContributorCount;
use crate::query::QueryError;

/// The aggregation of `group` and `exprs` over `input`, where each `(j, set)` of
/// `from_sets` says that user aggregate `j` is the size of the set column `set`.
pub(super) fn aggregate_reusing_sets(
    input: LogicalPlan,
    group: Vec<Expr>,
    exprs: Vec<Expr>,
    from_sets: &[(usize, String)],
) -> Result<LogicalPlan, QueryError> {
    let err = |e| QueryError::internal("privacy rewrite", e);
    let input = Arc::new(input);
    let full = Aggregate::try_new(input.clone(), group.clone(), exprs.clone()).map_err(err)?;
    if from_sets.is_empty() {
        return Ok(LogicalPlan::Aggregate(full));
    }
    let ngroup = group.len();
    let kept: Vec<Expr> = exprs
        .into_iter()
        .enumerate()
        .filter(|(j, _)| !from_sets.iter().any(|(r, _)| r == j))
        .map(|(_, e)| e)
        .collect();
    let reduced = LogicalPlan::Aggregate(Aggregate::try_new(input, group, kept).map_err(err)?);
    let schema = full.schema.clone();
    let out: Vec<Expr> = (0..schema.fields().len())
        .map(|i| {
            let (qualifier, field) = schema.qualified_field(i);
            let replaced = i
                .checked_sub(ngroup)
                .and_then(|j| from_sets.iter().find(|(r, _)| *r == j));
            match replaced {
                Some((_, set)) => ContributorCount::call(Expr::Column(Column::from_name(set)))
                    .alias_qualified(qualifier.cloned(), field.name()),
                None => Expr::Column(Column::from((qualifier, field))),
            }
        })
        .collect();
    let projection = Projection::try_new(out, Arc::new(reduced)).map_err(err)?;
    Ok(LogicalPlan::Projection(projection))
}
