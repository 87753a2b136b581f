//! Query stage, the plan fingerprint the audit log records: the same query shape with
//! other constants gets the same fingerprint (series of near-identical queries —
//! differencing — can be spotted), and no constant a researcher typed is exposed by it.

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// SHA-256 (hex) of the plan's indented display with every literal replaced by NULL:
/// the same query shape with different constants gets the same fingerprint, which lets
/// the audit log spot series of near-identical queries (differencing), and no constant
/// a researcher typed is exposed through the fingerprint.
pub fn fingerprint(plan: &LogicalPlan) -> String {
    let normalised = plan
        .clone()
        .transform_up_with_subqueries(|n| {
            n.map_expressions(|e| {
                e.transform_up(|x| {
                    Ok(match x {
                        Expr::Literal(_, _) => {
                            Transformed::yes(Expr::Literal(ScalarValue::Null, None))
                        }
                        other => Transformed::no(other),
                    })
                })
            })
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| plan.clone());
    let text = format!("{}", normalised.display_indent());
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}
