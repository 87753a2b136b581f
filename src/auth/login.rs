//! Authentication stage, login: the one way any protocol (the HTTP API's
//! `POST /api/v1/session`, the Flight SQL handshake) turns a username and password — and,
//! with certificate binding, a verified client certificate — into a session token.
//!
//! Guarantees: the certificate is checked before the password, so a certificate for
//! another account never gets to try one and a mismatch does not count towards the
//! owner's lockout; a locked name is refused before any argon2 work (so even with the
//! right password), every other attempt pays the argon2id cost, known name or not; a failure counts towards the lock of
//! the *attempted* name; every refusal is written to the audit log under the reference it
//! is returned with (if that write fails, the caller gets a store error instead: no audit,
//! no answer — not even a refusal); a success stores the session and its audit event in
//! one transaction.

use chrono::Utc;
use serde_json::json;

use super::certificate::{BindingRefusal, ClientIdentity, check_binding};
use super::{AuthError, NewToken};
use crate::audit::AuditEvent;
use crate::store::model::User;
use crate::store::{FailedLogin, Store, StoreError};

/// What the transport knows about the connection a credential came over.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    /// The connection is TLS (kura's own, `http::tls`).
    pub tls: bool,
    /// The verified client certificate's identity, if the client sent one.
    pub client: Option<&'a ClientIdentity>,
}

/// Why a login (or the certificate binding of a request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Binding is on and no verified client certificate came with the connection.
    CertificateRequired,
    /// Binding is on and the certificate names another account (or nobody).
    CertificateMismatch,
    /// Wrong password, unknown or disabled account (indistinguishable on purpose).
    InvalidCredentials,
    /// Too many failures for this name.
    AccountLocked,
}

impl LoginRefusal {
    /// Stable snake_case code, as in `shared/API.md`.
    pub fn code(self) -> &'static str {
        match self {
            Self::CertificateRequired => "certificate_required",
            Self::CertificateMismatch => "certificate_mismatch",
            Self::InvalidCredentials => "invalid_credentials",
            Self::AccountLocked => "account_locked",
        }
    }

    /// HTTP status class (Flight maps the same classes to its statuses).
    pub fn status(self) -> u16 {
        match self {
            Self::CertificateRequired | Self::CertificateMismatch => 403,
            Self::InvalidCredentials => 401,
            Self::AccountLocked => 429,
        }
    }

    /// What was wrong and how to fix it (en / ja).
    pub fn message(self) -> &'static str {
        match self {
            Self::CertificateRequired => {
                "This server requires the client certificate issued for your account: connect over TLS (HTTPS, or grpc+tls for Flight SQL) with that certificate, then log in. / 本人用のクライアント証明書で TLS 接続（HTTPS または Flight SQL の grpc+tls）してからログインしてください。"
            }
            Self::CertificateMismatch => {
                "The client certificate was not issued for this account: log in with the account named in your certificate, or connect with the certificate issued for this account. / クライアント証明書とアカウントが一致しません。本人の証明書と本人のアカウントを使ってください。"
            }
            Self::InvalidCredentials => {
                "Username or password is wrong; after 5 failures the account is locked for 15 minutes. / ユーザー名またはパスワードが違います。5 回続けて失敗すると 15 分間ロックされます。"
            }
            Self::AccountLocked => {
                "Too many failed logins; try again in 15 minutes or ask the operator to reset the password. / ログイン失敗が続いたため一時的にロックしています。15 分後に再試行するか、運用担当者にパスワードの再設定を依頼してください。"
            }
        }
    }
}

/// The refusal of a login from an address over its rate (`auth::rate`; `429 rate_limited`,
/// before any credential is looked at).
pub const RATE_LIMITED: &str = "Too many login attempts from this address; wait a minute and try again. / この接続元からのログイン試行が多すぎます。1 分ほど待ってから再試行してください。";

/// A login or binding that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Refused; the refusal was audited under `reference`.
    #[error("login refused ({})", .refusal.code())]
    Refused {
        refusal: LoginRefusal,
        reference: String,
    },
    /// The store failed (the refusal or the session could not be recorded).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Token generation failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A new session: the account and its token (the secret goes to the caller only; no
/// `Debug`, so it cannot end up in a log line).
pub struct Session {
    pub user: User,
    pub token: NewToken,
}

/// Audit `refusal` of `username`'s `action` with `detail`, and return it as an error.
async fn refuse(
    store: &Store,
    username: &str,
    action: &str,
    refusal: LoginRefusal,
    detail: serde_json::Value,
) -> LoginError {
    let reference = crate::query::new_ref();
    let ev = AuditEvent::denied(username, action, None, refusal.code(), detail)
        .with_reference(&reference);
    match store.record(&ev).await {
        Ok(_) => LoginError::Refused { refusal, reference },
        Err(e) => e.into(),
    }
}

