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
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::data::{AuthorisedQuery, DpPreview};
use super::error::{ApiError, BudgetRefusal, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::workflow::FieldError;
use crate::policy::{Action, Denial, Target, fiscal_year};
use crate::privacy::result::{
    DisclosureMode, DpBounds, DpColumn, DpDisclosure, DpParams, ReleasedResult,
};
use crate::query::QueryError;
use crate::sql::scope::Scope;
use crate::store::budget::{
    BudgetUse, CacheKey, CacheWrite, CachedRelease, LedgerState, Reservation, Settle,
};
use crate::store::model::{Application, QueryRecord, Role, Status, User};
use crate::store::{QueryWrite, StoreError};

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
    /// ε for this query (DP only; positive, at most the yearly budget).
    pub epsilon: Option<f64>,
    /// L for this query (DP only; default: the approval's, else 5).
    pub max_groups_per_patient: Option<u32>,
    /// m for this query (DP only; default: the approval's, else 3).
    pub max_rows_per_group: Option<u32>,
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
    pub dp_bounds: Option<DpBounds>,
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
            dp_bounds: None,
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
        dp_bounds: a.dp_bounds,
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
        ledger: None,
        cache: None,
        execution_error: false,
    };
    match st.store.record_query(&write, &ev).await {
        Ok(_) => e,
        Err(err) => ApiError::internal(&err),
    }
}

/// The date a fiscal year's budget renews: 1 April of the next year.
pub fn renews_on(fiscal_year: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(fiscal_year + 1, 4, 1).expect("1 April exists")
}

/// Authorize the caller for `action` on the request's application and check the mode.
/// A refusal comes back as the error and the audit detail.
async fn authorize_query(
    st: &AppState,
    user: &User,
    req: &QueryRequest,
    action: Action,
) -> Result<Result<(Resolved, DisclosureMode), (ApiError, serde_json::Value)>, ApiError> {
    let resolved = match resolve(st, user, &req.application, action).await? {
        Ok(r) => r,
        Err(d) => return Ok(Err((ApiError::denied(&d), json!({"rule": d.code})))),
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
        return Ok(Err((
            e,
            json!({"requested_mode": super::session::mode_name(mode)}),
        )));
    }
    Ok(Ok((resolved, mode)))
}

/// ε and bounds of a DP request: ε positive, finite and within the budget; bounds from
/// the request, else the approval, else kura's defaults, each 1..=`DpBounds::MAX`.
fn dp_params(req: &QueryRequest, resolved: &Resolved) -> Result<DpParams, ApiError> {
    let budget = resolved.epsilon_budget.unwrap_or(0.0);
    let Some(eps) = req.epsilon.filter(|e| e.is_finite() && *e > 0.0) else {
        let mut e = ApiError::bad_request(
            "invalid_request",
            "DP queries need a positive `epsilon` (e.g. 0.5). / DP クエリには正の epsilon が必要です。",
        );
        e.fields = vec![FieldError {
            field: "epsilon".into(),
            message: "give a positive ε such as 0.5 / 正の ε（例: 0.5）を指定してください".into(),
        }];
        return Err(e);
    };
    if eps > budget + 1e-9 {
        let mut e = ApiError::bad_request(
            "invalid_request",
            format!(
                "ε={eps} is more than the whole yearly budget of this application (ε={budget}); use a smaller ε. / ε が年度の予算全体（{budget}）を超えています。"
            ),
        );
        e.fields = vec![FieldError {
            field: "epsilon".into(),
            message: format!("at most {budget} / {budget} 以下にしてください"),
        }];
        return Err(e);
    }
    let base = resolved.dp_bounds.unwrap_or_default();
    let mut fields = Vec::new();
    let mut pick = |field: &str, v: Option<u32>, default: u32| match v {
        None => default,
        Some(v) if (1..=DpBounds::MAX).contains(&v) => v,
        Some(_) => {
            fields.push(FieldError {
                field: field.into(),
                message: format!(
                    "{field} must be between 1 and {} / {field} は 1 以上 {} 以下にしてください",
                    DpBounds::MAX,
                    DpBounds::MAX
                ),
            });
            default
        }
    };
    let bounds = DpBounds {
        max_groups_per_patient: pick(
            "max_groups_per_patient",
            req.max_groups_per_patient,
            base.max_groups_per_patient,
        ),
        max_rows_per_group: pick(
            "max_rows_per_group",
            req.max_rows_per_group,
            base.max_rows_per_group,
        ),
    };
    if !fields.is_empty() {
        let mut e = ApiError::bad_request(
            "invalid_request",
            "Contribution bounds are out of range; see `fields`. / 寄与の上限が範囲外です（fields を参照）。",
        );
        e.fields = fields;
        return Err(e);
    }
    Ok(DpParams {
        epsilon: eps,
        bounds,
    })
}

