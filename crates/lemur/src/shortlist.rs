//! The shortlist of a filtered `W` pass and the f32 rescoring of its
//! survivors (the bounds and the rule are in `filter.rs`).
//!
//! Scores stream by in blocks of rows, each block once per query, into a
//! [`Shortlist`] per query; [`rescore`] then reads the f32 rows of the
//! survivors only.

use lemur_maxsim::int8::{Int8Matrix, dot_products_int8};
use lemur_maxsim::{Isa, prefetch_to_l2};
use lemur_mlp::simd;
use lemur_topk::{Hit, TopK};

use crate::filter::Margins;
use crate::pairs::{PairCost, PairsByDocument};

/// Feature bytes of the queries rescored together: a part of L2.
const RESCORE_FEATURE_BYTES: usize = 1 << 20;
/// Past `n_docs / RESCORE_SHARE` survivors (and `4 k'`) a query is scored
/// on all of the f32 `W` instead: a GEMM does about eight times the dot
/// products per second that the rescoring of scattered rows does.
const RESCORE_SHARE: usize = 8;
/// Pairs ahead whose row is prefetched while the rescoring scores one.
const ROWS_AHEAD: usize = 2;
// The rescoring compares the row `ROWS_AHEAD` pairs ahead with the one
// before it.
const _: () = assert!(ROWS_AHEAD >= 1);

/// A query's reduced scores as they stream by: the `k'` best, and every
/// row within twice the widest margin of the running `k'`-th best (which
/// only rises, so nothing that ends within it of the final one is dropped
/// on the way).
///
/// That is the whole rule for one margin. With a margin per row it is a
/// first cut: the `k'` best scores have lower ends of at least `s_k' -
/// b_max`, so the `k'`-th largest lower end `t` is at least that, and a
/// row below `s_k' - 2 b_max` ends below `t`. The rows kept are therefore
/// all that `t` and the survivors depend on, and only they are given their
/// own margins, at the end.
#[derive(Debug, Clone)]
pub(crate) struct Shortlist<'a> {
    top: TopK,
    margins: Margins<'a>,
    /// `2 b_max`.
    width: f64,
    kept: Vec<Hit>,
}

impl<'a> Shortlist<'a> {
    /// An empty shortlist for a query with these margins.
    pub(crate) fn new(n_candidates: usize, margins: Margins<'a>) -> Self {
        Shortlist {
            top: TopK::new(n_candidates),
            margins,
            width: 2.0 * margins.widest(),
            kept: Vec::new(),
        }
    }

    /// Offers `scores[i]` of row `first_id + i` for every `i`.
    pub(crate) fn extend_from_scores(&mut self, first_id: u32, scores: &[f32]) {
        self.top.extend_from_scores(first_id, scores);
        let floor = self.floor();
        let near = scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| f64::from(s) >= floor);
        self.kept.extend(near.map(|(i, &score)| Hit {
            id: first_id + i as u32,
            score,
        }));
        // Drop what the risen threshold has left behind, now and then.
        if self.kept.len() > 4 * self.top.k().max(64) {
            let floor = self.floor();
            self.kept.retain(|hit| f64::from(hit.score) >= floor);
        }
    }

    /// Takes in a shortlist of other rows of the same query.
    pub(crate) fn merge(&mut self, other: &Shortlist<'_>) {
        self.top.merge(&other.top);
        self.kept.extend_from_slice(&other.kept);
    }

    /// Scores below this can never come within the margin.
    fn floor(&self) -> f64 {
        self.top
            .threshold()
            .map_or(f64::NEG_INFINITY, |t| f64::from(t) - self.width)
    }

    /// The rows that can be among the `n_candidates` best by f32 score, or
    /// `None` when nothing is provable (NaN scores, an infinite margin) or
    /// when so many survive that scoring all of `W` (`n_docs` rows) in f32
    /// costs less than rescoring them.
    pub(crate) fn survivors(self, n_docs: usize) -> Option<Survivors> {
        let k = self.top.k();
        let most = (n_docs / RESCORE_SHARE).max(4 * k);
        let best = self.top.into_sorted_vec();
        let Some(kth) = best.last() else {
            return Some(Survivors::default());
        };
        let floor = f64::from(kth.score) - self.width;
        if !floor.is_finite() {
            return None;
        }
        let margins = self.margins;
        let mut leaders: Vec<u32> = best.iter().map(|hit| hit.id).collect();
        leaders.sort_unstable();
        // Every kept row with its upper end; the leaders' lower ends give
        // `t`, the `k'`-th largest lower end (for one margin, `s_k' - b`).
        let mut t = f64::from(kth.score) - margins.widest();
        let mut kept: Vec<(u32, f64, f64)> = self
            .kept
            .into_iter()
            .filter(|hit| f64::from(hit.score) >= floor)
            .map(|hit| {
                let margin = margins.of_row(hit.id as usize);
                let score = f64::from(hit.score);
                (hit.id, score - margin, score + margin)
            })
            .collect();
        if let Margins::PerRow { .. } = margins {
            let mut lower: Vec<f64> = kept.iter().map(|&(_, lower, _)| lower).collect();
            t = if lower.len() > k {
                *lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
            } else {
                f64::NEG_INFINITY
            };
        }
        kept.retain(|&(id, _, upper)| upper >= t && leaders.binary_search(&id).is_err());
        if leaders.len() + kept.len() > most {
            return None;
        }
        let others = kept.into_iter().map(|(id, _, upper)| (id, upper)).collect();
        Some(Survivors {
            leaders,
            others,
            threshold: t,
        })
    }
}