/// The certificate binding (seed 003). When `bind` is on, the connection must be TLS with
/// a verified client certificate whose CN is `username`; each refusal is audited as
/// `action` with the certificate's CN and fingerprint.
pub async fn check_certificate(
    store: &Store,
    bind: bool,
    peer: Peer<'_>,
    username: &str,
    action: &str,
) -> Result<(), LoginError> {
    if !bind {
        return Ok(());
    }
    let (refusal, detail) = match check_binding(peer.client, username) {
        Ok(()) => return Ok(()),
        Err(BindingRefusal::NoCertificate) => {
            (LoginRefusal::CertificateRequired, json!({"tls": peer.tls}))
        }
        Err(BindingRefusal::Mismatch { presented }) => (
            LoginRefusal::CertificateMismatch,
            json!({
                "certificate_cn": presented,
                "certificate_sha256": peer.client.map(|i| i.fingerprint.clone()),
            }),
        ),
    };
    Err(refuse(store, username, action, refusal, detail).await)
}

/// Log `username` in with `password` over `peer`: certificate binding first, then the
/// lock (a locked name is refused before any argon2 work), then the password (argon2id,
/// paid whether or not the name exists). Failures count and lock in one statement, and a
/// lock set while this password was checked still wins over the session
/// (`Store::login_failed`, `Store::login_succeeded`). `via` names the protocol in the audit
/// event (`password` for the HTTP API, `flight` for Flight SQL).
pub async fn login(
    store: &Store,
    ttl: chrono::Duration,
    bind: bool,
    peer: Peer<'_>,
    username: &str,
    password: &str,
    via: &str,
) -> Result<Session, LoginError> {
    check_certificate(store, bind, peer, username, "session.login").await?;
    let now = Utc::now();
    let (_, locked_until) = store.login_state(username).await?;
    if super::is_locked(locked_until, now) {
        crate::metrics::login("account_locked");
        let detail = json!({"when": "before the password check"});
        let refusal = LoginRefusal::AccountLocked;
        return Err(refuse(store, username, "session.login", refusal, detail).await);
    }
    let found = store.user_with_hash(username).await?;
    // Always pay the argon2id cost, so timing does not tell known from unknown names.
    let hash = found
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| super::dummy_hash().to_string());
    let pw = password.to_string();
    let verified = tokio::task::spawn_blocking(move || super::verify_password(&pw, &hash))
        .await
        .unwrap_or(false);
    let known = found.is_some();
    let ok = verified && found.as_ref().is_some_and(|(u, _)| !u.disabled);
    let Some((user, _)) = found.filter(|_| ok) else {
        return Err(failed(store, username, known, now).await?);
    };
    let token = super::new_token(ttl)?;
    let reference = crate::query::new_ref();
    let event = |opened: &bool| {
        if *opened {
            AuditEvent::ok(&user.username, "session.login", None, json!({"via": via}))
        } else {
            let refusal = LoginRefusal::AccountLocked;
            let detail = json!({"when": "locked while the password was checked"});
            AuditEvent::denied(
                &user.username,
                "session.login",
                None,
                refusal.code(),
                detail,
            )
            .with_reference(&reference)
        }
    };
    let (hash, csrf, expires) = (&token.hash, &token.csrf, token.expires_at);
    let opened = store
        .login_succeeded(&user.username, hash, csrf, expires, Utc::now(), event)
        .await?;
    if !opened {
        crate::metrics::login("account_locked");
        let refusal = LoginRefusal::AccountLocked;
        return Err(LoginError::Refused { refusal, reference });
    }
    crate::metrics::login("ok");
    Ok(Session { user, token })
}

/// Count a failed password for `username` (locking it at the limit), audited, and return
/// the refusal.
async fn failed(
    store: &Store,
    username: &str,
    known: bool,
    now: chrono::DateTime<Utc>,
) -> Result<LoginError, LoginError> {
    let refusal = LoginRefusal::InvalidCredentials;
    let reference = crate::query::new_ref();
    let event = |f: &FailedLogin| {
        let detail = json!({"known_account": known, "locked": f.locked_now});
        AuditEvent::denied(username, "session.login", None, refusal.code(), detail)
            .with_reference(&reference)
    };
    let lock_until = now + chrono::Duration::minutes(super::LOCK_MINUTES);
    store
        .login_failed(username, super::MAX_FAILURES, lock_until, event)
        .await?;
    crate::metrics::login("invalid_credentials");
    Ok(LoginError::Refused { refusal, reference })
}
