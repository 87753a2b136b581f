//! The query path glue: SQL → guard → error hardening → privacy rewrite → execute under
//! limits → disclosure check → [`QueryOutcome`].
//!
//! Guarantees: nothing reaches the caller that did not pass the disclosure check; every
//! engine error becomes `execution_error` (detail for the audit log only) or
//! `resource_limit`; planning and execution together are bounded by `limits.timeout`, and
//! dropping the future cancels the query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::{QueryError, QueryOutcome};
use crate::catalog::Catalog;
use crate::engine::Limits;
use crate::privacy::disclosure;
use crate::privacy::rules::DisclosureRules;
use crate::sql::{guard, rewrite};

/// Run one researcher query in suppression mode over the tables registered in `ctx`
/// (the caller's extract).
pub async fn run_query(
    ctx: &SessionContext,
    sql: &str,
    catalog: &Catalog,
    rules: &DisclosureRules,
    limits: &Limits,
) -> Result<QueryOutcome, QueryError> {
    let started = Instant::now();
    let work = async {
        let plan = guard::plan_guarded(ctx, sql, catalog).await?;
        let tables = guard::tables_read(&plan);
        let datasets: Vec<&str> = tables
            .iter()
            .filter_map(|t| catalog.table(t))
            .flat_map(|t| t.datasets.iter().map(String::as_str))
            .collect();
        let ruleset = rules.effective(datasets);
        let plan = guard::harden(plan)?;
        let plan_fingerprint = fingerprint(&plan);
        let rewritten = rewrite::rewrite(&plan, catalog, &ruleset)?;
        let schema = rewritten.plan.schema().clone();
        let types: Vec<_> = rewritten
            .release
            .columns
            .iter()
            .map(|c| schema.field(c.index).data_type().clone())
            .collect();
        // Decided before execution, from the release shape and the catalogue only.
        let padding =
            disclosure::padding(ctx, &rewritten.release, catalog, &types, limits.max_rows).await;
        let batches = collect(ctx, rewritten.plan, limits).await?;
        let result = disclosure::check(
            &batches,
            &rewritten.release,
            &ruleset,
            limits.max_rows,
            &types,
            &padding,
        )?;
        Ok::<_, QueryError>(QueryOutcome {
            result,
            plan_fingerprint,
            tables,
            duration: started.elapsed(),
        })
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(QueryError::ResourceLimit {
            message: format!(
                "the query ran longer than {} s and was cancelled; narrow it / クエリが {} 秒を超えたため中止しました。条件を絞ってください",
                limits.timeout.as_secs(),
                limits.timeout.as_secs()
            ),
        }),
    }
}

/// Execute under the session's memory pool and the caller's limits. Rows can still be
/// dropped by the disclosure check, so the raw-row cap allows some slack; the released row
/// cap is enforced exactly by the check. Execution errors are tallied (see below).
async fn collect(
    ctx: &SessionContext,
    plan: LogicalPlan,
    limits: &Limits,
) -> Result<Vec<RecordBatch>, QueryError> {
    let raw = Limits {
        max_rows: limits
            .max_rows
            .saturating_mul(4)
            .max(limits.max_rows.saturating_add(1000)),
        ..limits.clone()
    };
    let result = crate::engine::exec::collect_limited(ctx, plan, &raw).await;
    if let Err(QueryError::Execution { .. }) = &result {
        EXECUTION_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Execution errors since start. Repeated errors are an oracle (each one says "some
/// row made this fail"), so the audit stage alerts on them; this is the process-wide tally.
static EXECUTION_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Number of `execution_error` outcomes since the process started.
pub fn execution_errors() -> u64 {
    EXECUTION_ERRORS.load(Ordering::Relaxed)
}

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
