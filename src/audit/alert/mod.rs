//! Audit stage, alerts: the watch rules of `audit/*.toml` (one rule per file), loaded at
//! start and evaluated as each audit event is appended.
//!
//! Guarantees:
//! - a rule file that does not parse, names an unknown kind, or carries a bad or unknown
//!   parameter stops kura at start with an error naming the file and the field;
//! - evaluation runs inside the transaction of the event that triggered it, under a
//!   SAVEPOINT: a raised alert (its `alerts` row and its own chained `alert.raise` audit
//!   event) commits together with that event or not at all, so an alert is never lost
//!   once its event committed; an evaluation that fails (a database error while reading
//!   the window) is rolled back to the savepoint and logged, and the audited action goes
//!   on — a rule can never make an audited action fail;
//! - rules read only a short window of the log through indexes (`audit_by_actor`) and
//!   never evaluate their own `alert.*` events.

mod budget;
mod chain;
mod differencing;
mod hours;
mod logins;
mod near_identical;
mod refusals;
mod rules;
pub mod webhook;
mod window;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::AnyConnection;

pub use chain::broken_chain_alert;
pub use rules::{AlertRules, Bilingual, Rule, RuleError, Severity, parse as parse_rule};

use super::{AuditEvent, AuditKey, AuditRecord};

/// What one rule found about one event: the alert to raise unless an equal one
/// (`dedupe`) was raised since `since`.
#[derive(Debug, Clone)]
pub struct Finding {
    pub user: Option<String>,
    pub application: Option<String>,
    /// The audit entries that raised it (the triggering one included).
    pub events: Vec<i64>,
    /// What was seen, appended to the rule's explanation (ja, en).
    pub detail: Bilingual,
    pub dedupe: String,
    pub since: Option<DateTime<Utc>>,
}

/// What a check returns: a finding, nothing, or the database error that stopped it.
pub type Checked = Result<Option<Finding>, sqlx::Error>;

/// The event being appended, as the rules see it.
pub struct Trigger<'a> {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: &'a AuditEvent,
}

/// Evaluate every rule against the just-appended `record` of `event`, inside the caller's
/// transaction, and write the alerts raised. Never fails: see the module guarantees.
pub async fn after_append(
    rules: &AlertRules,
    conn: &mut AnyConnection,
    key: &AuditKey,
    record: &AuditRecord,
    event: &AuditEvent,
) {
    if rules.is_empty() || event.action.starts_with("alert.") {
        return;
    }
    let trigger = Trigger {
        seq: record.seq,
        at: record.at,
        event,
    };
    if let Err(e) = sqlx::Executor::execute(&mut *conn, "SAVEPOINT alert_eval").await {
        tracing::error!(error = %e, seq = record.seq, "alert evaluation could not start");
        return;
    }
    let outcome = evaluate(rules, conn, key, &trigger).await;
    let end = match &outcome {
        Ok(_) => "RELEASE alert_eval",
        Err(_) => "ROLLBACK TO alert_eval",
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %e, seq = record.seq, "alert evaluation failed; event kept, no alert");
    }
    let _ = sqlx::Executor::execute(&mut *conn, end).await;
    if outcome.is_err() {
        let _ = sqlx::Executor::execute(&mut *conn, "RELEASE alert_eval").await;
    }
}

async fn evaluate(
    rules: &AlertRules,
    conn: &mut AnyConnection,
    key: &AuditKey,
    t: &Trigger<'_>,
) -> Result<usize, super::AuditError> {
    let mut raised = 0;
    for rule in rules.iter() {
        let Some(found) = rule.check(conn, t).await? else {
            continue;
        };
        if window::already_raised(conn, &rule.id, &found.dedupe, found.since).await? {
            continue;
        }
        raise(conn, key, rule, found).await?;
        raised += 1;
    }
    Ok(raised)
}

/// Write one alert: its row and its chained `alert.raise` event, in the caller's
/// transaction. Returns the alert id.
pub async fn raise(
    conn: &mut AnyConnection,
    key: &AuditKey,
    rule: &Rule,
    found: Finding,
) -> Result<String, super::AuditError> {
    let id = format!(
        "al_{}",
        crate::auth::random_hex(8).map_err(|e| sqlx::Error::Protocol(e.to_string()))?
    );
    let message = Bilingual {
        ja: format!("{} — {}", rule.explanation.ja, found.detail.ja),
        en: format!("{} — {}", rule.explanation.en, found.detail.en),
    };
    let ev = AuditEvent::ok(
        "system",
        "alert.raise",
        found.application.as_deref(),
        json!({
            "alert_id": id,
            "rule": rule.id,
            "severity": rule.severity.as_str(),
            "user": found.user,
            "events": found.events,
            "message": {"ja": message.ja, "en": message.en},
        }),
    )
    .with_reference(&id);
    let record = super::append(conn, key, &ev).await?;
    sqlx::query(
        "INSERT INTO alerts (id, seq, rule, severity, at, username, application, events, message_ja, message_en, status, dedupe)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', $11)",
    )
    .bind(&id)
    .bind(record.seq)
    .bind(&rule.id)
    .bind(rule.severity.as_str())
    .bind(window::ts(record.at))
    .bind(&found.user)
    .bind(&found.application)
    .bind(serde_json::to_string(&found.events)?)
    .bind(&message.ja)
    .bind(&message.en)
    .bind(&found.dedupe)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}
