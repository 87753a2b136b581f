//! Queries: `POST /api/v1/query`, the catalogue of a scope, the caller's query history,
//! and the (always refused) export endpoint.
//!
//! Order of a query: authenticate → resolve the application or PMS scope → authorize
//! (casbin) → disclosure mode and ε budget → run on the data plane over the scope's own
//! extract → write history, budget spend, error counter and audit event in ONE
//! transaction → respond. If that transaction fails, nothing is returned but a 500
//! `internal` (no audit, no answer). Execution errors reach the caller as a code, a
//! generic message and the query id; the audit event holds the internal detail.

use std::time::Instant;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::data::AuthorisedQuery;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::{Action, Denial, Target, fiscal_year};
use crate::privacy::result::{DisclosureMode, ReleasedResult};
use crate::sql::scope::Scope;
use crate::store::QueryWrite;
use crate::store::model::{Application, QueryRecord, Role, Status, User};

/// Prefix of PMS standing scope ids.
pub const PMS_PREFIX: &str = "PMS-";

/// The standing terms of a manufacturer's PMS scope: the regen dataset, only patients
/// treated with its own products, suppression at k = 5 (seed 001).
pub fn pms_terms(manufacturer: &str) -> (Scope, DisclosureMode, u32) {
    (
        Scope {
            datasets: vec!["regen".into()],
            manufacturers: Some(vec![manufacturer.to_string()]),
            ..Default::default()
        },
        DisclosureMode::Suppression,
        5,
    )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct QueryRequest {
    /// Application id, or a PMS standing scope id such as `PMS-M01`.
    pub application: String,
    pub sql: String,
    /// `suppression` or `dp`; default: what the approval sets.
    #[schema(value_type = Option<String>)]
    pub mode: Option<DisclosureMode>,
    /// ε for this query (DP only).
    pub epsilon: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResponse {
    pub query_id: String,
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub result: ReleasedResult,
}

/// What a query runs against once resolved.
pub(crate) struct Resolved {
    pub id: String,
    pub scope: Scope,
    pub mode: DisclosureMode,
    pub threshold: u32,
    pub epsilon_budget: Option<f64>,
}

/// Resolve and authorize `application` for `action`. Unknown application ids are
/// reported as `not_named_user`, so ids of other studies cannot be probed.
pub(crate) async fn resolve(
    st: &AppState,
    user: &User,
    id: &str,
    action: Action,
) -> Result<Result<Resolved, Denial>, ApiError> {
    let today = st.today();
    if let Some(m) = id.strip_prefix(PMS_PREFIX) {
        if let Err(d) = st
            .policy
            .authorize(user, action, &Target::Pms { scope_id: id }, today)
            .await
        {
            return Ok(Err(d));
        }
        let (scope, mode, threshold) = pms_terms(m);
        return Ok(Ok(Resolved {
            id: id.to_string(),
            scope,
            mode,
            threshold,
            epsilon_budget: None,
        }));
    }
    let app = st.store.application(id).await?;
    let Some(app) = app else {
        // Run the enforcement point anyway, so role refusals (reviewer, auditor) still read
        // `forbidden` and only a researcher sees `not_named_user`.
        let phantom = phantom_application(id);
        let d = match st
            .policy
            .authorize(
                user,
                action,
                &Target::Application {
                    app: &phantom,
                    pledged: false,
                },
                today,
            )
            .await
        {
            Err(d) => d,
            Ok(()) => unreachable_denial(),
        };
        return Ok(Err(d));
    };
    let pledged = st.store.has_pledged(&app.id, &user.username).await?;
    if let Err(d) = st
        .policy
        .authorize(
            user,
            action,
            &Target::Application { app: &app, pledged },
            today,
        )
        .await
    {
        return Ok(Err(d));
    }
    let Some(a) = app.approval.clone() else {
        return Ok(Err(unreachable_denial()));
    };
    Ok(Ok(Resolved {
        id: app.id.clone(),
        scope: a.scope,
        mode: a.mode,
        threshold: a.k,
        epsilon_budget: a.epsilon_budget,
    }))
}

fn unreachable_denial() -> Denial {
    Denial {
        code: "not_approved",
        message: "This application has no approval on record. / 承認記録がありません。".into(),
    }
}

fn phantom_application(id: &str) -> Application {
    Application {
        id: id.to_string(),
        status: Status::Draft,
        applicant: String::new(),
        form: Default::default(),
        approval: None,
        pending_change: None,
        revoked_reason: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn new_query_id() -> String {
    format!(
        "q_{}",
        crate::auth::random_hex(12).unwrap_or_else(|_| "unavailable".into())
    )
}

/// Record a refused or failed query and build its error (the query id is the `ref`).
async fn refuse(
    st: &AppState,
    user: &User,
    req: &QueryRequest,
    query_id: &str,
    e: ApiError,
    detail: serde_json::Value,
) -> ApiError {
    let e = e.with_ref(query_id);
    let record = QueryRecord {
        query_id: query_id.to_string(),
        application_id: req.application.clone(),
        username: user.username.clone(),
        at: Utc::now(),
        sql: req.sql.clone(),
        outcome: "denied".into(),
        code: Some(e.code.clone()),
        duration_ms: None,
        epsilon_spent: None,
        suppressed_cells: None,
        dropped_rows: None,
    };
    let ev = AuditEvent::denied(
        &user.username,
        "query.run",
        Some(&req.application),
        &e.code,
        json!({"sql": req.sql, "detail": detail}),
    )
    .with_reference(query_id);
    let write = QueryWrite {
        record,
        spend: None,
        execution_error: false,
    };
    match st.store.record_query(&write, &ev).await {
        Ok(_) => e,
        Err(err) => ApiError::internal(&err),
    }
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
    let Json(req) = body?;
    let user = &who.user;
    let query_id = new_query_id();
    let resolved = match resolve(&st, user, &req.application, Action::Query).await? {
        Ok(r) => r,
        Err(d) => {
            return Err(refuse(
                &st,
                user,
                &req,
                &query_id,
                ApiError::denied(&d),
                json!({"rule": d.code}),
            )
            .await);
        }
    };
    let mode = req.mode.unwrap_or(resolved.mode);
    if mode != resolved.mode {
        let e = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "This approval releases results in `{}` mode only; omit `mode` or use that mode. / この承認で許可された開示方式は {} のみです。",
                super::session::mode_name(resolved.mode),
                super::session::mode_name(resolved.mode)
            ),
        );
        return Err(refuse(
            &st,
            user,
            &req,
            &query_id,
            e,
            json!({"requested_mode": super::session::mode_name(mode)}),
        )
        .await);
    }
    let fy = fiscal_year(st.today());
    let epsilon = match mode {
        DisclosureMode::Suppression => None,
        DisclosureMode::Dp => {
            let Some(eps) = req.epsilon.filter(|e| e.is_finite() && *e > 0.0) else {
                let e = ApiError::bad_request(
                    "invalid_request",
                    "DP queries need a positive `epsilon` (e.g. 0.5). / DP クエリには正の epsilon が必要です。",
                );
                return Err(refuse(&st, user, &req, &query_id, e, json!({})).await);
            };
            let budget = resolved.epsilon_budget.unwrap_or(0.0);
            let spent = st.store.epsilon_spent(&resolved.id, fy).await?;
            if spent + eps > budget + 1e-12 {
                let e = ApiError::conflict(
                    "budget_exhausted",
                    format!(
                        "The query needs ε={eps}; application {} has {:.3} left in fiscal year {fy}. Lower ε or ask the reviewer for more budget. / プライバシー予算が不足しています。",
                        resolved.id,
                        (budget - spent).max(0.0)
                    ),
                );
                return Err(refuse(
                    &st,
                    user,
                    &req,
                    &query_id,
                    e,
                    json!({"epsilon": eps, "spent": spent, "budget": budget}),
                )
                .await);
            }
            Some(eps)
        }
    };
    let extract = st.store.extract(&resolved.id).await?;
    let Some(extract) = extract.filter(|x| x.destroyed_at.is_none()) else {
        let e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The data of this scope is not available; please report the reference id. / 対象データが利用できません。参照 ID を添えて報告してください。",
        );
        return Err(refuse(
            &st,
            user,
            &req,
            &query_id,
            e,
            json!({"detail": "extract missing or destroyed"}),
        )
        .await);
    };

    let started = Instant::now();
    let outcome = st
        .data
        .query(AuthorisedQuery {
            application: resolved.id.clone(),
            extract_dir: extract.path.clone().into(),
            scope: resolved.scope.clone(),
            mode,
            threshold: resolved.threshold,
            dp: epsilon.map(|epsilon| crate::privacy::result::DpParams {
                epsilon,
                bounds: Default::default(),
            }),
            sql: req.sql.clone(),
        })
        .await;
    let elapsed_ms = started.elapsed().as_millis() as i64;

    let mut record = QueryRecord {
        query_id: query_id.clone(),
        application_id: resolved.id.clone(),
        username: user.username.clone(),
        at: Utc::now(),
        sql: req.sql.clone(),
        outcome: "ok".into(),
        code: None,
        duration_ms: Some(elapsed_ms),
        epsilon_spent: None,
        suppressed_cells: None,
        dropped_rows: None,
    };
    match outcome {
        Ok(out) => {
            let d = &out.result.disclosure;
            let spent = match mode {
                DisclosureMode::Dp => Some(d.epsilon_spent.or(epsilon).unwrap_or(0.0)),
                DisclosureMode::Suppression => None,
            };
            record.epsilon_spent = spent;
            record.suppressed_cells = Some(d.suppressed_cells as i64);
            record.dropped_rows = Some(d.dropped_rows as i64);
            let ev = AuditEvent::ok(
                &user.username,
                "query.run",
                Some(&resolved.id),
                json!({
                    "sql": req.sql,
                    "plan_fingerprint": out.plan_fingerprint,
                    "extract_id": extract.extract_id,
                    "tables": out.tables,
                    "mode": super::session::mode_name(mode),
                    "threshold": d.threshold,
                    "suppressed": d.suppressed,
                    "suppressed_cells": d.suppressed_cells,
                    "dropped_rows": d.dropped_rows,
                    "epsilon_spent": spent,
                    "rows": out.result.rows.len(),
                    "duration_ms": out.duration.as_millis() as u64,
                }),
            )
            .with_reference(&query_id);
            let write = QueryWrite {
                record,
                spend: spent.map(|e| (fy, e)),
                execution_error: false,
            };
            // No audit, no answer.
            if let Err(err) = st.store.record_query(&write, &ev).await {
                return Err(ApiError::internal(&err).with_ref(&query_id));
            }
            Ok(Json(QueryResponse {
                query_id,
                result: out.result,
            }))
        }
        Err(qe) => {
            let execution_error = matches!(qe, crate::engine::QueryError::Execution { .. });
            let prior_errors = user.execution_errors;
            record.outcome = if qe.http_status() >= 500 {
                "error".into()
            } else {
                "denied".into()
            };
            record.code = Some(qe.code().into());
            let mut ev = AuditEvent::denied(
                &user.username,
                "query.run",
                Some(&resolved.id),
                qe.code(),
                json!({
                    "sql": req.sql,
                    "extract_id": extract.extract_id,
                    "internal_detail": qe.internal_detail(),
                    "duration_ms": elapsed_ms,
                    "user_execution_errors": prior_errors + execution_error as i64,
                }),
            )
            .with_reference(&query_id);
            if qe.http_status() >= 500 {
                ev.outcome = "error".into();
            }
            let write = QueryWrite {
                record,
                spend: None,
                execution_error,
            };
            if let Err(err) = st.store.record_query(&write, &ev).await {
                return Err(ApiError::internal(&err).with_ref(&query_id));
            }
            Err(ApiError::query(&qe, &query_id))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct CatalogParams {
    pub application: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub privacy_unit: bool,
    pub public_domain: bool,
    pub facility: bool,
    pub description_ja: String,
    pub description_en: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogTable {
    pub name: String,
    pub kind: String,
    pub description_ja: String,
    pub description_en: String,
    pub columns: Vec<CatalogColumn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogResponse {
    pub application: String,
    pub datasets: Vec<String>,
    pub tables: Vec<CatalogTable>,
}

/// Tables and columns visible in an application's scope.
#[utoipa::path(get, path = "/api/v1/catalog", tag = "query", params(CatalogParams),
    responses((status = 200, body = CatalogResponse), (status = 403, body = ErrorBody)))]
pub async fn catalog(
    State(st): State<AppState>,
    who: AuthUser,
    params: Result<Query<CatalogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CatalogResponse>, ApiError> {
    let Query(p) = params?;
    let r = match resolve(&st, &who.user, &p.application, Action::Catalog).await? {
        Ok(r) => r,
        Err(d) => {
            let e = ApiError::denied(&d);
            let ev = AuditEvent::denied(
                &who.user.username,
                "catalog.read",
                Some(&p.application),
                d.code,
                json!({}),
            )
            .with_reference(&e.reference);
            st.store.record(&ev).await?;
            return Err(e);
        }
    };
    let tables = st
        .catalog
        .tables_in(&r.scope.datasets)
        .map(|t| CatalogTable {
            name: t.name.clone(),
            kind: format!("{:?}", t.kind).to_lowercase(),
            description_ja: t.description_ja.clone(),
            description_en: t.description_en.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| CatalogColumn {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    privacy_unit: c.privacy_unit,
                    public_domain: c.public_domain,
                    facility: c.facility,
                    description_ja: c.description_ja.clone(),
                    description_en: c.description_en.clone(),
                })
                .collect(),
        })
        .collect();
    Ok(Json(CatalogResponse {
        application: r.id,
        datasets: r.scope.datasets,
        tables,
    }))
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
    let e = ApiError::denied(&d);
    let ev = AuditEvent::denied(
        &who.user.username,
        "export.attempt",
        Some(&req.application),
        d.code,
        json!({"what": req.what}),
    )
    .with_reference(&e.reference);
    st.store.record(&ev).await?;
    Err(e)
}
