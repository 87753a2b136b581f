//! Flight SQL stage, errors: the one conversion from every refusal to a gRPC status.
//!
//! The message is `<code>: <message> (ref <ref>)` — the same stable snake_case code and
//! the same bilingual message (that names the fix) as the HTTP API's error body, and the
//! reference an auditor finds in the audit log; the code and reference also travel as the
//! `x-kura-code` / `x-kura-ref` metadata for programs. The HTTP status class maps to the
//! gRPC code (400 → invalid argument, 401 → unauthenticated, 403 → permission denied,
//! 409/422/429 → resource exhausted or failed precondition, 500 → internal). Like the HTTP
//! errors, no message carries a data value.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::auth::login::LoginError;
use crate::query::{Refusal, Refused, new_ref};
use crate::store::StoreError;

/// A refusal as a status: `code` and `message` as the HTTP API would give them.
pub fn status(http: u16, code: &str, message: &str, reference: &str) -> Status {
    let grpc = match (http, code) {
        (400, _) => Code::InvalidArgument,
        (401, _) => Code::Unauthenticated,
        (403, _) => Code::PermissionDenied,
        (404, _) => Code::NotFound,
        (409, "budget_exhausted") | (422, _) | (429, _) => Code::ResourceExhausted,
        (409, _) | (412, _) => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    let mut s = Status::new(grpc, format!("{code}: {message} (ref {reference})"));
    for (k, v) in [("x-kura-code", code), ("x-kura-ref", reference)] {
        if let Ok(v) = MetadataValue::try_from(v) {
            s.metadata_mut().insert(k, v);
        }
    }
    s
}

/// An internal failure: a generic message and a fresh reference; the detail goes to the
/// server log under that reference only.
pub fn internal(detail: &dyn std::fmt::Display) -> Status {
    let reference = new_ref();
    tracing::error!(%reference, %detail, "Flight SQL internal error");
    status(
        500,
        "internal",
        "An internal error occurred; please report the reference id. / 内部エラーが発生しました。参照 ID を添えて報告してください。",
        &reference,
    )
}

/// A gateway refusal, under the query id it was audited with (or a fresh reference).
pub fn refused(r: Refused) -> Status {
    let Refused { reference, cause } = r;
    if let Refusal::Store(e) = &cause
        && !matches!(e, StoreError::Conflict(_))
    {
        return internal(e);
    }
    let reference = reference.unwrap_or_else(new_ref);
    status(
        cause.status(),
        cause.code(),
        &cause.public_message(),
        &reference,
    )
}

/// A login or certificate-binding refusal (audited under its reference).
pub fn login(e: LoginError) -> Status {
    match e {
        LoginError::Refused { refusal, reference } => status(
            refusal.status(),
            refusal.code(),
            refusal.message(),
            &reference,
        ),
        LoginError::Store(e) => internal(&e),
        LoginError::Auth(e) => internal(&e),
    }
}

/// A store failure (no audit, no answer).
pub fn store(e: StoreError) -> Status {
    internal(&e)
}

/// No usable credentials on the call.
pub fn unauthenticated() -> Status {
    status(
        401,
        "unauthenticated",
        "Log in first: connect with your kura username and password (Flight handshake, basic authentication), or send `authorization: Bearer <token>` from POST /api/v1/session. / ログインしてください（Flight のハンドシェイクでユーザー名とパスワード、または Bearer トークン）。",
        &new_ref(),
    )
}

/// A malformed request that reached no stage (not audited, like a malformed HTTP body).
pub fn invalid_request(message: &str) -> Status {
    status(400, "invalid_request", message, &new_ref())
}
