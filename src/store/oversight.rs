//! Store, oversight part (issue 13 §2 §4): audit alerts (listing, acknowledgement,
//! webhook delivery state), the start-up chain check, usage reports filed by applicants,
//! publication reports, and the ordered read of the audit log that reports are built from.
//!
//! Guarantees: every change here (acknowledging an alert, marking it delivered, filing a
//! report, recording a publication) commits with its audit event or not at all; an alert
//! is acknowledged once; a report is filed once per application and fiscal year.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Result, Store, StoreError, exec, now, opt_ts, parse_ts, record_of, ts};
use crate::audit::alert::{self, AlertRules, Bilingual};
use crate::audit::{AuditEvent, AuditRecord, Verification};

/// An acknowledgement of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub by: String,
    pub at: DateTime<Utc>,
    pub comment: String,
}

/// An alert as the auditor's inbox lists it (`shared/API.md` "Alerts").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub at: DateTime<Utc>,
    pub user: Option<String>,
    pub application: Option<String>,
    /// Audit `seq` of the events that raised it.
    pub events: Vec<i64>,
    pub message: Bilingual,
    /// `open` or `acknowledged`.
    pub status: String,
    /// Audit `seq` of the alert's own `alert.raise` event.
    pub seq: i64,
    pub acknowledged: Option<Ack>,
}

/// A usage report filed by the applicant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Filing {
    pub application: String,
    pub fiscal_year: i32,
    pub filed_by: String,
    pub filed_at: DateTime<Utc>,
    /// Head of the verified audit chain the report was built from.
    pub audit_head: String,
    #[schema(value_type = Object)]
    pub report: Value,
}

/// A publication report (seed 002 様式2 item 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Publication {
    pub id: i64,
    pub application: String,
    pub citation: String,
    pub published_on: NaiveDate,
    /// Release ids the publication used.
    pub releases: Vec<String>,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

fn alert_of(r: &AnyRow) -> Result<Alert> {
    let ack_at = opt_ts(r.try_get("ack_at")?)?;
    let acknowledged = match ack_at {
        Some(at) => Some(Ack {
            by: r.try_get("ack_by")?,
            at,
            comment: r.try_get("ack_comment")?,
        }),
        None => None,
    };
    Ok(Alert {
        id: r.try_get("id")?,
        rule: r.try_get("rule")?,
        severity: r.try_get("severity")?,
        at: parse_ts(&r.try_get::<String, _>("at")?)?,
        user: r.try_get("username")?,
        application: r.try_get("application")?,
        events: serde_json::from_str(&r.try_get::<String, _>("events")?)?,
        message: Bilingual {
            ja: r.try_get("message_ja")?,
            en: r.try_get("message_en")?,
        },
        status: r.try_get("status")?,
        seq: r.try_get("seq")?,
        acknowledged,
    })
}

impl Store {
    /// This store with `rules` evaluated on every appended event.
    pub fn with_alerts(mut self, rules: Arc<AlertRules>) -> Self {
        self.alerts = rules;
        self
    }

    /// Verify the chain (at start-up) and, when it is broken, raise the `broken_chain`
    /// alert. Returns the verification and the alert id.
    pub async fn check_chain_at_start(&self) -> Result<(Verification, Option<String>)> {
        self.check_chain_at_start_against(&[]).await
    }

    /// [`Self::check_chain_at_start`], also against the signed checkpoints of the head.
    pub async fn check_chain_at_start_against(
        &self,
        checkpoints: &[crate::audit::checkpoint::Checkpoint],
    ) -> Result<(Verification, Option<String>)> {
        let v = self.verify_audit_against(checkpoints).await?;
        if v.ok {
            return Ok((v, None));
        }
        let rules = self.alerts.clone();
        let key = self.key.clone();
        let id = self
            .transaction(async |tx| Ok(alert::broken_chain_alert(&rules, tx, &key, &v).await?))
            .await?;
        Ok((v, id))
    }

