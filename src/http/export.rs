//! `POST /api/v1/export`: row-level export, which is never permitted (third-party
//! provision and taking records out of the facility are forbidden, seed 002 ch. 3). The
//! attempt is refused by the enforcement point and audited as `export.attempt`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::policy::{Action, Denial, Target};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ExportRequest {
    pub application: String,
    /// What was asked for (e.g. `extract`, `rows`, `csv`).
    #[serde(default)]
    pub what: Option<String>,
}

/// Row-level export. Never permitted; the attempt is audited.
#[utoipa::path(post, path = "/api/v1/export", tag = "query", request_body = ExportRequest,
    responses((status = 403, body = ErrorBody)))]
pub async fn export(
    State(st): State<AppState>,
    who: AuthUser,
    body: Result<Json<ExportRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body?;
    let app = st.store.application(&req.application).await?;
    let target = match &app {
        Some(a) => Target::Application {
            app: a,
            pledged: true,
            origin: who.origin,
        },
        None => Target::None,
    };
    let d = match st
        .policy
        .authorize(&who.user, Action::Export, &target, st.today())
        .await
    {
        Err(d) => d,
        // No role holds `export`; reaching this means the policy files were edited.
        Ok(()) => Denial {
            code: "export_not_permitted",
            message: "Row-level export is not available. / 個票データの持ち出しはできません。"
                .into(),
        },
    };
    let detail = json!({"what": req.what});
    let app = Some(req.application.as_str());
    Err(super::denied::denied(&st, &who.user, "export.attempt", app, &d, detail).await)
}
