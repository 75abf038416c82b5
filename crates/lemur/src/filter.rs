//! The f32 candidates at the bytes of bf16 ([`WeightPrecision::Bf16Filter`]).
//!
//! A bf16 pass over `W` scores every document approximately and keeps a
//! shortlist; an error bound on those scores says which documents could
//! still be among the `k'` best by their f32 score, and only those rows of
//! the f32 `W` are read again. For one query that is the bf16 `W` (half of
//! f32's bytes) plus a few hundred f32 rows, and the candidates are the
//! ones scoring all of `W` in f32 gives (up to f32 rounding, which
//! separates two scores by far less than the bound).
//!
//! The bound. For query features `f`, their bf16 rounding `f~ = f - e` and
//! a row `w` of `W` with its rounding `w~ = w - d`:
//!
//! `f.w - f~.w~ = f.d + e.w~`, so `|f.w - f~.w~| <= |f| |d| + |e| |w~|`
//! (Cauchy-Schwarz). Both computed scores are sums of `h` products in some
//! order (faer for f32, AMX or `vdpbf16ps` for bf16), each within
//! `gamma_h = h u / (1 - h u)` of its exact value times the product of the
//! norms; `u = 2^-23` covers any rounding mode, not only round to nearest.
//! The bf16 instructions read denormal inputs as zero and flush denormal
//! products and sums ([`flushed`]). The row norms enter as their maxima
//! over `W`, so one margin `b` per query bounds `|s32 - s16|` for every
//! row.
//!
//! The rule. Let `t` be the `k'`-th best bf16 score. Every document of the
//! true top `k'` (by f32 score) has a bf16 score of at least `t - 2b`: the
//! `k'` documents at or above `t` have f32 scores of at least `t - b`,
//! and a document below `t - 2b` has an f32 score below that. The
//! [`Shortlist`] keeps every document above `t - 2b` as the scores stream
//! by. A query whose margin is not finite (values that overflow bf16), or
//! with survivors past an eighth of `W`, is scored on the f32 `W` in full.
//!
//! [`WeightPrecision::Bf16Filter`]: crate::WeightPrecision::Bf16Filter

use lemur_maxsim::bf16::{from_bf16, to_bf16};
use lemur_mlp::simd;
use lemur_topk::{Hit, TopK};
use rayon::prelude::*;

use crate::pairs::PairsByDocument;

/// f32's rounding unit, doubled so that directed rounding is covered too.
const UNIT: f64 = f32::EPSILON as f64;
/// The largest error one flushed denormal product or sum can add.
const FLUSHED: f64 = f32::MIN_POSITIVE as f64;
/// Feature bytes of the queries rescored together: a part of L2.
const RESCORE_FEATURE_BYTES: usize = 1 << 20;
/// Past `n_docs / RESCORE_SHARE` survivors (and `4 k'`) a query is scored
/// on all of the f32 `W` instead: a GEMM does about eight times the dot
/// products per second that the rescoring of scattered rows does.
const RESCORE_SHARE: usize = 8;
/// Slack for the f64 norms themselves (relative).
pub(crate) const NORM_SLACK: f64 = 1e-9;

/// `gamma_n = n u / (1 - n u)`: the relative error bound of a sum of `n`
/// products in f32, in any order and any rounding mode.
pub(crate) fn gamma(n: usize) -> f64 {
    let n = n as f64;
    n * UNIT / (1.0 - n * UNIT)
}

/// The row norms the margin needs, as maxima over `W`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilterBounds {
    /// `max |w|`, `max |w~|` and `max |w - w~|` over the rows.
    most: Norms,
    /// The row width `h`.
    width: usize,
}

impl FilterBounds {
    /// The maxima over the rows of a row-major `[n, width]` `weights`.
    pub(crate) fn new(weights: &[f32], width: usize) -> Self {
        let most = weights
            .chunks_exact(width)
            .map(Norms::of)
            .fold(Norms::ZERO, |most, row| most.max(&row));
        FilterBounds { most, width }
    }