/// The `budget_exhausted` refusal: what was asked, what is left, and when it renews.
fn budget_exhausted(application: &str, eps: f64, fy: i32, u: BudgetUse) -> ApiError {
    let renews = renews_on(fy);
    let mut e = ApiError::conflict(
        "budget_exhausted",
        format!(
            "The query needs ε={eps}, but application {application} has ε={:.3} left of its ε={:.3} budget for fiscal year {fy}. The budget renews on {renews}. Lower ε, re-run an identical earlier query (its stored answer is free), or ask the reviewer for more budget. / プライバシー予算が不足しています。要求 ε={eps}、残り ε={:.3}（{fy} 年度の予算 ε={:.3}）。予算は {} に更新されます。ε を下げるか、同一のクエリを再実行する（保存済みの回答は予算を消費しません）か、審査担当者に予算の追加を依頼してください。",
            u.remaining(),
            u.budget,
            u.remaining(),
            u.budget,
            renews.format("%Y年%-m月%-d日"),
        ),
    );
    e.budget = Some(Box::new(BudgetRefusal {
        epsilon_requested: eps,
        epsilon_budget: u.budget,
        epsilon_spent: u.used,
        epsilon_remaining: u.remaining(),
        fiscal_year: fy,
        renews_on: renews,
    }));
    e
}

fn extract_missing() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "The data of this scope is not available; please report the reference id. / 対象データが利用できません。参照 ID を添えて報告してください。",
    )
}

/// The DP part of an audit event (from the release's disclosure).
fn dp_audit(d: &DpDisclosure) -> serde_json::Value {
    json!({
        "epsilon": d.epsilon,
        "mechanism": d.mechanism,
        "bounds": d.bounds,
        "release_threshold": d.release_threshold,
        "columns": d.columns.iter().map(|c| json!({
            "index": c.index,
            "name": c.name,
            "aggregate": c.aggregate,
            "epsilon": c.epsilon,
            "sensitivity": c.sensitivity,
            "noise_scale": c.noise_scale,
            "clamp": c.clamp,
        })).collect::<Vec<_>>(),
    })
}

/// Record a data-plane refusal or failure (settling the ε reservation, if any) and build
/// its error. Execution errors reach the caller as a code and the query id only.
#[allow(clippy::too_many_arguments)]
async fn record_failure(
    st: &AppState,
    user: &User,
    req: &QueryRequest,
    query_id: &str,
    application: &str,
    extract_id: &str,
    qe: QueryError,
    elapsed_ms: i64,
    ledger: Option<Settle>,
) -> ApiError {
    let execution_error = matches!(qe, QueryError::Execution { .. });
    let record = QueryRecord {
        query_id: query_id.to_string(),
        application_id: application.to_string(),
        username: user.username.clone(),
        at: Utc::now(),
        sql: req.sql.clone(),
        outcome: if qe.http_status() >= 500 {
            "error".into()
        } else {
            "denied".into()
        },
        code: Some(qe.code().into()),
        duration_ms: Some(elapsed_ms),
        epsilon_spent: None,
        suppressed_cells: None,
        dropped_rows: None,
    };
    let mut ev = AuditEvent::denied(
        &user.username,
        "query.run",
        Some(application),
        qe.code(),
        json!({
            "sql": req.sql,
            "extract_id": extract_id,
            "internal_detail": qe.internal_detail(),
            "duration_ms": elapsed_ms,
            "user_execution_errors": user.execution_errors + execution_error as i64,
            "epsilon_reservation": ledger.as_ref().map(|l| l.state.as_str()),
        }),
    )
    .with_reference(query_id);
    if qe.http_status() >= 500 {
        ev.outcome = "error".into();
    }
    let write = QueryWrite {
        record,
        ledger,
        cache: None,
        execution_error,
    };
    if let Err(err) = st.store.record_query(&write, &ev).await {
        return ApiError::internal(&err).with_ref(query_id);
    }
    ApiError::query(&qe, query_id)
}

