//! Store, applications: drafts, workflow transitions with their history, pledges
//! (form 2) and reviewer recommendations.
//!
//! Guarantees: every change of an application writes its history entry and audit event
//! in the same transaction; a transition saves only over the state it was decided on
//! (optimistic check on `updated_at`), so of two reviewers deciding at once one loses
//! with a conflict instead of overwriting the other.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::model::{Application, ApplicationForm, HistoryEntry, Pledge, Recommendation, Status};
use super::{Result, Store, StoreError, exec, now, parse_ts, ts};
use crate::audit::AuditEvent;

impl Store {
    fn application_from_row(r: &AnyRow) -> Result<Application> {
        let status: String = r.try_get("status")?;
        Ok(Application {
            id: r.try_get("id")?,
            status: Status::parse(&status)
                .ok_or_else(|| StoreError::Conflict(format!("unknown stored status `{status}`")))?,
            applicant: r.try_get("applicant")?,
            form: serde_json::from_str(&r.try_get::<String, _>("form")?)?,
            approval: r
                .try_get::<Option<String>, _>("approval")?
                .map(|s| serde_json::from_str(&s))
                .transpose()?,
            pending_change: r
                .try_get::<Option<String>, _>("pending_change")?
                .map(|s| serde_json::from_str(&s))
                .transpose()?,
            revoked_reason: r.try_get("revoked_reason")?,
            created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            updated_at: parse_ts(&r.try_get::<String, _>("updated_at")?)?,
        })
    }

