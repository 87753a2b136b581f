//! The approval workflow over HTTP (seed 002 別添2 要綱 第2章): drafts, submission,
//! correction requests, decisions, pledges, corrective recommendations, revocation,
//! and change applications (the usage report: `super::reports`).
//!
//! Guarantees: every transition passes the enforcement point and the workflow state
//! machine, is saved with its history entry and audit event in one transaction, and
//! refreshes the casbin lines; a reviewer never decides an application on which they are
//! a named user; approval builds the application's own extract before it takes effect.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::approval::{DecisionRequest, approval_from};
use crate::policy::workflow::{self, DecisionKind, FieldError, Known};
use crate::policy::{Action, Target};

use crate::sql::scope::Scope;
use crate::store::ExtractWrite;
use crate::store::model::*;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn can_oversee(u: &User) -> bool {
    u.has(Role::Reviewer) || u.has(Role::Auditor)
}

fn visible(u: &User, app: &Application) -> bool {
    can_oversee(u)
        || app.applicant == u.username
        || app.is_named(&u.username)
        // seeds (issue 16 §5): the research lead whose consent (form 3) is asked
        || super::consent::is_lead(app, &u.username)
}

pub(super) async fn load_visible(
    st: &AppState,
    who: &AuthUser,
    id: &str,
) -> Result<Application, ApiError> {
    match st.store.application(id).await? {
        Some(a) if visible(&who.user, &a) => Ok(a),
        _ => Err(ApiError::not_found("application")),
    }
}

pub(super) async fn authorize(
    st: &AppState,
    who: &AuthUser,
    action: Action,
    app_id: Option<&str>,
) -> Result<(), ApiError> {
    if let Err(d) = st
        .policy
        .authorize(&who.user, action, &Target::None, st.today())
        .await
    {
        let name = format!("authorize.{}", action.as_str());
        return Err(super::denied::denied(st, &who.user, &name, app_id, &d, json!({})).await);
    }
    Ok(())
}

async fn validate_submission(st: &AppState, form: &ApplicationForm) -> Result<(), ApiError> {
    let users: BTreeSet<String> = st
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| !u.disabled)
        .map(|u| u.username)
        .collect();
    let diseases = st.data.diseases();
    let known = Known {
        catalog: &st.catalog,
        diseases: &diseases,
        users: &users,
    };
    let errors = workflow::validate_for_submit(form, &known);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_application(errors))
    }
}

/// Save a transition of `app` to `next` with its history entry and its audit event
/// (`application.<action>`) in one transaction.
async fn save(
    st: &AppState,
    who: &AuthUser,
    app: &Application,
    next: &Application,
    action: &str,
    reason: Option<&str>,
    detail: serde_json::Value,
) -> Result<Application, ApiError> {
    let name = format!("application.{action}");
    let ev = AuditEvent::ok(&who.user.username, &name, Some(&app.id), detail);
    Ok(st
        .store
        .transition(next, app.updated_at, app.status, action, reason, &ev)
        .await?)
}

fn transition_error(msg: String) -> ApiError {
    ApiError::conflict("invalid_transition", msg)
}

/// Summary row of the application list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationSummary {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub applicant: String,
    pub has_pending_change: bool,
    pub term: Option<Term>,
    pub updated_at: chrono::DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct ListParams {
    /// Filter by (effective) status, e.g. `submitted` for the reviewer inbox.
    pub status: Option<String>,
}

/// Applications visible to the caller: all for reviewers and auditors, otherwise those
/// the caller applied for or is named on.
#[utoipa::path(get, path = "/api/v1/applications", tag = "applications", params(ListParams),
    responses((status = 200, body = Vec<ApplicationSummary>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ApplicationSummary>>, ApiError> {
    let Query(p) = params?;
    let wanted = match p.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "status must be one of draft, submitted, correction_requested, approved, rejected, revoked, expired / status の値が不正です",
            )
        })?),
    };
    let today = st.today();
    let out = st
        .store
        .applications()
        .await?
        .into_iter()
        .filter(|a| visible(&who.user, a))
        .filter(|a| {
            wanted.is_none_or(|w| {
                a.effective_status(today) == w
                    || (w == Status::Submitted && a.pending_change.is_some())
            })
        })
        .map(|a| ApplicationSummary {
            status: a.effective_status(today),
            title: a.form.title.clone(),
            has_pending_change: a.pending_change.is_some(),
            term: a.approval.as_ref().map(|x| x.term).or(a.form.term),
            id: a.id,
            applicant: a.applicant,
            updated_at: a.updated_at,
        })
        .collect();
    Ok(Json(out))
}

