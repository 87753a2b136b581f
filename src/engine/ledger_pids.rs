//! Engine stage, the ledger pids of an extract: one registry-wide pseudonym per patient of
//! the extract, in the order of its patient index (`patient_index`), so that contributor
//! sets released to *different* applications — each extract re-pseudonymises pids under
//! its own key and numbers its patients its own way — can be carried onto one another's
//! index and compared for differencing (`privacy::ledger`, across applications).
//!
//! A ledger pid is HMAC(ledger key, source pid), the ledger key derived from the server's
//! extract key under a fixed label: the same patient has the same ledger pid in every
//! extract, and nothing without the server's key can compute one. The file
//! (`ledger_pids.txt`: line i is the ledger pid of patient i, 32 hex digits) sits in the
//! extract directory beside the patient index. It is written by the data plane when it
//! builds the extract, or when a query first needs it for an extract built before it
//! existed, and it is never registered as a table: no query reads it.
//!
//! Guarantees: every patient of the extract has a ledger pid, or no file is written and
//! the query that needed it is refused (fail closed: an extract whose patients cannot all
//! be found in the registry — built from another data version — is compared with nothing
//! rather than compared wrongly). A patient of the other extract who is not in this one
//! is carried as a number of its own (counted down from `u32::MAX`), so set differences
//! keep their true size.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use ring::hmac;
use roaring::RoaringBitmap;

use super::patient_index::PatientIndex;
use crate::catalog::{Catalog, TableKind};
use crate::query::QueryError;

/// File name inside an extract directory.
pub const LEDGER_PIDS_FILE: &str = "ledger_pids.txt";

/// What the ledger key is derived for (in place of an application id).
pub const LEDGER_KEY_LABEL: &str = "kura:release-ledger";

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::internal("ledger pids", e.to_string())
}

/// One extract's ledger pids, and the way back from a ledger pid to the patient index.
#[derive(Debug)]
pub struct LedgerPids {
    pids: Vec<u128>,
    index: HashMap<u128, u32>,
}

impl LedgerPids {
    fn new(pids: Vec<u128>) -> Self {
        let index = (0u32..)
            .zip(pids.iter().copied())
            .map(|(i, p)| (p, i))
            .collect();
        Self { pids, index }
    }

    /// Patients of the extract.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// `set`, over the index of the extract `from` describes, carried onto this one. A
    /// patient not in this extract gets a number of its own, the same for the same patient
    /// across calls sharing `gone`. A member outside `from` is an internal error.
    pub fn carry(
        &self,
        set: &RoaringBitmap,
        from: &LedgerPids,
        gone: &mut HashMap<u128, u32>,
    ) -> Result<RoaringBitmap, QueryError> {
        let mut out = RoaringBitmap::new();
        for member in set {
            let lp = *from
                .pids
                .get(member as usize)
                .ok_or_else(|| internal("a ledger set names a patient outside its extract"))?;
            let here = match self.index.get(&lp) {
                Some(&i) => i,
                None => {
                    let next = u32::MAX - gone.len() as u32;
                    *gone.entry(lp).or_insert(next)
                }
            };
            out.insert(here);
        }
        Ok(out)
    }

    fn parse(text: &str) -> Result<Self, QueryError> {
        let pids = text
            .lines()
            .map(|l| u128::from_str_radix(l, 16).map_err(|_| internal("malformed ledger pid")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(pids))
    }

    /// The ledger pids of the extract in `dir`, loaded once per process (an extract never
    /// changes under its id).
    pub fn load_cached(dir: &Path, extract_id: &str) -> Result<Option<Arc<Self>>, QueryError> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<LedgerPids>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = format!("{}\u{0}{extract_id}", dir.display());
        if let Some(hit) = cache.lock().expect("ledger pid cache").get(&key) {
            return Ok(Some(hit.clone()));
        }
        let path = dir.join(LEDGER_PIDS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal(format!("cannot read {}: {e}", path.display()))),
        };
        let pids = Arc::new(Self::parse(&text)?);
        let mut guard = cache.lock().expect("ledger pid cache");
        if guard.len() >= 64 {
            guard.clear();
        }
        guard.insert(key, pids.clone());
        Ok(Some(pids))
    }
}

