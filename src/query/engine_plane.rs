//! The real data plane: per-application extracts (`sql::extract`) and the query core
//! (`query::suppression::run_query`) behind the [`DataPlane`] seam.
//!
//! Guarantees: each application's extract is built from the ingested registry with its own
//! key (HMAC of the operator's extract key and the application id, so `pid`s of two studies
//! never join); queries open only that extract; the approval's k can raise, never lower,
//! the dataset thresholds of `policies/disclosure.toml` (under DP, k sets the release
//! threshold); DP queries go through `query::dp` and never the suppression path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int32Array};
use futures::future::BoxFuture;
use ring::hmac;

use super::plane::{
    AuthorisedQuery, BuiltExtract, DataPlane, DpPreview, ExtractFailure, RefLabel, RegistryStatus,
    RegistryTable, ReportRequest, ReportRun,
};
use super::{dp, suppression};
use crate::catalog::Catalog;
use crate::engine::Limits;
use crate::engine::open_extract;
use crate::privacy::ledger::{LedgerView, NoLedger};
use crate::privacy::result::DisclosureMode;
use crate::privacy::rules::DisclosureRules;
use crate::query::{QueryError, QueryOutcome};
use crate::sql::scope::Scope;

// annual reports (issue 13 §3): the report extract and its tables
mod report;
// differencing across applications (issue 11)
mod elsewhere;
use elsewhere::{Carried, Linker};

