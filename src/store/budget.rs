//! Store, DP part: the per-application ε ledger and the release cache.
//!
//! Guarantees:
//! - ε is reserved before a DP query runs, in one `BEGIN IMMEDIATE` transaction that
//!   checks `spent + reserved + ε ≤ budget`, so concurrent queries can never overspend;
//! - one ledger row per query id (its primary key), so a spend is never counted twice;
//! - a reservation becomes `spent` in the same transaction as the query's history row,
//!   cache entry and audit event ([`super::Store::record_query`]), also when the run failed
//!   after the data plane was asked to run it (data may have been read; also audited
//!   there); `released` appears only in ledgers written before issue 11 (and in the
//!   control of its attack test) — no query path of today gives ε back;
//! - reservations that can no longer settle — found when the store opens (a crash between
//!   reserve and commit) or older than the query timeout — are converted to `spent`, each
//!   with an audit event: a crash may over-charge a budget, never under-charge it;
//! - a stored DP answer is keyed by (application, release key, extract id, ε, bounds), so
//!   only the identical question on the same extract version re-releases it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Result, Store, exec, now, parse_ts, ts};
use crate::audit::AuditEvent;
use crate::privacy::result::{DpBounds, ReleasedResult};

/// Ledger states of one DP query's ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    Reserved,
    Spent,
    Released,
}

impl LedgerState {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerState::Reserved => "reserved",
            LedgerState::Spent => "spent",
            LedgerState::Released => "released",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserved" => LedgerState::Reserved,
            "spent" => LedgerState::Spent,
            "released" => LedgerState::Released,
            _ => return None,
        })
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub query_id: String,
    pub application_id: String,
    pub fiscal_year: i32,
    pub epsilon: f64,
    pub state: LedgerState,
    pub reserved_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// A reservation to make before running a DP query.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub query_id: String,
    pub application_id: String,
    pub fiscal_year: i32,
    pub epsilon: f64,
}

/// Budget figures of one application and fiscal year.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetUse {
    pub budget: f64,
    /// Spent plus reserved.
    pub used: f64,
}

impl BudgetUse {
    pub fn remaining(&self) -> f64 {
        (self.budget - self.used).max(0.0)
    }
}

/// How a reservation ends, written with the query's history row.
#[derive(Debug, Clone)]
pub struct Settle {
    pub query_id: String,
    /// `Spent` (the data plane ran the query, answered or not); `Released` only in old
    /// ledgers and attack-test controls.
    pub state: LedgerState,
}

/// Cache identity of a DP answer.
#[derive(Debug, Clone)]
pub struct CacheKey {
    pub application_id: String,
    /// The data plane's release key (normalised plan and DP parameters).
    pub release_key: String,
    /// The extract version the answer was computed on.
    pub extract_id: String,
    pub epsilon: f64,
    pub bounds: DpBounds,
}