    /// Widens the maxima to cover appended rows as well.
    pub(crate) fn append(&mut self, added: &FilterBounds) {
        self.most = self.most.max(&added.most);
    }

    /// `b`: a bound on `|s32 - s16|` for `features` against any row.
    pub(crate) fn margin(&self, features: &[f32]) -> f64 {
        let query = Norms::of(features);
        let most = &self.most;
        let rounding = query.exact * most.residual + query.residual * most.rounded;
        let summation =
            gamma(self.width) * (query.rounded * most.rounded + query.exact * most.exact);
        let flushed = flushed(self.width, query.rounded, most.rounded);
        (rounding + summation) * (1.0 + NORM_SLACK) + flushed
    }
}

/// The most that flushing can change a bf16 dot product of `n` products
/// of vectors with norms `x` and `y`. The bf16 instructions read denormal
/// inputs as zero (a product `x_i y_i` with `|x_i| < 2^-126` loses at most
/// `2^-126 |y_i|`, so the sum loses at most `2^-126 sqrt(n) (|x| + |y|)`)
/// and flush denormal products and partial sums (at most `2^-126` each).
pub(crate) fn flushed(n: usize, x: f64, y: f64) -> f64 {
    let n = n as f64;
    FLUSHED * (2.0 * n + n.sqrt() * (x + y))
}

/// A vector's f64 norms: exact, rounded to bf16, and of the residual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Norms {
    pub(crate) exact: f64,
    pub(crate) rounded: f64,
    pub(crate) residual: f64,
}

impl Norms {
    /// All three norms zero: where maxima and sums start.
    pub(crate) const ZERO: Norms = Norms {
        exact: 0.0,
        rounded: 0.0,
        residual: 0.0,
    };

    /// Each norm the larger of the two.
    pub(crate) fn max(&self, other: &Norms) -> Norms {
        Norms {
            exact: self.exact.max(other.exact),
            rounded: self.rounded.max(other.rounded),
            residual: self.residual.max(other.residual),
        }
    }

    /// Each norm the sum of the two.
    pub(crate) fn add(&self, other: &Norms) -> Norms {
        Norms {
            exact: self.exact + other.exact,
            rounded: self.rounded + other.rounded,
            residual: self.residual + other.residual,
        }
    }

    /// The norms of `values` and of their bf16 rounding.
    pub(crate) fn of(values: &[f32]) -> Self {
        Norms::between(
            values,
            values.iter().map(|&v| f64::from(from_bf16(to_bf16(v)))),
        )
    }

    /// The norms of `values`, of `rounded` (the same number of values) and
    /// of their difference.
    pub(crate) fn between(values: &[f32], rounded: impl Iterator<Item = f64>) -> Self {
        let (mut exact, mut rounded_sum, mut residual) = (0.0f64, 0.0f64, 0.0f64);
        for (&v, r) in values.iter().zip(rounded) {
            let v = f64::from(v);
            exact += v * v;
            rounded_sum += r * r;
            residual += (v - r) * (v - r);
        }
        Norms {
            exact: exact.sqrt(),
            rounded: rounded_sum.sqrt(),
            residual: residual.sqrt(),
        }
    }
}

/// A query's bf16 scores as they stream by: the `n_candidates` best, and
/// every document within twice the margin of the running `k'`-th best
/// (which only rises, so nothing that ends within the margin of the final
/// one is dropped on the way).
#[derive(Debug, Clone)]
pub(crate) struct Shortlist {
    top: TopK,
    /// `2 b`.
    width: f64,
    kept: Vec<Hit>,
}

impl Shortlist {
    /// An empty shortlist for a query with margin `b`.
    pub(crate) fn new(n_candidates: usize, margin: f64) -> Self {
        Shortlist {
            top: TopK::new(n_candidates),
            width: 2.0 * margin,
            kept: Vec::new(),
        }
    }

