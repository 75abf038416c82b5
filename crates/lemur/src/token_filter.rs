//! The f32 rerank at about the cost of the bf16 or int8 one
//! ([`TokenPrecision::Bf16Filter`], [`TokenPrecision::Int8Filter`]).
//!
//! Of a query's `k'` candidates only the few near its `k`-th best matter:
//! on W10k the bf16 margin below is about 0.12 and 12 of 200 candidates
//! survive it (MaxSim scores spread over about 6 points); the int8 margin
//! is about 0.49 and 29 survive it, 16 with the leaders' scores (the rule
//! below). So every candidate is scored on the
//! reduced tokens first, an error bound on those scores says which
//! candidates can still be among the `k` best by their f32 score, and only
//! those are scored again on the f32 tokens, by the same kernel as the f32
//! rerank. The hits are therefore the f32 rerank's, scores and ties
//! included.
//!
//! The bound. For a query token `x` with reduced value `x~ = x - e` and a
//! document token `y` with `y~ = y - r`, `x.y - x~.y~ = x.r + e.y~`, so
//! `|x.y - x~.y~| <= |x| |r| + |e| |y~|` (Cauchy-Schwarz). Both computed
//! dot products are sums of `d` products in some order, each within
//! `gamma_d |x| |y|` (or `gamma_d |x~| |y~|`) of its exact value, and the
//! bf16 instructions read denormal inputs as zero and flush denormal
//! results (`filter::flushed`). Two maxima over the document's tokens of
//! values that differ by at most `b_i` differ by at most `b_i`, and the
//! `n_q` maxima are summed in f32 on both sides, within `gamma_q` times the
//! sum of their magnitudes. The document tokens enter as their largest
//! norms, three numbers per document; the query tokens as sums of norms.
//! The int8 kernels sum exact integers and round three times after
//! (to f32, times each scale), within `gamma_3` of `|x~| |y~|`; widths
//! below 3 use `gamma_3` for `gamma_d` so one term covers both kernels.
//!
//! The rule. Each candidate's f32 score lies in `[s - b, s + b]`. The `k`
//! candidates with the best reduced scores (the leaders) are scored in f32
//! first; let `t` be the larger of their smallest f32 score and the `k`-th
//! largest lower end. Either way `k` candidates score at least `t` in f32,
//! so a candidate whose upper end is below `t` scores less than `k` others
//! and cannot be in the top `k`; every other candidate is scored in f32
//! too. The leaders' scores put `t` near the `k`-th best f32 score, where
//! the lower ends alone put it about `b` below, so about half as many
//! candidates are scored again. Where the lower ends alone leave at most
//! `1.5 k` candidates (the bf16 filter, mostly), those are scored at once
//! instead. A bound that is not finite keeps the candidate, and a leader's
//! score that is not finite sets no threshold.
//!
//! [`TokenPrecision::Bf16Filter`]: crate::TokenPrecision::Bf16Filter
//! [`TokenPrecision::Int8Filter`]: crate::TokenPrecision::Int8Filter

use std::cmp::Ordering;

use lemur_maxsim::MultiVectors;
use rayon::prelude::*;

use crate::filter::{NORM_SLACK, Norms, flushed, gamma};
use crate::pairs::PairsByDocument;
use lemur_topk::{Hit, TopK};

/// How the filter's copy of the tokens is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rounding {
    /// Each value to the nearest bf16.
    Bf16,
    /// Each token to int8 codes with one scale (`lemur_maxsim::int8`).
    Int8,
}

impl Rounding {
    /// The norms of a token and of its rounding.
    fn norms(self, token: &[f32]) -> Norms {
        match self {
            Rounding::Bf16 => Norms::of(token),
            Rounding::Int8 => Norms::of_int8(token),
        }
    }
}

/// The largest token norms of each document: what its bound needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenBounds {
    /// Per document: `max |y|`, `max |y~|` and `max |y - y~|`.
    docs: Vec<Norms>,
    dim: usize,
    rounding: Rounding,
}

impl TokenBounds {
    /// The norms of every document of `corpus` under `rounding`, over the
    /// current pool.
    pub(crate) fn new<T: AsRef<[f32]> + Sync>(
        corpus: &MultiVectors<T>,
        rounding: Rounding,
    ) -> Self {
        let dim = corpus.dim();
        let docs = (0..corpus.len())
            .into_par_iter()
            .map(|doc| {
                corpus
                    .get(doc)
                    .chunks_exact(dim)
                    .map(|token| rounding.norms(token))
                    .fold(Norms::ZERO, |most, token| most.max(&token))
            })
            .collect();
        TokenBounds {
            docs,
            dim,
            rounding,
        }
    }

