//! Flight SQL stage, authentication: the Flight handshake and the caller of every call.
//!
//! The handshake accepts `authorization: Basic <username:password>` (what ADBC, the JDBC
//! driver and pyarrow send) and logs in through the same path as `POST /api/v1/session`
//! (`auth::login`: certificate binding, lockout, argon2id, audited as `session.login` with
//! `via: flight`), answering with `authorization: Bearer <token>`; it also accepts an
//! existing `Bearer` token (from the HTTP API) and echoes it. Every other call must carry
//! `authorization: Bearer <token>`: the token is checked against the live sessions (expired,
//! revoked and disabled accounts fail) and, with `bind_certificate_to_user`, against the
//! connection's verified client certificate on every call, as HTTP does per request.

use std::pin::Pin;

use arrow_flight::HandshakeResponse;
use base64::Engine;
use futures::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use super::status;
use super::transport::PeerInfo;
use crate::auth;
use crate::http::AppState;
use crate::store::model::User;

/// The authenticated caller of one call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// Where the call came from (the connection's peer; gRPC has no forwarding proxies to
    /// believe), for the approval's place of use (`policy::place`).
    pub origin: crate::policy::place::Origin,
}

/// The handshake's answer stream.
pub type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// The credentials in a call's `authorization` header.
enum Credentials {
    Basic { username: String, password: String },
    Bearer(String),
}

/// The longest username or password accepted in a basic header (a login form's limit).
const MAX_CREDENTIAL: usize = 1024;

fn credentials(md: &MetadataMap) -> Result<Option<Credentials>, Status> {
    let Some(v) = md.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let v = v.trim();
    if let Some(t) = strip_scheme(v, "bearer") {
        return Ok(Some(Credentials::Bearer(t.trim().to_string())));
    }
    let Some(b64) = strip_scheme(v, "basic") else {
        return Ok(None);
    };
    let bad = || {
        status::invalid_request(
            "The `authorization: Basic` header is not base64 of `username:password`. / Basic 認証ヘッダーが不正です。",
        )
    };
    // Padding optional: Go's Flight client (the ADBC driver) sends unpadded base64.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = engine.decode(b64.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    if username.len() > MAX_CREDENTIAL || password.len() > MAX_CREDENTIAL {
        return Err(bad());
    }
    Ok(Some(Credentials::Basic {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// `value` without its case-insensitive `scheme ` prefix.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn peer<T>(req: &Request<T>) -> PeerInfo {
    req.extensions()
        .get::<PeerInfo>()
        .cloned()
        .unwrap_or_default()
}

/// The live session of `token` over `info`, with the certificate binding.
async fn session(st: &AppState, info: &PeerInfo, token: &str) -> Result<Caller, Status> {
    let hash = auth::token_hash(token);
    let Some((user, _)) = st.store.session(&hash).await.map_err(status::store)? else {
        return Err(status::unauthenticated());
    };
    let bind = st.settings.bind_certificate_to_user;
    auth::login::check_certificate(
        &st.store,
        bind,
        info.peer(),
        &user.username,
        "session.certificate",
    )
    .await
    .map_err(status::login)?;
    let origin = crate::policy::place::Origin(info.remote.map(|a| a.ip()));
    Ok(Caller { user, origin })
}

/// The caller of a call: its bearer token's live session (and certificate binding).
pub async fn caller<T>(st: &AppState, req: &Request<T>) -> Result<Caller, Status> {
    match credentials(req.metadata())? {
        Some(Credentials::Bearer(token)) => session(st, &peer(req), &token).await,
        // Basic credentials log in only through the handshake (one argon2id per login,
        // not per call).
        _ => Err(status::unauthenticated()),
    }
}

/// The Flight handshake: basic credentials log in, a bearer token is checked; both answer
/// with the bearer token in the `authorization` header and the handshake payload.
pub async fn handshake<T>(
    st: &AppState,
    req: Request<T>,
) -> Result<Response<HandshakeStream>, Status> {
    let info = peer(&req);
    let token = match credentials(req.metadata())? {
        Some(Credentials::Basic { username, password }) => {
            // The same per-address login rate as `POST /api/v1/session`.
            if let Some(addr) = info.remote
                && !st.login_rate.allow(addr.ip())
            {
                crate::metrics::login("rate_limited");
                let reference = crate::query::new_ref();
                let limited = auth::login::RATE_LIMITED;
                return Err(status::status(429, "rate_limited", limited, &reference));
            }
            let s = &st.settings;
            let session = auth::login::login(
                &st.store,
                s.token_ttl,
                s.bind_certificate_to_user,
                info.peer(),
                &username,
                &password,
                "flight",
            )
            .await
            .map_err(status::login)?;
            session.token.token
        }
        Some(Credentials::Bearer(token)) => {
            session(st, &info, &token).await?;
            token
        }
        None => return Err(status::unauthenticated()),
    };
    let reply = HandshakeResponse {
        protocol_version: 0,
        payload: token.clone().into_bytes().into(),
    };
    let mut resp: Response<HandshakeStream> =
        Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
    let header =
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| status::internal(&e))?;
    resp.metadata_mut().insert("authorization", header);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(header: &str) -> Result<Option<Credentials>, Status> {
        let mut md = MetadataMap::new();
        md.insert("authorization", header.parse().unwrap());
        credentials(&md)
    }

    #[test]
    fn basic_credentials_parse_with_or_without_base64_padding() {
        // "researcher1:pw" is 14 bytes: padded "…cHc=", unpadded as Go's Flight client sends it.
        for header in ["Basic cmVzZWFyY2hlcjE6cHc=", "basic cmVzZWFyY2hlcjE6cHc"] {
            match basic(header) {
                Ok(Some(Credentials::Basic { username, password })) => {
                    assert_eq!(
                        (username.as_str(), password.as_str()),
                        ("researcher1", "pw")
                    );
                }
                _ => panic!("{header} not parsed"),
            }
        }
        // Control: not base64, or no colon, is refused.
        for header in ["Basic !!!", "Basic cmVzZWFyY2hlcjE"] {
            let e = basic(header).err().expect(header);
            assert!(e.message().contains("invalid_request"), "{header}: {e:?}");
        }
    }
}
