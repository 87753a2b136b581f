//! Disclosure check, rule `margins` (secondary suppression across the tables of one
//! publication; docs/privacy.md §4c). A standard report publishes totals next to the cells
//! they total — cases per product next to cases per product and sex, and cases by sex over
//! all products — so a reader can subtract. The query path checks each table's cells on
//! their own and in pairs (`threshold.rs`, `differencing.rs`); this rule checks what the
//! *publication* reveals once the tables are read together:
//!
//! - a relation `margin = Σ parts` with exactly one member hidden reveals that member;
//! - a relation whose margin is known reveals the sum of its hidden parts, a number
//!   computed from the union of their contributor sets.
//!
//! Every published set — each released cell's, each revealed member's, each revealed
//! partial sum's — must be empty or hold at least k patients, must not differ from any
//! other published set or from any set of an earlier publication (the report's ledger)
//! by fewer than k patients (`differencing::unsafe_pair`). Where one does, one more cell
//! is suppressed: of an unsafe pair of released cells, the smaller (a cell rather than its
//! total); for a revealed value, the smallest released part of its relation (else its
//! margin). The loop repeats until nothing is revealed that breaks a rule; it ends because
//! every round suppresses a cell, and fails closed (with everything suppressed, nothing is
//! published).
//!
//! Guarantees: the decisions depend on the sets alone (sizes, then contents), never on the
//! order of rows or tables; the cells and the relations are the caller's (the report's
//! definitions say which tables add up to which).
//!
//! # Privacy
//! The relations must list every additive constraint the publication carries. Exact
//! derivations are found by propagating single unknowns through the relations (enough for
//! the hierarchical tables of the annual report: total → group → group × dimension, with
//! the dimension's totals over all groups); an interval attack on a two-way table with
//! two or more suppressed cells per row and column is not modelled (docs/privacy.md §4c).

use std::collections::BTreeSet;

use roaring::RoaringBitmap;

use super::differencing::{Earlier, unsafe_pair, window};

/// One published cell of the report.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its contributors (empty for a cell no patient feeds).
    pub set: RoaringBitmap,
    /// Whether it is shown (not suppressed).
    pub released: bool,
    /// The threshold of the dataset it belongs to.
    pub k: u32,
}

/// `margin = Σ parts`, as the report's definitions declare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub margin: usize,
    pub parts: Vec<usize>,
}

/// What a reader can compute: a released cell, a revealed member of a relation, or the
/// sum of a relation's hidden parts.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    Released(usize),
    Revealed { cell: usize, relation: usize },
    PartialSum { relation: usize },
}

#[derive(Debug, Clone)]
struct Published {
    set: RoaringBitmap,
    k: u32,
    origin: Origin,
}

/// Suppress cells until the publication reveals no small group (see the module docs).
/// Returns the sets a reader can compute from what stays released — the released cells'
/// and the revealed values' — which the report's ledger records.
pub fn secure(cells: &mut [Cell], relations: &[Relation], earlier: &Earlier) -> Vec<RoaringBitmap> {
    loop {
        let published = published(cells, relations);
        // Every violation of this round is fixed before the next: far fewer rounds than one
        // cell at a time, at the cost of the odd extra cell (never a missing one).
        let found = violations(&published, earlier);
        if found.is_empty() {
            return super::differencing::distinct(published.into_iter().map(|p| p.set).collect());
        }
        let mut victims: Vec<usize> = found
            .into_iter()
            .map(|v| fix(cells, relations, &published[v]))
            .filter(|&v| cells[v].released)
            .collect();
        if victims.is_empty() {
            // No released cell to blame (cannot happen: a value is only published while a
            // cell it follows from is released); fail closed.
            victims = (0..cells.len()).filter(|&i| cells[i].released).collect();
        }
        for v in victims {
            cells[v].released = false;
        }
    }
}

/// The known cells: released, then every member that is the only unknown of a relation,
/// repeated until nothing more follows.
fn known(cells: &[Cell], relations: &[Relation]) -> (Vec<bool>, Vec<(usize, usize)>) {
    let mut known: Vec<bool> = cells.iter().map(|c| c.released).collect();
    let mut revealed = Vec::new();
    loop {
        let mut more = false;
        for (r, rel) in relations.iter().enumerate() {
            let members = std::iter::once(rel.margin).chain(rel.parts.iter().copied());
            let unknown: Vec<usize> = members.filter(|&m| !known[m]).collect();
            if let [only] = unknown[..] {
                known[only] = true;
                revealed.push((only, r));
                more = true;
            }
        }
        if !more {
            return (known, revealed);
        }
    }
}