    /// Create a draft. `id` is generated (`A-<year>-<nnnn>`) unless given.
    pub async fn create_application(
        &self,
        id: Option<&str>,
        applicant: &str,
        form: &ApplicationForm,
    ) -> Result<Application> {
        // The generated id is only known inside the transaction, so the event is built
        // from it there.
        let event = |id: &String| {
            AuditEvent::ok(
                applicant,
                "application.create",
                Some(id),
                json!({"title": form.title}),
            )
        };
        let (id, _) = self
            .audited(&event, async |tx| {
                let id = match id {
                    Some(id) => id.to_string(),
                    None => Self::next_application_id(tx).await?,
                };
                let exists: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM applications WHERE id = $1")
                        .bind(&id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "application `{id}` already exists"
                    )));
                }
                let t = ts(now());
                let insert = sqlx::query("INSERT INTO applications (id, status, applicant, form, created_at, updated_at) VALUES ($1, 'draft', $2, $3, $4, $5)")
                    .bind(&id)
                    .bind(applicant)
                    .bind(serde_json::to_string(form)?)
                    .bind(&t)
                    .bind(&t);
                exec(tx, insert).await?;
                Self::history(tx, &id, applicant, "create", None, "draft", None).await?;
                Ok(id)
            })
            .await?;
        self.application(&id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id))
    }

    /// The next `A-<year>-<nnnn>`; called inside the creating transaction, whose write
    /// lock keeps two creations from taking the same number.
    async fn next_application_id(conn: &mut AnyConnection) -> Result<String> {
        let year = Utc::now().format("%Y").to_string();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM applications WHERE id LIKE $1")
            .bind(format!("A-{year}-%"))
            .fetch_one(&mut *conn)
            .await?;
        Ok(format!("A-{year}-{:04}", n + 1))
    }

    async fn history(
        conn: &mut AnyConnection,
        id: &str,
        actor: &str,
        action: &str,
        from: Option<&str>,
        to: &str,
        reason: Option<&str>,
    ) -> Result<u64> {
        let insert = sqlx::query(
            "INSERT INTO application_history (application_id, at, actor, action, from_status, to_status, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(ts(now()))
        .bind(actor)
        .bind(action)
        .bind(from)
        .bind(to)
        .bind(reason);
        exec(conn, insert).await
    }

    pub async fn application(&self, id: &str) -> Result<Option<Application>> {
        let row = sqlx::query("SELECT * FROM applications WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(Self::application_from_row).transpose()
    }

    pub async fn applications(&self) -> Result<Vec<Application>> {
        let rows = sqlx::query("SELECT * FROM applications ORDER BY id")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(Self::application_from_row).collect()
    }

    /// Save a workflow transition: the new application state, a history entry and the
    /// audit event, in one transaction. `expect_updated_at` guards against lost updates
    /// (two reviewers deciding at once): the save fails if the row changed meanwhile.
    pub async fn transition(
        &self,
        app: &Application,
        expect_updated_at: DateTime<Utc>,
        from: Status,
        action: &str,
        reason: Option<&str>,
        event: &AuditEvent,
    ) -> Result<Application> {
        self.transition_with_extract(app, expect_updated_at, from, action, reason, None, event)
            .await
    }

    /// [`Self::transition`] that also makes `extract` the application's live extract, in
    /// the same transaction (with its own `extract.build` event): an approval and the
    /// extract of its scope take effect together or not at all, so an approval that lost
    /// a race never leaves its extract live.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition_with_extract(
        &self,
        app: &Application,
        expect_updated_at: DateTime<Utc>,
        from: Status,
        action: &str,
        reason: Option<&str>,
        extract: Option<&super::extracts::ExtractWrite>,
        event: &AuditEvent,
    ) -> Result<Application> {
        self.audited(event, async |tx| {
            if let Some(x) = extract {
                super::extracts::register(tx, &app.id, x).await?;
                let built = super::extracts::build_event(&event.actor, &app.id, x);
                self.audit(tx, &built).await?;
            }
            Self::save_transition(
                tx,
                app,
                expect_updated_at,
                from,
                action,
                reason,
                &event.actor,
            )
            .await
        })
        .await?;
        self.application(&app.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(app.id.clone()))
    }

    /// The statements of [`Self::transition`] inside the caller's transaction (the
    /// caller appends the audit event): the optimistic save and the history entry.
    pub(super) async fn save_transition(
        tx: &mut AnyConnection,
        app: &Application,
        expect_updated_at: DateTime<Utc>,
        from: Status,
        action: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<u64> {
        let save = sqlx::query(
            "UPDATE applications SET status = $1, form = $2, approval = $3, pending_change = $4, revoked_reason = $5, updated_at = $6
             WHERE id = $7 AND updated_at = $8",
        )
        .bind(app.status.as_str())
        .bind(serde_json::to_string(&app.form)?)
        .bind(app.approval.as_ref().map(serde_json::to_string).transpose()?)
        .bind(app.pending_change.as_ref().map(serde_json::to_string).transpose()?)
        .bind(&app.revoked_reason)
        .bind(ts(now()))
        .bind(&app.id)
        .bind(ts(expect_updated_at));
        if exec(tx, save).await? == 0 {
            return Err(StoreError::Conflict(format!(
                "application `{}` changed meanwhile; reload it and try again / 申請が他の操作で更新されました。再読み込みしてください",
                app.id
            )));
        }
        Self::history(
            tx,
            &app.id,
            actor,
            action,
            Some(from.as_str()),
            app.status.as_str(),
            reason,
        )
        .await
    }

    pub async fn application_history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let rows =
            sqlx::query("SELECT * FROM application_history WHERE application_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Record a named user's pledge (form 2). Idempotent.
    pub async fn accept_pledge(&self, id: &str, username: &str) -> Result<()> {
        let event = AuditEvent::ok(username, "application.pledge", Some(id), json!({}));
        self.audited(&event, async |tx| {
            let pledge = sqlx::query("INSERT INTO pledges (application_id, username, accepted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(username)
                .bind(ts(now()));
            exec(tx, pledge).await
        })
        .await?;
        Ok(())
    }

    pub async fn pledges(&self, id: &str) -> Result<Vec<Pledge>> {
        let rows = sqlx::query(
            "SELECT username, accepted_at FROM pledges WHERE application_id = $1 ORDER BY username",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Pledge {
                    username: r.try_get("username")?,
                    accepted_at: parse_ts(&r.try_get::<String, _>("accepted_at")?)?,
                })
            })
            .collect()
    }

    pub async fn has_pledged(&self, id: &str, username: &str) -> Result<bool> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM pledges WHERE application_id = $1 AND username = $2")
                .bind(id)
                .bind(username)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        Ok(n.is_some())
    }

    pub async fn add_recommendation(
        &self,
        id: &str,
        reviewer: &str,
        text: &str,
    ) -> Result<Recommendation> {
        let event = AuditEvent::ok(
            reviewer,
            "application.recommendation",
            Some(id),
            json!({"text": text}),
        );
        let (at, _) = self
            .audited(&event, async |tx| {
                let at = now();
                let insert = sqlx::query(
                    "INSERT INTO recommendations (application_id, at, reviewer, text) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(ts(at))
                .bind(reviewer)
                .bind(text);
                exec(tx, insert).await?;
                Ok(at)
            })
            .await?;
        Ok(Recommendation {
            at,
            reviewer: reviewer.into(),
            text: text.into(),
        })
    }

    pub async fn recommendations(&self, id: &str) -> Result<Vec<Recommendation>> {
        let rows = sqlx::query(
            "SELECT at, reviewer, text FROM recommendations WHERE application_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Recommendation {
                    at: parse_ts(&r.try_get::<String, _>("at")?)?,
                    reviewer: r.try_get("reviewer")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }
}
