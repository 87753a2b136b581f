//! The seam between the control plane and the data plane: building an approval's
//! extract and running a query over it. The HTTP layer decides *whether* (policy, budget,
//! audit); the data plane decides *what* is released (guard, privacy rewrite, engine,
//! disclosure check). Keeping it a trait lets tests prove control-plane guarantees — no
//! audit, no answer — without depending on how the query core computes results.

use std::collections::BTreeSet;
use std::path::PathBuf;

use futures::future::BoxFuture;

use crate::engine::{QueryError, QueryOutcome};
use crate::privacy::result::DisclosureMode;
use crate::sql::scope::Scope;

/// Error building or destroying an extract. The detail is for operators only.
#[derive(Debug, thiserror::Error)]
#[error("extract operation failed for {application}")]
pub struct ExtractFailure {
    pub application: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A built extract.
#[derive(Debug, Clone)]
pub struct BuiltExtract {
    pub extract_id: String,
    pub path: PathBuf,
}

/// A query the control plane has authorised.
#[derive(Debug, Clone)]
pub struct AuthorisedQuery {
    /// Application id or PMS standing scope id.
    pub application: String,
    pub extract_dir: PathBuf,
    pub scope: Scope,
    pub mode: DisclosureMode,
    /// k for suppression.
    pub threshold: u32,
    /// ε requested for this query under DP.
    pub epsilon: Option<f64>,
    pub sql: String,
}

/// The data plane as the control plane uses it.
pub trait DataPlane: Send + Sync + 'static {
    /// Build (or rebuild) the extract of an approval.
    fn build_extract<'a>(
        &'a self,
        application: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<BuiltExtract, ExtractFailure>>;

    /// Run an authorised query over its extract.
    fn query(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<QueryOutcome, QueryError>>;

    /// Designated disease numbers present in the registry (for application validation).
    fn diseases(&self) -> BTreeSet<i32>;
}
