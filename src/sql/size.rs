//! SQL stage, before parsing and before optimising: bounds on how *large* one query may be.
//!
//! [`super::depth`] bounds how deeply an expression nests; a query can also be shallow and
//! huge — an IN list of 100,000 values, 20,000 columns, a FROM list of thousands of tables,
//! a long UNION ALL chain — and make the parser, the analyzer, the optimizer or the
//! physical planner spend memory and time far beyond what a research question needs.
//! Guarantees: a statement of more than [`MAX_TOKENS`] tokens is refused as `invalid_sql`
//! before any tree is built (the count comes from the iterative tokenizer); a logical plan
//! of more than [`MAX_PLAN_NODES`] plan nodes, [`MAX_PLAN_DEPTH`] levels or
//! [`MAX_EXPR_NODES`] expression nodes is refused as `resource_limit` before the privacy
//! rewrite and the optimizer see it (every later pass recurses once per plan level). The
//! plan is counted with an explicit stack, so counting a deep plan cannot itself overflow.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Exists, InSubquery};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::query::QueryError;

/// The most tokens one statement may have. An IN list of 10,000 values has about 20,000
/// (one of 5,000 is answered by `kura demo`, tested), and the 20,000-term attack chains
/// have 40,000 and more (docs/threat-model.md).
pub const MAX_TOKENS: usize = 50_000;

/// The most logical-plan nodes (scans, joins, unions, projections, …) of one query.
pub const MAX_PLAN_NODES: usize = 500;

/// The most expression nodes (columns, literals, operators, function calls, IN-list
/// items, …) in the whole logical plan of one query.
pub const MAX_EXPR_NODES: usize = 30_000;

/// The deepest chain of plan nodes (a UNION ALL, JOIN or FROM-list chain is as deep as it
/// is long). Measured through kura's whole query path in a debug build, a UNION ALL chain
/// overflowed a 2 MiB stack from 152 branches and an 8 MiB one from 656
/// (docs/threat-model.md); 100 keeps more than 6× headroom on the 8 MiB threads kura plans on.
pub const MAX_PLAN_DEPTH: usize = 100;

/// Refuse a statement of more than [`MAX_TOKENS`] tokens (whitespace and comments not
/// counted).
pub fn check_tokens(significant: usize) -> Result<(), QueryError> {
    if significant <= MAX_TOKENS {
        return Ok(());
    }
    Err(QueryError::InvalidSql {
        message: format!(
            "the query is too large to parse: {significant} tokens, at most {MAX_TOKENS}; shorten long IN (…) lists (for example by grouping with a public-domain column or a CASE into bands) or split the query / クエリが大きすぎて解析できません（トークン数 {significant}、上限 {MAX_TOKENS}）。長い IN (…) の値リストを短くする（公開ドメインの列や CASE による区分でまとめる）か、クエリを分けてください"
        ),
    })
}

/// Refuse a logical plan larger than [`MAX_PLAN_NODES`] / [`MAX_EXPR_NODES`], before it
/// is rewritten or optimised.
pub fn check_plan_size(plan: &LogicalPlan) -> Result<(), QueryError> {
    let size = plan_size(plan);
    if size.nodes <= MAX_PLAN_NODES && size.exprs <= MAX_EXPR_NODES && size.depth <= MAX_PLAN_DEPTH
    {
        return Ok(());
    }
    let PlanSize {
        nodes,
        exprs,
        depth,
    } = size;
    Err(QueryError::ResourceLimit {
        message: format!(
            "the query is too large to plan: {nodes} plan nodes (at most {MAX_PLAN_NODES}), {depth} deep (at most {MAX_PLAN_DEPTH}), {exprs} expression nodes (at most {MAX_EXPR_NODES}); use fewer UNION ALL branches, joins, columns or IN (…) values, or split the query / クエリが大きすぎて計画できません（計画ノード {nodes}、上限 {MAX_PLAN_NODES}／深さ {depth}、上限 {MAX_PLAN_DEPTH}／式ノード {exprs}、上限 {MAX_EXPR_NODES}）。UNION ALL・結合・列・IN (…) の値を減らすか、クエリを分けてください"
        ),
    })
}

/// The size of a logical plan, as the bounds count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanSize {
    /// Plan nodes, subquery plans included.
    pub nodes: usize,
    /// Expression nodes of all plan nodes.
    pub exprs: usize,
    /// The longest chain of plan nodes (a subquery's plan counted below its node).
    pub depth: usize,
}

/// Plan nodes, expression nodes and depth of `plan`, subquery plans included. Plan nodes
/// are walked with an explicit stack; an expression tree is walked by DataFusion's
/// visitor, whose recursion [`super::depth`] bounds. Counting stops early once over a
/// limit.
pub fn plan_size(plan: &LogicalPlan) -> PlanSize {
    let mut size = PlanSize::default();
    let mut todo: Vec<(&LogicalPlan, usize)> = vec![(plan, 1)];
    let mut subqueries: Vec<(Arc<LogicalPlan>, usize)> = Vec::new();
    while let Some((p, depth)) = todo.pop() {
        size.nodes += 1;
        size.depth = size.depth.max(depth);
        if size.nodes > MAX_PLAN_NODES || size.exprs > MAX_EXPR_NODES || depth > MAX_PLAN_DEPTH {
            break;
        }
        let _ = p.apply_expressions(|e| {
            e.apply(|x| {
                size.exprs += 1;
                if let Expr::ScalarSubquery(s)
                | Expr::Exists(Exists { subquery: s, .. })
                | Expr::InSubquery(InSubquery { subquery: s, .. }) = x
                {
                    subqueries.push((Arc::clone(&s.subquery), depth));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        todo.extend(p.inputs().into_iter().map(|i| (i, depth + 1)));
    }
    for (s, depth) in &subqueries {
        let inner = plan_size(s);
        size.nodes = size.nodes.saturating_add(inner.nodes);
        size.exprs = size.exprs.saturating_add(inner.exprs);
        size.depth = size.depth.max(depth + inner.depth);
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_bound_names_its_limit_in_both_languages() {
        assert!(check_tokens(MAX_TOKENS).is_ok());
        let e = check_tokens(MAX_TOKENS + 1).unwrap_err();
        assert_eq!(e.code(), "invalid_sql");
        let m = e.public_message();
        assert!(
            m.contains(&MAX_TOKENS.to_string()) && m.contains("上限"),
            "{m}"
        );
    }
}
