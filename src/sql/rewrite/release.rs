//! Privacy rewrite, last step: what the rewritten plan releases, for the disclosure check.
//!
//! The property kept here is that no hidden helper column (unit, facility, contributor
//! count, dominance statistic) is ever described as released, that every released column
//! lists all guards it depends on (none for a public result), and that rows are declared
//! paddable to their key domains ([`Grouping::Keys`]) only when every group key of the
//! one protected aggregation is released unchanged. Exercised by
//! `tests/slt/accepted.slt` (padded keys: "Disease x fiscal year x sex"; dropped rows:
//! "Non-public keys with small groups are dropped, not shown").

use std::collections::BTreeSet;

use super::{Col, Grouping, KeySource, Kind, Rel, Release, ReleaseColumn, Rewriter};

impl Rewriter<'_> {
    /// Describe what `rel`, the top of the rewritten plan, releases (this ends the rewrite:
    /// the guards move into the description).
    pub(super) fn release(self, rel: &Rel) -> Release {
        let columns = rel
            .cols
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.hidden)
            .map(|(i, c)| ReleaseColumn {
                index: i,
                name: rel.plan.schema().field(i).name().clone(),
                key: c.key,
                public: c.public,
                count_like: c.count_like,
                guards: if rel.kind == Kind::Public {
                    vec![]
                } else {
                    c.guards.iter().copied().collect()
                },
                sets: if rel.kind == Kind::Public || c.key {
                    vec![]
                } else {
                    c.sets.iter().copied().collect()
                },
                source: c.source.clone(),
            })
            .collect();
        let grouping = if rel.kind == Kind::Public {
            Grouping::Public
        } else {
            self.grouping(rel)
        };
        Release {
            columns,
            guards: self.guards,
            drop_on_fail: rel.kind != Kind::Public && rel.drop_on_fail,
            inner_sealed: self.inner_sealed,
            grouping,
            ordered: false,
            side: self.side,
        }
    }

    /// Which protected aggregation a guard belongs to.
    fn agg_of(&self, g: usize) -> Option<usize> {
        self.aggs.iter().rposition(|&(first, _)| first <= g)
    }

    /// Classify the released rows of a protected result (see [`Grouping`]).
    fn grouping(&self, rel: &Rel) -> Grouping {
        let visible: Vec<&Col> = rel.cols.iter().filter(|c| !c.hidden).collect();
        let aggs: BTreeSet<Option<usize>> = visible
            .iter()
            .flat_map(|c| c.guards.iter().map(|&g| self.agg_of(g)))
            .collect();
        let Some(&Some(a)) = aggs.iter().next().filter(|_| aggs.len() == 1) else {
            return if aggs.is_empty() {
                Grouping::Public
            } else {
                Grouping::Opaque
            };
        };
        let nkeys = self.aggs[a].1;
        let mut seen = BTreeSet::new();
        for c in visible.iter().filter(|c| c.key) {
            match (c.group_of, &c.source) {
                (Some((ga, j)), Some(_)) if ga == a => {
                    seen.insert(j);
                }
                (None, Some(KeySource::Literal(_))) => {}
                _ => return Grouping::Opaque,
            }
        }
        if nkeys == 0 {
            Grouping::Ungrouped
        } else if seen.len() == nkeys {
            Grouping::Keys
        } else {
            Grouping::Opaque
        }
    }
}
