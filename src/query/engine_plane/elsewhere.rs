//! The real data plane, differencing across applications: the ledger a suppression query
//! is checked against is its own application's release ledger plus every set released to
//! another live extract, carried onto this extract's patient index through the two
//! extracts' ledger pids (`engine::ledger_pids`).
//!
//! Guarantees: a carried set keeps its size (a patient of the other extract who is not in
//! this one still counts as a difference), so the differencing rule sees the true
//! difference of the two populations; the ledger pids of an extract that lacks them are
//! written on first use from the registry, and an extract whose patients cannot all be
//! found there fails the query (fail closed), never a silent skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use ring::hmac;
use roaring::RoaringBitmap;

use crate::catalog::Catalog;
use crate::engine::ledger_pids::{self, LEDGER_KEY_LABEL, LedgerPids};
use crate::privacy::ledger::{ElsewhereView, LedgerView};
use crate::query::QueryError;

/// What it takes to find or write any extract's ledger pids.
#[derive(Clone)]
pub(super) struct Linker {
    pub registry: PathBuf,
    pub catalog: Arc<Catalog>,
    pub extract_key: hmac::Key,
}

impl Linker {
    /// The ledger pids of the extract of `application` in `dir`, written first if missing.
    async fn pids(
        &self,
        application: &str,
        dir: &Path,
        extract_id: &str,
    ) -> Result<Arc<LedgerPids>, QueryError> {
        if let Some(p) = LedgerPids::load_cached(dir, extract_id)? {
            return Ok(p);
        }
        self.write_for(application, dir).await?;
        LedgerPids::load_cached(dir, extract_id)?
            .ok_or_else(|| QueryError::internal("ledger pids", "written but not found"))
    }

    /// Write the ledger pids of the extract of `application` in `dir` unless they are
    /// there (at build, the registry is the version it was built from).
    pub async fn write_for(&self, application: &str, dir: &Path) -> Result<(), QueryError> {
        let app_key = super::derived_key(&self.extract_key, application);
        let ledger_key = super::derived_key(&self.extract_key, LEDGER_KEY_LABEL);
        ledger_pids::ensure(&self.registry, dir, &app_key, &ledger_key, &self.catalog).await
    }
}

/// This application's ledger and the others', as one [`LedgerView`].
#[derive(Debug)]
pub(super) struct Carried {
    own: Arc<dyn LedgerView>,
    elsewhere: Arc<dyn ElsewhereView>,
    here: Arc<LedgerPids>,
    linker: LinkerRef,
}

/// The linker without its key in `Debug` output.
struct LinkerRef(Linker);

impl std::fmt::Debug for LinkerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Linker")
    }
}

impl Carried {
    /// The combined view for the extract of `application` in `dir`.
    pub async fn new(
        own: Arc<dyn LedgerView>,
        elsewhere: Arc<dyn ElsewhereView>,
        linker: Linker,
        (application, dir, extract_id): (&str, &Path, &str),
    ) -> Result<Self, QueryError> {
        let here = linker.pids(application, dir, extract_id).await?;
        Ok(Self {
            own,
            elsewhere,
            here,
            linker: LinkerRef(linker),
        })
    }
}

impl LedgerView for Carried {
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, Result<Vec<RoaringBitmap>, QueryError>> {
        Box::pin(async move {
            let mut out = self.own.near(sizes, k).await?;
            let mut gone = HashMap::new();
            for f in self.elsewhere.near(sizes, k).await? {
                let there = self
                    .linker
                    .0
                    .pids(&f.application, &f.extract_dir, &f.extract_id)
                    .await?;
                out.push(self.here.carry(&f.set, &there, &mut gone)?);
            }
            Ok(out)
        })
    }
}
