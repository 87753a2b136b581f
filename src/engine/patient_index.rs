//! Engine stage, the patient index of an extract: every patient of the extract gets a dense
//! `u32` (0 … patients − 1), so that the patients feeding a released cell can be held as a
//! compressed set (a roaring bitmap, `contributors.rs`) and compared with the sets of other
//! cells (`privacy::disclosure::differencing`), not only counted.
//!
//! Guarantees: the index is a function of the extract alone — the extract's pids sorted —
//! so the same extract always gives the same numbers (the release ledger of an
//! application, keyed to the extract, stays comparable across queries, restarts and
//! processes), and a rebuilt extract (new pids) gets a new index and a new ledger. The
//! index is written at extract build (`patient_index.txt`, hashed in the manifest) and
//! checked against its hash when loaded; it is never registered as a table, so no query
//! can read it. A pid missing from the index is an internal error: the cell is not
//! released (fail closed).

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::HashMap;
use datafusion::execution::context::SessionContext;

use crate::catalog::{Catalog, TableKind};
use crate::query::QueryError;

/// File name of the index inside an extract directory: one pid per line, sorted; the line
/// number (from 0) is the patient's index.
pub const PATIENT_INDEX_FILE: &str = "patient_index.txt";

/// pid → dense index, for one extract.
#[derive(Debug)]
pub struct PatientIndex {
    /// What the index belongs to (the extract id; "session" for an index scanned from a
    /// session without an extract).
    pub id: String,
    map: HashMap<Box<[u8]>, u32>,
}

impl PatientIndex {
    /// An index over these pids (any order, duplicates ignored): sorted, then numbered.
    pub fn from_pids(id: &str, mut pids: Vec<String>) -> Result<Self, QueryError> {
        pids.sort_unstable();
        pids.dedup();
        Self::numbered(id, pids)
    }

    /// Number pids that are already sorted and distinct.
    fn numbered(id: &str, pids: Vec<String>) -> Result<Self, QueryError> {
        if pids.len() > u32::MAX as usize {
            return Err(QueryError::internal(
                "patient index",
                "more than 2^32 patients in one extract",
            ));
        }
        let mut map = HashMap::with_capacity(pids.len());
        for (i, p) in pids.into_iter().enumerate() {
            map.insert(p.into_bytes().into_boxed_slice(), i as u32);
        }
        Ok(Self {
            id: id.to_string(),
            map,
        })
    }

    /// The index of one pid, if it belongs to the extract.
    pub fn get(&self, pid: &[u8]) -> Option<u32> {
        self.map.get(pid).copied()
    }

    /// The index file's text for these pids (sorted, deduplicated, one per line).
    pub fn file_text(mut pids: Vec<String>) -> String {
        pids.sort_unstable();
        pids.dedup();
        let mut out = String::with_capacity(pids.len() * 33);
        for p in pids {
            out.push_str(&p);
            out.push('\n');
        }
        out
    }

    /// Parse an index file's text.
    pub fn parse(id: &str, text: &str) -> Result<Self, QueryError> {
        let pids: Vec<String> = text.lines().map(str::to_string).collect();
        let sorted = pids.windows(2).all(|w| w[0] < w[1]);
        if !sorted {
            return Err(QueryError::internal(
                "patient index",
                "index file is not strictly sorted; rebuild the extract",
            ));
        }
        Self::numbered(id, pids)
    }

    /// The index of the extract in `dir` (`id` = its extract id), loaded once per process
    /// and kept: an extract never changes under its id.
    pub fn load_cached(dir: &Path, id: &str, sha256: &str) -> Result<Arc<Self>, QueryError> {
        static CACHE: OnceLock<Mutex<std::collections::HashMap<String, Arc<PatientIndex>>>> =
            OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = format!("{}\u{0}{id}", dir.display());
        if let Some(hit) = cache.lock().expect("index cache").get(&key) {
            return Ok(hit.clone());
        }
        let index = Arc::new(Self::load(dir, id, sha256)?);
        let mut guard = cache.lock().expect("index cache");
        // A few extracts per process; drop the oldest generation wholesale when it grows.
        if guard.len() >= 64 {
            guard.clear();
        }
        guard.insert(key, index.clone());
        Ok(index)
    }

    fn load(dir: &Path, id: &str, sha256: &str) -> Result<Self, QueryError> {
        let path = dir.join(PATIENT_INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|e| {
            QueryError::internal(
                "patient index",
                format!("cannot read {}: {e}; rebuild the extract", path.display()),
            )
        })?;
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        if digest != sha256 {
            return Err(QueryError::internal(
                "patient index",
                format!("{} does not match its manifest hash", path.display()),
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| QueryError::internal("patient index", "index file is not UTF-8"))?;
        Self::parse(id, &text)
    }

    /// The index of a session without an extract (test fixtures): the distinct pids of its
    /// patient tables, scanned once.
    pub async fn scan(ctx: &SessionContext, catalog: &Catalog) -> Result<Self, QueryError> {
        let mut pids = Vec::new();
        for t in catalog
            .tables
            .iter()
            .filter(|t| t.kind == TableKind::Patient)
        {
            let Some(unit) = t.columns.iter().find(|c| c.privacy_unit) else {
                continue;
            };
            let Ok(df) = ctx.table(t.name.as_str()).await else {
                continue;
            };
            let batches = df
                .select_columns(&[unit.name.as_str()])
                .map_err(|e| QueryError::internal("patient index", e))?
                .collect()
                .await
                .map_err(|e| QueryError::internal("patient index", e))?;
            for b in batches {
                pids.extend(strings(b.column(0))?);
            }
        }
        Self::from_pids("session", pids)
    }
}

/// The non-null strings of a pid column (Utf8, LargeUtf8 or Utf8View).
fn strings(a: &dyn Array) -> Result<Vec<String>, QueryError> {
    let out: Vec<String> = match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(String::from)
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .flatten()
            .map(String::from)
            .collect(),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .flatten()
            .map(String::from)
            .collect(),
        other => {
            return Err(QueryError::internal(
                "patient index",
                format!("pid column has type {other}"),
            ));
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_rank_in_sorted_order_and_round_trips_through_its_file() {
        let pids = vec!["c".to_string(), "a".into(), "b".into(), "a".into()];
        let text = PatientIndex::file_text(pids.clone());
        assert_eq!(text, "a\nb\nc\n");
        let idx = PatientIndex::parse("x", &text).unwrap();
        let direct = PatientIndex::from_pids("x", pids).unwrap();
        for (p, i) in [("a", 0), ("b", 1), ("c", 2)] {
            assert_eq!(idx.get(p.as_bytes()), Some(i));
            assert_eq!(direct.get(p.as_bytes()), Some(i));
        }
        assert_eq!(idx.get(b"d"), None);
        assert!(
            PatientIndex::parse("x", "b\na\n").is_err(),
            "unsorted file refused"
        );
    }
}