/// Errors opening the data plane.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error(
        "the registry data directory {0} has no ingested data (disease.parquet missing); run `kura ingest` first / 取込済みデータがありません"
    )]
    NoData(PathBuf),
    #[error("reading the disease list failed: {0}")]
    Diseases(#[source] datafusion::error::DataFusionError),
    #[error("disclosure rules: {0}")]
    Rules(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the extract key is {0} bytes; at least 32 are required")]
    KeyTooShort(usize),
}

/// Extracts and queries over the ingested registry.
pub struct EnginePlane {
    registry: PathBuf,
    extracts: PathBuf,
    extract_key: hmac::Key,
    catalog: Arc<Catalog>,
    rules: DisclosureRules,
    limits: Limits,
    diseases: BTreeSet<i32>,
    /// Public names of reference codes (read once at open; they change only with ingest,
    /// which restarts the server).
    labels: BTreeMap<String, Vec<RefLabel>>,
    /// Fingerprint of the extract key (HMAC of a fixed label; the key itself is never shown).
    extract_key_fp: String,
    /// Where rewritten plans execute: here, or on a Ballista cluster (issue 15 §3).
    executor: Executor,
}

/// Where the rewritten plans of this plane execute.
#[derive(Clone, Default)]
enum Executor {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A Ballista cluster; guard, rewrite and disclosure stay here.
    #[cfg(feature = "ballista")]
    Cluster(Arc<crate::engine::ballista::Cluster>),
}

impl Executor {
    /// A session over the extract in `dir` whose plans execute here or on the cluster.
    fn open(
        &self,
        dir: &Path,
        catalog: &Catalog,
        limits: &Limits,
    ) -> Result<datafusion::prelude::SessionContext, QueryError> {
        let ctx = open_extract(dir, catalog, limits)?;
        match self {
            Executor::Local => Ok(ctx),
            #[cfg(feature = "ballista")]
            Executor::Cluster(c) => c.distribute(ctx),
        }
    }
}

/// Designated disease numbers in the ingested `disease` reference table.
pub async fn read_diseases(registry: &Path) -> Result<BTreeSet<i32>, PlaneError> {
    let file = registry.join("disease.parquet");
    if !file.is_file() {
        return Err(PlaneError::NoData(registry.to_path_buf()));
    }
    let ctx = datafusion::prelude::SessionContext::new();
    let df = ctx
        .read_parquet(file.to_string_lossy().as_ref(), Default::default())
        .await
        .and_then(|df| df.select_columns(&["disease_no"]))
        .map_err(PlaneError::Diseases)?;
    let mut out = BTreeSet::new();
    for batch in df.collect().await.map_err(PlaneError::Diseases)? {
        let col = batch.column(0);
        if let Some(a) = col.as_any().downcast_ref::<Int32Array>() {
            out.extend(a.iter().flatten());
        }
    }
    Ok(out)
}

impl EnginePlane {
    pub async fn open(
        registry: PathBuf,
        extracts: PathBuf,
        extract_key: &[u8],
        catalog: Arc<Catalog>,
        limits: Limits,
    ) -> Result<Self, PlaneError> {
        if extract_key.len() < 32 {
            return Err(PlaneError::KeyTooShort(extract_key.len()));
        }
        let diseases = read_diseases(&registry).await?;
        let rules = DisclosureRules::embedded().map_err(|e| PlaneError::Rules(Box::new(e)))?;
        let labels = crate::engine::reference::read_reference_labels(&registry, &catalog).await;
        let extract_key = hmac::Key::new(hmac::HMAC_SHA256, extract_key);
        let extract_key_fp = hex::encode(
            &hmac::sign(&extract_key, b"kura extract key fingerprint v1").as_ref()[..8],
        );
        Ok(Self {
            registry,
            extracts,
            extract_key,
            catalog,
            rules,
            limits,
            diseases,
            labels,
            extract_key_fp,
            executor: Executor::Local,
        })
    }

    /// Execute rewritten plans on a Ballista cluster; the guard, the privacy rewrite and
    /// the disclosure check stay in this process.
    #[cfg(feature = "ballista")]
    pub fn with_cluster(mut self, cluster: crate::engine::ballista::Cluster) -> Self {
        self.executor = Executor::Cluster(Arc::new(cluster));
        self
    }

    /// The per-application key: HMAC(extract key, application id).
    fn app_key(&self, application: &str) -> Vec<u8> {
        derived_key(&self.extract_key, application)
    }

    /// What finds or writes an extract's ledger pids.
    fn linker(&self) -> Linker {
        Linker {
            registry: self.registry.clone(),
            catalog: self.catalog.clone(),
            extract_key: self.extract_key.clone(),
        }
    }

    /// Rules for one approval: its k raises every threshold below it. In a medical
    /// institution's own extract every row was written at that one facility, so the
    /// facility threshold (which keeps one hospital's figures from being read off a
    /// cell) has nothing to protect there and is 1; k is unchanged.
    fn rules_for(&self, k: u32, scope: &Scope) -> DisclosureRules {
        let mut r = self.rules.clone();
        let own_facility = scope.facilities.as_ref().is_some_and(|f| f.len() == 1);
        for set in std::iter::once(&mut r.defaults).chain(r.datasets.values_mut()) {
            set.k = set.k.max(k);
            if own_facility {
                set.facility_k = 1;
            }
        }
        r
    }
}

impl DataPlane for EnginePlane {
    fn build_extract<'a>(
        &'a self,
        application: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<BuiltExtract, ExtractFailure>> {
        Box::pin(async move {
            let key = self.app_key(application);
            let failed = |e: crate::sql::extract::ExtractError| ExtractFailure {
                application: application.to_string(),
                source: Box::new(e),
            };
            // A new version beside the live one (never over it): it becomes live only
            // when the store registers it, with the approval that asked for it.
            let id =
                crate::sql::extract::planned_id(&self.registry, scope, &key).map_err(failed)?;
            let out = self.extracts.join(application).join(id);
            let m = crate::sql::extract::ensure_extract(
                &self.registry,
                &out,
                scope,
                &key,
                &self.catalog,
            )
            .await
            .map_err(|e| ExtractFailure {
                application: application.to_string(),
                source: Box::new(e),
            })?;
            // Its ledger pids, from the registry it was built from (issue 11).
            self.linker()
                .write_for(application, &out)
                .await
                .map_err(|e| ExtractFailure {
                    application: application.to_string(),
                    source: Box::new(e),
                })?;
            Ok(BuiltExtract {
                extract_id: m.extract_id,
                path: out,
            })
        })
    }

    fn retire_extracts(&self, application: &str, live: &Path) {
        let app_dir = self.extracts.join(application);
        match crate::sql::extract::retire_versions(&app_dir, live) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(application, removed = ?removed, "earlier extract versions removed")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(application, error = %crate::errors::chain(&e), "cannot remove earlier extract versions; the start-up sweep retries")
            }
        }
    }

    fn query(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<QueryOutcome, QueryError>> {
        let (catalog, limits) = (self.catalog.clone(), self.limits.clone());
        let rules = self.rules_for(q.threshold, &q.scope);
        let (linker, executor) = (self.linker(), self.executor.clone());
        // On the query runtime: HTTP stays responsive however heavy the query.
        Box::pin(crate::engine::runtime::run(async move {
            check_scope(&q)?;
            let ctx = executor.open(&q.extract_dir, &catalog, &limits)?;
            crate::durable::pause_point("query.scanning");
            if q.mode == DisclosureMode::Dp {
                let params = dp_params(&q)?;
                return dp::run_dp_query(&ctx, &q.sql, &catalog, &rules, &limits, params).await;
            }
            let ledger = ledger_of(&q, linker).await?;
            suppression::run_query_with(&ctx, &q.sql, &catalog, &rules, &limits, ledger.as_ref())
                .await
        }))
    }

    fn dp_preview(&self, q: AuthorisedQuery) -> BoxFuture<'_, Result<DpPreview, QueryError>> {
        let (catalog, limits) = (self.catalog.clone(), self.limits.clone());
        let rules = self.rules_for(q.threshold, &q.scope);
        let executor = self.executor.clone();
        Box::pin(crate::engine::runtime::run(async move {
            let params = dp_params(&q)?;
            check_scope(&q)?;
            let ctx = executor.open(&q.extract_dir, &catalog, &limits)?;
            let p = dp::prepare(&ctx, &q.sql, &catalog, &rules, &limits, params).await?;
            Ok(DpPreview {
                release_key: p.release_key,
                disclosure: p.disclosure,
            })
        }))
    }

    fn diseases(&self) -> BTreeSet<i32> {
        self.diseases.clone()
    }

    // seeds (issue 16 §2): raw figures stay in the plane; only the built report leaves
    fn facility_report<'a>(
        &'a self,
        facility: &'a str,
    ) -> BoxFuture<'a, Result<crate::report::feedback::FeedbackReport, QueryError>> {
        Box::pin(async move {
            let raw = super::feedback::facility_figures(
                &self.registry,
                &self.catalog,
                &self.limits,
                facility,
            )
            .await?;
            Ok(crate::report::feedback::build(facility, &raw, &self.rules))
        })
    }

    fn report(&self, req: ReportRequest) -> BoxFuture<'_, Result<ReportRun, QueryError>> {
        Box::pin(self.run_report(req))
    }

    fn reference_labels(&self) -> BTreeMap<String, Vec<RefLabel>> {
        self.labels.clone()
    }

    fn registry_status(&self) -> Option<RegistryStatus> {
        let m = crate::ingest::Manifest::load(&self.registry).ok()?;
        let hash = crate::ingest::try_manifest_hash(&self.registry).ok()?;
        let tables = m
            .tables
            .iter()
            .map(|(name, t)| RegistryTable {
                name: name.clone(),
                rows: t.rows,
                dataset: self
                    .catalog
                    .table(name)
                    .and_then(|c| c.datasets.first().cloned()),
            })
            .collect();
        Some(RegistryStatus {
            ingested_at: m.created_at,
            manifest_sha256: hash,
            key_fingerprint: m.key_fingerprint,
            tables,
        })
    }

    fn extract_key_fingerprint(&self) -> Option<String> {
        Some(self.extract_key_fp.clone())
    }

    fn extract_is_current(&self, application: &str, dir: &Path, scope: &Scope) -> Option<bool> {
        let key = self.app_key(application);
        crate::sql::extract::extract_is_current_with_key(&self.registry, dir, scope, &key).ok()
    }
}

