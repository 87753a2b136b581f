//! Query stage: owns a query from "authorised" to "released". HTTP calls
//! [`Gateway::run`] / [`Gateway::cost`]; later Flight SQL calls the same; neither decides
//! anything about a query. The operator CLI (`kura query`) and the benchmarks call the
//! data-plane entry points below it directly, on an extract they name.
//!
//! ```text
//!  Gateway::run (gateway.rs)   policy::resolve → mode → [DP: budgeted.rs: price → cache → reserve]
//!     │                        → the scope's extract → DataPlane::query (plane.rs)
//!     ▼
//!  EnginePlane (engine_plane.rs)  per-application extract, rules for the approval's k
//!     │
//!     ├─ suppression.rs  SQL → GuardedPlan → RewrittenPlan → ExecutedBatches → QueryOutcome
//!     └─ dp.rs           SQL → guarded plan → bounded DP plan → grid → noisy release
//!     ▼
//!  record.rs   history row + audit event (+ ε settlement, DP cache, or the release
//!              ledger's new contributor sets) in ONE transaction; serial.rs holds one
//!              extract's suppression queries in line from ledger read to that commit
//! ```
//!
//! Errors: [`QueryError`] for the data plane (one enum, causes kept as `#[source]`),
//! [`Refused`] for everything the gateway refuses, each with a stable code.

mod budgeted;
pub mod dp;
pub mod engine_plane;
pub mod error;
// seeds (issue 16 §2): the figures of a facility's feedback report
pub mod feedback;
mod fingerprint;
pub mod gateway;
pub mod plane;
mod record;
pub mod refusal;
pub mod request;
mod serial;
// production (issue 14): per-user limit and server-wide extract locks
pub mod admission;
pub mod suppression;

use std::time::Duration;

pub use error::QueryError;
pub use gateway::{Answer, Gateway};
pub use refusal::{Refusal, Refused};
pub use request::{CostResponse, QueryRequest};
pub use suppression::{run_query, run_query_with};

use crate::privacy::ReleasedResult;

/// What one successful query produced: the released result plus what the audit log
/// must record about it.
#[derive(Debug, Clone)]
pub struct QueryOutcome {
    pub result: ReleasedResult,
    /// Stable hash of the normalised logical plan (same query shape → same fingerprint).
    pub plan_fingerprint: String,
    /// Catalogue tables the query read.
    pub tables: Vec<String>,
    /// Wall-clock duration of planning and execution.
    pub duration: Duration,
    /// The distinct contributor sets of the released cells (suppression mode), which the
    /// release ledger records with the query's audit event. Empty under DP.
    pub released_sets: Vec<roaring::RoaringBitmap>,
}

/// A fresh query id (`q_` + 24 hex digits): the reference of the query's record, its
/// audit event and any error it returns.
pub fn new_query_id() -> String {
    format!(
        "q_{}",
        crate::auth::random_hex(12).unwrap_or_else(|_| "unavailable".into())
    )
}

/// A fresh reference id for a refusal or error that has no query id (`r_` + 16 hex).
pub fn new_ref() -> String {
    format!(
        "r_{}",
        crate::auth::random_hex(8).unwrap_or_else(|_| "unavailable".into())
    )
}
