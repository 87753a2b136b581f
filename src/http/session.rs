//! Sessions: login (`POST /api/v1/session`), logout, `GET /api/v1/me`, and the
//! [`AuthUser`] extractor every authenticated handler takes.
//!
//! Bearer tokens skip CSRF checks (a browser never attaches them on its own). Cookie
//! sessions are HttpOnly + SameSite=Strict (+ Secure under TLS), and state-changing
//! requests must echo the session's CSRF token in `X-CSRF-Token` (double submit).
//!
//! With `tls.bind_certificate_to_user`, login and every authenticated request must also
//! come with a verified client certificate whose CN is the account's username (seed 003:
//! client certificate *and* ID/password); a stolen token or password alone is not enough.

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::tls::TlsConnection;
use crate::audit::AuditEvent;
use crate::auth;
use crate::auth::login::Peer;
use crate::store::model::{Role, Term, User};

pub const SESSION_COOKIE: &str = "kura_session";
pub const CSRF_COOKIE: &str = "kura_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub token_hash: String,
    pub via_cookie: bool,
    /// Where the request came from (the place of use, `super::origin`).
    pub origin: crate::policy::place::Origin,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let (token, via_cookie) = match bearer {
            Some(t) => (t, false),
            None => match cookie(&parts.headers, SESSION_COOKIE) {
                Some(t) => (t, true),
                None => return Err(ApiError::unauthenticated()),
            },
        };
        let hash = auth::token_hash(&token);
        let Some((user, csrf)) = state.store.session(&hash).await? else {
            return Err(ApiError::unauthenticated());
        };
        check_certificate(
            state,
            parts.extensions.get::<TlsConnection>(),
            &user.username,
            "session.certificate",
        )
        .await?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if via_cookie && !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !auth::secrets_equal(sent, &csrf) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "Send the session's CSRF token in the X-CSRF-Token header (it is in the kura_csrf cookie). / CSRF トークンを X-CSRF-Token ヘッダーで送ってください。",
                ));
            }
        }
        Ok(AuthUser {
            user,
            token_hash: hash,
            via_cookie,
            origin: super::origin::origin_of(parts, &state.settings),
        })
    }
}

/// The certificate binding (seed 003). When `bind_certificate_to_user` is on, the
/// request must come over TLS with a verified client certificate whose CN is `username`:
/// no certificate is `403 certificate_required`, another one `403 certificate_mismatch`.
/// Each refusal is audited under the error's reference before it is returned
/// ([`auth::login::check_certificate`]).
pub async fn check_certificate(
    st: &AppState,
    conn: Option<&TlsConnection>,
    username: &str,
    action: &str,
) -> Result<(), ApiError> {
    let bind = st.settings.bind_certificate_to_user;
    auth::login::check_certificate(&st.store, bind, transport(conn), username, action).await?;
    Ok(())
}

/// The transport facts of a request's connection.
fn transport(conn: Option<&TlsConnection>) -> Peer<'_> {
    Peer {
        tls: conn.is_some(),
        client: conn.and_then(|c| c.client.as_deref()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionUser {
    pub username: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub user: SessionUser,
    /// CSRF token for cookie sessions (also set as the `kura_csrf` cookie).
    pub csrf_token: String,
    pub expires_at: chrono::DateTime<Utc>,
}

/// Log in with username and password.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
        (status = 403, description = "certificate_required / certificate_mismatch: with [tls] bind_certificate_to_user, the verified client certificate's CN must equal the username", body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    conn: Option<Extension<TlsConnection>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if let Some(Extension(ConnectInfo(addr))) = peer
        && !st.login_rate.allow(addr.ip())
    {
        crate::metrics::login("rate_limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            auth::login::RATE_LIMITED,
        ));
    }
    let conn = conn.as_ref().map(|Extension(c)| c);
    let settings = &st.settings;
    let auth::login::Session { user, token: t } = auth::login::login(
        &st.store,
        settings.token_ttl,
        settings.bind_certificate_to_user,
        transport(conn),
        &req.username,
        &req.password,
        "password",
    )
    .await?;
    let secure = if st.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let max_age = st.settings.token_ttl.num_seconds();
    let session_cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        t.token
    );
    // Readable by the console's script on purpose: it echoes it in X-CSRF-Token.
    let csrf_cookie = format!(
        "{CSRF_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={max_age}{secure}",
        t.csrf
    );
    let body = LoginResponse {
        token: t.token,
        user: SessionUser {
            username: user.username,
            roles: user.roles,
        },
        csrf_token: t.csrf,
        expires_at: t.expires_at,
    };
    let mut resp = Json(body).into_response();
    for c in [session_cookie, csrf_cookie] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

/// Log out: revoke the current token.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(st): State<AppState>, who: AuthUser) -> Result<Response, ApiError> {
    let ev = AuditEvent::ok(&who.user.username, "session.logout", None, json!({}));
    st.store.revoke_session(&who.token_hash, &ev).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    for c in [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

/// An application (or PMS standing scope) the caller may use now.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsableScope {
    pub id: String,
    pub title: String,
    pub term: Option<Term>,
    #[schema(value_type = Object)]
    pub scope: crate::sql::scope::Scope,
    pub mode: String,
    pub threshold: u32,
    pub epsilon_budget: Option<f64>,
    /// ε spent (or reserved by running queries) this fiscal year (DP only).
    pub epsilon_spent: Option<f64>,
    pub epsilon_remaining: Option<f64>,
    /// Fiscal year of the budget figures (DP only).
    pub fiscal_year: Option<i32>,
    /// When the budget renews: 1 April (DP only).
    pub renews_on: Option<chrono::NaiveDate>,
    /// Default contribution bounds of DP queries (DP only).
    #[schema(value_type = Option<Object>)]
    pub dp_bounds: Option<crate::privacy::result::DpBounds>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub username: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub manufacturer: Option<String>,
    pub applications: Vec<UsableScope>,
}

/// The caller, their roles, and the applications they may use now.
#[utoipa::path(get, path = "/api/v1/me", tag = "session", responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(State(st): State<AppState>, who: AuthUser) -> Result<Json<MeResponse>, ApiError> {
    let today = st.today();
    let fy = crate::policy::fiscal_year(today);
    let ledger = st.gateway().ledger;
    let mut usable = Vec::new();
    for u in st
        .policy
        .usable(&st.store, &who.user, today, who.origin)
        .await?
    {
        let g = u.grant;
        let dp = g.mode == crate::privacy::result::DisclosureMode::Dp;
        let (spent, remaining) = match g.epsilon_budget {
            Some(b) => {
                let used = ledger.used(&g.id, fy).await?;
                (Some(used), Some((b - used).max(0.0)))
            }
            None => (None, None),
        };
        usable.push(UsableScope {
            id: g.id,
            title: u.title,
            term: u.term,
            scope: g.scope,
            mode: g.mode.to_string(),
            threshold: g.threshold,
            epsilon_budget: g.epsilon_budget,
            epsilon_spent: spent,
            epsilon_remaining: remaining,
            fiscal_year: dp.then_some(fy),
            renews_on: dp.then(|| crate::privacy::budget::renews_on(fy)),
            dp_bounds: dp.then(|| g.dp_bounds.unwrap_or_default()),
        });
    }
    Ok(Json(MeResponse {
        username: who.user.username.clone(),
        display_name: who.user.display_name.clone(),
        roles: who.user.roles.clone(),
        manufacturer: who.user.manufacturer.clone(),
        applications: usable,
    }))
}
