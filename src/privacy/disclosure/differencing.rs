//! Disclosure check, rule `differencing` (secondary suppression; docs/privacy.md §4a): two
//! released cells whose contributor sets differ by fewer than k patients give a small cell
//! by subtraction, even though each passed k on its own. A cell's set C is unsafe against
//! another set D when C ≠ D and both |C \ D| and |D \ C| are below k. It is checked against
//! every other candidate cell of the same answer and every earlier released cell of the
//! application's release ledger (`privacy::ledger`), and an unsafe cell is suppressed with
//! the reason `differencing`.
//!
//! Since an unsafe pair has | |C| − |D| | < k, only sets of nearby size are compared (the
//! ledger is read by size). Within one answer the order in which cells are suppressed
//! depends on the sets alone: larger sets first (a margin goes before the cells it
//! totals), ties broken by the sets' contents, never by row order or values; of an unsafe
//! pair, the set first in that order is suppressed. The survivors are pairwise safe: when
//! a set's turn comes, every later survivor is still a candidate and is compared with it.
//! What stays open (three or more cells combined, e.g. A − B − C) is in docs/privacy.md.

use std::cmp::Ordering;

use roaring::RoaringBitmap;

/// One candidate set: a guard of a releasable cell at one executed row.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Index of the executed row (in the check's evaluation order).
    pub row: usize,
    /// Index of the guard in the release description.
    pub guard: usize,
    pub set: &'a RoaringBitmap,
}

/// Whether releasing both `c` and `d` would let their difference, of fewer than `k`
/// patients, be computed.
pub fn unsafe_pair(c: &RoaringBitmap, d: &RoaringBitmap, k: u32) -> bool {
    let both = c.intersection_len(d);
    let only_c = c.len() - both;
    let only_d = d.len() - both;
    let k = u64::from(k);
    (only_c > 0 || only_d > 0) && only_c < k && only_d < k
}

/// Earlier released sets, sorted by size, for range lookups.
#[derive(Debug, Default)]
pub struct Earlier {
    by_size: Vec<(u64, RoaringBitmap)>,
}

impl Earlier {
    pub fn new(sets: Vec<RoaringBitmap>) -> Self {
        let mut by_size: Vec<(u64, RoaringBitmap)> =
            sets.into_iter().map(|s| (s.len(), s)).collect();
        by_size.sort_by_key(|(n, _)| *n);
        Self { by_size }
    }

    /// Whether `set` is unsafe against any earlier set (only those of size within k).
    pub fn conflicts(&self, set: &RoaringBitmap, k: u32) -> bool {
        let (lo, hi) = window(set.len(), k);
        let start = self.by_size.partition_point(|(n, _)| *n < lo);
        self.by_size[start..]
            .iter()
            .take_while(|(n, _)| *n <= hi)
            .any(|(_, d)| unsafe_pair(set, d, k))
    }
}

/// The sizes a set of size `n` can be unsafe against: (n − k, n + k) exclusive.
pub fn window(n: u64, k: u32) -> (u64, u64) {
    let k = u64::from(k.max(1));
    (n.saturating_sub(k - 1), n.saturating_add(k - 1))
}

/// The candidates (indices into `cands`) to suppress: those unsafe against the ledger,
/// then, among the rest, one of every unsafe pair in the documented order.
pub fn suppress(cands: &[Candidate], earlier: &Earlier, k: u32) -> Vec<bool> {
    let mut out: Vec<bool> = cands.iter().map(|c| earlier.conflicts(c.set, k)).collect();
    let mut order: Vec<usize> = (0..cands.len()).filter(|&i| !out[i]).collect();
    order.sort_by(|&a, &b| set_order(cands[a].set, cands[b].set));
    let mut rank = vec![usize::MAX; cands.len()];
    for (pos, &i) in order.iter().enumerate() {
        rank[i] = pos;
    }
    let postings = Postings::new(cands, &order);
    // `order` is by size, descending: a set is compared with the later (smaller or equal)
    // sets down to the bottom of its window; the larger ones compared with it at their turn.
    for (pos, &i) in order.iter().enumerate() {
        if out[i] {
            continue;
        }
        let c = cands[i].set;
        let (lo, _) = window(c.len(), k);
        let later = |j: usize| rank[j] > pos && cands[j].set.len() >= lo && !out[j];
        let clash = if c.len() < u64::from(k) {
            // Too small for the shortcut below: every later set in the window.
            order[pos + 1..]
                .iter()
                .take_while(|&&j| cands[j].set.len() >= lo)
                .any(|&j| !out[j] && unsafe_pair(c, cands[j].set, k))
        } else {
            postings
                .sharing_one_of(c.iter().take(k as usize))
                .any(|j| later(j) && unsafe_pair(c, cands[j].set, k))
        };
        if clash {
            out[i] = true;
        }
    }
    out
}

