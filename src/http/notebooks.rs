//! Notebooks (per user and application; cells as JSON) and release requests (a result
//! asked to be released for publication; created here, decided by reviewers in
//! `releases.rs`).
//! Only the owner sees a notebook; creating one needs the same authorization as querying
//! the application.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::policy::Action;
use crate::store::model::{Notebook, ReleaseRequest};

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

const MAX_CELLS: usize = 500;
/// Longest notebook title (characters).
pub const MAX_TITLE: usize = 200;
/// Longest cell source (characters).
pub const MAX_SOURCE: usize = 100_000;
/// Largest saved output of one cell (bytes of JSON): a released result kept with the
/// notebook so that it shows again on reopening (issue 17 §3).
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

async fn authorize_on(
    st: &AppState,
    who: &AuthUser,
    application: &str,
    action: Action,
) -> Result<(), ApiError> {
    match st
        .policy
        .resolve(
            &st.store,
            &who.user,
            application,
            action,
            st.today(),
            who.origin,
        )
        .await?
    {
        Ok(_) => Ok(()),
        Err(d) => {
            let name = format!("authorize.{}", action.as_str());
            let detail = serde_json::json!({"origin": who.origin});
            Err(super::denied::denied(st, &who.user, &name, Some(application), &d, detail).await)
        }
    }
}

fn check_cells(cells: &serde_json::Value) -> Result<(), ApiError> {
    let bad = |msg: String| Err(ApiError::bad_request("invalid_request", msg));
    let Some(list) = cells.as_array().filter(|a| a.len() <= MAX_CELLS) else {
        return bad(format!(
            "`cells` must be a JSON array of at most {MAX_CELLS} cells / cells は {MAX_CELLS} 件以下の配列にしてください"
        ));
    };
    for (i, c) in list.iter().enumerate() {
        let Some(cell) = c.as_object() else {
            return bad(format!(
                "cell {i} must be an object / セル {i} はオブジェクトにしてください"
            ));
        };
        match cell.get("source") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if s.chars().count() <= MAX_SOURCE => {}
            Some(_) => {
                return bad(format!(
                    "cell {i}: `source` must be text of at most {MAX_SOURCE} characters / セル {i} の内容は {MAX_SOURCE} 文字以内の文字列にしてください"
                ));
            }
        }
        let output = cell.get("output").filter(|o| !o.is_null());
        let size = output.map_or(0, |o| serde_json::to_vec(o).map_or(usize::MAX, |b| b.len()));
        if output.is_some_and(|o| !o.is_object()) || size > MAX_OUTPUT_BYTES {
            return bad(format!(
                "cell {i}: a saved `output` must be an object of at most {MAX_OUTPUT_BYTES} bytes; run the cell again instead of saving a larger output / セル {i} の保存出力が大きすぎます（{MAX_OUTPUT_BYTES} バイトまで）"
            ));
        }
    }
    Ok(())
}

fn check_title(title: &str) -> Result<(), ApiError> {
    if title.chars().count() > MAX_TITLE || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`title` must be at most {MAX_TITLE} characters without control characters / タイトルは {MAX_TITLE} 文字以内にしてください"
            ),
        ));
    }
    Ok(())
}

