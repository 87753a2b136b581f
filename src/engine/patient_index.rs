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
    keys: Keys,
    /// Loaded from an extract's index file (so `id` names immutable extract contents).
    from_extract: bool,
    /// The extract directory and the index file's SHA-256 it was loaded from: what a
    /// Ballista node needs to load the very same index (`engine::ballista::codec`).
    source: Option<(std::path::PathBuf, String)>,
}

/// The lookup table. Extract pids are 32 lowercase hex digits (a 128-bit pseudonym), held
/// packed as `u128` keys: no pointer to follow per lookup, which is what the contributor
/// aggregate pays for every row. Any other pid form (fixtures, sessions without an
/// extract) keeps byte-string keys.
#[derive(Debug)]
enum Keys {
    /// The packed pids in index order (ascending: the index is the sorted order) beside
    /// the hash map. Extracts write patient rows in pid order, so consecutive rows look up
    /// the same or a nearby pid: [`PatientIndex::get_near`] walks forward from the last
    /// hit in this vector (memory it just read) instead of a random probe into the map.
    Packed {
        sorted: Vec<u128>,
        map: HashMap<u128, u32>,
    },
    Bytes(HashMap<Box<[u8]>, u32>),
}

/// The position of `v` in `sorted` after `from` (where `sorted[from] < v`): steps of 1,
/// 2, 4 … until a value ≥ `v`, then a binary search inside the last step.
fn gallop(sorted: &[u128], from: usize, v: u128) -> Option<usize> {
    let (mut lo, mut step) = (from, 1usize);
    let hi = loop {
        let probe = lo.saturating_add(step);
        if probe >= sorted.len() {
            break sorted.len();
        }
        if sorted[probe] >= v {
            break probe + 1;
        }
        lo = probe;
        step *= 2;
    };
    let off = sorted[lo..hi].binary_search(&v).ok()?;
    Some(lo + off)
}

/// A pid of exactly 32 lowercase hex digits as its 128-bit value; `None` for anything
/// else (so distinct pids never share a key: the packing is one-to-one on its domain).
///
/// Branch-free per digit (a table lookup; one check at the end): pids are random hex, so
/// a branch on "digit or letter" would be mispredicted for every other character, and
/// this runs once per row of every contributor set.
fn packed(pid: &[u8]) -> Option<u128> {
    let pid: &[u8; 32] = pid.try_into().ok()?;
    let (hi, lo) = (half(&pid[..16]), half(&pid[16..]));
    ((hi | lo) & BAD == 0).then(|| (u128::from(hi as u64) << 64) | u128::from(lo as u64))
}

/// Marks a byte that is not a lowercase hex digit (in [`HEX`], and the bit [`half`] keeps).
const BAD_DIGIT: u8 = 0x80;
const BAD: u128 = 1 << 64;

/// 16 hex digits as their value in the low 64 bits, with bit 64 set if any was not one.
fn half(digits: &[u8]) -> u128 {
    let (mut v, mut bad) = (0u64, 0u8);
    for &b in digits {
        let d = HEX[usize::from(b)];
        bad |= d;
        v = (v << 4) | u64::from(d & 0x0f);
    }
    u128::from(v) | (u128::from(bad >> 7) << 64)
}

/// Value of each lowercase hex digit; [`BAD_DIGIT`] for every other byte.
static HEX: [u8; 256] = {
    let mut t = [BAD_DIGIT; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut j = 0;
    while j < 6 {
        t[b'a' as usize + j] = 10 + j as u8;
        j += 1;
    }
    t
};

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
        let all_packed: Option<Vec<u128>> = pids.iter().map(|p| packed(p.as_bytes())).collect();
        let keys = if let Some(sorted) = all_packed {
            let map = (0..)
                .zip(sorted.iter().copied())
                .map(|(i, v)| (v, i))
                .collect();
            Keys::Packed { sorted, map }
        } else {
            let mut map = HashMap::with_capacity(pids.len());
            for (i, p) in pids.into_iter().enumerate() {
                map.insert(p.into_bytes().into_boxed_slice(), i as u32);
            }
            Keys::Bytes(map)
        };
        Ok(Self {
            id: id.to_string(),
            keys,
            from_extract: false,
            source: None,
        })
    }

    /// The extract id when the index was loaded from an extract: what its session reads
    /// is then fixed by that id (scope, source and key), so per-extract caches may key on it.
    pub fn extract_id(&self) -> Option<&str> {
        self.from_extract.then_some(self.id.as_str())
    }

    /// The extract directory and index hash this index was loaded from, if it was.
    pub fn source(&self) -> Option<(&Path, &str)> {
        self.source.as_ref().map(|(d, h)| (d.as_path(), h.as_str()))
    }

    /// The index of one pid, if it belongs to the extract.
    pub fn get(&self, pid: &[u8]) -> Option<u32> {
        match &self.keys {
            Keys::Packed { map, .. } => map.get(&packed(pid)?).copied(),
            Keys::Bytes(map) => map.get(pid).copied(),
        }
    }

    /// [`Self::get`] for rows that come in pid order: `cursor` is the index last found
    /// (start at 0). The pid is looked for at the cursor and, if larger, by galloping
    /// forward from it (a few nearby reads); a smaller pid (rows out of order) falls back
    /// to the hash map. Same answer as `get` in every case.
    pub fn get_near(&self, pid: &[u8], cursor: &mut u32) -> Option<u32> {
        let Keys::Packed { sorted, map } = &self.keys else {
            return self.get(pid);
        };
        let v = packed(pid)?;
        let at = (*cursor as usize).min(sorted.len().saturating_sub(1));
        let found = match sorted.get(at) {
            Some(&here) if here == v => Some(at),
            Some(&here) if here < v => gallop(sorted, at, v),
            _ => map.get(&v).map(|&i| i as usize),
        }?;
        *cursor = found as u32;
        Some(found as u32)
    }

    /// A set over another extract's index carried onto this one: `from` lists that
    /// extract's pids in index order (its index file's lines). A patient no longer in this
    /// extract gets a number counted down from `u32::MAX`, the same for the same pid across
    /// calls sharing `gone` — so a patient who left still counts as a difference (a release
    /// ledger kept across data versions, `report::annual`). A member outside `from` is an
    /// internal error (fail closed).
    pub fn remap(
        &self,
        set: &roaring::RoaringBitmap,
        from: &[String],
        gone: &mut std::collections::HashMap<String, u32>,
    ) -> Result<roaring::RoaringBitmap, QueryError> {
        let mut out = roaring::RoaringBitmap::new();
        for old in set {
            let pid = from.get(old as usize).ok_or_else(|| {
                QueryError::internal(
                    "patient index",
                    "a ledger set names a patient outside its index",
                )
            })?;
            let new = match self.get(pid.as_bytes()) {
                Some(i) => i,
                None => {
                    let next = u32::MAX - gone.len() as u32;
                    *gone.entry(pid.clone()).or_insert(next)
                }
            };
            out.insert(new);
        }
        Ok(out)
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
        let mut index = Self::load(dir, id, sha256)?;
        index.from_extract = true;
        index.source = Some((dir.to_path_buf(), sha256.to_string()));
        let index = Arc::new(index);
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
        Self::from_pids("session", unit_pids(ctx, catalog).await?)
    }
}