/// What a query's shortlist leaves to score in f32: the `k'` leaders (the
/// best by reduced score) and the other rows whose upper ends reach the
/// `k'`-th largest lower end `t`. Once the leaders have f32 scores, the
/// smallest of them is a threshold as valid as `t` (`k'` rows score at
/// least that) and usually a higher one: near the `k'`-th best f32 score,
/// where `t` lies about a margin below it. Only the others whose upper end
/// reaches the larger of the two are scored ([`Survivors::others_above`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Survivors {
    /// Ascending ids.
    pub(crate) leaders: Vec<u32>,
    /// Ids with their upper ends.
    others: Vec<(u32, f64)>,
    /// `t`.
    threshold: f64,
}

impl Survivors {
    /// The other rows that can still be among the `n_candidates` best by
    /// f32 score, given the leaders' best `n_candidates` f32 scores (best
    /// first): all of them when the leaders are fewer than that.
    pub(crate) fn others_above(&self, leader_hits: &[Hit], n_candidates: usize) -> Vec<u32> {
        let leaders_floor = match leader_hits.last() {
            Some(last) if leader_hits.len() >= n_candidates => f64::from(last.score),
            _ => f64::NEG_INFINITY,
        };
        let threshold = self.threshold.max(leaders_floor);
        self.others
            .iter()
            .filter(|&&(_, upper)| upper >= threshold)
            .map(|&(id, _)| id)
            .collect()
    }
}

