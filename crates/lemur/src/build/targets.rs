//! Training targets: the single-token MaxSim of learn tokens against
//! sampled documents, computed one document at a time into one buffer.

use std::sync::atomic::{AtomicUsize, Ordering};

use lemur_io::TargetNorm;
use lemur_maxsim::{Isa, MultiVectors, PackedQuery, token_maxima};
use rayon::prelude::*;

/// Normalised targets, stored by document: `values[j * n_rows + r] =
/// (max_c <x_r, c> - mean) / std` over document `docs[j]`'s tokens `c`.
#[derive(Debug, Clone)]
pub(crate) struct TrainingTargets {
    pub(crate) values: Vec<f32>,
    pub(crate) norm: TargetNorm,
}

/// Computes the targets of `rows` (`[n_rows, d]`) against `docs` of the
/// corpus, normalises them in place with one global mean and population
/// std, and reports each finished document through `done`.
///
/// The only large allocation is the `[docs, rows]` matrix itself; the fused
/// kernel never materialises a token-by-token score matrix.
pub(crate) fn compute<T: AsRef<[f32]> + Sync>(
    isa: Isa,
    rows: &[f32],
    corpus: &MultiVectors<T>,
    docs: &[usize],
    done: &(dyn Fn(usize) + Sync),
) -> TrainingTargets {
    let dim = corpus.dim();
    let n_rows = rows.len() / dim;
    let packed = PackedQuery::new(rows, dim);
    let mut values = vec![0.0f32; docs.len() * n_rows];
    let finished = AtomicUsize::new(0);
    values
        .par_chunks_mut(n_rows)
        .zip(docs.par_iter())
        .for_each(|(column, &doc)| {
            token_maxima(isa, &packed, corpus.get(doc), column);
            done(finished.fetch_add(1, Ordering::Relaxed) + 1);
        });
    let (sum, sum_sq) = values
        .par_chunks(n_rows.max(1))
        .map(|c| {
            c.iter().fold((0.0f64, 0.0f64), |(s, q), &v| {
                (s + v as f64, q + (v as f64) * (v as f64))
            })
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let count = values.len().max(1) as f64;
    let mean = sum / count;
    let std = (sum_sq / count - mean * mean).max(0.0).sqrt();
    // A constant target (one token everywhere) still gets a usable scale.
    let std = if std > 1e-12 { std } else { 1.0 };
    let (mean32, inv_std) = (mean as f32, (1.0 / std) as f32);
    values
        .par_iter_mut()
        .for_each(|v| *v = (*v - mean32) * inv_std);
    TrainingTargets {
        values,
        norm: TargetNorm {
            mean: mean as f32,
            std: std as f32,
        },
    }
}
