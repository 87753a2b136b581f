//! The one error type of the query path (guard → scope → rewrite → execute → check).
//!
//! Each variant is classified by who must act: the caller (4xx, with a fix), or nobody
//! outside (5xx, generic message plus a reference id). `public_message` never contains
//! data values or names of objects outside the caller's scope; `internal_detail` is for
//! the audit log only and keeps of an engine error its kind and location, never values.

pub mod redact;

use std::fmt;

use datafusion::error::DataFusionError;

/// The cause of an internal failure, kept whole for the audit log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A refusal or failure of the query path. `code()` values are the stable API codes of
/// `shared/API.md`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan. The message may name columns/tables in scope only.
    #[error("invalid SQL: {message}")]
    InvalidSql { message: String },
    /// DDL, DML, COPY, SET, EXPLAIN ANALYZE, file-reading functions, ...
    #[error("statement not allowed: {message}")]
    StatementNotAllowed { message: String },
    /// Patient rows would be released without aggregation over patients.
    #[error("row-level output: {message}")]
    RowLevelOutput { message: String },
    /// An aggregate or function outside the allow-list.
    #[error("unsupported aggregate: {message}")]
    UnsupportedAggregate { message: String },
    /// A query shape the privacy rewrite cannot protect (e.g. a join losing the unit).
    #[error("unsupported query: {message}")]
    UnsupportedQuery { message: String },
    /// A table or dataset outside the approval.
    #[error("out of scope: {message}")]
    OutOfScope { message: String },
    /// Memory, time or row cap reached.
    #[error("resource limit: {message}")]
    ResourceLimit { message: String },
    /// The engine failed while executing. The cause may contain data values: it is kept
    /// for its structure, and only its shape is audited (`internal_detail`).
    #[error("execution error")]
    Execution {
        #[source]
        source: DataFusionError,
    },
    /// A bug or an operator problem (extract missing, I/O) in `stage`. Audit only.
    #[error("internal error in {stage}")]
    Internal {
        stage: &'static str,
        #[source]
        source: BoxError,
    },
}

impl QueryError {
    /// The one constructor of internal failures: `stage` names where it happened
    /// ("privacy rewrite", "dp release", ...); the cause is kept as the error's source.
    pub fn internal(stage: &'static str, cause: impl Into<BoxError>) -> Self {
        Self::Internal {
            stage,
            source: cause.into(),
        }
    }

    /// An engine failure while executing (the cause can contain data values).
    pub fn execution(source: DataFusionError) -> Self {
        Self::Execution { source }
    }

    /// Stable snake_case code, as in `shared/API.md`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSql { .. } => "invalid_sql",
            Self::StatementNotAllowed { .. } => "statement_not_allowed",
            Self::RowLevelOutput { .. } => "row_level_output",
            Self::UnsupportedAggregate { .. } => "unsupported_aggregate",
            Self::UnsupportedQuery { .. } => "unsupported_query",
            Self::OutOfScope { .. } => "out_of_scope",
            Self::ResourceLimit { .. } => "resource_limit",
            Self::Execution { .. } => "execution_error",
            Self::Internal { .. } => "internal",
        }
    }

    /// HTTP status for the API layer.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidSql { .. }
            | Self::StatementNotAllowed { .. }
            | Self::RowLevelOutput { .. }
            | Self::UnsupportedAggregate { .. }
            | Self::UnsupportedQuery { .. } => 400,
            Self::OutOfScope { .. } => 403,
            Self::ResourceLimit { .. } => 422,
            Self::Execution { .. } | Self::Internal { .. } => 500,
        }
    }

    /// The message a caller may see: says what was wrong and how to fix it. Execution and
    /// internal errors are generic, whatever their detail, because engine messages can
    /// carry data values (a failed cast prints the value).
    pub fn public_message(&self) -> String {
        match self {
            Self::Execution { .. } => {
                "The query failed while running. No data is shown for safety; quote the reference id to the operator. / クエリの実行に失敗しました。安全のため詳細は表示しません。参照 ID を運用担当者にお伝えください。".into()
            }
            Self::Internal { .. } => {
                "An internal error occurred; please report the reference id. / 内部エラーが発生しました。参照 ID を添えて報告してください。".into()
            }
            other => other.to_string(),
        }
    }

    /// The detail for auditors (never sent to the caller): for an engine error only its
    /// kind and location ([`redact::ErrorShape`]: the error variants and the
    /// failing function), never its text, which can carry data values; kura's own
    /// messages as they are.
    pub fn internal_detail(&self) -> String {
        match self {
            Self::Execution { source } => {
                format!("execution error: {}", redact::shape(source))
            }
            Self::Internal { stage, source } => match redact::shape_dyn(source.as_ref()) {
                Some(shape) => format!("{stage}: {shape}"),
                None => format!("{stage}: {}", crate::errors::chain(source.as_ref())),
            },
            other => other.to_string(),
        }
    }

    /// The engine's own text of an execution error, which can carry data values: for
    /// tests and in-process debugging only, never stored or sent.
    #[doc(hidden)]
    pub fn raw_engine_text(&self) -> Option<String> {
        match self {
            Self::Execution { source } => Some(crate::errors::chain(source)),
            _ => None,
        }
    }
}

/// A short display of the code, used in logs.
pub struct Code<'a>(pub &'a QueryError);

impl fmt::Display for Code<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.code())
    }
}