    /// Alerts, newest first, optionally of one status.
    pub async fn alerts(&self, status: Option<&str>) -> Result<Vec<Alert>> {
        let rows = sqlx::query(
            "SELECT * FROM alerts WHERE ($1 IS NULL OR status = $1) ORDER BY seq DESC LIMIT 1000",
        )
        .bind(status)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(alert_of).collect()
    }

    /// One alert.
    pub async fn alert(&self, id: &str) -> Result<Option<Alert>> {
        let row = sqlx::query("SELECT * FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(alert_of).transpose()
    }

    /// Acknowledge an open alert with a comment (audited `alert.acknowledge`).
    pub async fn acknowledge_alert(&self, id: &str, by: &str, comment: &str) -> Result<Alert> {
        let ev = AuditEvent::ok(
            by,
            "alert.acknowledge",
            None,
            json!({"alert_id": id, "comment": comment}),
        )
        .with_reference(id);
        self.audited(&ev, async |tx| {
            let update = sqlx::query(
                "UPDATE alerts SET status = 'acknowledged', ack_by = $1, ack_at = $2, ack_comment = $3
                 WHERE id = $4 AND status = 'open'",
            )
            .bind(by)
            .bind(ts(now()))
            .bind(comment)
            .bind(id);
            if exec(tx, update).await? == 0 {
                return Err(StoreError::Conflict(format!("alert {id} is not open")));
            }
            Ok(())
        })
        .await?;
        self.alert(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("alert {id}")))
    }

    /// Alerts not yet delivered to the webhook, oldest first.
    pub async fn undelivered_alerts(&self, limit: u32) -> Result<Vec<Alert>> {
        let rows =
            sqlx::query("SELECT * FROM alerts WHERE notified_at IS NULL ORDER BY seq LIMIT $1")
                .bind(limit as i64)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        rows.iter().map(alert_of).collect()
    }

    /// Mark an alert delivered to the webhook (audited `alert.notified`).
    pub async fn mark_alert_delivered(&self, id: &str) -> Result<()> {
        let ev = AuditEvent::ok("system", "alert.notified", None, json!({"alert_id": id}))
            .with_reference(id);
        self.audited(&ev, async |tx| {
            let update = sqlx::query("UPDATE alerts SET notified_at = $1 WHERE id = $2")
                .bind(ts(now()))
                .bind(id);
            exec(tx, update).await
        })
        .await?;
        Ok(())
    }

