//! Query stage, one extract at a time: suppression queries over the same extract run their
//! ledger read, disclosure check and record one after another — and, since a query is
//! also checked against every other application's releases, one server-wide line runs
//! from a query's ledger read to its commit. Execution, the bulk of a query, runs before
//! the read and outside both: the turn is taken when the data plane first reads the
//! ledger ([`LinedLedger`]) and given back when the gateway drops the [`Turn`] after the
//! record commits (or the query fails).
//!
//! Without this, two concurrent queries could each check their cells against a ledger
//! that does not yet hold the other's, and both release: the pair would never be
//! compared. One process holds the locks; the embedded SQLite store admits one server
//! process, and a multi-process deployment must take the same lock in its database.
//!
//! The output airlock takes the same lock (through `Admission::hold_extract`) while it
//! re-checks a release against the ledger and records its approval, so no answer slips
//! into the ledger between the two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use roaring::RoaringBitmap;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::privacy::ledger::LedgerView;
use crate::query::QueryError;

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

/// The turn of one query: the extract's lock, then the server-wide ledger line (always in
/// this order, so the output airlock, which takes the extract's lock alone, cannot
/// deadlock with a query). Empty until the first ledger read.
#[derive(Debug, Default, Clone)]
pub struct Turn(Arc<Mutex<Option<Held>>>);

/// The two guards of a taken turn: the extract's lock, the server-wide line.
type Held = (OwnedMutexGuard<()>, OwnedMutexGuard<()>);

impl Turn {
    /// Give the turn back (if taken): the gateway calls it when the query's record
    /// committed or the query failed, whoever still holds a clone of the ledger.
    pub fn end(&self) {
        self.0.lock().expect("turn").take();
    }
}

/// Ends a [`Turn`] when dropped (on every return path of the gateway).
pub struct EndsTurn(pub Turn);

impl Drop for EndsTurn {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// An extract's release ledger that takes the query's [`Turn`] before its first read.
#[derive(Debug)]
pub struct LinedLedger<L> {
    pub inner: L,
    pub extract_id: String,
    pub locks: Arc<ExtractLocks>,
    pub line: Arc<AsyncMutex<()>>,
    pub turn: Turn,
}

impl<L: LedgerView> LedgerView for LinedLedger<L> {
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, Result<Vec<RoaringBitmap>, QueryError>> {
        Box::pin(async move {
            let taken = self.turn.0.lock().expect("turn").is_some();
            if !taken {
                let extract = self.locks.hold(&self.extract_id).await;
                let line = self.line.clone().lock_owned().await;
                *self.turn.0.lock().expect("turn") = Some((extract, line));
            }
            self.inner.near(sizes, k).await
        })
    }
}
