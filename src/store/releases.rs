//! Store, release requests: a researcher's request to release a query result outside
//! the enclave, and the reviewer's decision on it.
//!
//! Guarantees: a request is decided at most once (the decision only applies to a
//! pending request; a second decision is a conflict), and the decision's status and
//! audit event commit together.

use serde_json::json;
use sqlx::Row;

use super::model::ReleaseRequest;
use super::{Result, Store, StoreError, exec, parse_ts, ts};
use crate::audit::AuditEvent;

impl Store {
    pub async fn create_release(&self, r: &ReleaseRequest) -> Result<()> {
        let event = AuditEvent::ok(
            &r.requester,
            "release.request",
            Some(&r.application_id),
            json!({"release": r.id, "query_id": r.query_id}),
        );
        self.audited(&event, async |tx| {
            let insert = sqlx::query(
                "INSERT INTO releases (id, application_id, requester, query_id, justification, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&r.id)
            .bind(&r.application_id)
            .bind(&r.requester)
            .bind(&r.query_id)
            .bind(&r.justification)
            .bind(&r.status)
            .bind(ts(r.created_at));
            exec(tx, insert).await
        })
        .await?;
        Ok(())
    }

    pub async fn release(&self, id: &str) -> Result<Option<ReleaseRequest>> {
        let row = sqlx::query("SELECT * FROM releases WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.map(|r| -> Result<ReleaseRequest> {
            Ok(ReleaseRequest {
                id: r.try_get("id")?,
                application_id: r.try_get("application_id")?,
                requester: r.try_get("requester")?,
                query_id: r.try_get("query_id")?,
                justification: r.try_get("justification")?,
                status: r.try_get("status")?,
                created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
            })
        })
        .transpose()
    }

    /// Decide a pending release request: set `status` and write the decision's audit
    /// event (which carries the reviewer and the reason) in one transaction. A request
    /// that is no longer pending is a conflict, so two reviewers cannot both decide it.
    pub async fn decide_release(
        &self,
        id: &str,
        status: &str,
        event: &AuditEvent,
    ) -> Result<ReleaseRequest> {
        self.audited(event, async |tx| {
            let decide =
                sqlx::query("UPDATE releases SET status = $1 WHERE id = $2 AND status = 'pending'")
                    .bind(status)
                    .bind(id);
            if exec(tx, decide).await? == 0 {
                return Err(StoreError::Conflict(format!(
                    "release request `{id}` has already been decided / この公表申請は既に判断済みです"
                )));
            }
            Ok(())
        })
        .await?;
        self.release(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }
}
