//! Audit alerts over HTTP: the auditor's inbox (`GET /api/v1/alerts?status=`) and the
//! acknowledgement of an alert with a comment (`POST /api/v1/alerts/{id}/ack`).
//!
//! Guarantees: auditors only — the enforcement point's `audit_read` action and the
//! auditor role (reviewers read the log but do not triage alerts); reading the inbox and
//! acknowledging are audited; the comment is required and limited to 1000 characters.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::{Action, Target};
use crate::store::StoreError;
use crate::store::model::Role;
use crate::store::oversight::Alert;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

async fn authorize(st: &AppState, who: &AuthUser, action: &str) -> Result<(), ApiError> {
    let d = match st
        .policy
        .authorize(&who.user, Action::AuditRead, &Target::None, st.today())
        .await
    {
        Ok(()) if who.user.has(Role::Auditor) => return Ok(()),
        Ok(()) => crate::policy::Denial {
            code: "forbidden",
            message: "Alerts are for auditors. / アラートは監査担当のみ扱えます。".into(),
        },
        Err(d) => d,
    };
    Err(super::denied::denied(st, &who.user, action, None, &d, json!({})).await)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AlertParams {
    /// `open` or `acknowledged`; all when absent.
    pub status: Option<String>,
}

/// The alert inbox, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "audit", params(AlertParams),
    responses((status = 200, body = Vec<Alert>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<AlertParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Alert>>, ApiError> {
    let Query(p) = params?;
    authorize(&st, &who, "alert.read").await?;
    let status = p.status.as_deref();
    if status.is_some_and(|s| s != "open" && s != "acknowledged") {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`status` is open or acknowledged / status は open か acknowledged です",
        ));
    }
    let alerts = st.store.alerts(status).await?;
    let ev = AuditEvent::ok(
        &who.user.username,
        "alert.read",
        None,
        json!({"status": status, "count": alerts.len()}),
    );
    st.store.record(&ev).await?;
    Ok(Json(alerts))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AckRequest {
    /// What was checked and found, 1–1000 characters.
    pub comment: String,
}

/// Acknowledge an open alert with a comment.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "audit", params(("id" = String, Path)), request_body = AckRequest,
    responses((status = 200, body = Alert), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn ack(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<AckRequest>,
) -> Result<Json<Alert>, ApiError> {
    let Json(req) = body?;
    authorize(&st, &who, "alert.acknowledge").await?;
    let comment = req.comment.trim();
    if comment.is_empty() || comment.chars().count() > 1000 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`comment` needs 1–1000 characters: say what you checked / 確認内容を 1〜1000 文字で記入してください",
        ));
    }
    if id.len() > 64 || st.store.alert(&id).await?.is_none() {
        return Err(ApiError::not_found("alert"));
    }
    match st
        .store
        .acknowledge_alert(&id, &who.user.username, comment)
        .await
    {
        Ok(a) => Ok(Json(a)),
        Err(StoreError::Conflict(_)) => Err(ApiError::conflict(
            "conflict",
            "This alert is already acknowledged. / このアラートは確認済みです。",
        )),
        Err(e) => Err(e.into()),
    }
}