/// Every non-null pid of every patient table registered in `ctx` (with repeats: a
/// patient has rows in several tables).
pub(crate) async fn unit_pids(
    ctx: &SessionContext,
    catalog: &Catalog,
) -> Result<Vec<String>, QueryError> {
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
    Ok(pids)
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

    /// The table-driven parse agrees with a plain one on valid pids and refuses every
    /// pid with one byte that is not a lowercase hex digit, wherever it is.
    #[test]
    fn the_fast_hex_parse_agrees_with_a_plain_one() {
        let plain = |p: &[u8]| -> Option<u128> {
            if p.len() != 32 {
                return None;
            }
            p.iter().try_fold(0u128, |v, &b| {
                let d = (b as char)
                    .to_digit(16)
                    .filter(|_| !b.is_ascii_uppercase())?;
                Some((v << 4) | u128::from(d))
            })
        };
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pid = format!("{:016x}{:016x}", x, x.rotate_left(17));
            assert_eq!(packed(pid.as_bytes()), plain(pid.as_bytes()), "{pid}");
            let mut bad = pid.clone().into_bytes();
            let at = (x % 32) as usize;
            for c in [b'g', b'G', b'A', b'/', b':', b'`', 0, 0xff] {
                bad[at] = c;
                assert_eq!(packed(&bad), None, "{c} at {at}");
            }
        }
        assert_eq!(packed(&[b'f'; 32]), Some(u128::MAX));
        assert_eq!(packed(&[b'0'; 32]), Some(0));
    }

    #[test]
    fn hex_pseudonyms_are_packed_one_to_one() {
        let a = "0000023441ec3322e71c01d716de5cb3";
        let b = "ffff023441ec3322e71c01d716de5cb3";
        let idx = PatientIndex::from_pids("x", vec![b.into(), a.into()]).unwrap();
        assert!(matches!(idx.keys, Keys::Packed { .. }));
        assert_eq!(idx.get(a.as_bytes()), Some(0));
        assert_eq!(idx.get(b.as_bytes()), Some(1));
        // Upper case is another string, never the same patient; short or long ones too.
        assert_eq!(idx.get(a.to_uppercase().as_bytes()), None);
        assert_eq!(idx.get(&a.as_bytes()[1..]), None);
        assert_eq!(idx.get(format!("{a}0").as_bytes()), None);
        let mixed = PatientIndex::from_pids("x", vec![a.into(), "p1".into()]).unwrap();
        assert!(matches!(mixed.keys, Keys::Bytes(_)));
        assert_eq!(mixed.get(b"p1"), Some(1));
        let mut cursor = 0;
        assert_eq!(mixed.get_near(b"p1", &mut cursor), Some(1));
    }

    /// The cursor lookup gives `get`'s answer for rows in order, out of order, repeated,
    /// sparse (a table holding every seventh patient), unknown and at both ends.
    #[test]
    fn the_cursor_lookup_agrees_with_the_map_in_any_row_order() {
        let pids: Vec<String> = (0..1000u64)
            .map(|i| format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        let idx = PatientIndex::from_pids("x", pids.clone()).unwrap();
        let mut sorted = pids.clone();
        sorted.sort();
        let mut orders: Vec<Vec<String>> = vec![
            sorted.clone(),
            sorted.iter().step_by(7).cloned().collect(),
            sorted.iter().flat_map(|p| [p.clone(), p.clone()]).collect(),
            sorted.iter().rev().cloned().collect(),
            pids.clone(),
        ];
        orders.push(vec![sorted[999].clone(), sorted[0].clone(), "f".repeat(32)]);
        for rows in orders {
            let mut cursor = 0;
            for p in &rows {
                let want = idx.get(p.as_bytes());
                assert_eq!(idx.get_near(p.as_bytes(), &mut cursor), want, "{p}");
            }
        }
    }
}
