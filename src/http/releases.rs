//! The output airlock over HTTP (`crate::airlock`): release requests, their review,
//! downloads and the release register. Handlers only extract, call the airlock and map.
//!
//! Guarantees: every refusal leaves through one mapping ([`airlock_error`]): a denial is
//! audited under its `ref` before it is answered (no audit, not even a refusal), an
//! integrity failure is `500 integrity_failed` and releases nothing; a file is sent only
//! after its download was recorded, as an attachment with its own content type.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::airlock::AirlockError;
use crate::airlock::download::{self, RegisterEntry};
use crate::airlock::request::{self, ReleaseInput};
use crate::airlock::review::{self, ReleaseDecision, ReleaseDecisionRequest};
use crate::airlock::view::{self, ListFilter, ReleaseView};
use crate::policy::{Action, Target};
use crate::store::model::ReleaseRequest;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// An airlock refusal as an API error; denials are audited first.
async fn airlock_error(st: &AppState, who: &AuthUser, e: AirlockError) -> ApiError {
    match e {
        AirlockError::Refused {
            status,
            code,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, code, message)
        }
        AirlockError::Denied {
            action,
            application,
            denial,
            detail,
        } => {
            let app = application.as_deref();
            super::denied::denied(st, &who.user, action, app, &denial, detail).await
        }
        AirlockError::Store(e) => e.into(),
        other => ApiError::internal(&other),
    }
}

/// Ask for answers of your queries to be released (researcher). The answers are
/// snapshotted as they were released; reviewers check the snapshot.
#[utoipa::path(post, path = "/api/v1/releases", operation_id = "create_release", tag = "releases", request_body = ReleaseInput,
    responses((status = 201, body = ReleaseRequest), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    who: AuthUser,
    body: JsonBody<ReleaseInput>,
) -> Result<(StatusCode, Json<ReleaseRequest>), ApiError> {
    let Json(input) = body?;
    match request::request(
        &st.store,
        &st.policy,
        &who.user,
        &input,
        st.today(),
        who.origin,
    )
    .await
    {
        Ok(r) => Ok((StatusCode::CREATED, Json(r))),
        Err(e) => Err(airlock_error(&st, &who, e).await),
    }
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct ReleaseListParams {
    /// `pending`, `approved`, `rejected`, `invalidated` or `decided` (all but pending).
    pub status: Option<String>,
    pub application: Option<String>,
}

/// Release requests you may see: your own; as a reviewer, every request you may check;
/// as an auditor, all. Newest first.
#[utoipa::path(get, path = "/api/v1/releases", operation_id = "list_releases", tag = "releases", params(ReleaseListParams),
    responses((status = 200, body = Vec<ReleaseRequest>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<ReleaseListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ReleaseRequest>>, ApiError> {
    let Query(p) = params?;
    let known = ["pending", "approved", "rejected", "invalidated", "decided"];
    if p.status.as_deref().is_some_and(|s| !known.contains(&s)) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "status must be one of pending, approved, rejected, invalidated, decided / status の値が不正です",
        ));
    }
    let f = ListFilter {
        status: p.status,
        application: p.application,
    };
    match view::list(&st.store, &who.user, &f).await {
        Ok(list) => Ok(Json(list)),
        Err(e) => Err(airlock_error(&st, &who, e).await),
    }
}

/// One release request in full: its sealed snapshots (tables, SQL, disclosure record
/// per cell), decisions with comments, files and downloads.
#[utoipa::path(get, path = "/api/v1/releases/{id}", operation_id = "get_release", tag = "releases", params(("id" = String, Path)),
    responses((status = 200, body = ReleaseView), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ReleaseView>, ApiError> {
    match view::detail(&st.store, &who.user, &id).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::not_found("release request")),
        Err(e) => Err(airlock_error(&st, &who, e).await),
    }
}

/// Approve or reject a release request with a comment (reviewer). Where the approval
/// asks for two checkers, the first approval leaves it `pending` with one approval.
#[utoipa::path(post, path = "/api/v1/releases/{id}/decision", operation_id = "decide_release", tag = "releases", params(("id" = String, Path)), request_body = ReleaseDecisionRequest,
    responses((status = 200, body = ReleaseDecision), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn decide(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<ReleaseDecisionRequest>,
) -> Result<Json<ReleaseDecision>, ApiError> {
    let Json(req) = body?;
    match review::decide(
        &st.store,
        &st.policy,
        &st.admission,
        &who.user,
        &id,
        &req,
        st.today(),
    )
    .await
    {
        Ok(d) => Ok(Json(d)),
        Err(e) => Err(airlock_error(&st, &who, e).await),
    }
}

/// Download a file of an approved release (the requester only): `result-N.csv`,
/// `result-N.xlsx`, `result-N.png`, `release.json`. Anything else is
/// `403 export_not_permitted`; every download and refusal is audited.
#[utoipa::path(get, path = "/api/v1/releases/{id}/files/{name}", operation_id = "download_release_file", tag = "releases", params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "the file", content_type = "application/octet-stream"), (status = 403, body = ErrorBody)))]
pub async fn file(
    State(st): State<AppState>,
    who: AuthUser,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (info, content) = match download::download(&st.store, &who.user, &id, &name).await {
        Ok(f) => f,
        Err(e) => return Err(airlock_error(&st, &who, e).await),
    };
    let media = HeaderValue::from_str(&info.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{id}-{}\"", info.name))
            .unwrap_or(HeaderValue::from_static("attachment"));
    let digest = HeaderValue::from_str(&info.sha256).unwrap_or(HeaderValue::from_static(""));
    Ok((
        [
            (header::CONTENT_TYPE, media),
            (header::CONTENT_DISPOSITION, disposition),
            (header::HeaderName::from_static("x-kura-sha256"), digest),
        ],
        content,
    )
        .into_response())
}

/// The release register (reviewer, auditor): every approved release — what left, when,
/// for whom and why, with its checkers, files and hashes, and every download.
#[utoipa::path(get, path = "/api/v1/releases/register", operation_id = "release_register", tag = "releases",
    responses((status = 200, body = Vec<RegisterEntry>), (status = 403, body = ErrorBody)))]
pub async fn register(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<Vec<RegisterEntry>>, ApiError> {
    if let Err(d) = st
        .policy
        .authorize(&who.user, Action::AuditRead, &Target::None, st.today())
        .await
    {
        let detail = serde_json::json!({});
        return Err(super::denied::denied(
            &st,
            &who.user,
            "authorize.audit_read",
            None,
            &d,
            detail,
        )
        .await);
    }
    match download::register(&st.store).await {
        Ok(r) => Ok(Json(r)),
        Err(e) => Err(airlock_error(&st, &who, e).await),
    }
}