/// Every set a reader can compute from the released cells.
fn published(cells: &[Cell], relations: &[Relation]) -> Vec<Published> {
    let (known, revealed) = known(cells, relations);
    let mut out: Vec<Published> = cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c.released)
        .map(|(i, c)| Published {
            set: c.set.clone(),
            k: c.k,
            origin: Origin::Released(i),
        })
        .collect();
    for (cell, relation) in revealed {
        out.push(Published {
            set: cells[cell].set.clone(),
            k: cells[relations[relation].margin].k,
            origin: Origin::Revealed { cell, relation },
        });
    }
    for (r, rel) in relations.iter().enumerate() {
        let hidden: Vec<usize> = rel.parts.iter().copied().filter(|&p| !known[p]).collect();
        if known[rel.margin] && hidden.len() >= 2 {
            let mut set = RoaringBitmap::new();
            for p in hidden {
                set |= &cells[p].set;
            }
            out.push(Published {
                set,
                k: cells[rel.margin].k,
                origin: Origin::PartialSum { relation: r },
            });
        }
    }
    out
}

/// The published sets (indices, in an order that depends on the sets only) that break a
/// rule: too small, close to an earlier publication's set, or close to another published
/// set — of such a pair the smaller, unless the other is already listed.
fn violations(published: &[Published], earlier: &Earlier) -> Vec<usize> {
    let mut order: Vec<usize> = (0..published.len()).collect();
    order.sort_by(|&a, &b| by_size(&published[a].set, &published[b].set));
    let mut out = Vec::new();
    let mut listed = vec![false; published.len()];
    for &i in &order {
        let p = &published[i];
        let n = p.set.len();
        if n > 0 && (n < u64::from(p.k) || earlier.conflicts(&p.set, p.k)) {
            out.push(i);
            listed[i] = true;
        }
    }
    // Pairs: sets within the larger k of each other in size.
    let kmax = published.iter().map(|p| p.k).max().unwrap_or(1);
    for (pos, &i) in order.iter().enumerate() {
        let (_, hi) = window(published[i].set.len(), kmax);
        for &j in order[pos + 1..]
            .iter()
            .take_while(|&&j| published[j].set.len() <= hi)
        {
            if listed[i] || listed[j] {
                continue;
            }
            let k = published[i].k.max(published[j].k);
            if unsafe_pair(&published[i].set, &published[j].set, k) {
                out.push(i);
                listed[i] = true;
            }
        }
    }
    out
}

/// Smaller sets first; equal sizes by content.
fn by_size(a: &RoaringBitmap, b: &RoaringBitmap) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.iter().cmp(b.iter()))
}

/// The released cell to suppress so that `p` is no longer published as it is.
fn fix(cells: &[Cell], relations: &[Relation], p: &Published) -> usize {
    match p.origin {
        Origin::Released(i) => i,
        Origin::Revealed { relation, .. } | Origin::PartialSum { relation } => {
            smallest_released_near(cells, relations, relation)
        }
    }
}