    /// Takes in the norms of appended documents.
    pub(crate) fn append(&mut self, added: &TokenBounds) {
        self.docs.extend_from_slice(&added.docs);
    }

    /// `b`: a bound on `|s32 - s16|` of `query` against document `doc`.
    fn margin(&self, query: &QueryNorms, doc: usize) -> f64 {
        let most = &self.docs[doc];
        let (gamma_d, gamma_q) = (gamma(self.dim.max(3)), gamma(query.n_tokens));
        let rounding = query.sums.exact * most.residual + query.sums.residual * most.rounded;
        let magnitudes = query.sums.exact * most.exact + query.sums.rounded * most.rounded;
        let summation = (gamma_d + gamma_q * (1.0 + gamma_d)) * magnitudes;
        // Per query token, what flushing can take from its dot products
        // (`filter::flushed`, affine in the token's norm, so summed through
        // the mean norm), and as much again for the sum of maxima.
        let n_q = (query.n_tokens as f64).max(1.0);
        let mean_norm = query.sums.rounded / n_q;
        let flushed = 2.0 * n_q * flushed(self.dim, mean_norm, most.rounded);
        (rounding + summation) * (1.0 + NORM_SLACK) + flushed
    }
}

/// A query's token norms, summed over its tokens.
struct QueryNorms {
    sums: Norms,
    n_tokens: usize,
}

impl QueryNorms {
    fn of(query: &[f32], dim: usize, rounding: Rounding) -> Self {
        let sums = query
            .chunks_exact(dim)
            .map(|token| rounding.norms(token))
            .fold(Norms::ZERO, |sum, token| sum.add(&token));
        QueryNorms {
            sums,
            n_tokens: query.len() / dim,
        }
    }
}

/// A candidate's reduced score and the range its f32 score lies in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    doc: u32,
    score: f32,
    lower: f64,
    upper: f64,
}

impl Range {
    /// `[score - margin, score + margin]` for document `doc`.
    fn new(doc: u32, score: f32, margin: f64) -> Self {
        let wide = f64::from(score);
        Range {
            doc,
            score,
            lower: wide - margin,
            upper: wide + margin,
        }
    }
}

/// Every candidate's range, per query in candidate order, given every
/// pair's reduced (bf16 or int8) score in pair (document) order.
pub(crate) fn ranges<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
    bounds: &TokenBounds,
    queries: &MultiVectors<Q>,
    candidates: &[C],
    pairs: &PairsByDocument,
    reduced_scores: &[f32],
) -> Vec<Vec<Range>> {
    let by_slot = pairs.by_slot(reduced_scores);
    let offsets = list_offsets(candidates.iter().map(|list| list.as_ref().len()));
    candidates
        .par_iter()
        .zip(offsets)
        .enumerate()
        .map(|(q, (list, offset))| {
            let list = list.as_ref();
            let query = QueryNorms::of(queries.get(q), queries.dim(), bounds.rounding);
            list.iter()
                .zip(&by_slot[offset..offset + list.len()])
                .map(|(&doc, &score)| Range::new(doc, score, bounds.margin(&query, doc as usize)))
                .collect()
        })
        .collect()
}

/// Per query, the positions in its list of the candidates scored in f32
/// first: the `k` with the best reduced scores (ties to the earlier
/// position), best first, whose f32 scores set a threshold for the rest
/// ([`survivors`]); or, where the lower ends alone leave at most `1.5 k`
/// candidates, all of those (a second pass would save next to nothing).
/// Positions, not ids, so a list that names a document twice keeps both
/// entries, as the f32 rerank does.
pub(crate) fn leaders(ranges: &[Vec<Range>], k: usize) -> Vec<Vec<u32>> {
    ranges
        .iter()
        .map(|list| {
            let threshold = kth_largest(list.iter().map(|range| range.lower), k);
            let kept: Vec<u32> = (0..list.len() as u32)
                .filter(|&p| !is_below(&list[p as usize], threshold))
                .collect();
            if kept.len() <= k + k / 2 {
                return kept;
            }
            let mut top = TopK::new(k.min(list.len()));
            for (position, range) in list.iter().enumerate() {
                top.push(position as u32, range.score);
            }
            top.into_sorted_vec()
                .into_iter()
                .map(|hit| hit.id)
                .collect()
        })
        .collect()
}

