//! Audit stage, alert windows: the few indexed reads the rules make over the recent log
//! (one actor's events of one action since a time) and the de-duplication of alerts.
//!
//! Guarantees: every read is bounded by actor and time and served by `audit_by_actor`, so
//! evaluation cost does not grow with the size of the log.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AnyConnection, Row};

/// RFC 3339 text as the audit log stores it.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One entry of a window.
pub struct Seen {
    pub seq: i64,
    pub outcome: String,
    pub code: Option<String>,
    pub event: Value,
}

/// The events of `actor` with `action` since `since` (inclusive), oldest first, at most
/// `cap` of the newest.
pub async fn recent(
    conn: &mut AnyConnection,
    actor: &str,
    action: &str,
    since: DateTime<Utc>,
    cap: u32,
) -> Result<Vec<Seen>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, outcome, code, event FROM audit_log
         WHERE actor = $1 AND action = $2 AND at >= $3 ORDER BY seq DESC LIMIT $4",
    )
    .bind(actor)
    .bind(action)
    .bind(ts(since))
    .bind(cap as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut seen = rows
        .iter()
        .map(|r| {
            let event: String = r.try_get("event")?;
            Ok(Seen {
                seq: r.try_get("seq")?,
                outcome: r.try_get("outcome")?,
                code: r.try_get("code")?,
                event: serde_json::from_str(&event).unwrap_or(Value::Null),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    seen.reverse();
    Ok(seen)
}

/// Whether an alert of `rule` with `dedupe` was raised since `since` (ever, if `None`).
pub async fn already_raised(
    conn: &mut AnyConnection,
    rule: &str,
    dedupe: &str,
    since: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM alerts WHERE rule = $1 AND dedupe = $2 AND ($3 IS NULL OR at >= $3) LIMIT 1",
    )
    .bind(rule)
    .bind(dedupe)
    .bind(since.map(ts))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

/// `minutes` before `at`.
pub fn before(at: DateTime<Utc>, minutes: u32) -> DateTime<Utc> {
    at - chrono::Duration::minutes(minutes as i64)
}
