//! The seam between the control plane and the data plane: building an approval's
//! extract and running a query over it. The HTTP layer decides *whether* (policy, budget,
//! audit); the data plane decides *what* is released (guard, privacy rewrite, engine,
//! disclosure check). Keeping it a trait lets tests prove control-plane guarantees — no
//! audit, no answer — without depending on how the query core computes results.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::privacy::ledger::LedgerView;
use crate::privacy::result::{DisclosureMode, DpDisclosure, DpParams};
use crate::query::{QueryError, QueryOutcome};
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
    /// ε and contribution bounds under DP (`None` in suppression mode).
    pub dp: Option<DpParams>,
    pub sql: String,
    /// The application's release ledger for this extract (suppression mode): earlier
    /// released contributor sets, for differencing. `None`: within the answer only.
    pub ledger: Option<Arc<dyn LedgerView>>,
}

/// What a DP query would release and cost, worked out without reading any data.
#[derive(Debug, Clone)]
pub struct DpPreview {
    /// Hash of the normalised plan (constants kept) and the DP parameters: the same key
    /// on the same extract means the same question, whose stored answer is re-released.
    pub release_key: String,
    /// Columns, scales and ε as the release would report them (no intervals yet).
    pub disclosure: DpDisclosure,
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

    /// Check a DP query and price it without running it (dry run, cache key).
    fn dp_preview(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<DpPreview, QueryError>>;

    /// Designated disease numbers present in the registry (for application validation).
    fn diseases(&self) -> BTreeSet<i32>;

    /// A medical institution's feedback report (`report::feedback`): its own figures
    /// beside the national ones, the national side released under the disclosure
    /// rules. A plane without a registry refuses.
    fn facility_report<'a>(
        &'a self,
        facility: &'a str,
    ) -> BoxFuture<'a, Result<crate::report::feedback::FeedbackReport, QueryError>> {
        let _ = facility;
        Box::pin(async {
            Err(QueryError::internal(
                "facility feedback report",
                "this data plane holds no registry",
            ))
        })
    }
}
