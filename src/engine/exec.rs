//! Engine stage, execution: runs a (guarded, rewritten) logical plan under the time
//! limit and the output row cap, streaming, so that a runaway query is stopped early.
//!
//! Guarantees: the whole of planning and execution runs inside
//! `tokio::time::timeout(limits.timeout)`; on expiry the stream is dropped, which
//! cancels DataFusion's tasks. Output is consumed batch by batch and the query stops as
//! soon as more than `limits.max_rows` rows arrive. Memory exhaustion from the session's
//! pool becomes `resource_limit`. Every other engine error becomes
//! `QueryError::Execution`, whose detail (which can contain data values) is for the audit
//! log only. After any of these the session stays usable.

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::engine::Limits;
use crate::query::QueryError;

/// Map an engine error: memory exhaustion (however deeply wrapped) is a resource
/// limit; anything else is an execution error with audit-only detail.
pub fn map_engine_error(err: DataFusionError, limits: &Limits) -> QueryError {
    if matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)) {
        return QueryError::ResourceLimit {
            message: format!(
                "the query needs more than the memory limit of {} MiB; aggregate earlier, group by fewer keys or avoid cross joins / メモリ上限（{} MiB）を超えました。集計を先に行う、グループ化のキーを減らす、直積結合を避けるなどしてください",
                limits.memory_bytes >> 20,
                limits.memory_bytes >> 20
            ),
        };
    }
    QueryError::execution(err)
}

/// Execute `plan` on `ctx` and collect its output within `limits`.
pub async fn collect_limited(
    ctx: &SessionContext,
    plan: LogicalPlan,
    limits: &Limits,
) -> Result<Vec<RecordBatch>, QueryError> {
    let run = async {
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| map_engine_error(e, limits))?;
        let mut stream = df
            .execute_stream()
            .await
            .map_err(|e| map_engine_error(e, limits))?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| map_engine_error(e, limits))?;
            rows += batch.num_rows();
            if rows > limits.max_rows {
                // Returning drops the stream, which cancels the rest of the query.
                return Err(QueryError::ResourceLimit {
                    message: format!(
                        "the result has more than {} rows; aggregate further or add filters / 結果が {} 行を超えました。さらに集計するか条件を加えてください",
                        limits.max_rows, limits.max_rows
                    ),
                });
            }
            batches.push(batch);
        }
        Ok(batches)
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(QueryError::ResourceLimit {
            message: format!(
                "the query ran longer than the time limit of {} s and was cancelled; narrow it with filters or aggregate earlier / 実行時間の上限（{} 秒）を超えたため中止しました。条件を絞るか、先に集計してください",
                limits.timeout.as_secs_f64(),
                limits.timeout.as_secs_f64()
            ),
        }),
    }
}

/// Bound planning and execution of a whole query by `limits.timeout`; dropping the future
/// on expiry cancels the query.
pub async fn within_timeout<T>(
    limits: &Limits,
    work: impl Future<Output = Result<T, QueryError>>,
) -> Result<T, QueryError> {
    tokio::time::timeout(limits.timeout, work)
        .await
        .unwrap_or_else(|_| {
            let s = limits.timeout.as_secs();
            Err(QueryError::ResourceLimit {
                message: format!(
                    "the query ran longer than {s} s and was cancelled; narrow it / クエリが {s} 秒を超えたため中止しました。条件を絞ってください"
                ),
            })
        })
}