/// The rows survivors are rescored on.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// The f32 `W`, `[n_docs, width]` row-major.
    F32(&'a [f32]),
    /// The int8 `W` of a compressed index, scored at `Isa`.
    Int8(&'a Int8Matrix, Isa),
}

/// The `n_candidates` best of each query's `survivors` by their score on
/// `rows` (the query's `width` features against each row), best first.
/// Queries go in blocks whose features stay in L2 while the block's
/// (query, document) pairs are scored in document order, so each `W` row
/// is read once per block rather than once per query that kept it.
pub(crate) fn rescore<L: AsRef<[u32]>>(
    survivors: &[L],
    features: &[f32],
    rows: Rows<'_>,
    width: usize,
    n_docs: usize,
    n_candidates: usize,
) -> Vec<Vec<Hit>> {
    let block = (RESCORE_FEATURE_BYTES / (width * size_of::<f32>())).max(1);
    let mut candidates = Vec::with_capacity(survivors.len());
    for (lists, block_features) in survivors.chunks(block).zip(features.chunks(block * width)) {
        let pairs = PairsByDocument::new(lists, n_docs);
        let scores = match rows {
            Rows::F32(weights) => pairs.score_runs(PairCost::Row, |run, out| {
                let row = |i: usize| &weights[pairs.docs[i] as usize * width..][..width];
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for (i, score) in run.zip(out) {
                            // Scattered rows each start a new stream the
                            // hardware prefetcher only ramps up on; asking
                            // for the rows a few pairs ahead overlaps them.
                            if let Some(&ahead) = pairs.docs.get(i + ROWS_AHEAD)
                                && ahead != pairs.docs[i + ROWS_AHEAD - 1]
                            {
                                prefetch_to_l2(row(i + ROWS_AHEAD));
                            }
                            let q = pairs.queries[i] as usize;
                            *score = simd::dot(&block_features[q * width..][..width], row(i));
                        }
                    },
                )
            }),
            Rows::Int8(matrix, isa) => {
                let padded = matrix.padded_dim();
                let block_features = matrix.pad_rows(block_features);
                pairs.score_runs(PairCost::Row, |run, out| {
                    for (i, score) in run.zip(out) {
                        let q = pairs.queries[i] as usize;
                        dot_products_int8(
                            isa,
                            &block_features[q * padded..][..padded],
                            matrix,
                            pairs.docs[i] as usize,
                            1,
                            std::slice::from_mut(score),
                        );
                    }
                })
            }
        };
        candidates.extend(pairs.top_per_list(lists, &scores, n_candidates));
    }
    candidates
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::filter::Norms;

    /// Streams `scores` in blocks of `block` into two shortlists split at
    /// `split`, merges them and returns the sorted survivors.
    fn streamed(
        scores: &[f32],
        k: usize,
        margins: Margins<'_>,
        block: usize,
        split: usize,
    ) -> Option<Vec<u32>> {
        let split = split.min(scores.len()).div_ceil(block) * block;
        let split = split.min(scores.len());
        let mut left = Shortlist::new(k, margins);
        let mut right = Shortlist::new(k, margins);
        for (i, chunk) in scores.chunks(block).enumerate() {
            let first = i * block;
            let side = if first < split { &mut left } else { &mut right };
            side.extend_from_scores(first as u32, chunk);
        }
        left.merge(&right);
        left.survivors(usize::MAX).map(|survivors| {
            let others = survivors.others.iter().map(|&(id, _)| id);
            let mut got: Vec<u32> = survivors.leaders.iter().copied().chain(others).collect();
            got.sort_unstable();
            got
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Streamed in blocks and merged, a shortlist keeps exactly the
        /// rows within `2b` of the final `k'`-th best score.
        #[test]
        fn survivors_are_the_documents_near_the_kth_best(
            scores in prop::collection::vec(-500i32..500, 1..400),
            k in 1usize..30,
            margin in 0u32..40,
            block in 1usize..64,
            split in 0usize..400,
        ) {
            let scores: Vec<f32> = scores.into_iter().map(|v| v as f32 / 4.0).collect();
            let margin = f64::from(margin) / 8.0;
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k.min(sorted.len()) - 1];
            let want: Vec<u32> = (0..scores.len() as u32)
                .filter(|&j| f64::from(scores[j as usize]) >= f64::from(kth) - 2.0 * margin)
                .collect();
            let got = streamed(&scores, k, Margins::Same(margin), block, split);
            prop_assert_eq!(got, Some(want));
        }

        /// With a margin per row, a shortlist keeps exactly the rows whose
        /// upper end reaches the `k'`-th largest lower end.
        #[test]
        fn survivors_reach_the_kth_largest_lower_end(
            rows in prop::collection::vec((-500i32..500, 0u32..40), 1..400),
            k in 1usize..30,
            block in 1usize..64,
            split in 0usize..400,
        ) {
            let scores: Vec<f32> = rows.iter().map(|&(s, _)| s as f32 / 4.0).collect();
            // A margin of `residual * 1` per row: the other terms are zero.
            let norms: Vec<Norms> = rows
                .iter()
                .map(|&(_, m)| Norms { exact: 0.0, rounded: 0.0, residual: f64::from(m) / 8.0 })
                .collect();
            let most = norms.iter().fold(Norms::ZERO, |most, row| most.max(row));
            let margins = Margins::PerRow { exact: 0.0, rounded: 0.0, residual: 1.0, rows: &norms, most };
            let lower: Vec<f64> = (0..rows.len()).map(|j| f64::from(scores[j]) - margins.of_row(j)).collect();
            let mut sorted = lower.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let t = sorted[k.min(sorted.len()) - 1];
            let want: Vec<u32> = (0..rows.len() as u32)
                .filter(|&j| f64::from(scores[j as usize]) + margins.of_row(j as usize) >= t)
                .collect();
            let got = streamed(&scores, k, margins, block, split);
            prop_assert_eq!(got, Some(want));
        }
    }

    #[test]
    fn too_many_survivors_go_to_the_f32_product() {
        let mut shortlist = Shortlist::new(2, Margins::Same(1.0));
        shortlist.extend_from_scores(0, &[5.0; 100]);
        assert_eq!(
            shortlist
                .clone()
                .survivors(100 * RESCORE_SHARE)
                .map(|s| s.leaders.len() + s.others.len()),
            Some(100)
        );
        assert_eq!(shortlist.survivors(99 * RESCORE_SHARE), None);
    }

    #[test]
    fn an_infinite_margin_settles_nothing() {
        let norms = [Norms::ZERO; 3];
        let margins = Margins::PerRow {
            exact: f64::INFINITY,
            rounded: 0.0,
            residual: 0.0,
            rows: &norms,
            most: Norms::ZERO,
        };
        let mut shortlist = Shortlist::new(1, margins);
        shortlist.extend_from_scores(0, &[1.0, 2.0, 3.0]);
        assert_eq!(shortlist.survivors(1000), None);
    }

    #[test]
    fn the_leaders_f32_scores_raise_the_threshold() {
        // Scores 10, 9, ..., 1 with margin 1.5 and k' = 3: `t` = 8 - 1.5,
        // so rows scoring 5 and more survive (uppers 6.5 and more).
        let scores: Vec<f32> = (1..=10).rev().map(|s| s as f32).collect();
        let mut shortlist = Shortlist::new(3, Margins::Same(1.5));
        shortlist.extend_from_scores(0, &scores);
        let survivors = shortlist.survivors(1000).unwrap();
        assert_eq!(survivors.leaders, [0, 1, 2]);
        let hit = |id, score| Hit { id, score };
        // Leaders scoring 7.8 or more in f32: only uppers of 7.8 reach.
        let leaders = [hit(0, 10.2), hit(1, 9.0), hit(2, 7.8)];
        assert_eq!(survivors.others_above(&leaders, 3), [3]);
        // A leader far below its reduced score leaves `t` in charge.
        let low = [hit(0, 10.2), hit(1, 9.0), hit(2, 2.0)];
        assert_eq!(survivors.others_above(&low, 3), [3, 4, 5]);
        // Fewer leader scores than k': `t` too.
        assert_eq!(survivors.others_above(&leaders[..2], 3), [3, 4, 5]);
    }
}
