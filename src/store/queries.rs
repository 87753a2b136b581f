//! Store, query history: one row per query attempt, written with everything the attempt
//! settles.
//!
//! Guarantees: the history row, the settlement of the query's ε reservation, the DP
//! release cache entry, the release-ledger sets of a suppression answer, the per-user
//! execution-error counter and the audit event commit together or not at all; a caller whose write failed must not release the answer.

use sqlx::{AnyConnection, Row};

use super::model::QueryRecord;
use super::{Result, Store, exec, parse_ts, ts};
use super::{budget, ledger};
use crate::audit::{AuditEvent, AuditRecord};

/// Everything recorded about one query attempt, written in one transaction.
#[derive(Debug, Clone)]
pub struct QueryWrite {
    pub record: QueryRecord,
    /// How to settle this query's ε reservation (DP queries only).
    pub ledger: Option<budget::Settle>,
    /// A fresh DP answer to store for re-release.
    pub cache: Option<budget::CacheWrite>,
    /// Whether this attempt is an execution error (counted per user).
    pub execution_error: bool,
    /// The contributor sets the answer releases, for the release ledger (suppression
    /// mode answers only).
    pub released: Option<ledger::LedgerWrite>,
}

/// Write the history row of one attempt (inside the caller's transaction).
async fn insert_query(conn: &mut AnyConnection, r: &QueryRecord) -> Result<u64> {
    let insert = sqlx::query(
        "INSERT INTO queries (query_id, application_id, username, at, sql, outcome, code, duration_ms, epsilon_spent, suppressed_cells, dropped_rows)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&r.query_id)
    .bind(&r.application_id)
    .bind(&r.username)
    .bind(ts(r.at))
    .bind(&r.sql)
    .bind(&r.outcome)
    .bind(&r.code)
    .bind(r.duration_ms)
    .bind(r.epsilon_spent)
    .bind(r.suppressed_cells)
    .bind(r.dropped_rows)
    // Not a cached statement: sqlx 0.8's `Any` driver sends a missing f64 as a NULL
    // *float4*, and PostgreSQL would keep that type for the prepared statement and refuse
    // the next row's float8 ("incorrect binary data format in bind parameter 9").
    .persistent(false);
    exec(conn, insert).await
}

impl Store {
    /// Record one query attempt: history row, settlement of its ε reservation, the DP
    /// release cache entry, per-user error counter and the audit event, all in one
    /// transaction. If this fails, the caller must not
    /// release the result (no audit, no answer).
    pub async fn record_query(&self, q: &QueryWrite, event: &AuditEvent) -> Result<AuditRecord> {
        let ((), record) = self
            .audited(event, async |tx| {
                insert_query(tx, &q.record).await?;
                if let Some(settle) = &q.ledger {
                    budget::settle(tx, settle).await?;
                }
                if let Some(c) = &q.cache {
                    budget::insert_cache(tx, c).await?;
                }
                if let Some(w) = &q.released {
                    ledger::insert(tx, w).await?;
                }
                if q.execution_error {
                    let count = sqlx::query(
                        "UPDATE users SET execution_errors = execution_errors + 1 WHERE username = $1",
                    )
                    .bind(&q.record.username);
                    exec(tx, count).await?;
                }
                Ok(())
            })
            .await?;
        Ok(record)
    }

    pub async fn queries(
        &self,
        application: Option<&str>,
        username: Option<&str>,
        limit: i64,
    ) -> Result<Vec<QueryRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM queries WHERE ($1 IS NULL OR application_id = $1) AND ($2 IS NULL OR username = $2)
             ORDER BY at DESC LIMIT $3",
        )
        .bind(application)
        .bind(username)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueryRecord {
                    query_id: r.try_get("query_id")?,
                    application_id: r.try_get("application_id")?,
                    username: r.try_get("username")?,
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    sql: r.try_get("sql")?,
                    outcome: r.try_get("outcome")?,
                    code: r.try_get("code")?,
                    duration_ms: r.try_get("duration_ms")?,
                    epsilon_spent: r.try_get("epsilon_spent")?,
                    suppressed_cells: r.try_get("suppressed_cells")?,
                    dropped_rows: r.try_get("dropped_rows")?,
                })
            })
            .collect()
    }
}
