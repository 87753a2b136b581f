//! Queries: `POST /api/v1/query`, the DP dry run `POST /api/v1/query/cost`, and the
//! caller's query history `GET /api/v1/queries`.
//!
//! The handlers only extract the request, call the query stage's one entry point
//! ([`crate::query::Gateway`]: authorize → disclosure mode and ε budget → data plane →
//! history and audit in one transaction) and map its answer or refusal
//! ([`ApiError::from`]`(Refused)`); they decide nothing about a query.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::privacy::result::ReleasedResult;
use crate::query::{CostResponse, QueryRequest};
use crate::store::model::{QueryRecord, Role};

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResponse {
    pub query_id: String,
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub result: ReleasedResult,
}

/// Run a query under the caller's approval.
#[utoipa::path(post, path = "/api/v1/query", tag = "query", request_body = QueryRequest,
    responses((status = 200, body = QueryResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn run_query(
    State(st): State<AppState>,
    who: AuthUser,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<QueryResponse>, ApiError> {
    let Json(mut req) = body?;
    req.origin = who.origin;
    let answer = match st.gateway().run(&who.user, &req, st.today()).await {
        Ok(a) => a,
        Err(refused) => {
            let e = ApiError::from(refused);
            let outcome = if e.status.is_server_error() {
                "error"
            } else {
                "denied"
            };
            crate::metrics::query(outcome, Some(&e.code));
            return Err(e);
        }
    };
    let d = &answer.result.disclosure;
    crate::metrics::query("ok", None);
    crate::metrics::suppressed("differencing", d.differencing.len() as u64);
    crate::metrics::suppressed(
        "threshold",
        d.suppressed_cells.saturating_sub(d.differencing.len()) as u64,
    );
    if let Some(eps) = d.epsilon_spent {
        crate::metrics::get().epsilon_spent.add(eps);
    }
    Ok(Json(QueryResponse {
        query_id: answer.query_id,
        result: answer.result,
    }))
}

/// Dry run: check and price a DP query (same body as `/query`). Nothing is reserved or
/// read; the call is audited as `query.cost`.
#[utoipa::path(post, path = "/api/v1/query/cost", tag = "query", request_body = QueryRequest,
    responses((status = 200, body = CostResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn query_cost(
    State(st): State<AppState>,
    who: AuthUser,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<CostResponse>, ApiError> {
    let Json(mut req) = body?;
    req.origin = who.origin;
    Ok(Json(st.gateway().cost(&who.user, &req, st.today()).await?))
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct HistoryParams {
    pub application: Option<String>,
    /// Reviewers and auditors may look at another user's history.
    pub user: Option<String>,
    pub limit: Option<i64>,
}

/// Query history: your own queries, or (reviewer, auditor) anyone's.
#[utoipa::path(get, path = "/api/v1/queries", tag = "query", params(HistoryParams),
    responses((status = 200, body = Vec<QueryRecord>), (status = 401, body = ErrorBody)))]
pub async fn history(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<QueryRecord>>, ApiError> {
    let Query(p) = params?;
    let oversight = who.user.has(Role::Auditor) || who.user.has(Role::Reviewer);
    let user_filter = if oversight {
        p.user.clone()
    } else {
        Some(who.user.username.clone())
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        st.store
            .queries(p.application.as_deref(), user_filter.as_deref(), limit)
            .await?,
    ))
}
