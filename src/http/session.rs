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
use crate::auth::certificate::{BindingRefusal, check_binding};
use crate::store::FailedLogin;
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
/// Each refusal is audited under the error's reference before it is returned.
pub async fn check_certificate(
    st: &AppState,
    conn: Option<&TlsConnection>,
    username: &str,
    action: &str,
) -> Result<(), ApiError> {
    if !st.settings.bind_certificate_to_user {
        return Ok(());
    }
    let identity = conn.and_then(|c| c.client.as_deref());
    let refusal = match check_binding(identity, username) {
        Ok(()) => return Ok(()),
        Err(r) => r,
    };
    let (e, detail) = match refusal {
        BindingRefusal::NoCertificate => (
            ApiError::new(
                StatusCode::FORBIDDEN,
                "certificate_required",
                "This server requires the client certificate issued for your account: connect over HTTPS with that certificate, then log in. / 本人用のクライアント証明書で HTTPS 接続してからログインしてください。",
            ),
            json!({"tls": conn.is_some()}),
        ),
        BindingRefusal::Mismatch { presented } => (
            ApiError::new(
                StatusCode::FORBIDDEN,
                "certificate_mismatch",
                "The client certificate was not issued for this account: log in with the account named in your certificate, or connect with the certificate issued for this account. / クライアント証明書とアカウントが一致しません。本人の証明書と本人のアカウントを使ってください。",
            ),
            json!({
                "certificate_cn": presented,
                "certificate_sha256": identity.map(|i| i.fingerprint.clone()),
            }),
        ),
    };
    let ev =
        AuditEvent::denied(username, action, None, &e.code, detail).with_reference(&e.reference);
    st.store.record(&ev).await?;
    Err(e)
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

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "Username or password is wrong; after 5 failures the account is locked for 15 minutes. / ユーザー名またはパスワードが違います。5 回続けて失敗すると 15 分間ロックされます。",
    )
}

/// The audit event of a login refused because the name is locked.
fn locked_event(username: &str, e: &ApiError, when: &str) -> AuditEvent {
    AuditEvent::denied(
        username,
        "session.login",
        None,
        "account_locked",
        json!({"when": when}),
    )
    .with_reference(&e.reference)
}

/// Record and return the refusal of a login attempt on a locked name.
async fn refuse_locked(st: &AppState, username: &str) -> Result<ApiError, ApiError> {
    crate::metrics::login("account_locked");
    let e = account_locked();
    st.store
        .record(&locked_event(username, &e, "before the password check"))
        .await?;
    Ok(e)
}

fn account_locked() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "account_locked",
        "Too many failed logins; try again in 15 minutes or ask the operator to reset the password. / ログイン失敗が続いたため一時的にロックしています。15 分後に再試行するか、運用担当者にパスワードの再設定を依頼してください。",
    )
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
            "Too many login attempts from this address; wait a minute and try again. / この接続元からのログイン試行が多すぎます。1 分ほど待ってから再試行してください。",
        ));
    }
    // Before the password: a certificate for another account never gets to try one,
    // and a mismatch does not count towards the owner's lockout.
    check_certificate(
        &st,
        conn.as_ref().map(|Extension(c)| c),
        &req.username,
        "session.login",
    )
    .await?;
    let now = Utc::now();
    let (_, locked_until) = st.store.login_state(&req.username).await?;
    if auth::is_locked(locked_until, now) {
        // Refused before the password is checked: a locked name costs no argon2 work.
        return Err(refuse_locked(&st, &req.username).await?);
    }
    let found = st.store.user_with_hash(&req.username).await?;
    // Always pay the argon2id cost, so timing does not tell known from unknown names.
    let hash = found
        .as_ref()
        .map(|(_, h)| h.as_str())
        .unwrap_or_else(|| auth::dummy_hash());
    let password = req.password.clone();
    let hash_owned = hash.to_string();
    let verified =
        tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash_owned))
            .await
            .unwrap_or(false);
    let ok = verified && found.as_ref().is_some_and(|(u, _)| !u.disabled);
    if !ok {
        let e = invalid_credentials();
        let known = found.is_some();
        let event = |f: &FailedLogin| {
            AuditEvent::denied(
                &req.username,
                "session.login",
                None,
                "invalid_credentials",
                json!({"known_account": known, "locked": f.locked_now}),
            )
            .with_reference(&e.reference)
        };
        let lock_until = now + chrono::Duration::minutes(auth::LOCK_MINUTES);
        st.store
            .login_failed(&req.username, auth::MAX_FAILURES, lock_until, event)
            .await?;
        crate::metrics::login("invalid_credentials");
        return Err(e);
    }
    let (user, _) = found.expect("checked above");
    let t = auth::new_token(st.settings.token_ttl)?;
    let refused = account_locked();
    let event = |opened: &bool| {
        if *opened {
            AuditEvent::ok(
                &user.username,
                "session.login",
                None,
                json!({"via": "password"}),
            )
        } else {
            locked_event(
                &user.username,
                &refused,
                "locked while the password was checked",
            )
        }
    };
    let opened = st
        .store
        .login_succeeded(
            &user.username,
            &t.hash,
            &t.csrf,
            t.expires_at,
            Utc::now(),
            event,
        )
        .await?;
    if !opened {
        crate::metrics::login("account_locked");
        return Err(refused);
    }
    crate::metrics::login("ok");
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
