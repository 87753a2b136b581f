//! HTTP stage (axum): the JSON API of `shared/API.md`, documented as OpenAPI at
//! `/api/v1/openapi.json`, and the entry of every request into the pipeline
//! (authenticate → authorize → query path → audit → response).
//!
//! Guarantees: every handler authenticates through [`session::AuthUser`] and authorizes
//! through the single enforcement point ([`crate::policy::Policy::authorize`]); every
//! error leaves through [`error::ApiError`]; a query result is returned only after its
//! audit event committed. Limits on body size, time and concurrency, request ids,
//! tracing and security headers (strict CSP) wrap the whole router.

// console (issue 17 §4): operator endpoints
pub mod admin;
// oversight (issue 13 §2 §4)
pub mod alerts;
// annual reports (issue 13 §3)
pub mod annual;
pub mod applications;
pub mod audit;
pub mod catalog;
// seeds (issue 16 §2 §3 §5): form 3 and withdrawal, the facility report, notices, the register
pub mod consent;
pub mod denied;
pub mod error;
pub mod export;
pub mod facility;
// production (issue 14): input length limits, /metrics
pub mod limits;
pub mod metrics;
// clients and scale (issue 15 §2): notebooks as Jupyter files
pub mod ipynb;
pub mod notebooks;
pub mod notices;
// seeds (issue 16 §1): the caller's address for the place of use
pub mod origin;
pub mod query;
pub mod register;
pub mod releases;
pub mod reports;
pub mod serve;
pub mod session;
pub mod tls;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::catalog::Catalog;
use crate::config::HttpSettings;
use crate::policy::Policy;
pub use crate::query::plane::DataPlane;
use crate::store::Store;
pub use error::ApiError;

/// The services handed to handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub data: Arc<dyn DataPlane>,
    pub catalog: Arc<Catalog>,
    pub settings: Arc<HttpSettings>,
    /// production (issue 14): the query stage's admission state, one per server.
    pub admission: Arc<crate::query::admission::Admission>,
    /// production (issue 14): login attempts per client address.
    pub login_rate: Arc<crate::auth::rate::AddressRate>,
}

impl AppState {
    /// Today's date for term checks, in Japan Standard Time ([`crate::policy::today`]).
    pub fn today(&self) -> chrono::NaiveDate {
        crate::policy::today()
    }

    /// The query stage's entry point over these services.
    pub fn gateway(&self) -> crate::query::Gateway {
        crate::query::Gateway::new(
            self.store.clone(),
            self.policy.clone(),
            self.data.clone(),
            self.settings.request_timeout,
            self.admission.clone(),
        )
    }
}

#[derive(Clone, Default)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = crate::auth::random_hex(8).ok()?;
        HeaderValue::from_str(&format!("req_{id}"))
            .ok()
            .map(RequestId::new)
    }
}

/// The span of one request (exported when a collector is configured, `telemetry`): the
/// method, the request id and, filled in later, the route template and the status —
/// never the URI (a query string can hold search words) nor any header but the id.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A client may send its own id: it is kept, but only so much of it.
    let id: String = id.chars().take(64).collect();
    tracing::info_span!(
        "http.request",
        http.method = %req.method(),
        http.route = tracing::field::Empty,
        http.status = tracing::field::Empty,
        request_id = %id,
    )
}

/// Record the response status on the request's span.
fn record_status<B>(
    res: &axum::http::Response<B>,
    _latency: std::time::Duration,
    span: &tracing::Span,
) {
    span.record("http.status", res.status().as_u16());
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "kura API", description = "kura (蔵): research data access enclave. Contract essentials: shared/API.md."),
    paths(
        session::login, session::logout, session::me,
        query::run_query, query::query_cost, catalog::catalog, query::history, export::export,
        applications::list, applications::create, applications::detail, applications::edit,
        applications::submit, applications::change, applications::pledge, applications::decide,
        applications::recommend, applications::revoke,
        // oversight (issue 13 §2 §4)
        reports::usage_report, reports::file_usage_report, reports::usage_reports,
        reports::add_publication, reports::publications, alerts::list, alerts::ack,
        // annual reports (issue 13 §3)
        annual::annual_report, annual::annual_register,
        audit::events, audit::verify,
        notebooks::list, notebooks::create, notebooks::get_one, notebooks::update, notebooks::delete,
        // the output airlock (issue 13 §1)
        releases::create, releases::list, releases::detail, releases::decide, releases::file,
        releases::register,
        // seeds (issue 16 §2 §3 §5)
        consent::lead_consent, consent::withdraw, notices::list, notices::download,
        facility::report, register::studies,
        // console (issue 17): operator screens, reference labels, audit export
        admin::users, admin::add_user, admin::disable_user, admin::enable_user,
        admin::reset_password, admin::set_roles, admin::datasets, admin::extracts,
        admin::rebuild_extract, admin::destroy_extract, admin::keys,
        catalog::reference_labels, audit::export_csv,
        // clients and scale (issue 15 §2)
        ipynb::export, ipynb::run_export, ipynb::import,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    tags(
        (name = "session", description = "Login, logout, current user / ログイン"),
        (name = "query", description = "Queries and catalogue / クエリ"),
        (name = "applications", description = "Use applications and approvals (seed 002 forms 1–3) / 利用申請"),
        (name = "audit", description = "Tamper-evident audit log / 監査ログ"),
        (name = "notebooks", description = "Notebooks and release requests / ノートブック"),
        (name = "reports", description = "Usage reports and publications / 使用状況報告・公表報告"),
        (name = "releases", description = "The output airlock: release requests, review, downloads, register / 成果物の持ち出し審査"),
        (name = "register", description = "Public transparency register (no login) / 公開登録簿"),
        (name = "admin", description = "Operator: users, extracts, keys / 運用（利用者・抽出データ・鍵）"),
    )
)]
pub struct ApiDoc;

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn api_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such API endpoint; see /api/v1/openapi.json. / 該当する API はありません。",
    )
}

