//! Audit over HTTP: filtered, paginated events and chain verification (auditor,
//! reviewer). Reading the log is itself logged.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::{AuditEvent, AuditRecord, Verification};
use crate::policy::{Action, Target};
use crate::store::AuditFilter;

async fn authorize(st: &AppState, who: &AuthUser) -> Result<(), ApiError> {
    if let Err(d) = st
        .policy
        .authorize(&who.user, Action::AuditRead, &Target::None, st.today())
        .await
    {
        return Err(super::denied::denied(st, &who.user, "audit.read", None, &d, json!({})).await);
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EventParams {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub user: Option<String>,
    pub application: Option<String>,
    /// Action name or prefix, e.g. `query` or `query.run`.
    pub action: Option<String>,
    /// Only events older than this `seq`: pass the last `seq` of a page to get the next
    /// page unaffected by events logged meanwhile.
    pub before: Option<i64>,
    /// 0-based page of `page_size` (default 100) events, newest first.
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

/// Audit events, newest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(EventParams),
    responses((status = 200, body = Vec<AuditRecord>), (status = 403, body = ErrorBody)))]
pub async fn events(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let Query(p) = params?;
    authorize(&st, &who).await?;
    let f = AuditFilter {
        from: p.from,
        to: p.to,
        user: p.user,
        application: p.application,
        action: p.action,
        before: p.before,
        page: p.page.unwrap_or(0),
        page_size: p.page_size.unwrap_or(100),
    };
    let out = st.store.audit_events(&f).await?;
    st.store
        .record(&AuditEvent::ok(
            &who.user.username,
            "audit.read",
            None,
            json!({"page": f.page, "returned": out.len()}),
        ))
        .await?;
    Ok(Json(out))
}

/// Verify the hash chain: `{"ok": true, "events": N, "head": "…"}` or the first broken link.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = Verification), (status = 403, body = ErrorBody)))]
pub async fn verify(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<Verification>, ApiError> {
    authorize(&st, &who).await?;
    // Verify first, so the report describes the chain as it was when asked.
    let v = st.store.verify_audit().await?;
    st.store
        .record(&AuditEvent::ok(
            &who.user.username,
            "audit.verify",
            None,
            json!({"ok": v.ok, "events": v.events}),
        ))
        .await?;
    Ok(Json(v))
}
