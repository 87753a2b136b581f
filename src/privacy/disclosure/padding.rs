//! Disclosure check, row presence and order (docs/privacy.md §4, "Row presence and order
//! must not depend on the data"). A row whose cells are all suppressed still says "this
//! group is not empty", so neither the presence nor the position of a row with a failing
//! cell may depend on the data. When every group key is released as a bare public-domain
//! column with an enumerable domain ([`Padding::Domains`], decided before the query runs)
//! the result is padded to the full product of the key domains: fully released rows keep
//! the query's order, and every other combination follows in domain order (the last key
//! varying fastest), as the failing data row or as an all-null padding row. Otherwise
//! ([`Padding::Impossible`], or non-public keys) every row with a failing cell is dropped,
//! and not counted (the count would count small groups). Without an ORDER BY the fully
//! released rows are sorted by their values, since the engine's order could depend on
//! removed rows. An ungrouped aggregation keeps its single row.

use std::collections::{HashMap, HashSet};

use datafusion::arrow::datatypes::DataType;
use datafusion::execution::context::SessionContext;
use serde_json::Value;

use super::cells::scalar_to_json;
use super::domain::{key_domain, typed_scalars};
use super::{Checked, RowCap};
use crate::catalog::Catalog;
use crate::query::QueryError;
use crate::sql::rewrite::{Grouping, KeySource, Release, ReleaseColumn};

/// What the released rows are padded to, decided from the release description and the
/// catalogue before the query runs (so it cannot depend on the data).
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    /// Nothing to pad: a reference-only result, or an aggregation without GROUP BY (its
    /// single row always exists).
    NotNeeded,
    /// Every released key column (index into `release.columns`) with its domain, in
    /// domain order; the product of the domain sizes is at most `max_rows`.
    Domains(Vec<(usize, Vec<Value>)>),
    /// The group keys cannot be padded (computed, hidden or non-public keys, no enumerable
    /// domain, or too many combinations): rows with a failing cell are dropped.
    Impossible,
}

/// Decide the padding of a release: enumerate the domain of every released key column.
/// `types` are the executed plan's types of the released columns (padding values are cast
/// to them). Reference-table domains are read from `ctx`, where every extract registers
/// its reference tables.
pub async fn padding(
    ctx: &SessionContext,
    release: &Release,
    catalog: &Catalog,
    types: &[DataType],
    max_rows: usize,
) -> Padding {
    match release.grouping {
        Grouping::Public | Grouping::Ungrouped => return Padding::NotNeeded,
        Grouping::Opaque => return Padding::Impossible,
        Grouping::Keys => {}
    }
    if release.drop_on_fail {
        return Padding::Impossible;
    }
    let mut domains = Vec::new();
    let mut product = 1usize;
    for (k, c) in release.columns.iter().enumerate().filter(|(_, c)| c.key) {
        let Some(t) = types.get(k) else {
            return Padding::Impossible;
        };
        let values = match &c.source {
            Some(KeySource::Literal(v)) => typed_scalars(std::iter::once(v.clone()), t),
            Some(KeySource::Column { table, column }) => {
                key_domain(ctx, catalog, table, column, t, max_rows).await
            }
            None => None,
        };
        let Some(values) = values else {
            return Padding::Impossible;
        };
        let values: Vec<Value> = values.iter().map(scalar_to_json).collect();
        product = product.saturating_mul(values.len());
        if product > max_rows || values.is_empty() {
            return Padding::Impossible;
        }
        domains.push((k, values));
    }
    Padding::Domains(domains)
}

/// The checked rows of one result while the batches are read: released in query order,
/// held for their place in domain order (padding, failing rows), or dropped and counted.
pub(super) struct Rows<'a> {
    domains: Option<&'a [(usize, Vec<Value>)]>,
    /// Rows with a failing cell are dropped whole (no padding possible).
    drop_failing: bool,
    released: Vec<Checked>,
    /// Rows with a failing cell, by their key values (padding mode only).
    failing_by_key: HashMap<String, Checked>,
    /// Fully released rows are sorted by their values: the query has no ORDER BY, and the
    /// engine's order could depend on rows of removed small groups.
    sort: bool,
}

/// The rows of a result in their released order, and what was done to get there.
pub(super) struct Placed {
    pub rows: Vec<Checked>,
    /// Rows that passed every rule; in padding mode they come first.
    pub fully_released: usize,
    /// Rows with a failing cell are removed (neither shown nor counted).
    pub drops_failing: bool,
}

