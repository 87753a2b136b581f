//! SQL stage 1, error hardening: no DECIMAL values.
//!
//! Arrow's DECIMAL arithmetic is checked: a product or sum that leaves the type's precision
//! fails the whole query with "arithmetic overflow". Which rows overflow depends on their
//! values, so `CAST(x AS DECIMAL(38,0)) * 10^35` placed in a `CASE` branch that only one
//! patient's row reaches would say through the error class whether that row exists (the
//! oracle of issue 11, item 3). Integers wrap and floats go to infinity instead, so they
//! cannot fail. No catalogue column is DECIMAL and SQL literals such as `1.5` plan as
//! DOUBLE, so DECIMAL values only enter a query through an explicit cast or typed literal:
//! those are refused before any data is read, with the way out (DOUBLE).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Cast, Expr, LogicalPlan, TryCast};

use crate::query::QueryError;

const REFUSAL: &str = "DECIMAL values are not supported (their arithmetic can fail on a value); use DOUBLE, e.g. CAST(x AS DOUBLE) / DECIMAL 型には対応していません（値によって演算が失敗するため）。CAST(x AS DOUBLE) のように DOUBLE を使ってください";

/// Refuse the plan (subqueries included) if any expression makes a DECIMAL value.
pub fn check(plan: &LogicalPlan) -> Result<(), QueryError> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                found = makes_decimal(x);
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    })
    .map_err(|e| QueryError::internal("error hardening", e))?;
    if found {
        return Err(QueryError::UnsupportedQuery {
            message: REFUSAL.into(),
        });
    }
    Ok(())
}

fn makes_decimal(x: &Expr) -> bool {
    match x {
        Expr::Cast(Cast { field, .. }) | Expr::TryCast(TryCast { field, .. }) => {
            is_decimal(field.data_type())
        }
        Expr::Literal(v, _) => is_decimal(&v.data_type()),
        _ => false,
    }
}

fn is_decimal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}
