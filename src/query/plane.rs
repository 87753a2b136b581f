//! The seam between the control plane and the data plane: building an approval's
//! extract and running a query over it. The HTTP layer decides *whether* (policy, budget,
//! audit); the data plane decides *what* is released (guard, privacy rewrite, engine,
//! disclosure check). Keeping it a trait lets tests prove control-plane guarantees — no
//! audit, no answer — without depending on how the query core computes results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::privacy::Defences;
use crate::privacy::ledger::{ElsewhereView, LedgerView};
use crate::privacy::result::{DisclosureMode, DpDisclosure, DpParams};
use crate::query::suppression::ReportTable;
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
    /// The sets released to other applications' extracts (suppression mode), carried
    /// onto this extract by the data plane. `None`: this application's ledger only.
    pub elsewhere: Option<Arc<dyn ElsewhereView>>,
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

/// The tables of a standard report (annual reports, `report::annual`), run over the data
/// custodian's report extract: every dataset, every consented patient, `pid`s under the
/// report's own key.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The SQL of each table, in order.
    pub queries: Vec<String>,
    /// The sets of earlier publications of the report, each with the extract whose
    /// patient index it is over.
    pub earlier: Vec<(String, roaring::RoaringBitmap)>,
    /// The second-line defences (all on except in an attack test's control).
    pub defences: Defences,
}

/// What a report request produced.
pub struct ReportRun {
    /// The report extract the tables ran over (the ledger's key).
    pub extract_id: String,
    /// The registry's version: SHA-256 of the ingest manifest.
    pub data_version: String,
    /// One per query, in order.
    pub tables: Vec<ReportTable>,
    /// The earlier publications' sets, carried onto this extract's patient index.
    pub earlier: Vec<roaring::RoaringBitmap>,
}

/// The data plane as the control plane uses it.
pub trait DataPlane: Send + Sync + 'static {
    /// Build (or rebuild) the extract of an approval.
    fn build_extract<'a>(
        &'a self,
        application: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<BuiltExtract, ExtractFailure>>;

    /// Remove the extract versions of `application` other than the `live` one (after a
    /// new version was registered). A test double may keep everything.
    fn retire_extracts(&self, application: &str, live: &std::path::Path) {
        let _ = (application, live);
    }

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
    /// Run a standard report's tables over the report extract (built or refreshed first),
    /// each through the suppression path against the earlier publications. A data plane
    /// without registry data (test doubles) cannot.
    fn report(&self, req: ReportRequest) -> BoxFuture<'_, Result<ReportRun, QueryError>> {
        let _ = req;
        Box::pin(async {
            Err(QueryError::internal(
                "report",
                "this data plane has no registry to report on",
            ))
        })
    }

    // Operator and console views (issue 17). Defaults describe a plane with nothing to show,
    // so test doubles need not implement them.

    /// Public names of the codes of the reference tables (disease, prefecture, product,
    /// manufacturer), per key column, in domain order. Public data only.
    fn reference_labels(&self) -> BTreeMap<String, Vec<RefLabel>> {
        BTreeMap::new()
    }

    /// The ingested registry: tables, row counts, manifest hash, pseudonymisation key fingerprint.
    fn registry_status(&self) -> Option<RegistryStatus> {
        None
    }

    /// A non-reversible fingerprint of the operator's extract key.
    fn extract_key_fingerprint(&self) -> Option<String> {
        None
    }

    /// Whether the extract of `application` in `dir` was built from the current registry, for
    /// `scope` and with the current key (`None`: the plane cannot tell).
    fn extract_is_current(&self, _application: &str, _dir: &Path, _scope: &Scope) -> Option<bool> {
        None
    }
}

/// The public name of one code of a reference table (disease 2 → 筋萎縮性側索硬化症 / ALS).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RefLabel {
    pub code: String,
    pub ja: String,
    pub en: String,
}

/// The ingested registry as the operator sees it (no patient data: names and counts).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RegistryStatus {
    /// When the data was ingested (RFC 3339).
    pub ingested_at: String,
    pub manifest_sha256: String,
    /// Fingerprint of the pseudonymisation key the pseudonyms were made with.
    pub key_fingerprint: String,
    pub tables: Vec<RegistryTable>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RegistryTable {
    pub name: String,
    pub rows: u64,
    /// The first approvable dataset that includes the table.
    pub dataset: Option<String>,
}
