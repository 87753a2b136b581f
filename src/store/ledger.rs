//! Store, the release ledger (`privacy::ledger`): the contributor sets released to an
//! application, by extract.
//!
//! Guarantees: sets are written only inside the transaction of the query's history row
//! and audit event (`record_query`), so a released cell is in the ledger exactly when its
//! answer could be returned, across restarts and kill -9 (SQLite WAL, synchronous FULL);
//! identical sets are stored once; the ledger of an extract is deleted in the transaction
//! that destroys or replaces that extract. Reads go by size range over an index.

use std::fmt;

use futures::future::BoxFuture;
use roaring::RoaringBitmap;
use sqlx::{AnyConnection, Row};

use super::{Result, Store, exec, now, ts};
use crate::engine::contributors::{deserialise, serialise};
use crate::privacy::ledger::{LedgerView, ranges};
use crate::query::QueryError;

/// The sets one answer releases, to be recorded with it.
#[derive(Debug, Clone)]
pub struct LedgerWrite {
    pub extract_id: String,
    pub query_id: String,
    pub sets: Vec<RoaringBitmap>,
}

/// Append the sets of one answer (inside the caller's transaction).
pub(super) async fn insert(conn: &mut AnyConnection, w: &LedgerWrite) -> Result<()> {
    let at = ts(now());
    for set in w.sets.iter().filter(|s| !s.is_empty()) {
        let members = serialise(set);
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &members));
        let row = sqlx::query(
            "INSERT INTO release_ledger (extract_id, set_sha256, size, members, query_id, released_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&w.extract_id)
        .bind(sha)
        .bind(set.len() as i64)
        .bind(members)
        .bind(&w.query_id)
        .bind(&at);
        exec(conn, row).await?;
    }
    Ok(())
}

/// Delete the ledger of every extract of `application` other than `keep` (inside the
/// caller's transaction): a destroyed or replaced extract takes its ledger with it.
pub(super) async fn delete_for(
    conn: &mut AnyConnection,
    application: &str,
    keep: Option<&str>,
) -> Result<()> {
    let delete = sqlx::query(
        "DELETE FROM release_ledger WHERE extract_id IN
           (SELECT extract_id FROM extracts WHERE application_id = $1 AND extract_id IS DISTINCT FROM $2)",
    )
    .bind(application)
    .bind(keep);
    exec(conn, delete).await?;
    Ok(())
}

impl Store {
    /// The serialised sets of an extract's ledger with sizes in `lo..=hi`.
    pub async fn ledger_sets(&self, extract_id: &str, lo: u64, hi: u64) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT members FROM release_ledger WHERE extract_id = $1 AND size BETWEEN $2 AND $3",
        )
        .bind(extract_id)
        .bind(lo as i64)
        .bind(hi.min(i64::MAX as u64) as i64)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<Vec<u8>, _>("members").map_err(Into::into))
            .collect()
    }

    /// Record sets without a query (benchmarks fill a ledger this way).
    #[doc(hidden)]
    pub async fn ledger_fill(&self, w: &LedgerWrite) -> Result<()> {
        self.transaction(async |tx| insert(tx, w).await).await
    }

    /// The ledger of one extract as the data plane reads it.
    pub fn ledger_view(&self, extract_id: &str) -> StoreLedger {
        StoreLedger {
            store: self.clone(),
            extract_id: extract_id.to_string(),
        }
    }
}

/// One extract's ledger in the store.
#[derive(Clone)]
pub struct StoreLedger {
    store: Store,
    extract_id: String,
}

impl fmt::Debug for StoreLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLedger")
            .field("extract_id", &self.extract_id)
            .finish()
    }
}

impl LedgerView for StoreLedger {
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, std::result::Result<Vec<RoaringBitmap>, QueryError>> {
        Box::pin(async move {
            let internal = |e: String| QueryError::internal("release ledger", e);
            let mut out = Vec::new();
            for (lo, hi) in ranges(sizes, k) {
                let sets = self
                    .store
                    .ledger_sets(&self.extract_id, lo, hi)
                    .await
                    .map_err(|e| internal(e.to_string()))?;
                for bytes in sets {
                    out.push(deserialise(&bytes).map_err(internal)?);
                }
            }
            Ok(out)
        })
    }
}
