//! Query stage, one extract at a time: suppression queries over the same extract run their
//! ledger read, disclosure check and record one after another.
//!
//! Without this, two concurrent queries of one application could each check their cells
//! against a ledger that does not yet hold the other's, and both release: the pair would
//! never be compared. Queries over different extracts (different applications) still run
//! in parallel. One process holds the locks; the embedded SQLite store admits one server
//! process, and a multi-process deployment must take the same lock in its database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Per-extract locks, created on first use.
#[derive(Debug, Default)]
pub struct ExtractLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl ExtractLocks {
    /// Wait for, and hold, the lock of one extract until the guard is dropped.
    pub async fn hold(&self, extract_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().expect("extract locks");
            map.entry(extract_id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
