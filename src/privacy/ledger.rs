//! Privacy stage, the release ledger (suppression mode): every contributor set an
//! application has been released, so that a new cell whose patients differ from an
//! earlier one's by fewer than k is suppressed (`disclosure::differencing`), whoever of
//! the application's users asks and however much later.
//!
//! This module is the data plane's view of it: [`LedgerView::near`] returns the earlier
//! sets whose sizes lie within k of the given sizes (only those can make an unsafe pair).
//! The store keeps the ledger (`store::ledger`), keyed to the extract (a rebuilt extract
//! has a new patient index, so its ledger starts empty and the old one is destroyed with
//! the old extract), written in the same transaction as the query's audit event (no
//! ledger entry, no answer). The gateway serialises the queries of one extract from the
//! ledger read to that commit (`query::gateway`), so two concurrent queries cannot both
//! miss each other's cells. Under DP the ledger is not used: DP composes.
//!
//! Across applications ([`ElsewhereView`]): a new cell is also compared with the sets
//! released to every other live extract, carried onto this extract's index through the
//! extracts' ledger pids (`engine::ledger_pids`) — two approvals over overlapping scopes
//! see the same patients under different pseudonyms, and a pair of cells from the two
//! can difference down to a small group just as two cells of one application can. The
//! gateway holds one server-wide line from the first ledger read of a query to its
//! commit (`query::admission`), so two applications' concurrent queries cannot both miss
//! each other's cells.

use std::fmt::Debug;

use futures::future::BoxFuture;
use roaring::RoaringBitmap;

use super::disclosure::differencing::window;
use crate::query::QueryError;

/// Read access to one extract's release ledger.
pub trait LedgerView: Send + Sync + Debug {
    /// Earlier released sets whose sizes lie within k of any of `sizes` (sorted).
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, Result<Vec<RoaringBitmap>, QueryError>>;
}

/// A set released to another application: over that application's extract index, with
/// what is needed to carry it onto this one (`engine::ledger_pids`).
#[derive(Debug, Clone)]
pub struct ReleasedElsewhere {
    pub extract_id: String,
    pub application: String,
    pub extract_dir: std::path::PathBuf,
    pub set: RoaringBitmap,
}

/// Read access to the sets released to every *other* live extract (differencing across
/// applications whose scopes overlap: the same patients seen through two approvals).
pub trait ElsewhereView: Send + Sync + Debug {
    /// Sets of other extracts whose sizes lie within k of any of `sizes`.
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, Result<Vec<ReleasedElsewhere>, QueryError>>;
}

/// No earlier releases: differencing is checked within the answer only (test fixtures,
/// operator CLI runs on an extract, benchmarks of the empty ledger).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl LedgerView for NoLedger {
    fn near<'a>(
        &'a self,
        _: &'a [u64],
        _: u32,
    ) -> BoxFuture<'a, Result<Vec<RoaringBitmap>, QueryError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Earlier released sets held in memory: a standard report's earlier publications,
/// read from the store and carried onto the report extract's index (`report::annual`).
#[derive(Debug, Clone, Default)]
pub struct Sets(pub Vec<RoaringBitmap>);

impl LedgerView for Sets {
    fn near<'a>(
        &'a self,
        sizes: &'a [u64],
        k: u32,
    ) -> BoxFuture<'a, Result<Vec<RoaringBitmap>, QueryError>> {
        let windows = ranges(sizes, k);
        let near = self
            .0
            .iter()
            .filter(|s| {
                windows
                    .iter()
                    .any(|(lo, hi)| (*lo..=*hi).contains(&s.len()))
            })
            .cloned()
            .collect();
        Box::pin(async move { Ok(near) })
    }
}

/// The size ranges (inclusive) to read for these sizes: each size's window, merged.
pub fn ranges(sizes: &[u64], k: u32) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    for s in sorted {
        let (lo, hi) = window(s, k);
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_each_window_and_merge_overlaps() {
        assert_eq!(ranges(&[10, 12, 100], 5), vec![(6, 16), (96, 104)]);
        assert_eq!(ranges(&[], 5), vec![]);
        assert_eq!(ranges(&[2], 5), vec![(0, 6)]);
    }
}