/// The documents at `positions` of each query's list.
pub(crate) fn documents_at(ranges: &[Vec<Range>], positions: &[Vec<u32>]) -> Vec<Vec<u32>> {
    ranges
        .iter()
        .zip(positions)
        .map(|(list, positions)| positions.iter().map(|&p| list[p as usize].doc).collect())
        .collect()
}

/// Per query, the candidates other than its leaders (given by position)
/// that can still be among its `k` best by f32 score, in candidate order,
/// given the leaders' f32 scores (query-major, in leader order).
pub(crate) fn survivors(
    ranges: &[Vec<Range>],
    leaders: &[Vec<u32>],
    leader_scores: &[f32],
    k: usize,
) -> Vec<Vec<u32>> {
    let offsets = list_offsets(leaders.iter().map(Vec::len));
    ranges
        .par_iter()
        .zip(leaders)
        .zip(offsets)
        .map(|((list, leaders), offset)| {
            let scores = &leader_scores[offset..offset + leaders.len()];
            // `k` leaders score at least their smallest f32 score; a score
            // that is not finite (overflow) sets no threshold.
            let exact = if leaders.len() == k && scores.iter().all(|s| s.is_finite()) {
                scores
                    .iter()
                    .fold(f64::INFINITY, |t, &s| t.min(f64::from(s)))
            } else {
                f64::NEG_INFINITY
            };
            let threshold = kth_largest(list.iter().map(|range| range.lower), k).max(exact);
            list.iter()
                .enumerate()
                .filter(|&(position, _)| !leaders.contains(&(position as u32)))
                .filter(|(_, range)| !is_below(range, threshold))
                .map(|(_, range)| range.doc)
                .collect()
        })
        .collect()
}

/// The `k` best of each query's leaders and survivors together (best
/// first, ties to the lower id), from their f32 scores (query-major, in
/// list order).
pub(crate) fn best_of(
    leaders: &[Vec<u32>],
    leader_scores: &[f32],
    survivors: &[Vec<u32>],
    survivor_scores: &[f32],
    k: usize,
) -> Vec<Vec<Hit>> {
    let mut leader_scores = leader_scores.iter();
    let mut survivor_scores = survivor_scores.iter();
    leaders
        .iter()
        .zip(survivors)
        .map(|(leaders, survivors)| {
            let mut top = TopK::new(k.min(leaders.len() + survivors.len()));
            for (&doc, &score) in leaders.iter().zip(leader_scores.by_ref()) {
                top.push(doc, score);
            }
            for (&doc, &score) in survivors.iter().zip(survivor_scores.by_ref()) {
                top.push(doc, score);
            }
            top.into_sorted_vec()
        })
        .collect()
}

/// Whether a candidate's upper end is provably below `threshold` (a NaN
/// upper end is not: the candidate is kept).
fn is_below(range: &Range, threshold: f64) -> bool {
    range.upper.partial_cmp(&threshold) == Some(Ordering::Less)
}

/// Where each list starts in the query-major concatenation of lists of
/// these lengths.
fn list_offsets(lengths: impl Iterator<Item = usize>) -> Vec<usize> {
    lengths
        .scan(0, |offset, len| {
            let start = *offset;
            *offset += len;
            Some(start)
        })
        .collect()
}