    /// Offers `scores[i]` with id `first_id + i` for every `i`.
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

    /// Takes in a shortlist of other documents of the same query.
    pub(crate) fn merge(&mut self, other: &Shortlist) {
        self.top.merge(&other.top);
        self.kept.extend_from_slice(&other.kept);
    }

    /// Scores below this can never come within the margin.
    fn floor(&self) -> f64 {
        self.top
            .threshold()
            .map_or(f64::NEG_INFINITY, |t| f64::from(t) - self.width)
    }

    /// The documents that can be among the `n_candidates` best by f32
    /// score, or `None` when nothing is provable (NaN scores, an infinite
    /// margin) or when so many survive that scoring all of `W` (`n_docs`
    /// rows) in f32 costs less than rescoring them.
    pub(crate) fn survivors(self, n_docs: usize) -> Option<Vec<u32>> {
        let most = (n_docs / RESCORE_SHARE).max(4 * self.top.k());
        let best = self.top.into_sorted_vec();
        let Some(kth) = best.last() else {
            return Some(Vec::new());
        };
        let floor = f64::from(kth.score) - self.width;
        if !floor.is_finite() {
            return None;
        }
        let near = self
            .kept
            .into_iter()
            .filter(|hit| f64::from(hit.score) >= floor);
        let survivors: Vec<u32> = near.map(|hit| hit.id).collect();
        (survivors.len() <= most).then_some(survivors)
    }
}

/// The `n_candidates` best of each query's `survivors` by f32 score (its
/// `width` features against rows of `weights`), best first. Queries go in
/// blocks whose features stay in L2 while the block's (query, document)
/// pairs are scored in document order, so each `W` row is read once per
/// block rather than once per query that kept it.
pub(crate) fn rescore(
    survivors: &[Vec<u32>],
    features: &[f32],
    weights: &[f32],
    width: usize,
    n_docs: usize,
    n_candidates: usize,
) -> Vec<Vec<Hit>> {
    let block = (RESCORE_FEATURE_BYTES / (width * size_of::<f32>())).max(1);
    let mut candidates = Vec::with_capacity(survivors.len());
    for (lists, block_features) in survivors.chunks(block).zip(features.chunks(block * width)) {
        let pairs = PairsByDocument::new(lists, n_docs);
        let task = pairs.task_size();
        let mut scores = vec![0.0f32; pairs.docs.len()];
        scores
            .par_chunks_mut(task)
            .zip(pairs.queries.par_chunks(task))
            .zip(pairs.docs.par_chunks(task))
            .for_each(|((out, queries), docs)| {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for ((score, &q), &doc) in out.iter_mut().zip(queries).zip(docs) {
                            let f = &block_features[q as usize * width..][..width];
                            let row = &weights[doc as usize * width..][..width];
                            *score = simd::dot(f, row);
                        }
                    },
                )
            });
        candidates.extend(pairs.top_per_list(lists, &scores, n_candidates));
    }
    candidates
}

