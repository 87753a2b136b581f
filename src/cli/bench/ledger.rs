//! `kura bench query --ledger-cells N`: the release ledger's cost. A fresh SQLite store
//! beside the benchmark extract is filled with N earlier released cells (contributor sets
//! over the extract's patient index, sizes log-uniform from k to the patient count, drawn
//! from a fixed seed), and every query then also runs the suppression path against that
//! ledger (read by size, differencing checked, nothing recorded, so the ledger stays at N),
//! reported beside the same path with an empty ledger, in the same run.

use std::path::Path;

use rand::{Rng, SeedableRng};
use roaring::RoaringBitmap;

use crate::audit::AuditKey;
use crate::store::Store;
use crate::store::ledger::{LedgerWrite, StoreLedger};

/// A store in `dir` whose ledger for `extract_id` holds `cells` sets over `patients`.
pub async fn filled(
    dir: &Path,
    extract_id: &str,
    patients: u64,
    cells: usize,
) -> Result<StoreLedger, String> {
    let key = AuditKey::from_bytes(&[7u8; 32]).map_err(|e| e.to_string())?;
    let store = Store::open(&dir.join("bench-ledger.db"), key)
        .await
        .map_err(|e| e.to_string())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let n = u32::try_from(patients.max(6)).unwrap_or(u32::MAX);
    let mut batch = Vec::new();
    for i in 0..cells {
        // log-uniform sizes in [5, n]: most released cells are small groups.
        let size = (5f64 * ((n as f64 / 5.0).ln() * rng.random::<f64>()).exp()) as u32;
        let size = size.clamp(5, n);
        let start = rng.random_range(0..=n - size);
        let mut set = RoaringBitmap::new();
        set.insert_range(start..start + size);
        batch.push(set);
        if batch.len() == 500 || i + 1 == cells {
            let w = LedgerWrite {
                extract_id: extract_id.to_string(),
                query_id: format!("bench_{i}"),
                sets: std::mem::take(&mut batch),
            };
            store.ledger_fill(&w).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(store.ledger_view(extract_id))
}