/// The request-timeout layer's error as the API error shape (its own 408 has no body).
async fn timeout_error(err: tower::BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "The request took longer than the server allows (request_timeout_secs) and was stopped; send it again, or narrow a query that takes this long. / 処理時間の上限を超えたため中止しました。再送するか、クエリを絞り込んでください。",
        )
    } else {
        ApiError::internal(&err)
    }
}

/// The whole router. Tests call it without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let api = Router::new()
        .route("/session", post(session::login).delete(session::logout))
        .route("/me", get(session::me))
        .route("/query", post(query::run_query))
        .route("/query/cost", post(query::query_cost))
        .route("/queries", get(query::history))
        .route("/catalog", get(catalog::catalog))
        .route("/export", post(export::export))
        .route(
            "/applications",
            get(applications::list).post(applications::create),
        )
        .route(
            "/applications/{id}",
            get(applications::detail).put(applications::edit),
        )
        .route("/applications/{id}/submit", post(applications::submit))
        .route("/applications/{id}/change", post(applications::change))
        .route("/applications/{id}/pledge", post(applications::pledge))
        .route("/applications/{id}/decision", post(applications::decide))
        .route(
            "/applications/{id}/recommendations",
            post(applications::recommend),
        )
        .route("/applications/{id}/revoke", post(applications::revoke))
        // oversight (issue 13 §2 §4): usage reports, publications, alerts
        .route(
            "/applications/{id}/usage-report",
            get(reports::usage_report),
        )
        .route(
            "/applications/{id}/usage-report/file",
            post(reports::file_usage_report),
        )
        .route(
            "/applications/{id}/publications",
            get(reports::publications).post(reports::add_publication),
        )
        .route("/reports/usage", get(reports::usage_reports))
        // annual reports (issue 13 §3)
        .route("/reports/annual", get(annual::annual_report))
        .route("/reports/annual/register", get(annual::annual_register))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}/ack", post(alerts::ack))
        .route("/audit/events", get(audit::events))
        .route("/audit/verify", get(audit::verify))
        .route("/notebooks", get(notebooks::list).post(notebooks::create))
        .route(
            "/notebooks/{id}",
            get(notebooks::get_one)
                .put(notebooks::update)
                .delete(notebooks::delete),
        )
        // the output airlock (issue 13 §1): requests, review, downloads, register
        .route("/releases", get(releases::list).post(releases::create))
        .route("/releases/register", get(releases::register))
        .route("/releases/{id}", get(releases::detail))
        // clients and scale (issue 15 §2): notebooks as Jupyter files
        .route("/notebooks/import", post(ipynb::import))
        .route(
            "/notebooks/{id}/ipynb",
            get(ipynb::export).post(ipynb::run_export),
        )
        .route("/releases/{id}/decision", post(releases::decide))
        .route("/releases/{id}/files/{name}", get(releases::file))
        // seeds (issue 16 §2 §3 §5): form 3, withdrawal, notices, facility report, register
        .route(
            "/applications/{id}/lead-consent",
            post(consent::lead_consent),
        )
        .route("/applications/{id}/withdraw", post(consent::withdraw))
        .route("/applications/{id}/notices", get(notices::list))
        .route(
            "/applications/{id}/notices/{notice}",
            get(notices::download),
        )
        .route("/facility/report", get(facility::report))
        .route("/public/studies", get(register::studies))
        // console (issue 17): operator endpoints (admin only, audited), reference labels,
        // the audit log's CSV export (audited as audit.export)
        .route("/admin/users", get(admin::users).post(admin::add_user))
        .route("/admin/users/{username}/disable", post(admin::disable_user))
        .route("/admin/users/{username}/enable", post(admin::enable_user))
        .route(
            "/admin/users/{username}/password",
            post(admin::reset_password),
        )
        .route(
            "/admin/users/{username}/roles",
            axum::routing::put(admin::set_roles),
        )
        .route("/admin/datasets", get(admin::datasets))
        .route("/admin/extracts", get(admin::extracts))
        .route("/admin/extracts/{id}/rebuild", post(admin::rebuild_extract))
        .route("/admin/extracts/{id}/destroy", post(admin::destroy_extract))
        .route("/admin/keys", get(admin::keys))
        .route("/reference/labels", get(catalog::reference_labels))
        .route("/audit/events.csv", get(audit::export_csv))
        .route("/openapi.json", get(openapi))
        .fallback(api_not_found)
        // production (issue 14): every text field of every JSON body has a length limit;
        // every request counted by its route template
        .layer(axum::middleware::from_fn(limits::check_lengths))
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .with_state(state.clone());
    // production (issue 14): GET /metrics, with the operator's metrics token only
    let metrics_route = Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(state);

    let x_request_id = HeaderName::from_static("x-request-id");
    let header = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::overriding(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    Router::new()
        .nest("/api/v1", api)
        .merge(metrics_route)
        // Everything outside /api/v1 is the web console (SPA with index.html fallback).
        .fallback(crate::console::serve)
        // A report document (issue 13) sends a stricter policy of its own (no source
        // but its stylesheet's hash); every other response gets this one.
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(
                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ))
        .layer(header("x-content-type-options", "nosniff"))
        .layer(header("x-frame-options", "DENY"))
        .layer(header("referrer-policy", "no-referrer"))
        .layer(header("cache-control", "no-store"))
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(timeout_error))
                .layer(TimeoutLayer::new(settings.request_timeout)),
        )
        .layer(GlobalConcurrencyLimitLayer::new(settings.concurrency))
        .layer(CatchPanicLayer::new())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_status),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeId))
}