/// Which candidates hold each patient (compressed rows: `starts[p]..starts[p + 1]` of
/// `holders` for patient `p`). An unsafe partner D of C misses fewer than k members of C,
/// so D holds at least one of any k members of C — C's k smallest, say: the partners
/// worth comparing are found through those k patients instead of by scanning every set
/// of nearby size (thousands of cells of one GROUP BY have nearby sizes).
struct Postings {
    starts: Vec<usize>,
    holders: Vec<u32>,
}

impl Postings {
    fn new(cands: &[Candidate], order: &[usize]) -> Self {
        let top = order
            .iter()
            .filter_map(|&i| cands[i].set.max())
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut starts = vec![0usize; top + 1];
        for &i in order {
            for p in cands[i].set {
                starts[p as usize + 1] += 1;
            }
        }
        for p in 0..top {
            starts[p + 1] += starts[p];
        }
        let mut fill = starts.clone();
        let mut holders = vec![0u32; starts[top]];
        for &i in order {
            for p in cands[i].set {
                // Candidates are cells of one answer, far fewer than 2^32.
                holders[fill[p as usize]] = i as u32;
                fill[p as usize] += 1;
            }
        }
        Self { starts, holders }
    }

    /// The candidates holding any of `members` (a candidate may come more than once).
    fn sharing_one_of<'a>(
        &'a self,
        members: impl Iterator<Item = u32> + 'a,
    ) -> impl Iterator<Item = usize> + 'a {
        members.flat_map(move |p| {
            let p = p as usize;
            let range = match (self.starts.get(p), self.starts.get(p + 1)) {
                (Some(&a), Some(&b)) => a..b,
                _ => 0..0,
            };
            self.holders[range].iter().map(|&i| i as usize)
        })
    }
}

/// Whether any of `sets` is unsafe against the ledger or against another of them (the
/// cells of sealed inner aggregations, which cannot be suppressed one by one: the answer
/// computed from them is refused instead).
pub fn any_unsafe(sets: &[RoaringBitmap], earlier: &Earlier, k: u32) -> bool {
    let cands: Vec<Candidate> = sets
        .iter()
        .enumerate()
        .map(|(row, s)| Candidate {
            row,
            guard: 0,
            set: s,
        })
        .collect();
    suppress(&cands, earlier, k).into_iter().any(|x| x)
}

/// The distinct non-empty sets of `sets`, in the documented order (by sorting, not by
/// comparing every pair).
pub fn distinct(mut sets: Vec<RoaringBitmap>) -> Vec<RoaringBitmap> {
    sets.retain(|s| !s.is_empty());
    sets.sort_by(set_order);
    sets.dedup();
    sets
}

/// [`distinct`], and for every input set the index of its distinct set (`NO_SET` for an
/// empty one): the cells of an answer keep pointing at their sets.
pub fn distinct_indexed(sets: Vec<RoaringBitmap>) -> (Vec<RoaringBitmap>, Vec<u32>) {
    let mut order: Vec<usize> = (0..sets.len()).filter(|&i| !sets[i].is_empty()).collect();
    order.sort_by(|&a, &b| set_order(&sets[a], &sets[b]));
    let mut index = vec![NO_SET; sets.len()];
    let mut keep: Vec<usize> = Vec::new();
    for &i in &order {
        match keep.last() {
            Some(&last) if sets[last] == sets[i] => {}
            _ => keep.push(i),
        }
        index[i] = (keep.len() - 1) as u32;
    }
    let mut slots: Vec<Option<RoaringBitmap>> = sets.into_iter().map(Some).collect();
    let out = keep.iter().filter_map(|&i| slots[i].take()).collect();
    (out, index)
}

/// The index [`distinct_indexed`] gives an empty set (it has no distinct set).
pub const NO_SET: u32 = u32::MAX;

/// Append to `sorted` (the output of [`distinct`]) each of `extra` it does not hold yet,
/// at the end: the indices of the sets already in `sorted` stay valid.
pub fn append_distinct(sorted: &mut Vec<RoaringBitmap>, extra: Vec<RoaringBitmap>) {
    let known = sorted.len();
    for set in distinct(extra) {
        if sorted[..known]
            .binary_search_by(|probe| set_order(probe, &set))
            .is_err()
        {
            sorted.push(set);
        }
    }
}