impl<'a> Rows<'a> {
    pub(super) fn new(release: &Release, padding: &'a Padding) -> Self {
        let (domains, drop_failing) = match padding {
            Padding::NotNeeded => (
                None,
                release.drop_on_fail || release.columns.iter().any(|c| c.key && !c.public),
            ),
            Padding::Domains(d) => (Some(d.as_slice()), false),
            Padding::Impossible => (None, true),
        };
        Self {
            domains,
            drop_failing,
            released: Vec::new(),
            failing_by_key: HashMap::new(),
            sort: !release.ordered,
        }
    }

    /// Drop (and count) a row with failing cells `fails` if it cannot be shown.
    pub(super) fn dropped(&mut self, fails: &[usize]) -> bool {
        !fails.is_empty() && self.drop_failing
    }

    /// The failing cells of a shown row that are suppressed. Key values stay visible: they
    /// are public-domain values, and when padding they are exactly the domain combination
    /// the row stands for.
    pub(super) fn suppressed(&self, columns: &[ReleaseColumn], fails: Vec<usize>) -> Vec<usize> {
        let padded = self.domains.is_some();
        fails
            .into_iter()
            .filter(|&k| {
                let c = &columns[k];
                !(c.key && (c.public || padded))
            })
            .collect()
    }

    /// Take a shown row; `failed` says whether any of its cells failed.
    pub(super) fn place(&mut self, row: Checked, failed: bool) {
        match self.domains {
            Some(domains) if failed => {
                let inside = domains.iter().all(|(k, d)| d.contains(&row.values[*k]));
                let key = key_of(domains, &row.values);
                if !inside || self.failing_by_key.contains_key(&key) {
                    return;
                }
                self.failing_by_key.insert(key, row);
            }
            _ => self.released.push(row),
        }
    }

    /// Rows that will be released (fully released and held ones).
    pub(super) fn len(&self) -> usize {
        self.released.len() + self.failing_by_key.len()
    }

    /// Order the rows: fully released ones first, then (padding mode) one row per key
    /// combination not fully released, in domain order.
    pub(super) fn finish(
        mut self,
        columns: &[ReleaseColumn],
        cap: &RowCap,
    ) -> Result<Placed, QueryError> {
        if self.sort {
            self.released
                .sort_by_cached_key(|r| serde_json::to_string(&r.values).unwrap_or_default());
        }
        let fully_released = self.released.len();
        if let Some(domains) = self.domains {
            let released_keys: HashSet<String> = self
                .released
                .iter()
                .map(|r| key_of(domains, &r.values))
                .collect();
            for values in combinations(domains, columns.len()) {
                let key = key_of(domains, &values);
                if released_keys.contains(&key) {
                    continue;
                }
                let row = self.failing_by_key.remove(&key).unwrap_or_else(|| Checked {
                    suppressed: (0..columns.len()).filter(|&k| !columns[k].key).collect(),
                    differencing: Vec::new(),
                    sets: Vec::new(),
                    cells: Vec::new(),
                    values,
                });
                self.released.push(row);
                cap.check(self.released.len())?;
            }
            // Every failing row is inside the domain, so all were placed; defensive anyway.
        }
        cap.check(self.released.len())?;
        Ok(Placed {
            rows: self.released,
            fully_released,
            drops_failing: self.drop_failing,
        })
    }
}

/// Every combination of the key domains as a row of `ncols` values (keys set, the rest
/// null), in domain order: mixed-radix counting, the last key varying fastest.
fn combinations(
    domains: &[(usize, Vec<Value>)],
    ncols: usize,
) -> impl Iterator<Item = Vec<Value>> + '_ {
    let total: usize = domains.iter().map(|(_, d)| d.len()).product();
    (0..total).map(move |n| {
        let mut values = vec![Value::Null; ncols];
        let mut rest = n;
        for (k, d) in domains.iter().rev() {
            values[*k] = d[rest % d.len()].clone();
            rest /= d.len();
        }
        values
    })
}

/// The key values of a row, as a map key.
fn key_of(domains: &[(usize, Vec<Value>)], values: &[Value]) -> String {
    let keys: Vec<&Value> = domains.iter().map(|(k, _)| &values[*k]).collect();
    serde_json::to_string(&keys).unwrap_or_default()
}