async fn own(st: &AppState, who: &AuthUser, id: &str) -> Result<Notebook, ApiError> {
    match st.store.notebook(id).await? {
        Some(nb) if nb.owner == who.user.username => Ok(nb),
        _ => Err(ApiError::not_found("notebook")),
    }
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct NotebookParams {
    pub application: Option<String>,
}

/// Your notebooks, optionally for one application.
#[utoipa::path(get, path = "/api/v1/notebooks", tag = "notebooks", params(NotebookParams),
    responses((status = 200, body = Vec<Notebook>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<NotebookParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Notebook>>, ApiError> {
    let Query(p) = params?;
    Ok(Json(
        st.store
            .notebooks(&who.user.username, p.application.as_deref())
            .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NotebookInput {
    pub application: String,
    pub title: String,
    #[schema(value_type = Object)]
    #[serde(default = "empty_cells")]
    pub cells: serde_json::Value,
}

fn empty_cells() -> serde_json::Value {
    serde_json::Value::Array(Vec::new())
}

/// Create a notebook.
#[utoipa::path(post, path = "/api/v1/notebooks", tag = "notebooks", request_body = NotebookInput,
    responses((status = 201, body = Notebook), (status = 403, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    who: AuthUser,
    body: JsonBody<NotebookInput>,
) -> Result<(StatusCode, Json<Notebook>), ApiError> {
    let Json(input) = body?;
    check_cells(&input.cells)?;
    check_title(&input.title)?;
    authorize_on(&st, &who, &input.application, Action::Notebook).await?;
    let nb = Notebook {
        id: format!("nb_{}", crate::auth::random_hex(12)?),
        owner: who.user.username.clone(),
        application_id: input.application,
        title: input.title,
        cells: input.cells,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    Ok((
        StatusCode::CREATED,
        Json(st.store.save_notebook(&nb).await?),
    ))
}

/// A notebook with the id of its application's live extract: a saved output made on another
/// extract is stale (the console marks it and asks for a re-run).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct NotebookView {
    #[serde(flatten)]
    pub notebook: Notebook,
    pub extract_id: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/notebooks/{id}", tag = "notebooks", params(("id" = String, Path)),
    responses((status = 200, body = NotebookView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<NotebookView>, ApiError> {
    let notebook = own(&st, &who, &id).await?;
    let extract_id = st
        .store
        .extract(&notebook.application_id)
        .await?
        .filter(|x| x.destroyed_at.is_none())
        .map(|x| x.extract_id);
    Ok(Json(NotebookView {
        notebook,
        extract_id,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NotebookUpdate {
    pub title: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub cells: Option<serde_json::Value>,
}

/// Replace a notebook's title and/or cells.
#[utoipa::path(put, path = "/api/v1/notebooks/{id}", tag = "notebooks", params(("id" = String, Path)), request_body = NotebookUpdate,
    responses((status = 200, body = Notebook), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<NotebookUpdate>,
) -> Result<Json<Notebook>, ApiError> {
    let Json(u) = body?;
    let mut nb = own(&st, &who, &id).await?;
    if let Some(c) = u.cells {
        check_cells(&c)?;
        nb.cells = c;
    }
    if let Some(t) = u.title {
        check_title(&t)?;
        nb.title = t;
    }
    Ok(Json(st.store.save_notebook(&nb).await?))
}

#[utoipa::path(delete, path = "/api/v1/notebooks/{id}", tag = "notebooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let nb = own(&st, &who, &id).await?;
    st.store.delete_notebook(&nb).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReleaseInput {
    pub application: String,
    /// A successful query of yours under this application.
    pub query_id: String,
    pub justification: String,
}

/// Ask for a query result to be released for publication.
#[utoipa::path(post, path = "/api/v1/releases", tag = "notebooks", request_body = ReleaseInput,
    responses((status = 201, body = ReleaseRequest), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_release(
    State(st): State<AppState>,
    who: AuthUser,
    body: JsonBody<ReleaseInput>,
) -> Result<(StatusCode, Json<ReleaseRequest>), ApiError> {
    let Json(input) = body?;
    authorize_on(&st, &who, &input.application, Action::RequestRelease).await?;
    if input.justification.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`justification` is required: say where and why the result is published / 公表先と理由を記入してください",
        ));
    }
    let mine = st
        .store
        .queries(Some(&input.application), Some(&who.user.username), 10_000)
        .await?;
    if !mine
        .iter()
        .any(|q| q.query_id == input.query_id && q.outcome == "ok")
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`query_id` must name one of your successful queries under this application (GET /api/v1/queries) / 自分の成功したクエリの ID を指定してください",
        ));
    }
    let r = ReleaseRequest {
        id: format!("rel_{}", crate::auth::random_hex(12)?),
        application_id: input.application,
        requester: who.user.username.clone(),
        query_id: input.query_id,
        justification: input.justification,
        status: "pending".into(),
        created_at: Utc::now(),
    };
    st.store.create_release(&r).await?;
    Ok((StatusCode::CREATED, Json(r)))
}