/// A fresh answer to store, written with the query's history row.
#[derive(Debug, Clone)]
pub struct CacheWrite {
    pub key: CacheKey,
    pub result: ReleasedResult,
    pub query_id: String,
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct CachedRelease {
    pub result: ReleasedResult,
    /// The query that first released (and paid for) it.
    pub query_id: String,
    pub created_at: DateTime<Utc>,
}

/// Tolerance of the budget comparison: ε values are decimals the researcher typed, and
/// 0.1 + 0.2 must fit a budget of 0.3.
const EPS_TOLERANCE: f64 = 1e-9;

async fn used(conn: &mut AnyConnection, application: &str, fiscal_year: i32) -> Result<f64> {
    let v: Option<f64> = sqlx::query_scalar(
        "SELECT SUM(epsilon) FROM budget_ledger
         WHERE application_id = $1 AND fiscal_year = $2 AND state IN ('reserved', 'spent')",
    )
    .bind(application)
    .bind(fiscal_year)
    .fetch_one(&mut *conn)
    .await?;
    Ok(v.unwrap_or(0.0))
}

/// Settle a reservation (inside the caller's transaction). A reservation already
/// converted to `spent` (timeout or restart) stays spent: settling never lowers a charge.
pub(super) async fn settle(conn: &mut AnyConnection, s: &Settle) -> Result<u64> {
    let settle = sqlx::query(
        "UPDATE budget_ledger SET state = $1, settled_at = $2 WHERE query_id = $3 AND state = 'reserved'",
    )
    .bind(s.state.as_str())
    .bind(ts(now()))
    .bind(&s.query_id);
    exec(conn, settle).await
}

/// Store a fresh answer (inside the caller's transaction). If an identical query raced
/// this one and stored first, the first answer stays the one re-released.
pub(super) async fn insert_cache(conn: &mut AnyConnection, c: &CacheWrite) -> Result<u64> {
    let insert = sqlx::query(
        "INSERT INTO dp_release_cache (application_id, release_key, extract_id, epsilon,
            max_groups_per_patient, max_rows_per_group, result, query_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(&c.key.application_id)
    .bind(&c.key.release_key)
    .bind(&c.key.extract_id)
    .bind(c.key.epsilon)
    .bind(c.key.bounds.max_groups_per_patient as i64)
    .bind(c.key.bounds.max_rows_per_group as i64)
    .bind(serde_json::to_string(&c.result)?)
    .bind(&c.query_id)
    .bind(ts(now()));
    exec(conn, insert).await
}

impl Store {
    /// ε used by an application in a fiscal year: spent plus reserved.
    pub async fn epsilon_spent(&self, id: &str, fiscal_year: i32) -> Result<f64> {
        let mut conn = self.pool.acquire().await?;
        used(&mut conn, id, fiscal_year).await
    }

    /// Reserve `r.epsilon` against `budget` atomically. `Ok(Ok(use))` is the use after the
    /// reservation; `Ok(Err(use))` means it does not fit and nothing was written. Stale
    /// reservations (older than `timeout`) are converted to spent in the same transaction.
    pub async fn reserve_epsilon(
        &self,
        r: &Reservation,
        budget: f64,
        timeout: Duration,
    ) -> Result<Result<BudgetUse, BudgetUse>> {
        self.transaction(async |tx| {
            let cutoff =
                now() - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
            self.convert_in(tx, Some(cutoff)).await?;
            let u = used(tx, &r.application_id, r.fiscal_year).await?;
            if !(r.epsilon.is_finite() && r.epsilon > 0.0) || u + r.epsilon > budget + EPS_TOLERANCE
            {
                // Commit any conversions (each carries its audit event); reserve nothing.
                return Ok(Err(BudgetUse { budget, used: u }));
            }
            let reserve = sqlx::query(
                "INSERT INTO budget_ledger (query_id, application_id, fiscal_year, epsilon, state, reserved_at)
             VALUES ($1, $2, $3, $4, 'reserved', $5)",
            )
            .bind(&r.query_id)
            .bind(&r.application_id)
            .bind(r.fiscal_year)
            .bind(r.epsilon)
            .bind(ts(now()));
            exec(tx, reserve).await?;
            Ok(Ok(BudgetUse {
                budget,
                used: u + r.epsilon,
            }))
        })
        .await
    }

    /// Convert reservations to spent: all of them (`None`, at start-up) or those reserved
    /// before `cutoff`. Each conversion is audited. Returns how many were converted.
    pub async fn convert_reservations(&self, cutoff: Option<DateTime<Utc>>) -> Result<usize> {
        self.transaction(async |tx| self.convert_in(tx, cutoff).await)
            .await
    }

    async fn convert_in(
        &self,
        conn: &mut AnyConnection,
        cutoff: Option<DateTime<Utc>>,
    ) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT query_id, application_id, fiscal_year, epsilon, reserved_at FROM budget_ledger
             WHERE state = 'reserved' AND ($1 IS NULL OR reserved_at < $1) ORDER BY reserved_at",
        )
        .bind(cutoff.map(ts))
        .fetch_all(&mut *conn)
        .await?;
        let reason = if cutoff.is_some() {
            "older than the query timeout"
        } else {
            "found at start-up"
        };
        for r in &rows {
            self.convert_one(conn, r, reason).await?;
        }
        Ok(rows.len())
    }

    /// Turn one reservation row into `spent` and audit the conversion with `reason`.
    async fn convert_one(&self, conn: &mut AnyConnection, r: &AnyRow, reason: &str) -> Result<()> {
        let query_id: String = r.try_get("query_id")?;
        let application: String = r.try_get("application_id")?;
        let spend = sqlx::query(
            "UPDATE budget_ledger SET state = 'spent', settled_at = $1 WHERE query_id = $2 AND state = 'reserved'",
        )
        .bind(ts(now()))
        .bind(&query_id);
        exec(conn, spend).await?;
        let event = AuditEvent::ok(
            "system",
            "budget.reservation_spent",
            Some(&application),
            json!({
                "query_id": query_id,
                "fiscal_year": r.try_get::<i32, _>("fiscal_year")?,
                "epsilon": r.try_get::<f64, _>("epsilon")?,
                "reserved_at": r.try_get::<String, _>("reserved_at")?,
                "reason": reason,
            }),
        )
        .with_reference(&query_id);
        self.audit(conn, &event).await?;
        Ok(())
    }