    /// Every audit entry with `from <= at < to`, oldest first (reports).
    pub async fn audit_range(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, event, prev, mac FROM audit_log WHERE at >= $1 AND at < $2 ORDER BY seq",
        )
        .bind(ts(from))
        .bind(ts(to))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// File a usage report (audited `report.usage_file`); once per application and year.
    pub async fn file_usage_report(&self, f: &Filing) -> Result<Filing> {
        let ev = AuditEvent::ok(
            &f.filed_by,
            "report.usage_file",
            Some(&f.application),
            json!({"fiscal_year": f.fiscal_year, "audit_head": f.audit_head}),
        );
        self.audited(&ev, async |tx| {
            let insert = sqlx::query(
                "INSERT INTO usage_reports (application_id, fiscal_year, filed_by, filed_at, audit_head, report)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&f.application)
            .bind(f.fiscal_year)
            .bind(&f.filed_by)
            .bind(ts(f.filed_at))
            .bind(&f.audit_head)
            .bind(serde_json::to_string(&f.report)?);
            if exec(tx, insert).await? == 0 {
                return Err(StoreError::Conflict(format!(
                    "the usage report of {} for FY{} is already filed",
                    f.application, f.fiscal_year
                )));
            }
            Ok(())
        })
        .await?;
        Ok(f.clone())
    }

    /// Filed usage reports, of one application or all, newest first.
    pub async fn usage_filings(&self, application: Option<&str>) -> Result<Vec<Filing>> {
        let rows = sqlx::query(
            "SELECT * FROM usage_reports WHERE ($1 IS NULL OR application_id = $1) ORDER BY filed_at DESC",
        )
        .bind(application)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Filing {
                    application: r.try_get("application_id")?,
                    fiscal_year: r.try_get("fiscal_year")?,
                    filed_by: r.try_get("filed_by")?,
                    filed_at: parse_ts(&r.try_get::<String, _>("filed_at")?)?,
                    audit_head: r.try_get("audit_head")?,
                    report: serde_json::from_str(&r.try_get::<String, _>("report")?)?,
                })
            })
            .collect()
    }

    /// Record a publication (audited `publication.record`).
    pub async fn add_publication(
        &self,
        application: &str,
        by: &str,
        citation: &str,
        published_on: NaiveDate,
        releases: &[String],
    ) -> Result<Publication> {
        let at = now();
        let ev = AuditEvent::ok(
            by,
            "publication.record",
            Some(application),
            json!({"citation": citation, "published_on": published_on, "releases": releases}),
        );
        let (id, _) = self
            .audited(&ev, async |tx| {
                let insert = sqlx::query(
                    "INSERT INTO publications (application_id, citation, published_on, releases, recorded_by, recorded_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(application)
                .bind(citation)
                .bind(published_on.to_string())
                .bind(serde_json::to_string(releases)?)
                .bind(by)
                .bind(ts(at));
                Ok(insert.fetch_one(&mut *tx).await?.try_get::<i64, _>("id")?)
            })
            .await?;
        Ok(Publication {
            id,
            application: application.into(),
            citation: citation.into(),
            published_on,
            releases: releases.to_vec(),
            recorded_by: by.into(),
            recorded_at: at,
        })
    }

    /// The publications of an application, oldest first.
    pub async fn publications(&self, application: &str) -> Result<Vec<Publication>> {
        let rows = sqlx::query("SELECT * FROM publications WHERE application_id = $1 ORDER BY id")
            .bind(application)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter()
            .map(|r| {
                let day: String = r.try_get("published_on")?;
                Ok(Publication {
                    id: r.try_get("id")?,
                    application: r.try_get("application_id")?,
                    citation: r.try_get("citation")?,
                    published_on: day
                        .parse()
                        .map_err(|e| StoreError::Db(sqlx::Error::Decode(Box::new(e))))?,
                    releases: serde_json::from_str(&r.try_get::<String, _>("releases")?)?,
                    recorded_by: r.try_get("recorded_by")?,
                    recorded_at: parse_ts(&r.try_get::<String, _>("recorded_at")?)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::store;

    #[tokio::test]
    async fn an_alert_commits_with_its_event_and_is_chained() {
        let (_d, s) = store().await;
        let rules = AlertRules::embedded().unwrap();
        let s = s.with_alerts(Arc::new(rules));
        let ev = AuditEvent::denied(
            "mallory",
            "session.login",
            None,
            "invalid_credentials",
            json!({"locked": true}),
        );
        let rec = s.record(&ev).await.unwrap();
        let open = s.alerts(Some("open")).await.unwrap();
        let lock = open
            .iter()
            .find(|a| a.rule == "lockout")
            .expect("lockout alert");
        assert_eq!(lock.events, vec![rec.seq]);
        assert_eq!(
            lock.seq,
            rec.seq + 1,
            "the alert.raise event follows its trigger"
        );
        assert!(s.verify_audit().await.unwrap().ok);
        let acked = s
            .acknowledge_alert(&lock.id, "auditor1", "checked")
            .await
            .unwrap();
        assert_eq!(acked.status, "acknowledged");
        assert!(matches!(
            s.acknowledge_alert(&lock.id, "auditor1", "again").await,
            Err(StoreError::Conflict(_))
        ));
    }
}