/// Create a draft application (form 1 + annex).
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications", request_body = ApplicationForm,
    responses((status = 201, body = Application), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    who: AuthUser,
    body: JsonBody<ApplicationForm>,
) -> Result<(StatusCode, Json<Application>), ApiError> {
    let Json(mut form) = body?;
    authorize(&st, &who, Action::Apply, None).await?;
    // seeds (issue 16 §5): the lead's consent is the lead's action, never the form's
    form.lead_consent = None;
    let app = st
        .store
        .create_application(None, &who.user.username, &form)
        .await?;
    Ok((StatusCode::CREATED, Json(app)))
}

/// Application detail with its history, pledges, recommendations and extract.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationDetail {
    #[serde(flatten)]
    pub application: Application,
    pub effective_status: Status,
    pub history: Vec<HistoryEntry>,
    pub pledges: Vec<Pledge>,
    pub recommendations: Vec<Recommendation>,
    pub extract: Option<ExtractInfo>,
}

#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = String, Path)),
    responses((status = 200, body = ApplicationDetail), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ApplicationDetail>, ApiError> {
    let app = load_visible(&st, &who, &id).await?;
    Ok(Json(ApplicationDetail {
        effective_status: app.effective_status(st.today()),
        history: st.store.application_history(&id).await?,
        pledges: st.store.pledges(&id).await?,
        recommendations: st.store.recommendations(&id).await?,
        extract: st.store.extract(&id).await?,
        application: app,
    }))
}

fn require_applicant(who: &AuthUser, app: &Application) -> Result<(), ApiError> {
    if app.applicant != who.user.username {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only the applicant may change this application. / 申請者のみが変更できます。",
        ));
    }
    Ok(())
}

/// Edit a draft, or answer a correction request.
#[utoipa::path(put, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = String, Path)), request_body = ApplicationForm,
    responses((status = 200, body = Application), (status = 409, body = ErrorBody)))]
pub async fn edit(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<ApplicationForm>,
) -> Result<Json<Application>, ApiError> {
    let Json(form) = body?;
    let app = load_visible(&st, &who, &id).await?;
    require_applicant(&who, &app)?;
    let to = workflow::next_status(app.status, "edit").map_err(transition_error)?;
    let mut next = app.clone();
    // seeds (issue 16 §5): an edit keeps the lead's consent only if nothing else changed
    next.form = super::consent::edited(&app.form, form);
    next.status = to;
    Ok(Json(
        save(&st, &who, &app, &next, "edit", None, json!({})).await?,
    ))
}

