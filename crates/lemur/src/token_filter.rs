//! The f32 rerank at about the cost of the bf16 one
//! ([`TokenPrecision::Bf16Filter`]).
//!
//! Of a query's `k'` candidates only the few near its `k`-th best matter:
//! on W10k the margin below is about 0.12 and 12 of 200 candidates survive
//! it (MaxSim scores spread over about 6 points). So every candidate is scored on the bf16
//! tokens first, an error bound on those scores says which candidates can
//! still be among the `k` best by their f32 score, and only those are
//! scored again on the f32 tokens, by the same kernel as the f32 rerank.
//! The hits are therefore the f32 rerank's, scores and ties included.
//!
//! The bound. For a query token `x` with bf16 rounding `x~ = x - e` and a
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
//!
//! The rule. Each candidate's f32 score lies in `[s16 - b, s16 + b]`. Let
//! `t` be the `k`-th largest lower end. The `k` candidates whose lower
//! ends reach `t` all score at least `t` in f32, so a candidate whose upper
//! end is below `t` scores less than `k` others and cannot be in the top
//! `k`; every other candidate is rescored. A bound that is not finite (a
//! value past bf16's range) keeps the candidate.
//!
//! [`TokenPrecision::Bf16Filter`]: crate::TokenPrecision::Bf16Filter

use std::cmp::Ordering;

use lemur_maxsim::MultiVectors;
use rayon::prelude::*;

use crate::filter::{NORM_SLACK, Norms, flushed, gamma};
use crate::pairs::PairsByDocument;

/// The largest token norms of each document: what its bound needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenBounds {
    /// Per document: `max |y|`, `max |y~|` and `max |y - y~|`.
    docs: Vec<Norms>,
    dim: usize,
}

impl TokenBounds {
    /// The norms of every document of `corpus`, over the current pool.
    pub(crate) fn new<T: AsRef<[f32]> + Sync>(corpus: &MultiVectors<T>) -> Self {
        let dim = corpus.dim();
        let docs = (0..corpus.len())
            .into_par_iter()
            .map(|doc| {
                corpus
                    .get(doc)
                    .chunks_exact(dim)
                    .map(Norms::of)
                    .fold(Norms::ZERO, |most, token| most.max(&token))
            })
            .collect();
        TokenBounds { docs, dim }
    }

    /// Takes in the norms of appended documents.
    pub(crate) fn append(&mut self, added: &TokenBounds) {
        self.docs.extend_from_slice(&added.docs);
    }

    /// `b`: a bound on `|s32 - s16|` of `query` against document `doc`.
    fn margin(&self, query: &QueryNorms, doc: usize) -> f64 {
        let most = &self.docs[doc];
        let (gamma_d, gamma_q) = (gamma(self.dim), gamma(query.n_tokens));
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
    fn of(query: &[f32], dim: usize) -> Self {
        let sums = query
            .chunks_exact(dim)
            .map(Norms::of)
            .fold(Norms::ZERO, |sum, token| sum.add(&token));
        QueryNorms {
            sums,
            n_tokens: query.len() / dim,
        }
    }
}

/// The candidates of each query that can be among its `k` best by f32
/// score, in candidate order, given every pair's bf16 score in pair
/// (document) order.
pub(crate) fn survivors<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
    bounds: &TokenBounds,
    queries: &MultiVectors<Q>,
    candidates: &[C],
    pairs: &PairsByDocument,
    bf16_scores: &[f32],
    k: usize,
) -> Vec<Vec<u32>> {
    let by_slot = pairs.by_slot(bf16_scores);
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
            let query = QueryNorms::of(queries.get(q), queries.dim());
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
        let bounds = TokenBounds::new(&doc);
        let margin = bounds.margin(&QueryNorms::of(&query, dim), 0);
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
        let bounds = TokenBounds::new(&doc);
        let margin = bounds.margin(&QueryNorms::of(&query, dim), 0);
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
    fn the_kth_lower_end_ignores_what_is_not_finite() {
        let ranges = [(3.0, 5.0), (f64::NAN, f64::NAN), (1.0, 2.0), (4.0, 6.0)];
        assert_eq!(kth_largest_lower_end(&ranges, 1), 4.0);
        assert_eq!(kth_largest_lower_end(&ranges, 3), 1.0);
        assert_eq!(kth_largest_lower_end(&ranges, 4), f64::NEG_INFINITY);
    }
}