/// The smallest released part of `relation`, else its margin if released, else the
/// smallest released cell of any relation sharing a member with it, widening until one
/// is found (a value is only revealed while some cell it follows from is released).
fn smallest_released_near(cells: &[Cell], relations: &[Relation], relation: usize) -> usize {
    let smallest = |ids: &mut dyn Iterator<Item = usize>| {
        ids.filter(|&i| cells[i].released)
            .min_by(|&a, &b| by_size(&cells[a].set, &cells[b].set))
    };
    let rel = &relations[relation];
    if let Some(p) = smallest(&mut rel.parts.iter().copied()) {
        return p;
    }
    if cells[rel.margin].released {
        return rel.margin;
    }
    let mut reached: BTreeSet<usize> = BTreeSet::from([relation]);
    loop {
        let members: BTreeSet<usize> = reached
            .iter()
            .flat_map(|&r| std::iter::once(relations[r].margin).chain(relations[r].parts.clone()))
            .collect();
        if let Some(c) = smallest(&mut members.iter().copied()) {
            return c;
        }
        let wider: BTreeSet<usize> = (0..relations.len())
            .filter(|&r| {
                std::iter::once(relations[r].margin)
                    .chain(relations[r].parts.iter().copied())
                    .any(|m| members.contains(&m))
            })
            .collect();
        if wider.len() == reached.len() {
            // Nothing released is connected: suppress the smallest released cell anywhere
            // (cannot happen while something is revealed; fail closed regardless).
            return smallest(&mut (0..cells.len())).unwrap_or(rel.margin);
        }
        reached = wider;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(r: std::ops::Range<u32>) -> RoaringBitmap {
        r.collect()
    }

    fn cell(s: RoaringBitmap) -> Cell {
        let released = s.len() >= 5;
        Cell {
            set: s,
            released,
            k: 5,
        }
    }

    /// Every published value a reader can compute is empty or ≥ k, and pairwise safe.
    fn check(cells: &[Cell], relations: &[Relation]) {
        let p = published(cells, relations);
        for a in &p {
            assert!(a.set.is_empty() || a.set.len() >= 5, "{a:?}");
            for b in &p {
                assert!(!unsafe_pair(&a.set, &b.set, 5), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_single_hidden_cell_under_a_released_total_takes_a_second_cell_with_it() {
        // total 43 = men 40 + women 3: the total minus men gives the 3 women.
        let mut cells = vec![cell(set(0..43)), cell(set(0..40)), cell(set(40..43))];
        let rel = vec![Relation {
            margin: 0,
            parts: vec![1, 2],
        }];
        let published = secure(&mut cells, &rel, &Earlier::default());
        assert!(cells[0].released, "the total stays");
        assert!(
            !cells[1].released && !cells[2].released,
            "men go with women"
        );
        assert_eq!(published, vec![set(0..43)]);
        check(&cells, &rel);
    }

    #[test]
    fn two_small_hidden_cells_are_not_enough_when_their_sum_is_small() {
        // total 30 = 25 + 2 + 3: hiding 2 and 3 still shows 5? No: 2 + 3 = 5 patients is
        // k, so it is safe; with 1 + 3 = 4 it is not.
        let mut safe = vec![
            cell(set(0..30)),
            cell(set(0..25)),
            cell(set(25..27)),
            cell(set(27..30)),
        ];
        let rel = vec![Relation {
            margin: 0,
            parts: vec![1, 2, 3],
        }];
        secure(&mut safe, &rel, &Earlier::default());
        assert!(safe[0].released && safe[1].released);
        let mut small = vec![
            cell(set(0..29)),
            cell(set(0..25)),
            cell(set(25..26)),
            cell(set(26..29)),
        ];
        secure(&mut small, &rel, &Earlier::default());
        assert!(small[0].released && !small[1].released);
        check(&small, &rel);
    }

    #[test]
    fn a_hidden_total_whose_parts_are_all_released_is_revealed_and_checked() {
        // Product total 43 hidden (it differs from an earlier published 41 by 2), but its
        // cells men 20 + women 23 add up to it.
        let mut cells = vec![cell(set(0..43)), cell(set(0..20)), cell(set(20..43))];
        let rel = vec![Relation {
            margin: 0,
            parts: vec![1, 2],
        }];
        let earlier = Earlier::new(vec![set(0..41)]);
        secure(&mut cells, &rel, &earlier);
        assert!(!cells[0].released);
        assert!(
            !cells[1].released,
            "one part must go so the total cannot be added up"
        );
        assert!(cells[2].released);
    }

    #[test]
    fn a_two_way_table_with_both_margins_hides_no_small_cell() {
        // Products A, B by sex, with product totals, sex totals and the grand total.
        //        M        F      total
        // A   0..20   20..22   0..22
        // B  30..60   60..90  30..90
        let a_m = set(0..20);
        let a_f = set(20..22);
        let b_m = set(30..60);
        let b_f = set(60..90);
        let union = |x: &RoaringBitmap, y: &RoaringBitmap| x | y;
        let mut cells = vec![
            cell(a_m.clone()),
            cell(a_f.clone()),
            cell(b_m.clone()),
            cell(b_f.clone()),
            cell(union(&a_m, &a_f)),
            cell(union(&b_m, &b_f)),
            cell(union(&a_m, &b_m)),
            cell(union(&a_f, &b_f)),
            cell(union(&union(&a_m, &a_f), &union(&b_m, &b_f))),
        ];
        let rel = vec![
            Relation {
                margin: 4,
                parts: vec![0, 1],
            },
            Relation {
                margin: 5,
                parts: vec![2, 3],
            },
            Relation {
                margin: 6,
                parts: vec![0, 2],
            },
            Relation {
                margin: 7,
                parts: vec![1, 3],
            },
            Relation {
                margin: 8,
                parts: vec![4, 5],
            },
            Relation {
                margin: 8,
                parts: vec![6, 7],
            },
        ];
        secure(&mut cells, &rel, &Earlier::default());
        check(&cells, &rel);
        assert!(cells[8].released, "the grand total stays");
        assert!(!cells[1].released);
    }

    #[test]
    fn the_decisions_do_not_depend_on_the_order_of_the_cells() {
        let make = || {
            vec![
                cell(set(0..43)),
                cell(set(0..40)),
                cell(set(40..43)),
                cell(set(100..160)),
                cell(set(100..130)),
                cell(set(130..160)),
            ]
        };
        let rel = vec![
            Relation {
                margin: 0,
                parts: vec![1, 2],
            },
            Relation {
                margin: 3,
                parts: vec![4, 5],
            },
        ];
        let mut a = make();
        secure(&mut a, &rel, &Earlier::default());
        // The same cells and relations, listed in reverse.
        let mut b: Vec<Cell> = make().into_iter().rev().collect();
        let n = b.len() - 1;
        let rev: Vec<Relation> = rel
            .iter()
            .rev()
            .map(|r| Relation {
                margin: n - r.margin,
                parts: r.parts.iter().rev().map(|p| n - p).collect(),
            })
            .collect();
        secure(&mut b, &rev, &Earlier::default());
        let fa: Vec<bool> = a.iter().map(|c| c.released).collect();
        let mut fb: Vec<bool> = b.iter().map(|c| c.released).collect();
        fb.reverse();
        assert_eq!(fa, fb);
    }
}
