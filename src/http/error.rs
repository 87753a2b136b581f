//! The one conversion from every layer's errors to an HTTP response:
//! `{"error": {"code", "message", "ref"}}`. Details go to the log (and, for refusals and
//! query errors, to the audit log under the same `ref`); the caller gets a stable code
//! and a message (ja / en) that names the fix and never contains data values.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::policy::workflow::FieldError;
use crate::policy::{Denial, PolicyError};
use crate::query::{QueryError, Refusal, Refused};
use crate::store::StoreError;

pub use crate::privacy::budget::BudgetRefusal;
pub use crate::query::new_ref;

/// An API error. Build with the constructors; convert with `?` from layer errors.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub reference: String,
    pub fields: Vec<FieldError>,
    /// Budget figures of a `budget_exhausted` refusal.
    pub budget: Option<Box<BudgetRefusal>>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetRefusal>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            reference: new_ref(),
            fields: Vec::new(),
            budget: None,
        }
    }

    pub fn with_ref(mut self, reference: &str) -> Self {
        self.reference = reference.into();
        self
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Log in first: POST /api/v1/session, then send `Authorization: Bearer <token>`. / ログインしてください。",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "No {what} with this id is visible to you; check the id. / 指定の {what} は見つかりません。"
            ),
        )
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_application(fields: Vec<FieldError>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_application",
            format!(
                "The application has {} problem(s); see `fields` for each field and its fix. / 申請内容に不備があります（fields を参照）。",
                fields.len()
            ),
        );
        e.fields = fields;
        e
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "An internal error occurred; please report the reference id. / 内部エラーが発生しました。参照 ID を添えて報告してください。",
        );
        tracing::error!(reference = %e.reference, detail = %detail, "internal error");
        e
    }

    /// A policy refusal (403).
    pub fn denied(d: &Denial) -> Self {
        Self::new(StatusCode::FORBIDDEN, d.code, d.message.clone())
    }

    /// A query-path refusal or failure, with the query id as reference.
    pub fn query(e: &QueryError, reference: &str) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, e.code(), e.public_message()).with_ref(reference)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                reference: self.reference,
                fields: self.fields,
                budget: self.budget.map(|b| *b),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => Self::conflict("conflict", msg),
            StoreError::Tampered(detail) => {
                let e = Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "integrity_failed",
                    "A stored record does not match what the signed audit log says of it, so nothing was released; an auditor must check the log (quote the reference id). / 保存された記録が署名付き監査ログと一致しないため、何も出力していません。監査担当者に参照 ID を添えて連絡してください。",
                );
                tracing::error!(reference = %e.reference, detail = %detail, "integrity check failed");
                e
            }
            e if e.is_storage_full() => {
                tracing::error!(error = %e, "the store's disk is full; answers are withheld");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "The server's storage is full, so nothing can be recorded and no answer is released (no audit, no answer); try again later, and tell the operator. / サーバーの記憶領域が満杯のため記録できず、回答を返せません。時間をおいて再試行し、運用担当者に連絡してください。",
                )
            }
            other => Self::internal(&other),
        }
    }
}

/// A gateway refusal: its code, status and message, under the query id it was audited
/// with (or a fresh reference), with the per-field problems and budget figures.
impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        let Refused { reference, cause } = r;
        let mut e = match cause {
            Refusal::Store(s) => Self::from(s),
            Refusal::Query(q) => Self::query(&q, &new_ref()),
            Refusal::InvalidRequest { message, fields } => {
                let mut e = Self::bad_request("invalid_request", message);
                e.fields = fields;
                e
            }
            ref c => {
                let status = StatusCode::from_u16(c.status()).unwrap_or(StatusCode::FORBIDDEN);
                let mut e = Self::new(status, c.code(), c.public_message());
                if let Refusal::BudgetExhausted { refusal, .. } = c {
                    e.budget = Some(Box::new(refusal.clone()));
                }
                e
            }
        };
        if let Some(r) = reference {
            e.reference = r;
        }
        e
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        Self::internal(&e)
    }
}

/// A login or certificate-binding refusal, under the reference it was audited with.
impl From<crate::auth::login::LoginError> for ApiError {
    fn from(e: crate::auth::login::LoginError) -> Self {
        use crate::auth::login::LoginError;
        match e {
            LoginError::Refused { refusal, reference } => {
                let status =
                    StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
                Self::new(status, refusal.code(), refusal.message()).with_ref(&reference)
            }
            LoginError::Store(s) => s.into(),
            LoginError::Auth(a) => a.into(),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::WeakPassword => {
                Self::bad_request("weak_password", e.to_string())
            }
            other => Self::internal(&other),
        }
    }
}

/// JSON body extraction errors become `invalid_request` with the parser's message
/// (which names the field, never stored data).
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than the server accepts (body_limit_bytes); send a shorter request. / リクエストが大きすぎます。",
            );
        }
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "The request body is not valid JSON for this endpoint: {}. / リクエスト本文が不正です。",
                e.body_text()
            ),
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(
            "invalid_request",
            format!(
                "Invalid query parameters: {}. / クエリパラメータが不正です。",
                e.body_text()
            ),
        )
    }
}
