//! Notices over HTTP (seed 002 要綱 第2章6): the approval notice (承認通知書) and the
//! notice of refusal with reasons, issued with the reviewer's decision and downloadable
//! by the applicant.
//!
//! Guarantees: a notice is built from the decided application at the moment of decision
//! and stored with it (`Store::decide_with_notice`: same transaction, audited as
//! `notice.issue`); only the applicant, reviewers and auditors read it; every download is
//! audited (`notice.download`) before the document is returned.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::applications::load_visible;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::workflow::DecisionKind;
use crate::report::notice::{NoticeFormat, render};
use crate::store::model::{Application, Role};
use crate::store::seeds::{Notice, NoticeKind, issue_time};

/// The notice a decision issues (approval or refusal; none for a correction request),
/// built from the application as decided.
pub fn notice_for(
    decided: &Application,
    decision: DecisionKind,
    reviewer: &str,
    reason: Option<&str>,
) -> Option<Notice> {
    let kind = match decision {
        DecisionKind::Approve => NoticeKind::Approval,
        DecisionKind::Reject => NoticeKind::Refusal,
        DecisionKind::RequestCorrection => return None,
    };
    // A rejected change application is refused; the approval in force stays.
    let form = decided.pending_change.as_ref().unwrap_or(&decided.form);
    let at = issue_time();
    Some(Notice {
        id: String::new(),
        application: decided.id.clone(),
        kind,
        issued_at: at,
        issued_on: (at + chrono::Duration::hours(9)).date_naive(),
        issued_by: reviewer.to_string(),
        applicant: form.applicant.clone(),
        research_group: form.research_group.clone(),
        title: form.title.clone(),
        diseases: form.diseases.clone(),
        named_users: form.named_users.clone(),
        place_of_use: form.place_of_use.clone(),
        approval: (decision == DecisionKind::Approve)
            .then(|| decided.approval.clone())
            .flatten(),
        reason: reason.map(str::to_string),
    })
}

/// The application, if the caller is its applicant or a reviewer or auditor.
async fn readable(st: &AppState, who: &AuthUser, id: &str) -> Result<Application, ApiError> {
    let app = load_visible(st, who, id).await?;
    let oversight = who.user.has(Role::Reviewer) || who.user.has(Role::Auditor);
    if !oversight && app.applicant != who.user.username {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Notices are addressed to the applicant; reviewers and auditors may read them too. / 通知書は申請者（および審査・監査担当）のみ閲覧できます。",
        ));
    }
    Ok(app)
}

/// The notices issued on an application, oldest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/notices", tag = "applications",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<Notice>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<Notice>>, ApiError> {
    readable(&st, &who, &id).await?;
    Ok(Json(st.store.notices(&id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct NoticeParams {
    /// `html` (default) or `json`.
    pub format: Option<String>,
}

/// Download one notice (HTML, Japanese with English; or JSON). Audited.
#[utoipa::path(get, path = "/api/v1/applications/{id}/notices/{notice}", tag = "applications",
    params(("id" = String, Path), ("notice" = String, Path), NoticeParams),
    responses((status = 200, description = "the notice document"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download(
    State(st): State<AppState>,
    who: AuthUser,
    Path((id, notice)): Path<(String, String)>,
    params: Result<Query<NoticeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let format = NoticeFormat::parse(p.format.as_deref().unwrap_or("html")).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            "`format` is html or json (PDF: print the HTML) / format は html または json です",
        )
    })?;
    readable(&st, &who, &id).await?;
    let Some(n) = st
        .store
        .notices(&id)
        .await?
        .into_iter()
        .find(|n| n.id == notice)
    else {
        return Err(ApiError::not_found("notice"));
    };
    let doc = render(&n, format).map_err(|e| ApiError::internal(&e))?;
    let ev = AuditEvent::ok(
        &who.user.username,
        "notice.download",
        Some(&id),
        json!({"notice": n.id, "kind": n.kind.as_str(), "format": doc.content_type}),
    );
    st.store.record(&ev).await?;
    Ok((
        [
            (header::CONTENT_TYPE, doc.content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{}\"", doc.file_name),
            ),
        ],
        doc.body,
    )
        .into_response())
}