/// A checked and priced DP query, before any budget is touched.
struct DpPrepared {
    params: DpParams,
    fiscal_year: i32,
    budget: f64,
    extract_id: String,
    aq: AuthorisedQuery,
    preview: DpPreview,
    key: CacheKey,
    cached: Option<CachedRelease>,
}

/// Why a DP query stopped before reserving anything.
enum DpStop {
    /// A control-plane refusal (bad ε or bounds, missing extract) with audit detail.
    Refused(ApiError, serde_json::Value),
    /// The data plane refused the query in its preview.
    Plane(QueryError, String),
    /// The store failed.
    Internal(ApiError),
}

impl From<StoreError> for DpStop {
    fn from(e: StoreError) -> Self {
        DpStop::Internal(e.into())
    }
}

/// Validate → preview (no data read) → cache lookup. Nothing is reserved here.
async fn prepare_dp(
    st: &AppState,
    req: &QueryRequest,
    resolved: &Resolved,
    mode: DisclosureMode,
) -> Result<DpPrepared, DpStop> {
    let params = dp_params(req, resolved).map_err(|e| {
        DpStop::Refused(
            e,
            json!({"epsilon": req.epsilon, "max_groups_per_patient": req.max_groups_per_patient, "max_rows_per_group": req.max_rows_per_group}),
        )
    })?;
    let extract = st.store.extract(&resolved.id).await?;
    let Some(extract) = extract.filter(|x| x.destroyed_at.is_none()) else {
        return Err(DpStop::Refused(
            extract_missing(),
            json!({"detail": "extract missing or destroyed"}),
        ));
    };
    let aq = AuthorisedQuery {
        application: resolved.id.clone(),
        extract_dir: extract.path.clone().into(),
        scope: resolved.scope.clone(),
        mode,
        threshold: resolved.threshold,
        dp: Some(params),
        sql: req.sql.clone(),
    };
    let preview = st
        .data
        .dp_preview(aq.clone())
        .await
        .map_err(|qe| DpStop::Plane(qe, extract.extract_id.clone()))?;
    let key = CacheKey {
        application_id: resolved.id.clone(),
        release_key: preview.release_key.clone(),
        extract_id: extract.extract_id.clone(),
        epsilon: params.epsilon,
        bounds: params.bounds,
    };
    let cached = st.store.dp_cached(&key).await?;
    Ok(DpPrepared {
        params,
        fiscal_year: fiscal_year(st.today()),
        budget: resolved.epsilon_budget.unwrap_or(0.0),
        extract_id: extract.extract_id,
        aq,
        preview,
        key,
        cached,
    })
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
    let (resolved, mode) = match authorize_query(&st, user, &req, Action::Query).await? {
        Ok(r) => r,
        Err((e, detail)) => return Err(refuse(&st, user, &req, &query_id, e, detail).await),
    };
    if mode == DisclosureMode::Dp {
        return run_dp(&st, user, &req, query_id, &resolved, mode).await;
    }
    let extract = st.store.extract(&resolved.id).await?;
    let Some(extract) = extract.filter(|x| x.destroyed_at.is_none()) else {
        return Err(refuse(
            &st,
            user,
            &req,
            &query_id,
            extract_missing(),
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
            dp: None,
            sql: req.sql.clone(),
        })
        .await;
    let elapsed_ms = started.elapsed().as_millis() as i64;
    let out = match outcome {
        Ok(out) => out,
        Err(qe) => {
            return Err(record_failure(
                &st,
                user,
                &req,
                &query_id,
                &resolved.id,
                &extract.extract_id,
                qe,
                elapsed_ms,
                None,
            )
            .await);
        }
    };
    let d = &out.result.disclosure;
    let record = QueryRecord {
        query_id: query_id.clone(),
        application_id: resolved.id.clone(),
        username: user.username.clone(),
        at: Utc::now(),
        sql: req.sql.clone(),
        outcome: "ok".into(),
        code: None,
        duration_ms: Some(elapsed_ms),
        epsilon_spent: None,
        suppressed_cells: Some(d.suppressed_cells as i64),
        dropped_rows: Some(d.dropped_rows as i64),
    };
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
            "epsilon_spent": null,
            "rows": out.result.rows.len(),
            "duration_ms": out.duration.as_millis() as u64,
        }),
    )
    .with_reference(&query_id);
    let write = QueryWrite {
        record,
        ledger: None,
        cache: None,
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

/// The DP query path: validate → preview → cache lookup → reserve → run → commit
/// (spend, cache entry, history and audit in one transaction) → respond.
async fn run_dp(
    st: &AppState,
    user: &User,
    req: &QueryRequest,
    query_id: String,
    resolved: &Resolved,
    mode: DisclosureMode,
) -> Result<Json<QueryResponse>, ApiError> {
    let p = match prepare_dp(st, req, resolved, mode).await {
        Ok(p) => p,
        Err(DpStop::Refused(e, detail)) => {
            return Err(refuse(st, user, req, &query_id, e, detail).await);
        }
        Err(DpStop::Plane(qe, extract_id)) => {
            return Err(record_failure(
                st,
                user,
                req,
                &query_id,
                &resolved.id,
                &extract_id,
                qe,
                0,
                None,
            )
            .await);
        }
        Err(DpStop::Internal(e)) => return Err(e.with_ref(&query_id)),
    };
    let fy = p.fiscal_year;
    let mut record = QueryRecord {
        query_id: query_id.clone(),
        application_id: resolved.id.clone(),
        username: user.username.clone(),
        at: Utc::now(),
        sql: req.sql.clone(),
        outcome: "ok".into(),
        code: None,
        duration_ms: None,
        epsilon_spent: Some(0.0),
        suppressed_cells: None,
        dropped_rows: None,
    };

    // An identical question on the same extract version: re-release, spend nothing.
    if let Some(c) = p.cached {
        let mut result = c.result;
        let Some(dpd) = result.disclosure.dp.as_mut() else {
            return Err(
                ApiError::internal(&"stored DP answer has no DP disclosure").with_ref(&query_id)
            );
        };
        dpd.cached = true;
        let dp_detail = dp_audit(dpd);
        let used = st.store.epsilon_spent(&resolved.id, fy).await?;
        result.disclosure.epsilon_spent = Some(0.0);
        result.disclosure.epsilon_remaining = Some((p.budget - used).max(0.0));
        record.suppressed_cells = Some(result.disclosure.suppressed_cells as i64);
        record.dropped_rows = Some(result.disclosure.dropped_rows as i64);
        record.duration_ms = Some(0);
        let ev = AuditEvent::ok(
            &user.username,
            "query.run",
            Some(&resolved.id),
            json!({
                "sql": req.sql,
                "extract_id": p.extract_id,
                "release_key": p.key.release_key,
                "mode": "dp",
                "cached": true,
                "original_query_id": c.query_id,
                "epsilon_spent": 0.0,
                "dp": dp_detail,
                "rows": result.rows.len(),
            }),
        )
        .with_reference(&query_id);
        let write = QueryWrite {
            record,
            ledger: None,
            cache: None,
            execution_error: false,
        };
        if let Err(err) = st.store.record_query(&write, &ev).await {
            return Err(ApiError::internal(&err).with_ref(&query_id));
        }
        return Ok(Json(QueryResponse { query_id, result }));
    }

    let reservation = Reservation {
        query_id: query_id.clone(),
        application_id: resolved.id.clone(),
        fiscal_year: fy,
        epsilon: p.params.epsilon,
    };
    match st
        .store
        .reserve_epsilon(&reservation, p.budget, st.settings.request_timeout)
        .await?
    {
        Ok(_) => {}
        Err(u) => {
            let e = budget_exhausted(&resolved.id, p.params.epsilon, fy, u);
            return Err(refuse(
                st,
                user,
                req,
                &query_id,
                e,
                json!({"epsilon": p.params.epsilon, "spent": u.used, "budget": u.budget, "fiscal_year": fy}),
            )
            .await);
        }
    }

    let started = Instant::now();
    let outcome = st.data.query(p.aq.clone()).await;
    let elapsed_ms = started.elapsed().as_millis() as i64;
    let out = match outcome {
        Ok(out) => out,
        Err(qe) => {
            // Nothing was released: the reservation is returned (audited with the refusal).
            return Err(record_failure(
                st,
                user,
                req,
                &query_id,
                &resolved.id,
                &p.extract_id,
                qe,
                elapsed_ms,
                Some(Settle {
                    query_id: query_id.clone(),
                    state: LedgerState::Released,
                }),
            )
            .await);
        }
    };
    // Fail closed: an answer that does not say how it was noised, or that charged more
    // than was reserved, is not released (and the reservation stays spent).
    let sound = out
        .result
        .disclosure
        .dp
        .as_ref()
        .is_some_and(|d| !d.cached && d.epsilon <= p.params.epsilon + 1e-9);
    if !sound {
        let qe = QueryError::internal(
            "dp release",
            "DP answer without a matching DP disclosure; not released",
        );
        return Err(record_failure(
            st,
            user,
            req,
            &query_id,
            &resolved.id,
            &p.extract_id,
            qe,
            elapsed_ms,
            Some(Settle {
                query_id: query_id.clone(),
                state: LedgerState::Spent,
            }),
        )
        .await);
    }
    let mut result = out.result;
    let used = st.store.epsilon_spent(&resolved.id, fy).await?;
    result.disclosure.epsilon_spent = Some(p.params.epsilon);
    result.disclosure.epsilon_remaining = Some((p.budget - used).max(0.0));
    let d = &result.disclosure;
    let dp_detail = d.dp.as_ref().map(dp_audit);
    record.epsilon_spent = Some(p.params.epsilon);
    record.duration_ms = Some(elapsed_ms);
    record.suppressed_cells = Some(d.suppressed_cells as i64);
    record.dropped_rows = Some(d.dropped_rows as i64);
    let ev = AuditEvent::ok(
        &user.username,
        "query.run",
        Some(&resolved.id),
        json!({
            "sql": req.sql,
            "plan_fingerprint": out.plan_fingerprint,
            "extract_id": p.extract_id,
            "release_key": p.key.release_key,
            "tables": out.tables,
            "mode": "dp",
            "cached": false,
            "epsilon_spent": p.params.epsilon,
            "fiscal_year": fy,
            "dp": dp_detail,
            "suppressed_cells": d.suppressed_cells,
            "dropped_rows": d.dropped_rows,
            "rows": result.rows.len(),
            "duration_ms": out.duration.as_millis() as u64,
        }),
    )
    .with_reference(&query_id);
    let write = QueryWrite {
        record,
        ledger: Some(Settle {
            query_id: query_id.clone(),
            state: LedgerState::Spent,
        }),
        cache: Some(CacheWrite {
            key: p.key,
            result: result.clone(),
            query_id: query_id.clone(),
        }),
        execution_error: false,
    };
    // No audit, no answer. If this fails the reservation stays and is converted to spent.
    if let Err(err) = st.store.record_query(&write, &ev).await {
        return Err(ApiError::internal(&err).with_ref(&query_id));
    }
    Ok(Json(QueryResponse { query_id, result }))
}

/// The price of a DP query, worked out without reading data or reserving budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostResponse {
    pub application: String,
    /// ε a fresh run of this query spends.
    pub epsilon: f64,
    /// ε the query would actually be charged: 0 when an identical answer is stored.
    pub cost: f64,
    /// ε left in this fiscal year now.
    pub epsilon_remaining: f64,
    /// ε that would be left after running the query.
    pub epsilon_remaining_after: f64,
    pub epsilon_budget: f64,
    pub fiscal_year: i32,
    pub renews_on: NaiveDate,
    /// An identical answer is stored for this extract version: re-running costs nothing.
    pub cached: bool,
    #[schema(value_type = Object)]
    pub bounds: DpBounds,
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<DpColumn>,
    pub release_threshold: f64,
    pub mechanism: String,
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
    let Json(req) = body?;
    let user = &who.user;
    let deny = |e: ApiError, detail: serde_json::Value| {
        let st = st.clone();
        let username = user.username.clone();
        let sql = req.sql.clone();
        let application = req.application.clone();
        async move {
            let ev = AuditEvent::denied(
                &username,
                "query.cost",
                Some(&application),
                &e.code,
                json!({"sql": sql, "detail": detail}),
            )
            .with_reference(&e.reference);
            match st.store.record(&ev).await {
                Ok(_) => e,
                Err(err) => ApiError::internal(&err),
            }
        }
    };
    let (resolved, mode) = match authorize_query(&st, user, &req, Action::Query).await? {
        Ok(r) => r,
        Err((e, detail)) => return Err(deny(e, detail).await),
    };
    if mode != DisclosureMode::Dp {
        let e = ApiError::bad_request(
            "invalid_request",
            "This approval releases results with small-cell suppression, which spends no budget; the dry run is for DP applications. / この承認は秘匿処理（セル抑制）方式のため、予算の見積もりは不要です。",
        );
        return Err(deny(e, json!({})).await);
    }
    let p = match prepare_dp(&st, &req, &resolved, mode).await {
        Ok(p) => p,
        Err(DpStop::Refused(e, detail)) => return Err(deny(e, detail).await),
        Err(DpStop::Plane(qe, extract_id)) => {
            let e = ApiError::query(&qe, &crate::http::error::new_ref());
            return Err(deny(
                e,
                json!({"extract_id": extract_id, "internal_detail": qe.internal_detail()}),
            )
            .await);
        }
        Err(DpStop::Internal(e)) => return Err(e),
    };
    let fy = p.fiscal_year;
    let used = st.store.epsilon_spent(&resolved.id, fy).await?;
    let u = BudgetUse {
        budget: p.budget,
        used,
    };
    let cached = p.cached.is_some();
    let cost = if cached { 0.0 } else { p.params.epsilon };
    if !cached && used + cost > p.budget + 1e-9 {
        let e = budget_exhausted(&resolved.id, p.params.epsilon, fy, u);
        return Err(deny(
            e,
            json!({"epsilon": p.params.epsilon, "spent": used, "budget": p.budget}),
        )
        .await);
    }
    let d = p.preview.disclosure;
    let ev = AuditEvent::ok(
        &user.username,
        "query.cost",
        Some(&resolved.id),
        json!({
            "sql": req.sql,
            "extract_id": p.extract_id,
            "release_key": p.key.release_key,
            "cached": cached,
            "cost": cost,
            "dp": dp_audit(&d),
        }),
    );
    st.store.record(&ev).await?;
    Ok(Json(CostResponse {
        application: resolved.id,
        epsilon: p.params.epsilon,
        cost,
        epsilon_remaining: u.remaining(),
        epsilon_remaining_after: (u.remaining() - cost).max(0.0),
        epsilon_budget: p.budget,
        fiscal_year: fy,
        renews_on: renews_on(fy),
        cached,
        bounds: p.params.bounds,
        columns: d.columns,
        release_threshold: d.release_threshold,
        mechanism: d.mechanism,
    }))
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
