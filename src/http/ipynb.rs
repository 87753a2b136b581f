//! Notebooks as Jupyter files (issue 15 §2):
//! `GET /api/v1/notebooks/{id}/ipynb` (the cells, no outputs),
//! `POST /api/v1/notebooks/{id}/ipynb` `{"run": true, "epsilon"…}` (each SQL cell run
//! through the gateway as a query of the notebook's application — audited like any
//! query — and its released answer or refusal as the cell's output), and
//! `POST /api/v1/notebooks/import` `{"application", "title"?, "notebook": <.ipynb JSON>}`.
//!
//! The handlers only extract, authorise (the owner's notebook; importing needs the same
//! authorisation as creating a notebook for the application) and call `notebook::ipynb`.
//! Outputs come only from the gateway at export time; an imported file's outputs are
//! dropped.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::airlock::cells::{marker, records};
use crate::airlock::files::chart;
use crate::notebook::ipynb::{self, Run};
use crate::notebook::{Cell, CellKind, cells_of, to_stored};
use crate::policy::Action;
use crate::policy::workflow::FieldError;
use crate::query::{QueryRequest, Refusal};
use crate::store::model::Notebook;

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

async fn own(st: &AppState, who: &AuthUser, id: &str) -> Result<Notebook, ApiError> {
    match st.store.notebook(id).await? {
        Some(nb) if nb.owner == who.user.username => Ok(nb),
        _ => Err(ApiError::not_found("notebook")),
    }
}

/// The file name of an export: the title's letters and digits (ASCII), else the id.
fn file_name(nb: &Notebook) -> String {
    let safe: String = nb
        .title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_matches('_');
    if safe.is_empty() {
        format!("{}.ipynb", nb.id)
    } else {
        format!("{safe}.ipynb")
    }
}

/// The .ipynb document as a download.
fn download(nb: &Notebook, doc: serde_json::Value) -> Response {
    let body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ipynb+json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file_name(nb))) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// A notebook as a Jupyter notebook (nbformat 4), without outputs.
#[utoipa::path(get, path = "/api/v1/notebooks/{id}/ipynb", tag = "notebooks", params(("id" = String, Path)),
    responses((status = 200, description = "application/x-ipynb+json"), (status = 404, body = ErrorBody)))]
pub async fn export(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let nb = own(&st, &who, &id).await?;
    let cells = cells_of(&nb.cells);
    let doc = ipynb::export(&nb, &cells, &[], &who.user.username, Utc::now());
    Ok(download(&nb, doc))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RunExport {
    /// Run every SQL cell now and include the released answers as outputs.
    #[serde(default)]
    pub run: bool,
    /// ε per SQL cell (DP applications).
    pub epsilon: Option<f64>,
    pub max_groups_per_patient: Option<u32>,
    pub max_rows_per_group: Option<u32>,
}

/// Run one SQL cell through the gateway; its answer or refusal.
async fn run_cell(
    st: &AppState,
    who: &AuthUser,
    nb: &Notebook,
    sql: &str,
    p: &RunExport,
) -> Result<Run, ApiError> {
    let req = QueryRequest {
        application: nb.application_id.clone(),
        sql: sql.to_string(),
        mode: None,
        epsilon: p.epsilon,
        max_groups_per_patient: p.max_groups_per_patient,
        max_rows_per_group: p.max_rows_per_group,
        origin: who.origin,
    };
    match st.gateway().run(&who.user, &req, st.today()).await {
        Ok(a) => Ok(Run::Answered {
            chart: chart(st, &a.query_id).await,
            query_id: a.query_id,
            result: Box::new(a.result),
        }),
        // No audit, no answer — and no export with a half-recorded run in it.
        Err(r) if matches!(r.cause, Refusal::Store(_)) => Err(r.into()),
        Err(r) => {
            let e = ApiError::from(r);
            Ok(Run::Refused {
                code: e.code,
                message: e.message,
                reference: e.reference,
            })
        }
    }
}

/// The bar chart of a stored answer, drawn as the airlock draws a release's chart (the
/// column kinds come from the answer's disclosure trace; suppressed cells are never
/// drawn). `None` when there is nothing to plot or no font; a failure only loses the
/// chart (the table is still exported) and is logged without values.
async fn chart(st: &AppState, query_id: &str) -> Option<Vec<u8>> {
    let stored = match st.store.stored_answer(query_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(query_id, error = %e, "ipynb: stored answer unreadable, no chart");
            return None;
        }
    };
    let title = query_id.to_string();
    let drawn = tokio::task::spawn_blocking(move || {
        let body = &stored.body;
        let columns = records(&body.result, &body.trace).ok()?.columns;
        let mark = marker(&body.result);
        chart::render(&body.result, &columns, &title, &mark).ok()?
    })
    .await;
    drawn.ok().flatten()
}

