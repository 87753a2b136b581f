//! Reviewers' decisions on release requests (a researcher's request to publish a query
//! result, created through `POST /api/v1/releases` in `notebooks.rs`).
//!
//! Guarantees: only reviewers decide (the single enforcement point, action `review`);
//! a reviewer never decides a request of an application on which they are a named user
//! or the applicant, nor their own request; every decision needs a reason; the status
//! change and its audit event (reviewer, decision, reason) commit in one transaction, and
//! a request is decided at most once (`409` afterwards). Refused conflicts of interest
//! are audited too.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::applications::{authorize, reviewer_conflict};
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::Action;
use crate::store::model::ReleaseRequest;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseDecisionKind {
    Approve,
    Reject,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReleaseDecisionRequest {
    pub decision: ReleaseDecisionKind,
    /// Why the result may or may not be published (kept in the audit log).
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseDecision {
    pub release: ReleaseRequest,
    pub decision: ReleaseDecisionKind,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
}

fn conflict_of_interest() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "You requested this release or are a named user or the applicant of its application; another reviewer must decide it. / 利益相反のため、この公表申請は他の審査担当者が判断してください。",
    )
}

/// Approve or reject a release request (reviewer).
#[utoipa::path(post, path = "/api/v1/releases/{id}/decision", operation_id = "decide_release", tag = "notebooks", params(("id" = String, Path)), request_body = ReleaseDecisionRequest,
    responses((status = 200, body = ReleaseDecision), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn decide(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<ReleaseDecisionRequest>,
) -> Result<Json<ReleaseDecision>, ApiError> {
    let Json(req) = body?;
    let Some(release) = st.store.release(&id).await? else {
        // Authorize first only for callers who could see it; an unknown id looks the
        // same to everyone.
        authorize(&st, &who, Action::Review, None).await?;
        return Err(ApiError::not_found("release request"));
    };
    authorize(&st, &who, Action::Review, Some(&release.application_id)).await?;
    let me = &who.user.username;
    let conflict = if &release.requester == me {
        Err(conflict_of_interest())
    } else {
        match st.store.application(&release.application_id).await? {
            // PMS standing scopes have no application; the requester check above applies.
            None => Ok(()),
            Some(app) => reviewer_conflict(&who, &app).map_err(|_| conflict_of_interest()),
        }
    };
    if let Err(e) = conflict {
        let ev = AuditEvent::denied(
            me,
            "release.decide",
            Some(&release.application_id),
            &e.code,
            json!({"release": release.id, "reason": "conflict_of_interest"}),
        )
        .with_reference(&e.reference);
        st.store.record(&ev).await?;
        return Err(e);
    }
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`reason` is required: say why the result may or may not be published / 判断の理由を記入してください",
        ));
    }
    if release.status != "pending" {
        return Err(ApiError::conflict(
            "conflict",
            "This release request has already been decided. / この公表申請は既に判断済みです。",
        ));
    }
    let (status, action) = match req.decision {
        ReleaseDecisionKind::Approve => ("approved", "release.approve"),
        ReleaseDecisionKind::Reject => ("rejected", "release.reject"),
    };
    let ev = AuditEvent::ok(
        me,
        action,
        Some(&release.application_id),
        json!({
            "release": release.id,
            "query_id": release.query_id,
            "requester": release.requester,
            "reason": reason,
        }),
    );
    let saved = st.store.decide_release(&id, status, &ev).await?;
    Ok(Json(ReleaseDecision {
        release: saved,
        decision: req.decision,
        reason: reason.to_string(),
        decided_by: me.clone(),
        decided_at: Utc::now(),
    }))
}