    /// The ledger of an application (all fiscal years), oldest first.
    pub async fn ledger(&self, application: &str) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM budget_ledger WHERE application_id = $1 ORDER BY reserved_at, query_id",
        )
        .bind(application)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(LedgerEntry {
                    query_id: r.try_get("query_id")?,
                    application_id: r.try_get("application_id")?,
                    fiscal_year: r.try_get("fiscal_year")?,
                    epsilon: r.try_get("epsilon")?,
                    state: LedgerState::parse(&state).ok_or_else(|| {
                        super::StoreError::Db(sqlx::Error::Decode(
                            format!("unknown ledger state `{state}`").into(),
                        ))
                    })?,
                    reserved_at: parse_ts(&r.try_get::<String, _>("reserved_at")?)?,
                    settled_at: super::opt_ts(r.try_get("settled_at")?)?,
                })
            })
            .collect()
    }

    /// The stored answer of an identical DP query on the same extract version, if any.
    pub async fn dp_cached(&self, k: &CacheKey) -> Result<Option<CachedRelease>> {
        let row = sqlx::query(
            "SELECT result, query_id, created_at FROM dp_release_cache
             WHERE application_id = $1 AND release_key = $2 AND extract_id = $3 AND epsilon = $4
               AND max_groups_per_patient = $5 AND max_rows_per_group = $6",
        )
        .bind(&k.application_id)
        .bind(&k.release_key)
        .bind(&k.extract_id)
        .bind(k.epsilon)
        .bind(k.bounds.max_groups_per_patient as i64)
        .bind(k.bounds.max_rows_per_group as i64)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.map(|r| -> Result<CachedRelease> {
            Ok(CachedRelease {
                result: serde_json::from_str(&r.try_get::<String, _>("result")?)?,
                query_id: r.try_get("query_id")?,
                created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueryWrite;
    use crate::store::model::QueryRecord;
    use crate::store::tests::{events, key, store};

    fn res(q: &str, eps: f64) -> Reservation {
        Reservation {
            query_id: q.into(),
            application_id: "A".into(),
            fiscal_year: 2026,
            epsilon: eps,
        }
    }

    fn write(q: &str, state: LedgerState) -> QueryWrite {
        QueryWrite {
            record: QueryRecord {
                query_id: q.into(),
                application_id: "A".into(),
                username: "u".into(),
                at: Utc::now(),
                sql: "SELECT 1".into(),
                outcome: "ok".into(),
                code: None,
                duration_ms: None,
                epsilon_spent: None,
                suppressed_cells: None,
                dropped_rows: None,
            },
            ledger: Some(Settle {
                query_id: q.into(),
                state,
            }),
            cache: None,
            execution_error: false,
            released: None,
        }
    }

    #[tokio::test]
    async fn reserve_checks_the_budget_and_settles_once() {
        let (_d, s) = store().await;
        let t = Duration::from_secs(60);
        assert!(
            s.reserve_epsilon(&res("q1", 0.4), 1.0, t)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(
            s.reserve_epsilon(&res("q2", 0.4), 1.0, t)
                .await
                .unwrap()
                .is_ok()
        );
        // 0.8 used (both reserved): 0.3 does not fit, 0.2 does.
        let refused = s.reserve_epsilon(&res("q3", 0.3), 1.0, t).await.unwrap();
        assert_eq!(refused.unwrap_err().used, 0.8);
        assert!((s.epsilon_spent("A", 2026).await.unwrap() - 0.8).abs() < 1e-12);
        // The same query id cannot be reserved twice.
        assert!(s.reserve_epsilon(&res("q1", 0.1), 1.0, t).await.is_err());
        let ev = AuditEvent::ok("u", "query.run", Some("A"), json!({}));
        s.record_query(&write("q1", LedgerState::Spent), &ev)
            .await
            .unwrap();
        s.record_query(&write("q2", LedgerState::Released), &ev)
            .await
            .unwrap();
        assert!((s.epsilon_spent("A", 2026).await.unwrap() - 0.4).abs() < 1e-12);
        // Other fiscal years are separate budgets.
        assert_eq!(s.epsilon_spent("A", 2027).await.unwrap(), 0.0);
        let l = s.ledger("A").await.unwrap();
        let states: Vec<_> = l.iter().map(|e| (e.query_id.as_str(), e.state)).collect();
        assert_eq!(
            states,
            vec![("q1", LedgerState::Spent), ("q2", LedgerState::Released)]
        );
    }

    #[tokio::test]
    async fn reservations_left_behind_become_spent_on_reopen_and_are_audited() {
        let (dir, s) = store().await;
        s.reserve_epsilon(&res("q1", 0.25), 1.0, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        s.close().await;
        let s = crate::store::testing::open(dir.path(), key()).await;
        let l = s.ledger("A").await.unwrap();
        assert_eq!(l[0].state, LedgerState::Spent);
        assert!((s.epsilon_spent("A", 2026).await.unwrap() - 0.25).abs() < 1e-12);
        // A late release of the converted reservation does not undo the charge.
        let ev = AuditEvent::ok("u", "query.run", Some("A"), json!({}));
        s.record_query(&write("q1", LedgerState::Released), &ev)
            .await
            .unwrap();
        assert!((s.epsilon_spent("A", 2026).await.unwrap() - 0.25).abs() < 1e-12);
        let events = events(&s, "budget.reservation_spent").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event["detail"]["query_id"], "q1");
        assert!(s.verify_audit().await.unwrap().ok);
    }

    #[tokio::test]
    async fn stale_reservations_are_converted_when_reserving() {
        let (_d, s) = store().await;
        s.reserve_epsilon(&res("q1", 0.5), 1.0, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.reserve_epsilon(&res("q2", 0.1), 1.0, Duration::from_millis(5))
            .await
            .unwrap()
            .unwrap();
        let l = s.ledger("A").await.unwrap();
        assert_eq!(l[0].state, LedgerState::Spent);
        assert_eq!(l[1].state, LedgerState::Reserved);
    }
}
