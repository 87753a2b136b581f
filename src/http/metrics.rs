//! HTTP stage, metrics: `GET /metrics` in Prometheus text format (`crate::metrics`), and
//! the request counter every API request passes.
//!
//! Guarantees: on the API's address `/metrics` answers only a request bearing the
//! operator's metrics token (`metrics_token_file`; compared in constant time) — without
//! a configured token it does not exist there (404) — and on `metrics_listen`, a separate
//! address the operator keeps on an internal network, it answers without a token and
//! nothing else is served. Requests are counted by route *template*
//! (`/api/v1/applications/{id}`), never by the path a caller sent.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// Count and time one API request by its route template.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    // The request's trace span (`request_span`) learns its route template here, where
    // routing has matched it.
    tracing::Span::current().record("http.route", route.as_str());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let m = crate::metrics::get();
    m.http_requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    m.http_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Read the gauges that are cheaper to read at scrape time than to keep up to date.
async fn refresh(st: &AppState) -> Result<(), ApiError> {
    let m = crate::metrics::get();
    m.active_sessions.set(st.store.active_sessions().await?);
    let length = st.store.audit_head().await?.map_or(0, |(seq, _)| seq);
    m.audit_chain_length.set(length);
    m.query_memory_bytes
        .set(crate::engine::memory::global_reserved() as i64);
    Ok(())
}

/// The exposition itself.
pub async fn exposition(st: &AppState) -> Result<Response, ApiError> {
    refresh(st).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::get().render(),
    )
        .into_response())
}

/// `GET /metrics` on the API address: only with the operator's metrics token.
pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(token) = st.settings.metrics_token.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Metrics are not served on this address; configure metrics_token_file or metrics_listen. / メトリクスはこのアドレスでは提供していません。",
        ));
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::auth::secrets_equal(sent.trim(), token.expose()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Send the operator's metrics token: `Authorization: Bearer <token>` (metrics_token_file). / メトリクスには運用者トークンが必要です。",
        ));
    }
    exposition(&st).await
}

/// The router of the separate metrics address: `/metrics` only, no token.
pub fn metrics_only(state: AppState) -> axum::Router {
    async fn open(State(st): State<AppState>) -> Result<Response, ApiError> {
        exposition(&st).await
    }
    axum::Router::new()
        .route("/metrics", axum::routing::get(open))
        .with_state(state)
}
