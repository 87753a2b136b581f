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
use crate::privacy::ledger::{ElsewhereView, LedgerView, ReleasedElsewhere, ranges};
use crate::query::QueryError;

/// The sets one answer releases, to be recorded with it.
#[derive(Debug, Clone)]
pub struct LedgerWrite {
    pub extract_id: String,
    pub query_id: String,
    pub sets: Vec<RoaringBitmap>,
}

/// Append the sets of one answer (inside the caller's transaction); the SHA-256 of every
/// set, in order (the key a stored answer names its sets by).
pub(super) async fn insert(conn: &mut AnyConnection, w: &LedgerWrite) -> Result<Vec<String>> {
    let at = ts(now());
    let mut hashes = Vec::with_capacity(w.sets.len());
    for set in w.sets.iter().filter(|s| !s.is_empty()) {
        let members = serialise(set);
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &members));
        hashes.push(sha.clone());
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
    Ok(hashes)
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

    /// The sets with sizes in `lo..=hi` released to every *other* live extract (not
    /// destroyed), with the extract they index and its application (differencing across
    /// applications).
    pub async fn ledger_sets_elsewhere(
        &self,
        extract_id: &str,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<ForeignSet>> {
        let rows = sqlx::query(
            "SELECT l.extract_id, x.application_id, x.path, l.members
               FROM release_ledger l JOIN extracts x ON x.extract_id = l.extract_id
              WHERE l.size BETWEEN $1 AND $2 AND l.extract_id <> $3 AND x.destroyed_at IS NULL",
        )
        .bind(lo as i64)
        .bind(hi.min(i64::MAX as u64) as i64)
        .bind(extract_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ForeignSet {
                    extract_id: r.try_get("extract_id")?,
                    application: r.try_get("application_id")?,
                    path: r.try_get("path")?,
                    members: r.try_get("members")?,
                })
            })
            .collect()
    }

    /// One set of an extract's ledger by its SHA-256 (the output airlock re-reads the
    /// sets of a release this way); `None` once its extract was destroyed or replaced.
    pub async fn ledger_set(&self, extract_id: &str, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT members FROM release_ledger WHERE extract_id = $1 AND set_sha256 = $2",
        )
        .bind(extract_id)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Record sets without a query (benchmarks fill a ledger this way).
    #[doc(hidden)]
    pub async fn ledger_fill(&self, w: &LedgerWrite) -> Result<()> {
        self.transaction(async |tx| insert(tx, w).await.map(drop))
            .await
    }

    /// The ledger of one extract as the data plane reads it.
    pub fn ledger_view(&self, extract_id: &str) -> StoreLedger {
        StoreLedger {
            store: self.clone(),
            extract_id: extract_id.to_string(),
        }
    }
}

/// A set released to another application's extract, as stored.
#[derive(Debug, Clone)]
pub struct ForeignSet {
    pub extract_id: String,
    pub application: String,
    /// The extract's directory (its ledger pids are read from there).
    pub path: String,
    /// The set over that extract's patient index (portable roaring format).
    pub members: Vec<u8>,
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
        let fetch = move |lo, hi| -> BoxFuture<'a, Result<Vec<Vec<u8>>>> {
            Box::pin(self.store.ledger_sets(&self.extract_id, lo, hi))
        };
        Box::pin(by_size(sizes, k, fetch, |bytes| deserialise(&bytes)))
    }
}

/// The sets released to every other live extract, as the data plane reads them (inside
/// the query's turn, `query::serial`).
pub struct StoreElsewhere {
    store: Store,
    extract_id: String,
}

impl fmt::Debug for StoreElsewhere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreElsewhere")
            .field("extract_id", &self.extract_id)
            .finish()
    }
}

impl Store {
    /// The other extracts' ledgers as seen from `extract_id`.
    pub fn ledger_elsewhere(&self, extract_id: &str) -> StoreElsewhere {
        StoreElsewhere {
            store: self.clone(),
            extract_id: extract_id.to_string(),
        }
    }
}

impl ElsewhereView for StoreElsewhere {
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, std::result::Result<Vec<ReleasedElsewhere>, QueryError>> {
        let fetch = move |lo, hi| -> BoxFuture<'a, Result<Vec<ForeignSet>>> {
            Box::pin(self.store.ledger_sets_elsewhere(&self.extract_id, lo, hi))
        };
        Box::pin(by_size(sizes, k, fetch, |f: ForeignSet| {
            Ok(ReleasedElsewhere {
                set: deserialise(&f.members)?,
                extract_id: f.extract_id,
                application: f.application,
                extract_dir: f.path.into(),
            })
        }))
    }
}

/// Read a ledger by size: the rows of every size range that can hold an unsafe partner
/// of one of `sizes` (`privacy::ledger::ranges`), each made into what the caller reads.
async fn by_size<'a, R, T>(
    sizes: &[u64],
    k: u32,
    fetch: impl Fn(u64, u64) -> BoxFuture<'a, Result<Vec<R>>>,
    make: impl Fn(R) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<T>, QueryError> {
    let internal = |e: String| QueryError::internal("release ledger", e);
    let mut out = Vec::new();
    for (lo, hi) in ranges(sizes, k) {
        let rows = fetch(lo, hi).await.map_err(|e| internal(e.to_string()))?;
        for row in rows {
            out.push(make(row).map_err(internal)?);
        }
    }
    Ok(out)
}
