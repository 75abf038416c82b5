//! Least-squares document weights: `w_j = Z^+ ((y_j - mu) / sigma)`.
//!
//! `Z = psi(S)` are the features of a sample `S` of learn tokens and
//! `y_j[r] = max_c <s_r, c>` is document j's single-token MaxSim on the
//! sample. The pseudo-inverse of `Z` comes from a thin SVD with the cutoff
//! `eps_f32 * max(s, h) * sigma_max` (numpy's and PyTorch's default), so it
//! is computed once and serves every document, including ones added later.

use lemur_io::TargetNorm;
use lemur_maxsim::{Isa, MultiVectors, PackedQuery, token_maxima};
use lemur_mlp::FeatureMap;
use lemur_mlp::gemm::{matmul_a_b, pseudo_inverse_transposed};
use rayon::prelude::*;
use thiserror::Error;

/// Documents fitted per task: one `[chunk, s] x [s, h]` GEMM each.
const FIT_CHUNK: usize = 64;

/// Why the weight solver could not be set up.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum FitError {
    /// The sample is empty or not `[s, d]` for the feature map's `d`.
    #[error("the token sample has {len} values, not a non-empty [s, {dim}] matrix")]
    SampleShape {
        /// Values given.
        len: usize,
        /// The feature map's token width.
        dim: usize,
    },
    /// A sample value is NaN or infinite.
    #[error("the token sample holds a non-finite value at flat index {index}")]
    NonFiniteSample {
        /// Flat index.
        index: usize,
    },
    /// The SVD did not converge.
    #[error("the SVD of the sample features did not converge")]
    Svd,
    /// The target normalisation is unusable.
    #[error("target std must be positive and finite, got {0}")]
    BadNorm(f32),
}

/// Fits document weight rows against one fixed token sample.
#[derive(Debug, Clone)]
pub struct WeightSolver {
    /// `(Z^+)^T`, row-major `[s, h]`: `W_chunk = Y_chunk^T (Z^+)^T`.
    pinv_t: Vec<f32>,
    /// The sample rows as given (`[s, d]`), kept so the solver can be saved
    /// and rebuilt.
    sample_tokens: Vec<f32>,
    sample: PackedQuery,
    n_sample: usize,
    feature_dim: usize,
    norm: TargetNorm,
    isa: Isa,
}

impl WeightSolver {
    /// Computes the sample's features and their pseudo-inverse.
    ///
    /// `sample` is `[s, d]` row-major; `norm` is the training targets'
    /// normalisation (or [`WeightSolver::estimate_norm`]'s estimate when
    /// there was no training).
    pub fn new(
        feature_map: &FeatureMap,
        sample: &[f32],
        norm: TargetNorm,
    ) -> Result<WeightSolver, FitError> {
        let d = feature_map.input_dim();
        let h = feature_map.output_dim();
        if sample.is_empty() || !sample.len().is_multiple_of(d) {
            return Err(FitError::SampleShape {
                len: sample.len(),
                dim: d,
            });
        }
        if let Some(index) = sample.iter().position(|v| !v.is_finite()) {
            return Err(FitError::NonFiniteSample { index });
        }
        if !(norm.std.is_finite() && norm.std > 0.0 && norm.mean.is_finite()) {
            return Err(FitError::BadNorm(norm.std));
        }
        let s = sample.len() / d;
        let mut z = vec![0.0f32; s * h];
        feature_map.forward(sample, &mut z);
        let pinv_t = pseudo_inverse_transposed(&z, s, h).ok_or(FitError::Svd)?;
        Ok(WeightSolver {
            pinv_t,
            sample_tokens: sample.to_vec(),
            sample: PackedQuery::new(sample, d),
            n_sample: s,
            feature_dim: h,
            norm,
            isa: Isa::detect(),
        })
    }

    /// Estimates `mean` and population `std` of the single-token MaxSim
    /// targets of `sample` against up to `max_docs` evenly spaced documents.
    pub fn estimate_norm<T: AsRef<[f32]>>(
        sample: &[f32],
        corpus: &MultiVectors<T>,
        max_docs: usize,
    ) -> TargetNorm {
        let d = corpus.dim();
        let packed = PackedQuery::new(sample, d);
        let s = sample.len() / d;
        let step = (corpus.len() / max_docs.max(1)).max(1);
        let isa = Isa::detect();
        let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0usize);
        let mut maxima = vec![0.0; s];
        for doc in (0..corpus.len()).step_by(step).take(max_docs.max(1)) {
            token_maxima(isa, &packed, corpus.get(doc), &mut maxima);
            for &y in &maxima {
                sum += y as f64;
                sum_sq += (y as f64) * (y as f64);
            }
            n += s;
        }
        let mean = sum / n as f64;
        let var = (sum_sq / n as f64 - mean * mean).max(0.0);
        TargetNorm {
            mean: mean as f32,
            std: (var.sqrt() as f32).max(f32::MIN_POSITIVE),
        }
    }

    /// Width of the features the rows it fits are for (`h`).
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// The token sample (`[s, d]`) the solver was built from.
    pub fn sample_tokens(&self) -> &[f32] {
        &self.sample_tokens
    }

    /// The target normalisation used.
    pub fn norm(&self) -> TargetNorm {
        self.norm
    }

    /// Weight rows `[corpus.len(), h]` for every document of `corpus`,
    /// fitted in parallel chunks on the current rayon pool.
    ///
    /// # Panics
    ///
    /// If the corpus width differs from the sample's.
    #[track_caller]
    pub fn fit<T: AsRef<[f32]> + Sync>(&self, corpus: &MultiVectors<T>) -> Vec<f32> {
        self.fit_with_progress(corpus, &|_| {})
    }

    /// As [`WeightSolver::fit`], calling `done(documents_fitted)` as chunks
    /// finish (from worker threads).
    ///
    /// # Panics
    ///
    /// If the corpus width differs from the sample's.
    #[track_caller]
    pub fn fit_with_progress<T: AsRef<[f32]> + Sync>(
        &self,
        corpus: &MultiVectors<T>,
        done: &(dyn Fn(usize) + Sync),
    ) -> Vec<f32> {
        let finished = std::sync::atomic::AtomicUsize::new(0);
        assert_eq!(corpus.dim(), self.sample.dim(), "corpus width");
        let (s, h) = (self.n_sample, self.feature_dim);
        let mut weights = vec![0.0f32; corpus.len() * h];
        weights
            .par_chunks_mut(FIT_CHUNK * h)
            .enumerate()
            .for_each_init(Vec::new, |targets, (chunk, out)| {
                let first = chunk * FIT_CHUNK;
                let n_docs = out.len() / h;
                targets.resize(n_docs * s, 0.0f32);
                for (i, row) in targets.chunks_exact_mut(s).enumerate() {
                    token_maxima(self.isa, &self.sample, corpus.get(first + i), row);
                    let (mean, inv_std) = (self.norm.mean, 1.0 / self.norm.std);
                    row.iter_mut().for_each(|y| *y = (*y - mean) * inv_std);
                }
                matmul_a_b(out, targets, &self.pinv_t, n_docs, s, h);
                done(finished.fetch_add(n_docs, std::sync::atomic::Ordering::Relaxed) + n_docs);
            });
        weights
    }
}