/// The `k`-th largest finite lower end, or minus infinity when fewer than
/// `k` are finite (then nothing is provably out).
fn kth_largest(lower_ends: impl Iterator<Item = f64>, k: usize) -> f64 {
    let mut lower: Vec<f64> = lower_ends.filter(|lower| lower.is_finite()).collect();
    if k == 0 || lower.len() < k {
        return f64::NEG_INFINITY;
    }
    let (_, kth, _) = lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

#[cfg(test)]
mod tests {
    use lemur_maxsim::bf16::{
        Bf16Vectors, PackedQueryBf16, from_bf16, maxsim_bf16_before, to_bf16,
    };
    use lemur_maxsim::int8::{Int8Vectors, PackedQueryInt8, maxsim_int8};
    use lemur_maxsim::{Isa, naive};

    use super::*;

    fn rounded(values: &[f32]) -> Vec<f32> {
        values.iter().map(|&v| from_bf16(to_bf16(v))).collect()
    }

    #[test]
    fn the_margin_covers_the_rounding_of_both_sides() {
        // Every value rounds down in bf16 by almost half a unit, so the
        // bf16 score is below the f32 one by nearly the whole first-order
        // bound; the margin must still cover it, and not by much.
        let dim = 8;
        let value = 1.0 + 2f32.powi(-8) - 2f32.powi(-16);
        let doc = MultiVectors::new(vec![value; 3 * dim], dim, &[3]).unwrap();
        let query = vec![value; 2 * dim];
        let exact = naive::maxsim(&query, doc.get(0), dim);
        let approx = naive::maxsim(&rounded(&query), &rounded(doc.get(0)), dim);
        let bounds = TokenBounds::new(&doc, Rounding::Bf16);
        let margin = bounds.margin(&QueryNorms::of(&query, dim, Rounding::Bf16), 0);
        let error = f64::from(exact - approx);
        assert!(margin >= error, "{margin} < {error}");
        assert!(margin < 1.1 * error + 1e-4, "{margin} against {error}");
    }

    #[test]
    fn the_margin_covers_denormal_inputs_read_as_zero() {
        // Query values of 2^-127 (denormal, exact in bf16) against document
        // values of 2^100: MaxSim 16 x 2^-27 in f32, zero where the bf16
        // instructions read denormals as zero.
        let dim = 16;
        let doc = MultiVectors::new(vec![2f32.powi(100); dim], dim, &[1]).unwrap();
        let query = vec![2f32.powi(-127); dim];
        let exact = naive::maxsim(&query, doc.get(0), dim);
        assert_eq!(exact, 2f32.powi(-23));
        let bounds = TokenBounds::new(&doc, Rounding::Bf16);
        let margin = bounds.margin(&QueryNorms::of(&query, dim, Rounding::Bf16), 0);
        let tokens = Bf16Vectors::from_f32(&doc);
        for isa in Isa::available() {
            let packed = PackedQueryBf16::new(&query, dim).with_isa(isa);
            let approx = maxsim_bf16_before(&packed, tokens.get(0), &[]);
            let error = f64::from(exact - approx).abs();
            assert!(margin >= error, "{}: {margin} < {error}", isa.level());
        }
        assert!(margin < 2f64.powi(-19));
    }

    #[test]
    fn the_int8_margin_covers_the_kernels_at_every_level() {
        // Random tokens of mixed norms: the int8 score of each document is
        // within its margin of the exact MaxSim at every level, and the
        // margin is not vacuous (a few percent of the largest score the
        // norms allow, and some error is a visible share of it).
        let dim = 33;
        let mut rng = lemur_maxsim_test_rng(7);
        let counts = [1usize, 5, 12, 30];
        let total: usize = counts.iter().sum();
        let values: Vec<f32> = (0..total * dim)
            .map(|i| rng(i) * (1 + i % 3) as f32)
            .collect();
        let docs = MultiVectors::new(values, dim, &counts).unwrap();
        let query: Vec<f32> = (0..20 * dim).map(|i| rng(i + 99)).collect();
        let bounds = TokenBounds::new(&docs, Rounding::Int8);
        let norms = QueryNorms::of(&query, dim, Rounding::Int8);
        let tokens = Int8Vectors::from_f32(&docs);
        let mut largest_share = 0.0f64;
        for doc in 0..counts.len() {
            let exact = f64::from(naive::maxsim(&query, docs.get(doc), dim));
            let margin = bounds.margin(&norms, doc);
            for isa in Isa::available() {
                let packed = PackedQueryInt8::new(&query, dim).with_isa(isa);
                let approx = f64::from(maxsim_int8(&packed, tokens.get(doc)));
                let error = (exact - approx).abs();
                assert!(margin >= error, "{}: {margin} < {error}", isa.level());
                largest_share = largest_share.max(error / margin);
            }
            // Against the largest MaxSim the norms allow, a few percent.
            let magnitude = norms.sums.exact * bounds.docs[doc].exact;
            assert!(margin < 0.05 * magnitude, "{margin} against {magnitude}");
        }
        assert!(
            largest_share > 0.01,
            "the error is {largest_share} of the margin"
        );
    }

    #[test]
    fn the_int8_margin_covers_a_residual_along_the_query() {
        // The document token (1, a, ..., a) with a just under half of its
        // scale 1/127 stores (127, 0, ..., 0): its whole residual lies along
        // the query token (0, 1, ..., 1), which int8 stores exactly. The
        // score is (d - 1) a in f32 and 0 in int8, which is all of the
        // first-order bound.
        let dim = 33;
        let a = (0.5 - 1e-3) / 127.0;
        let mut token = vec![a; dim];
        token[0] = 1.0;
        let docs = MultiVectors::new(token, dim, &[1]).unwrap();
        let mut query = vec![1.0f32; dim];
        query[0] = 0.0;
        let exact = f64::from(naive::maxsim(&query, docs.get(0), dim));
        let bounds = TokenBounds::new(&docs, Rounding::Int8);
        let margin = bounds.margin(&QueryNorms::of(&query, dim, Rounding::Int8), 0);
        let tokens = Int8Vectors::from_f32(&docs);
        for isa in Isa::available() {
            let packed = PackedQueryInt8::new(&query, dim).with_isa(isa);
            let approx = f64::from(maxsim_int8(&packed, tokens.get(0)));
            assert_eq!(approx, 0.0, "{}", isa.level());
        }
        assert!(margin >= exact, "{margin} < {exact}");
        assert!(margin < 1.01 * exact, "{margin} against {exact}");
    }

    /// A deterministic value in `[-1, 1)` per index, from `seed`.
    fn lemur_maxsim_test_rng(seed: u64) -> impl FnMut(usize) -> f32 {
        move |i| {
            let x = (i as u64 ^ seed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(29);
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    #[test]
    fn the_kth_lower_end_ignores_what_is_not_finite() {
        let lower = [3.0, f64::NAN, 1.0, 4.0];
        assert_eq!(kth_largest(lower.into_iter(), 1), 4.0);
        assert_eq!(kth_largest(lower.into_iter(), 3), 1.0);
        assert_eq!(kth_largest(lower.into_iter(), 4), f64::NEG_INFINITY);
    }

    fn range(doc: u32, score: f32, margin: f64) -> Range {
        Range::new(doc, score, margin)
    }

    #[test]
    fn the_leaders_f32_scores_raise_the_threshold() {
        // Reduced scores 10, 9, 8.5, 8 with margin 1: by lower ends alone
        // (9 and 8 for k = 2) document 3 (upper end 9) survives. The
        // leaders (0 and 1) score 10.2 and 9.3 in f32, so nothing whose
        // upper end is below 9.3 can be among the best two. (All four pass
        // the lower ends, more than 1.5 k, so there are leaders; documents
        // are at their own positions here.)
        let list = vec![
            range(0, 10.0, 1.0),
            range(1, 9.0, 1.0),
            range(2, 8.5, 1.0),
            range(3, 8.0, 1.0),
        ];
        let ranges = vec![list];
        let positions = leaders(&ranges, 2);
        assert_eq!(positions, vec![vec![0, 1]]);
        assert_eq!(
            survivors(&ranges, &positions, &[10.2, 9.3], 2),
            vec![vec![2]]
        );
        // A leader that overflowed sets no threshold; the lower ends do.
        let overflowed = survivors(&ranges, &positions, &[f32::INFINITY, 9.3], 2);
        assert_eq!(overflowed, vec![vec![2, 3]]);
        let docs = documents_at(&ranges, &positions);
        // With at most 1.5 k candidates left by the lower ends, those are
        // all scored at once and nothing is left for a second pass.
        let few = vec![vec![
            range(0, 10.0, 0.1),
            range(1, 9.0, 0.1),
            range(2, 8.85, 0.1),
        ]];
        let all_left = leaders(&few, 2);
        assert_eq!(all_left, vec![vec![0, 1, 2]]);
        assert_eq!(
            survivors(&few, &all_left, &[10.0, 9.0, 8.9], 2),
            vec![Vec::<u32>::new()]
        );
        let best = best_of(&docs, &[10.2, 9.3], &[vec![2]], &[9.3], 2);
        let ids: Vec<u32> = best[0].iter().map(|hit| hit.id).collect();
        assert_eq!(ids, vec![0, 1], "a tie goes to the lower id");
    }
}
