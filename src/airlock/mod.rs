//! The output airlock (成果物の持ち出し審査, issue 13 §1): the only way a result leaves
//! the enclave. A researcher asks to release answers of their own queries; reviewers check
//! a sealed snapshot of them; once approved, the requester downloads the files, and the
//! release register says what left, when, for whom and why.
//!
//! ```text
//!  stored answer (store::results, sealed in query.run)
//!     │ request.rs: own, answered, one application, still authorised
//!     ▼
//!  snapshot.rs + cells.rs: the table as released, per-cell disclosure record, SQL,
//!     │ fingerprint, extract; files/ renders result-N.csv/.xlsx/.png; all sealed into
//!     │ the release.request audit event
//!     ▼
//!  review.rs: checkers.rs (who may check, how many) → recheck.rs (seal, authorisation,
//!     │ rules, extract, release ledger under the extract's lock) → approve | reject
//!     ▼
//!  files/record.rs: release.json (SACRO-like) on the final approval
//!     ▼
//!  download.rs: requester only, approved only, hash-checked, audited; register
//!  view.rs: who sees which request (requester, reviewers who may check it, auditors)
//! ```
//!
//! Guarantees: nothing is downloadable before the number of distinct, unconflicted
//! reviewers the approval asks for approved it; an approval happens only after the
//! re-check passed (fail closed: an edited snapshot, a revoked or ended approval, a raised
//! k, a rebuilt extract or a ledger entry that makes a released cell unsafe all refuse);
//! every decision, refusal and download commits with its audit event; a suppressed cell
//! never leaves as a number.

pub mod cells;
pub mod checkers;
pub mod download;
pub mod files;
pub mod recheck;
pub mod request;
pub mod review;
pub mod snapshot;
pub mod view;

use crate::policy::Denial;
use crate::store::StoreError;

/// At most this many outputs in one release request.
pub const MAX_OUTPUTS: usize = 10;
/// At most this many rows in one output (a reviewer must be able to check every cell).
pub const MAX_ROWS: usize = 1000;
/// Length limit of the justification, the intended publication and decision comments.
pub const MAX_TEXT: usize = 4000;

/// Why the airlock did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AirlockError {
    /// The caller must act: a stable code, an HTTP status and a bilingual message that
    /// names the fix (never a data value).
    #[error("{message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// The enforcement point (or a rule of the airlock) refused; the caller audits it
    /// as a denied `action` with `detail` and answers 403 with the denial's code.
    #[error("{}", .denial.message)]
    Denied {
        action: &'static str,
        application: Option<String>,
        denial: Denial,
        detail: serde_json::Value,
    },
    /// The store failed, or a stored record no longer matches the signed log.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be rendered (a bug or the operator's set-up).
    #[error("rendering {file} failed: {cause}")]
    Render { file: String, cause: String },
    /// Something else inside kura failed (e.g. the system random generator).
    #[error("{0}")]
    Internal(String),
}

impl From<crate::auth::AuthError> for AirlockError {
    fn from(e: crate::auth::AuthError) -> Self {
        AirlockError::Internal(e.to_string())
    }
}

impl AirlockError {
    pub fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 invalid_request` with a message naming the field and the fix.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::refused(400, "invalid_request", message)
    }
}

pub type Result<T, E = AirlockError> = std::result::Result<T, E>;

/// Check a free-text field: present (unless `optional`) and at most [`MAX_TEXT`] characters.
pub fn text_field(name: &str, value: &str, optional: bool) -> Result<String> {
    let v = value.trim();
    if v.is_empty() && !optional {
        return Err(AirlockError::invalid(format!(
            "`{name}` is required / {name} を記入してください"
        )));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(AirlockError::invalid(format!(
            "`{name}` may hold at most {MAX_TEXT} characters / {name} は {MAX_TEXT} 文字以内にしてください"
        )));
    }
    Ok(v.to_string())
}