/// Submit (or resubmit after a correction request).
#[utoipa::path(post, path = "/api/v1/applications/{id}/submit", tag = "applications", params(("id" = String, Path)),
    responses((status = 200, body = Application), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn submit(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Application>, ApiError> {
    let app = load_visible(&st, &who, &id).await?;
    require_applicant(&who, &app)?;
    let to = workflow::next_status(app.status, "submit").map_err(transition_error)?;
    validate_submission(&st, &app.form).await?;
    // seeds (issue 16 §5): no submission without the lead's consent (form 3)
    super::consent::require_lead_consent(&app.form)?;
    let mut next = app.clone();
    next.status = to;
    Ok(Json(
        save(&st, &who, &app, &next, "submit", None, json!({})).await?,
    ))
}

/// File a change application (変更申請). The current approval stays in force until the
/// reviewer decides the change.
#[utoipa::path(post, path = "/api/v1/applications/{id}/change", tag = "applications", params(("id" = String, Path)), request_body = ApplicationForm,
    responses((status = 200, body = Application), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<ApplicationForm>,
) -> Result<Json<Application>, ApiError> {
    let Json(mut form) = body?;
    let app = load_visible(&st, &who, &id).await?;
    require_applicant(&who, &app)?;
    // seeds (issue 16 §5): the lead consents to the change from their own account
    form.lead_consent = None;
    if app.effective_status(st.today()) != Status::Approved {
        return Err(transition_error(
            "A change application needs an approved application in its term; otherwise edit the draft or file a new application. / 変更申請は承認済みの申請にのみ行えます。".into(),
        ));
    }
    validate_submission(&st, &form).await?;
    let mut next = app.clone();
    next.pending_change = Some(form);
    Ok(Json(
        save(&st, &who, &app, &next, "change_submit", None, json!({})).await?,
    ))
}

/// A named user accepts the pledge (form 2).
#[utoipa::path(post, path = "/api/v1/applications/{id}/pledge", tag = "applications", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn pledge(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let app = load_visible(&st, &who, &id).await?;
    if !app.is_named(&who.user.username) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_named_user",
            "Only named users of this application accept its pledge. / 誓約はこの申請の使用者のみが行えます。",
        ));
    }
    if matches!(
        app.effective_status(st.today()),
        Status::Rejected | Status::Revoked | Status::Expired | Status::Withdrawn
    ) {
        return Err(transition_error(
            "This application is closed; no pledge is needed. / この申請は終了しています。".into(),
        ));
    }
    st.store.accept_pledge(&id, &who.user.username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The application a reviewer acts on: authorised to review, visible, and not one on
/// which the reviewer is named, the applicant or the research lead.
async fn load_for_review(st: &AppState, who: &AuthUser, id: &str) -> Result<Application, ApiError> {
    authorize(st, who, Action::Review, Some(id)).await?;
    let app = load_visible(st, who, id).await?;
    reviewer_conflict(who, &app)?;
    Ok(app)
}

pub(super) fn reviewer_conflict(who: &AuthUser, app: &Application) -> Result<(), ApiError> {
    // seeds (issue 16 §5): the research lead who consented is not independent either
    let lead = super::consent::is_lead(app, &who.user.username);
    if app.is_named(&who.user.username) || app.applicant == who.user.username || lead {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "You are a named user or the applicant of this application; another reviewer must decide it. / 利益相反のため、この申請は他の審査担当者が判断してください。",
        ));
    }
    Ok(())
}

/// The approval terms of a decision, validated against the registry and the rules.
fn approve(
    st: &AppState,
    who: &AuthUser,
    form: &ApplicationForm,
    req: &DecisionRequest,
) -> Result<Approval, ApiError> {
    let diseases = st.data.diseases();
    let users = BTreeSet::new();
    let known = Known {
        catalog: &st.catalog,
        diseases: &diseases,
        users: &users,
    };
    let min_k = st.policy.min_threshold();
    approval_from(form, req, &known, min_k, &who.user.username)
        .map_err(ApiError::invalid_application)
}

/// Build (beside the live one) the extract version of `scope`, not yet registered.
/// Errors keep their detail in the log.
async fn build_version(st: &AppState, id: &str, scope: &Scope) -> Result<ExtractWrite, ApiError> {
    let built = st.data.build_extract(id, scope).await;
    let outcome = if built.is_ok() { "ok" } else { "error" };
    crate::metrics::get()
        .extract_builds
        .with_label_values(&[outcome])
        .inc();
    let built = built.map_err(|e| ApiError::internal(&crate::errors::chain(&e)))?;
    Ok(ExtractWrite {
        extract_id: built.extract_id,
        path: built.path.to_string_lossy().into_owned(),
    })
}

/// Build the extract of an approval, register it and retire earlier versions.
pub async fn build_extract(
    st: &AppState,
    id: &str,
    scope: &Scope,
    actor: &str,
) -> Result<(), ApiError> {
    let x = build_version(st, id, scope).await?;
    st.store
        .set_extract(id, &x.extract_id, &x.path, actor)
        .await?;
    st.data.retire_extracts(id, std::path::Path::new(&x.path));
    Ok(())
}