/// The ledger pid of a source pid.
fn ledger_pid(key: &hmac::Key, source_pid: &str) -> u128 {
    let tag = hmac::sign(key, source_pid.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&tag.as_ref()[..16]);
    u128::from_be_bytes(b)
}

/// Write `ledger_pids.txt` for the extract in `dir` (built from `registry` under
/// `app_key`) unless it is there. Every patient of the extract must be found among the
/// registry's source pids, else nothing is written and the error says to rebuild.
pub async fn ensure(
    registry: &Path,
    dir: &Path,
    app_key: &[u8],
    ledger_key: &[u8],
    catalog: &Catalog,
) -> Result<(), QueryError> {
    let path = dir.join(LEDGER_PIDS_FILE);
    if path.is_file() {
        return Ok(());
    }
    let manifest = crate::sql::extract::ExtractManifest::read(dir).map_err(internal)?;
    let index =
        PatientIndex::load_cached(dir, &manifest.extract_id, &manifest.patient_index_sha256)?;
    let (app, ledger) = (
        hmac::Key::new(hmac::HMAC_SHA256, app_key),
        hmac::Key::new(hmac::HMAC_SHA256, ledger_key),
    );
    let mut found: Vec<Option<u128>> = vec![None; manifest.patients as usize];
    for source in registry_pids(registry, catalog).await? {
        let pid = crate::sql::extract::repseudonymise(&app, &source);
        if let Some(slot) = index
            .get(pid.as_bytes())
            .and_then(|i| found.get_mut(i as usize))
        {
            *slot = Some(ledger_pid(&ledger, &source));
        }
    }
    let pids: Option<Vec<u128>> = found.into_iter().collect();
    let pids = pids.ok_or_else(|| {
        internal(format!(
            "the extract {} has patients the registry no longer holds; rebuild it so that its releases can be compared with other applications'",
            manifest.extract_id
        ))
    })?;
    let mut text = String::with_capacity(pids.len() * 33);
    for p in &pids {
        text.push_str(&format!("{p:032x}\n"));
    }
    crate::durable::write_atomic(&path, text.as_bytes()).map_err(internal)
}

/// The distinct source pids of the registry's patient tables.
async fn registry_pids(registry: &Path, catalog: &Catalog) -> Result<Vec<String>, QueryError> {
    let ctx = datafusion::prelude::SessionContext::new();
    for t in catalog
        .tables
        .iter()
        .filter(|t| t.kind == TableKind::Patient)
    {
        if registry.join(format!("{}.parquet", t.name)).is_file() {
            super::session::register_table(&ctx, registry, &t.name, catalog)?;
        }
    }
    let mut pids = super::patient_index::unit_pids(&ctx, catalog).await?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrying_keeps_shared_patients_and_counts_the_others_apart() {
        // Extract A numbers patients p1 p2 p3; extract B numbers p3 p1 p9.
        let a = LedgerPids::new(vec![1, 2, 3]);
        let b = LedgerPids::new(vec![3, 1, 9]);
        let set_b: RoaringBitmap = [0u32, 1, 2].into_iter().collect(); // p3 p1 p9
        let mut gone = HashMap::new();
        let on_a = a.carry(&set_b, &b, &mut gone).unwrap();
        assert!(
            on_a.contains(2) && on_a.contains(0),
            "p3 and p1 keep A's numbers"
        );
        assert_eq!(on_a.len(), 3, "p9, not in A, still counts");
        assert!(on_a.contains(u32::MAX));
        // The same absent patient gets the same number again.
        let again = a.carry(&set_b, &b, &mut gone).unwrap();
        assert_eq!(on_a, again);
        // A member outside B's index is refused.
        let bad: RoaringBitmap = [7u32].into_iter().collect();
        assert!(a.carry(&bad, &b, &mut gone).is_err());
    }
}
