//! Query stage: owns a query from "authorised" to "released". HTTP, the CLI and later
//! Flight SQL call the same entry points; the data-plane seam ([`plane::DataPlane`]) and
//! its DataFusion implementation ([`engine_plane::EnginePlane`]) live here.

pub mod dp;
pub mod engine_plane;
pub mod error;
pub mod plane;
pub mod suppression;

use std::time::Duration;

pub use error::QueryError;
pub use suppression::run_query;

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
}