/// Larger sets first; equal sizes by content (ascending members), so the order is a
/// function of the sets only.
fn set_order(a: &RoaringBitmap, b: &RoaringBitmap) -> Ordering {
    b.len().cmp(&a.len()).then_with(|| a.iter().cmp(b.iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(r: std::ops::Range<u32>) -> RoaringBitmap {
        r.collect()
    }

    fn cand(row: usize, s: &RoaringBitmap) -> Candidate<'_> {
        Candidate {
            row,
            guard: 0,
            set: s,
        }
    }

    #[test]
    fn pairs_are_unsafe_only_when_both_differences_are_small_and_not_both_zero() {
        assert!(unsafe_pair(&set(0..100), &set(0..99), 5), "differs by one");
        assert!(!unsafe_pair(&set(0..100), &set(0..100), 5), "equal sets");
        assert!(!unsafe_pair(&set(0..100), &set(0..95), 5), "differs by k");
        assert!(!unsafe_pair(&set(0..10), &set(10..20), 5), "disjoint");
        assert!(
            unsafe_pair(&set(0..50), &set(2..52), 5),
            "2 and 2 patients differ"
        );
    }

    #[test]
    fn a_margin_is_suppressed_before_its_cell_and_survivors_are_pairwise_safe() {
        // total = A ∪ B with |B| = 3: the total and A differ by 3 patients.
        let a = set(0..40);
        let total = set(0..43);
        let other = set(100..140);
        let cands = vec![cand(0, &a), cand(1, &total), cand(2, &other)];
        let out = suppress(&cands, &Earlier::default(), 5);
        assert_eq!(
            out,
            vec![false, true, false],
            "the larger set (the margin) goes"
        );
        let kept: Vec<&RoaringBitmap> = (0..3).filter(|&i| !out[i]).map(|i| cands[i].set).collect();
        for x in &kept {
            for y in &kept {
                assert!(!unsafe_pair(x, y, 5));
            }
        }
    }

    #[test]
    fn the_ledger_suppresses_a_set_close_to_an_earlier_one_of_nearby_size_only() {
        let earlier = Earlier::new(vec![set(0..100), set(0..1000)]);
        assert!(earlier.conflicts(&set(0..98), 5));
        assert!(earlier.conflicts(&set(0..1003), 5));
        assert!(!earlier.conflicts(&set(0..95), 5));
        assert!(
            !earlier.conflicts(&set(0..100), 5),
            "re-releasing the same set is safe"
        );
        let out = suppress(&[cand(0, &set(0..101))], &earlier, 5);
        assert_eq!(out, vec![true]);
    }

    #[test]
    fn distinct_indexed_points_every_input_at_its_distinct_set() {
        let sets = vec![set(0..10), set(5..8), set(0..10), RoaringBitmap::new()];
        let (out, index) = distinct_indexed(sets.clone());
        assert_eq!(out, distinct(sets.clone()));
        for (i, s) in sets.iter().enumerate() {
            if s.is_empty() {
                assert_eq!(index[i], NO_SET);
            } else {
                assert_eq!(&out[index[i] as usize], s);
            }
        }
        let mut sorted = out.clone();
        append_distinct(&mut sorted, vec![set(5..8), set(100..200)]);
        assert_eq!(&sorted[..2], &out[..], "earlier indices stay valid");
        assert_eq!(sorted.len(), 3);
    }

    #[test]
    fn distinct_keeps_each_non_empty_set_once() {
        let sets = vec![
            set(0..10),
            set(5..8),
            set(0..10),
            RoaringBitmap::new(),
            set(5..8),
        ];
        assert_eq!(distinct(sets), vec![set(0..10), set(5..8)]);
    }

    /// The reference: every later set of the window, compared pairwise.
    fn brute(cands: &[Candidate], k: u32) -> Vec<bool> {
        let mut out = vec![false; cands.len()];
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|&a, &b| set_order(cands[a].set, cands[b].set));
        for (pos, &i) in order.iter().enumerate() {
            let (lo, _) = window(cands[i].set.len(), k);
            out[i] = order[pos + 1..]
                .iter()
                .take_while(|&&j| cands[j].set.len() >= lo)
                .any(|&j| !out[j] && unsafe_pair(cands[i].set, cands[j].set, k));
        }
        out
    }

    #[test]
    fn the_patient_shortcut_suppresses_exactly_what_pairwise_comparison_does() {
        // Overlapping sets of nearby sizes, some a few patients apart, tiny ones too.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            let sets: Vec<RoaringBitmap> = (0..60)
                .map(|_| {
                    let start = (next() % 40) as u32;
                    let len = (next() % 30) as u32 + u32::from(round % 3 == 0);
                    let mut s: RoaringBitmap = (start..start + len).collect();
                    s.remove((next() % 70) as u32);
                    s
                })
                .collect();
            let cands: Vec<Candidate> = sets.iter().enumerate().map(|(i, s)| cand(i, s)).collect();
            assert_eq!(
                suppress(&cands, &Earlier::default(), 5),
                brute(&cands, 5),
                "round {round}"
            );
        }
    }

    #[test]
    fn the_order_does_not_depend_on_the_row_order() {
        let sets = [set(0..40), set(0..43), set(0..45), set(200..230)];
        let forward: Vec<Candidate> = sets.iter().enumerate().map(|(i, s)| cand(i, s)).collect();
        let mut backward = forward.clone();
        backward.reverse();
        let f = suppress(&forward, &Earlier::default(), 5);
        let mut b = suppress(&backward, &Earlier::default(), 5);
        b.reverse();
        assert_eq!(f, b);
    }
}
