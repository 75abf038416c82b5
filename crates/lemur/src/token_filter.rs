//! The f32 rerank at about the cost of the bf16 or int8 one
//! ([`TokenPrecision::Bf16Filter`], [`TokenPrecision::Int8Filter`]).
//!
//! Of a query's `k'` candidates only the few near its `k`-th best matter:
//! on W10k the bf16 margin below is about 0.12 and 12 of 200 candidates
//! survive it (MaxSim scores spread over about 6 points); the int8 margin
//! is about 0.49 and 29 survive. So every candidate is scored on the
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
//! The rule. Each candidate's f32 score lies in `[s16 - b, s16 + b]`. Let
//! `t` be the `k`-th largest lower end. The `k` candidates whose lower
//! ends reach `t` all score at least `t` in f32, so a candidate whose upper
//! end is below `t` scores less than `k` others and cannot be in the top
//! `k`; every other candidate is rescored. A bound that is not finite (a
//! value past bf16's range) keeps the candidate.
//!
//! [`TokenPrecision::Bf16Filter`]: crate::TokenPrecision::Bf16Filter
//! [`TokenPrecision::Int8Filter`]: crate::TokenPrecision::Int8Filter

use std::cmp::Ordering;

use lemur_maxsim::MultiVectors;
use lemur_maxsim::int8::quantise;
use rayon::prelude::*;

use crate::filter::{NORM_SLACK, Norms, flushed, gamma};
use crate::pairs::PairsByDocument;

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
            Rounding::Int8 => {
                // Codes times scale are exact in f64 (8 + 24 bits).
                let (scale, codes) = quantise(token);
                let scale = f64::from(scale);
                Norms::between(token, codes.iter().map(|&c| f64::from(c) * scale))
            }
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

/// The candidates of each query that can be among its `k` best by f32
/// score, in candidate order, given every pair's reduced (bf16 or int8)
/// score in pair (document) order.
pub(crate) fn survivors<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
    bounds: &TokenBounds,
    queries: &MultiVectors<Q>,
    candidates: &[C],
    pairs: &PairsByDocument,
    reduced_scores: &[f32],
    k: usize,
) -> Vec<Vec<u32>> {
    let by_slot = pairs.by_slot(reduced_scores);
    let mut offsets = Vec::with_capacity(candidates.len());
    let mut offset = 0;
    for list in candidates {
        offsets.push(offset);
        offset += list.as_ref().len();
    }
    candidates
        .par_iter()
        .zip(offsets)
        .enumerate()
        .map(|(q, (list, offset))| {
            let list = list.as_ref();
            let query = QueryNorms::of(queries.get(q), queries.dim(), bounds.rounding);
            let ranges: Vec<(f64, f64)> = list
                .iter()
                .zip(&by_slot[offset..offset + list.len()])
                .map(|(&doc, &score)| {
                    let margin = bounds.margin(&query, doc as usize);
                    let score = f64::from(score);
                    (score - margin, score + margin)
                })
                .collect();
            let threshold = kth_largest_lower_end(&ranges, k);
            list.iter()
                .zip(&ranges)
                // Kept unless provably below: a NaN upper end is kept.
                .filter(|&(_, &(_, upper))| upper.partial_cmp(&threshold) != Some(Ordering::Less))
                .map(|(&doc, _)| doc)
                .collect()
        })
        .collect()
}

/// The `k`-th largest finite lower end, or minus infinity when fewer than
/// `k` are finite (then nothing is provably out).
fn kth_largest_lower_end(ranges: &[(f64, f64)], k: usize) -> f64 {
    let mut lower: Vec<f64> = ranges
        .iter()
        .map(|&(lower, _)| lower)
        .filter(|lower| lower.is_finite())
        .collect();
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
        let ranges = [(3.0, 5.0), (f64::NAN, f64::NAN), (1.0, 2.0), (4.0, 6.0)];
        assert_eq!(kth_largest_lower_end(&ranges, 1), 4.0);
        assert_eq!(kth_largest_lower_end(&ranges, 3), 1.0);
        assert_eq!(kth_largest_lower_end(&ranges, 4), f64::NEG_INFINITY);
    }
}
