//! Store, the seeds' part (issue 16): the facility binding of medical institutions'
//! accounts, approval and refusal notices issued with their decision, and the reads the
//! public transparency register is built from.
//!
//! Guarantees: binding an account to a facility revokes its sessions in the same audited
//! transaction (what it may see changed); a notice is issued in the same transaction as
//! the decision it notifies and both audit events, so there is no decision without its
//! notice and no notice without its decision; the register reads only control-plane
//! records (approvals, query counts, approved releases, publications), never patient rows.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::model::{Application, Approval, NamedUser, Person, Status};
use super::sessions::revoke_user_sessions;
use super::{Result, Store, StoreError, exec, now, parse_ts, ts};
use crate::audit::AuditEvent;

/// Which notice (seed 002 第2章6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// 承認通知書
    Approval,
    /// 不承認の通知（理由を付して）
    Refusal,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Approval => "approval",
            NoticeKind::Refusal => "refusal",
        }
    }
}

/// A notice as issued: everything it states is copied in at issue, so a later change
/// of the application never changes a notice already sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notice {
    /// `N-<year>-<nnnn>`, given at issue.
    pub id: String,
    pub application: String,
    pub kind: NoticeKind,
    pub issued_at: DateTime<Utc>,
    /// The date printed on the notice (Japan Standard Time).
    pub issued_on: NaiveDate,
    /// The reviewer who decided.
    pub issued_by: String,
    pub applicant: Person,
    pub research_group: String,
    pub title: String,
    pub diseases: Vec<i32>,
    pub named_users: Vec<NamedUser>,
    pub place_of_use: String,
    /// The terms granted (approval notices).
    pub approval: Option<Approval>,
    /// The reasons (refusal notices; required there).
    pub reason: Option<String>,
}

/// An approved release as the public register shows it: which and when, nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterRelease {
    pub id: String,
    pub application: String,
    pub requested_at: DateTime<Utc>,
}

/// Answered queries of one application in one hour (UTC), for the register's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryCount {
    pub application: String,
    /// `YYYY-MM-DDTHH` (UTC).
    pub hour: String,
    pub queries: i64,
}

impl Store {
    /// Bind `username` (a facility account) to facility `code`, or unbind it with
    /// `None`; its sessions end, since what it may see changed.
    pub async fn set_facility(
        &self,
        username: &str,
        code: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let event = AuditEvent::ok(
            actor,
            "user.facility",
            None,
            json!({"username": username, "facility": code}),
        );
        self.audited(&event, async |tx| {
            let set = sqlx::query("UPDATE users SET facility = $1 WHERE username = $2")
                .bind(code)
                .bind(username);
            if exec(tx, set).await? == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            revoke_user_sessions(tx, username).await
        })
        .await?;
        Ok(())
    }

    /// Save a decision (`Self::transition_with_extract`) and, when `notice` is given,
    /// issue it: the application's new state, its history entry, the extract of an
    /// approved scope (with its `extract.build` event), the decision's audit event, the
    /// notice (its id allocated here) and its `notice.issue` event, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_with_notice(
        &self,
        next: &Application,
        expect_updated_at: DateTime<Utc>,
        from: Status,
        action: &str,
        reason: Option<&str>,
        extract: Option<&super::extracts::ExtractWrite>,
        event: &AuditEvent,
        notice: Option<Notice>,
    ) -> Result<(Application, Option<Notice>)> {
        let issued = self
            .transaction(async |tx| {
                if let Some(x) = extract {
                    super::extracts::register(tx, &next.id, x).await?;
                    let built = super::extracts::build_event(&event.actor, &next.id, x);
                    self.audit(tx, &built).await?;
                }
                Self::save_transition(tx, next, expect_updated_at, from, action, reason, &event.actor)
                    .await?;
                self.audit(tx, event).await?;
                let Some(mut n) = notice else {
                    return Ok(None);
                };
                n.id = Self::next_notice_id(tx, n.issued_at).await?;
                let insert = sqlx::query(
                    "INSERT INTO notices (id, application_id, kind, issued_at, issued_by, content) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&n.id)
                .bind(&n.application)
                .bind(n.kind.as_str())
                .bind(ts(n.issued_at))
                .bind(&n.issued_by)
                .bind(serde_json::to_string(&n)?);
                exec(tx, insert).await?;
                let ev = AuditEvent::ok(
                    &n.issued_by,
                    "notice.issue",
                    Some(&n.application),
                    json!({"notice": n.id, "kind": n.kind.as_str()}),
                );
                self.audit(tx, &ev).await?;
                Ok(Some(n))
            })
            .await?;
        let app = self
            .application(&next.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(next.id.clone()))?;
        Ok((app, issued))
    }

    /// The next `N-<year>-<nnnn>`, inside the issuing transaction (its write lock keeps
    /// two issues from taking one number).
    async fn next_notice_id(conn: &mut AnyConnection, at: DateTime<Utc>) -> Result<String> {
        let year = at.format("%Y").to_string();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notices WHERE id LIKE $1")
            .bind(format!("N-{year}-%"))
            .fetch_one(&mut *conn)
            .await?;
        Ok(format!("N-{year}-{:04}", n + 1))
    }

    /// The notices of an application, oldest first.
    pub async fn notices(&self, application: &str) -> Result<Vec<Notice>> {
        let rows = sqlx::query(
            "SELECT content FROM notices WHERE application_id = $1 ORDER BY issued_at, id",
        )
        .bind(application)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("content")?)?))
            .collect()
    }

    /// Answered queries per application and UTC hour (the register converts hours to
    /// fiscal years in Japan Standard Time).
    pub async fn answered_query_counts(&self) -> Result<Vec<QueryCount>> {
        let rows = sqlx::query(
            "SELECT application_id, substr(at, 1, 13) AS hour, COUNT(*) AS n FROM queries
             WHERE outcome = 'ok' GROUP BY application_id, substr(at, 1, 13)",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueryCount {
                    application: r.try_get("application_id")?,
                    hour: r.try_get("hour")?,
                    queries: r.try_get("n")?,
                })
            })
            .collect()
    }

    // ---- releases (the airlock's records): only approved ones are read here. The
    // register shows a release once its status is `approved`, whatever else the airlock
    // keeps about it.

    /// Approved releases of every application, oldest first.
    pub async fn approved_releases(&self) -> Result<Vec<RegisterRelease>> {
        let rows = sqlx::query(
            "SELECT id, application_id, created_at FROM releases WHERE status = 'approved' ORDER BY created_at, id",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegisterRelease {
                    id: r.try_get("id")?,
                    application: r.try_get("application_id")?,
                    requested_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect()
    }
}

/// The current time, for callers building a notice before it is issued.
pub fn issue_time() -> DateTime<Utc> {
    now()
}
