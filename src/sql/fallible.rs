//! SQL stage 1, error hardening: expressions that fail on *every* row they reach are
//! refused before execution.
//!
//! Some expressions have no NULL-on-failure form because their failure does not depend on
//! a value but on the query text: `ntile(0)`, `LIKE … ESCAPE '!'` (DataFusion supports
//! only the backslash), `SIMILAR TO` and the regular-expression operators `~`, `~*`, `!~`,
//! `!~*` (their pattern is compiled per batch, so a pattern built from a column fails on
//! some rows). They would still be an oracle: placed in a `CASE` branch that only one
//! patient's row reaches, the error says whether that row exists. Refusing them in the
//! plan, before any data is read, depends on nothing but the SQL. Each refusal names
//! what works instead (`ntile(4)`, `LIKE` with `\`, `regexp_like`, which is NULL on a bad
//! pattern).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, LogicalPlan, Operator, TryCast};

use crate::query::QueryError;

/// Refuse the first expression of `plan` (subqueries included) that fails on every row.
pub fn check(plan: &LogicalPlan) -> Result<(), QueryError> {
    let mut found: Option<&'static str> = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                found = refusal(x);
                Ok(if found.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    })
    .map_err(|e| QueryError::internal("error hardening", e))?;
    match found {
        Some(message) => Err(QueryError::UnsupportedQuery {
            message: message.into(),
        }),
        None => Ok(()),
    }
}

fn refusal(x: &Expr) -> Option<&'static str> {
    match x {
        Expr::WindowFunction(w)
            if w.fun.name().eq_ignore_ascii_case("ntile")
                && !w.params.args.first().is_some_and(positive_literal) =>
        {
            Some(
                "ntile needs a positive whole number of buckets written as a literal, e.g. ntile(4) / ntile のバケット数は ntile(4) のように正の整数の定数で指定してください",
            )
        }
        Expr::Like(l) if l.escape_char.is_some_and(|c| c != '\\') => Some(
            "LIKE … ESCAPE supports only the backslash; write the pattern with \\ as escape / LIKE の ESCAPE にはバックスラッシュ（\\）のみ使えます",
        ),
        Expr::SimilarTo(_) => Some(
            "SIMILAR TO is not supported; use regexp_like(value, pattern) / SIMILAR TO には対応していません。regexp_like を使ってください",
        ),
        Expr::BinaryExpr(BinaryExpr {
            op:
                Operator::RegexMatch
                | Operator::RegexIMatch
                | Operator::RegexNotMatch
                | Operator::RegexNotIMatch,
            ..
        }) => Some(
            "the operators ~, ~*, !~ and !~* are not supported; use regexp_like(value, pattern [, 'i']) / 正規表現演算子には対応していません。regexp_like を使ってください",
        ),
        _ => None,
    }
}

fn positive_literal(e: &Expr) -> bool {
    match e {
        Expr::Literal(v, _) => matches!(
            v.cast_to(&DataType::Int64),
            Ok(ScalarValue::Int64(Some(n))) if n > 0
        ),
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => {
            positive_literal(expr)
        }
        _ => false,
    }
}