#[cfg(test)]
mod tests {
    use lemur_maxsim::Isa;
    use lemur_maxsim::bf16::{Bf16Matrix, dot_products_bf16};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Streamed in blocks and merged, a shortlist keeps exactly the
        /// documents within `2b` of the final `k'`-th best score.
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
            let split = split.min(scores.len()).div_ceil(block) * block;
            let split = split.min(scores.len());
            let mut left = Shortlist::new(k, margin);
            let mut right = Shortlist::new(k, margin);
            for (i, chunk) in scores.chunks(block).enumerate() {
                let first = i * block;
                let side = if first < split { &mut left } else { &mut right };
                side.extend_from_scores(first as u32, chunk);
            }
            left.merge(&right);
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k.min(sorted.len()) - 1];
            let mut want: Vec<u32> = (0..scores.len() as u32)
                .filter(|&j| f64::from(scores[j as usize]) >= f64::from(kth) - 2.0 * margin)
                .collect();
            match left.survivors(usize::MAX) {
                Some(mut got) => {
                    got.sort_unstable();
                    want.sort_unstable();
                    prop_assert_eq!(got, want);
                }
                None => prop_assert!(false, "finite scores are always settled"),
            }
        }
    }

    #[test]
    fn too_many_survivors_go_to_the_f32_product() {
        let mut shortlist = Shortlist::new(2, 1.0);
        shortlist.extend_from_scores(0, &[5.0; 100]);
        assert_eq!(
            shortlist
                .clone()
                .survivors(100 * RESCORE_SHARE)
                .map(|s| s.len()),
            Some(100)
        );
        assert_eq!(shortlist.survivors(99 * RESCORE_SHARE), None);
    }

    /// The margin holds for the bf16 kernels at every level this CPU has.
    #[test]
    fn the_margin_bounds_the_kernels_scores() {
        let (width, n_rows) = (203, 40);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut value = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let rows: Vec<f32> = (0..n_rows * width).map(|_| value() * 0.1).collect();
        let bounds = FilterBounds::new(&rows, width);
        let rows16 = Bf16Matrix::from_f32(&rows, width);
        for _ in 0..6 {
            let features: Vec<f32> = (0..width).map(|_| value()).collect();
            let features16 = Bf16Matrix::from_f32(&features, width);
            let margin = bounds.margin(&features);
            for isa in Isa::available() {
                let mut s16 = vec![0.0; n_rows];
                dot_products_bf16(isa, &features16, &rows16, 0, n_rows, &mut s16);
                for (j, row) in rows.chunks_exact(width).enumerate() {
                    let s32 = f64::from(simd::dot(&features, row));
                    assert!(
                        (s32 - f64::from(s16[j])).abs() <= margin,
                        "{} row {j}",
                        isa.level()
                    );
                }
            }
        }
    }

    #[test]
    fn the_margin_covers_denormal_inputs_read_as_zero() {
        // A denormal feature (2^-127, exact in bf16) times a row value of
        // 2^100 is 2^-27 in f32; AVX512-BF16 and AMX read the feature as
        // zero. Rounding and summation terms are about 2^-49 here, so only
        // the inputs' flushing term covers the difference.
        let (row, feature) = (2f32.powi(100), 2f32.powi(-127));
        let bounds = FilterBounds::new(&[row], 1);
        let margin = bounds.margin(&[feature]);
        let s32 = f64::from(simd::dot(&[feature], &[row]));
        assert_eq!(s32, 2f64.powi(-27));
        let (features16, rows16) = (
            Bf16Matrix::from_f32(&[feature], 1),
            Bf16Matrix::from_f32(&[row], 1),
        );
        for isa in Isa::available() {
            let mut s16 = [f32::NAN];
            dot_products_bf16(isa, &features16, &rows16, 0, 1, &mut s16);
            assert!(
                (s32 - f64::from(s16[0])).abs() <= margin,
                "{}: {}",
                isa.level(),
                s16[0]
            );
        }
        assert!(margin < 2f64.powi(-24));
    }

    #[test]
    fn the_margin_covers_the_rounding_of_both_sides() {
        // One row [1 + 2^-8 - 2^-16] against features [1 + 2^-9]: both
        // round to 1.0 in bf16, so the bf16 score is 1.0 and the f32 one
        // 1.0059; the margin must be at least their difference.
        let row = [1.0 + 2f32.powi(-8) - 2f32.powi(-16)];
        let features = [1.0 + 2f32.powi(-9)];
        let bounds = FilterBounds::new(&row, 1);
        let exact = f64::from(row[0]) * f64::from(features[0]);
        assert!(bounds.margin(&features) >= exact - 1.0);
        assert!(bounds.margin(&features) < 2.0 * (exact - 1.0) + 1e-3);
    }
}