/// A key derived from the extract key for `label`: an application id (its extract key)
/// or a fixed label (the report's, the release ledger's).
fn derived_key(extract_key: &hmac::Key, label: &str) -> Vec<u8> {
    hmac::sign(extract_key, label.as_bytes()).as_ref().to_vec()
}

/// The ledger a suppression query is checked against: its application's, with every
/// other application's carried onto its extract when the gateway asks for that.
async fn ledger_of(q: &AuthorisedQuery, linker: Linker) -> Result<Arc<dyn LedgerView>, QueryError> {
    let own: Arc<dyn LedgerView> = match &q.ledger {
        Some(l) => l.clone(),
        None => return Ok(Arc::new(NoLedger)),
    };
    let Some(elsewhere) = q.elsewhere.clone() else {
        return Ok(own);
    };
    let id = crate::sql::extract::ExtractManifest::read(&q.extract_dir)
        .map_err(|e| QueryError::internal("extract manifest", e.to_string()))?
        .extract_id;
    let at = (q.application.as_str(), q.extract_dir.as_path(), id.as_str());
    Ok(Arc::new(Carried::new(own, elsewhere, linker, at).await?))
}

/// The query-time scope check: the extract a query is about to read must be the extract
/// of exactly the approved scope (its manifest's scope equals the grant's). Anything else
/// — an extract rebuilt for a change that was never approved, a swapped directory — is
/// refused before a row is read.
fn check_scope(q: &AuthorisedQuery) -> Result<(), QueryError> {
    let manifest = crate::sql::extract::ExtractManifest::read(&q.extract_dir)
        .map_err(|e| QueryError::internal("extract manifest", crate::errors::chain(&e)))?;
    if manifest.scope != crate::sql::extract::normalise_scope(&q.scope) {
        return Err(QueryError::internal(
            "extract scope check",
            format!(
                "extract {} at {} was built for another scope than application {} is approved for; refused",
                manifest.extract_id,
                q.extract_dir.display(),
                q.application
            ),
        ));
    }
    Ok(())
}

/// The DP parameters of a DP query (the gateway always sets them; refuse if not).
fn dp_params(q: &AuthorisedQuery) -> Result<crate::privacy::result::DpParams, QueryError> {
    q.dp.ok_or_else(|| QueryError::UnsupportedQuery {
        message: "DP queries need a positive `epsilon` / DP クエリには epsilon が必要です".into(),
    })
}