/// Approve, reject or request correction (reviewer). On an approved application with a
/// pending change application, the decision is about the change.
#[utoipa::path(post, path = "/api/v1/applications/{id}/decision", tag = "applications", params(("id" = String, Path)), request_body = DecisionRequest,
    responses((status = 200, body = Application), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn decide(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<DecisionRequest>,
) -> Result<Json<Application>, ApiError> {
    let Json(req) = body?;
    let app = load_for_review(&st, &who, &id).await?;
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if req.decision != DecisionKind::Approve && reason.is_none() {
        return Err(ApiError::invalid_application(vec![FieldError {
            field: "reason".into(),
            message: "give the reason for the applicant / 理由を記入してください".into(),
        }]));
    }
    let change = app.status == Status::Approved && app.pending_change.is_some();
    let mut next = app.clone();
    let action;
    // The extract version of an approved scope: registered in the transaction that saves
    // the approval, so a decision that loses a race never leaves its extract live.
    let mut extract = None;
    if change {
        let pending = app.pending_change.clone().expect("checked");
        match req.decision {
            DecisionKind::Approve => {
                super::consent::require_lead_consent(&pending)?;
                let approval = approve(&st, &who, &pending, &req)?;
                extract = Some(build_version(&st, &id, &approval.scope).await?);
                next.form = pending;
                next.approval = Some(approval);
                next.pending_change = None;
                action = "change_approve";
            }
            DecisionKind::Reject | DecisionKind::RequestCorrection => {
                // The applicant may file a corrected change application; the approval in force stays.
                next.pending_change = None;
                action = if req.decision == DecisionKind::Reject {
                    "change_reject"
                } else {
                    "change_request_correction"
                };
            }
        }
    } else {
        let verb = match req.decision {
            DecisionKind::Approve => "approve",
            DecisionKind::Reject => "reject",
            DecisionKind::RequestCorrection => "request_correction",
        };
        next.status = workflow::next_status(app.status, verb).map_err(transition_error)?;
        if req.decision == DecisionKind::Approve {
            let approval = approve(&st, &who, &app.form, &req)?;
            extract = Some(build_version(&st, &id, &approval.scope).await?);
            next.approval = Some(approval);
        }
        action = verb;
    }
    let detail = json!({"reason": reason, "approval": next.approval});
    let ev = AuditEvent::ok(
        &who.user.username,
        &format!("application.{action}"),
        Some(&app.id),
        detail,
    );
    // seeds (issue 16 §5): approvals and refusals issue their notice in the same transaction
    let notice = super::notices::notice_for(&next, req.decision, &who.user.username, reason);
    let (saved, _) = st
        .store
        .decide_with_notice(
            &next,
            app.updated_at,
            app.status,
            action,
            reason,
            extract.as_ref(),
            &ev,
            notice,
        )
        .await?;
    if let Some(x) = &extract {
        st.data.retire_extracts(&id, std::path::Path::new(&x.path));
    }
    st.policy.reload(&st.store).await?;
    Ok(Json(saved))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecommendationRequest {
    pub text: String,
}

/// Issue a corrective recommendation (是正勧告).
#[utoipa::path(post, path = "/api/v1/applications/{id}/recommendations", tag = "applications", params(("id" = String, Path)), request_body = RecommendationRequest,
    responses((status = 201, body = Recommendation), (status = 403, body = ErrorBody)))]
pub async fn recommend(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<RecommendationRequest>,
) -> Result<(StatusCode, Json<Recommendation>), ApiError> {
    let Json(req) = body?;
    let app = load_for_review(&st, &who, &id).await?;
    if req.text.trim().is_empty() {
        return Err(ApiError::invalid_application(vec![FieldError {
            field: "text".into(),
            message: "write the recommendation / 勧告内容を記入してください".into(),
        }]));
    }
    if !matches!(
        app.effective_status(st.today()),
        Status::Approved | Status::Expired | Status::Revoked | Status::Withdrawn
    ) {
        return Err(transition_error("Corrective recommendations apply to approved applications. / 是正勧告は承認済みの申請に対して行います。".into()));
    }
    Ok((
        StatusCode::CREATED,
        Json(
            st.store
                .add_recommendation(&id, &who.user.username, req.text.trim())
                .await?,
        ),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeRequest {
    pub reason: String,
}

/// Revoke an approval. Takes effect on the next request.
#[utoipa::path(post, path = "/api/v1/applications/{id}/revoke", tag = "applications", params(("id" = String, Path)), request_body = RevokeRequest,
    responses((status = 200, body = Application), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<RevokeRequest>,
) -> Result<Json<Application>, ApiError> {
    let Json(req) = body?;
    let app = load_for_review(&st, &who, &id).await?;
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid_application(vec![FieldError {
            field: "reason".into(),
            message: "give the reason for revocation / 取消理由を記入してください".into(),
        }]));
    }
    let mut next = app.clone();
    next.status = workflow::next_status(app.status, "revoke").map_err(transition_error)?;
    next.revoked_reason = Some(reason.to_string());
    next.pending_change = None;
    let detail = json!({"reason": reason});
    let saved = save(&st, &who, &app, &next, "revoke", Some(reason), detail).await?;
    st.policy.reload(&st.store).await?;
    Ok(Json(saved))
}