/// Run the notebook's SQL cells (each an audited query) and export it with the answers.
#[utoipa::path(post, path = "/api/v1/notebooks/{id}/ipynb", tag = "notebooks", params(("id" = String, Path)), request_body = RunExport,
    responses((status = 200, description = "application/x-ipynb+json with outputs"), (status = 404, body = ErrorBody)))]
pub async fn run_export(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<RunExport>,
) -> Result<Response, ApiError> {
    let Json(p) = body?;
    let nb = own(&st, &who, &id).await?;
    let cells = cells_of(&nb.cells);
    let mut runs = Vec::with_capacity(cells.len());
    for c in &cells {
        let run = match (p.run, c.kind) {
            (true, CellKind::Sql) if !c.source.trim().is_empty() => {
                Some(run_cell(&st, &who, &nb, &c.source, &p).await?)
            }
            _ => None,
        };
        runs.push(run);
    }
    let doc = ipynb::export(&nb, &cells, &runs, &who.user.username, Utc::now());
    Ok(download(&nb, doc))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportRequest {
    pub application: String,
    /// Default: the title kura exported into the file, else "Imported notebook".
    pub title: Option<String>,
    /// The .ipynb file's JSON.
    #[schema(value_type = Object)]
    pub notebook: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResponse {
    pub notebook: Notebook,
    pub sql_cells: usize,
    pub markdown_cells: usize,
    /// Cells (1-based) that were neither Markdown nor `%%kura` SQL, kept as Markdown text.
    pub kept_as_text: Vec<usize>,
}

/// Import a Jupyter notebook (SQL and Markdown only; outputs are dropped).
#[utoipa::path(post, path = "/api/v1/notebooks/import", tag = "notebooks", request_body = ImportRequest,
    responses((status = 201, body = ImportResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn import(
    State(st): State<AppState>,
    who: AuthUser,
    body: JsonBody<ImportRequest>,
) -> Result<(StatusCode, Json<ImportResponse>), ApiError> {
    let Json(req) = body?;
    let bad = |e: ipynb::ImportError| {
        let mut api = ApiError::bad_request("invalid_notebook", e.message.clone());
        api.fields = vec![FieldError {
            field: e.field,
            message: e.message,
        }];
        api
    };
    let imported = ipynb::import(&req.notebook).map_err(bad)?;
    let title = match req.title.as_deref() {
        Some(t) => Some(ipynb::check_title(t).map_err(bad)?),
        None => imported.title.clone(),
    }
    .filter(|t| !t.is_empty())
    .unwrap_or_else(|| "Imported notebook / 取り込んだノートブック".into());
    let denied = st
        .policy
        .resolve(
            &st.store,
            &who.user,
            &req.application,
            Action::Notebook,
            st.today(),
            who.origin,
        )
        .await?;
    if let Err(d) = denied {
        let app = Some(req.application.as_str());
        let detail = serde_json::json!({"via": "ipynb"});
        return Err(
            super::denied::denied(&st, &who.user, "authorize.notebook", app, &d, detail).await,
        );
    }
    let count = |k: CellKind| {
        imported
            .cells
            .iter()
            .filter(|c: &&Cell| c.kind == k)
            .count()
    };
    let (sql_cells, markdown_cells) = (count(CellKind::Sql), count(CellKind::Markdown));
    let nb = Notebook {
        id: format!("nb_{}", crate::auth::random_hex(12)?),
        owner: who.user.username.clone(),
        application_id: req.application,
        title,
        cells: to_stored(&imported.cells),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    let notebook = st.store.save_notebook(&nb).await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportResponse {
            notebook,
            sql_cells,
            markdown_cells,
            kept_as_text: imported.kept_as_text,
        }),
    ))
}
