//! Low-rank training targets: train the feature map against the targets'
//! dominant output directions instead of all of them.
//!
//! With an orthonormal basis `Q` (`[n_outputs, rank]`) of output space,
//! any output layer `O = Q O'` gives
//! `||O psi - y||^2 = ||O' psi - Q^T y||^2 + ||(I - Q Q^T) y||^2`, and the
//! second term does not depend on the network. So training `O'` against the
//! projected targets `Q^T y` is exactly training the full network with its
//! output layer restricted to the span of `Q`; the gradient reaching the
//! feature map is the same. When `Q` spans the targets' top principal
//! directions the restriction costs little, and the output layer, about 98%
//! of the training FLOPs at the original's sizes, shrinks by
//! `n_outputs / rank`. (The output layer is dropped after training anyway:
//! `W` is refitted by least squares.)
//!
//! `Q` comes from a randomized range finder with power iterations
//! (Halko, Martinsson and Tropp, 2011) on a sample of the target rows, so
//! finding it costs a small fraction of one epoch.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Extra directions the range finder carries beyond `rank` (the accuracy
/// of the last kept directions depends on them).
const OVERSAMPLE: usize = 16;
/// Power iterations: each sharpens the separation of the kept directions
/// from the rest by another power of the singular-value ratio.
const POWER_ITERATIONS: usize = 2;

fn parallelism(threads: usize) -> Par {
    if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    }
}

/// An orthonormal basis (row-major `[n_outputs, rank]`) of the `rank`
/// dominant output directions of `targets` (row-major `[n_outputs,
/// n_rows]`, the layout of [`crate::Targets::ByOutput`]), estimated from
/// up to `sample_rows` evenly spaced rows. `rank` is capped at
/// `n_outputs`. Deterministic for a given `seed` and thread count; faer
/// uses up to `threads` threads inside each product.
///
/// # Panics
///
/// If `targets` is not `n_outputs * n_rows` long, or `rank`, `n_rows` or
/// `sample_rows` is 0.
#[track_caller]
pub fn target_basis(
    targets: &[f32],
    n_outputs: usize,
    n_rows: usize,
    rank: usize,
    sample_rows: usize,
    seed: u64,
    threads: usize,
) -> Vec<f32> {
    assert_eq!(
        targets.len(),
        n_outputs * n_rows,
        "targets is not [n_outputs, n_rows]"
    );
    assert!(rank > 0 && n_rows > 0 && sample_rows > 0, "empty sketch");
    let rank = rank.min(n_outputs);
    let par = parallelism(threads);
    // The sampled rows as columns: a = [n_outputs, s].
    let s = sample_rows.min(n_rows);
    let rows: Vec<usize> = (0..s).map(|i| i * n_rows / s).collect();
    let a = Mat::<f32>::from_fn(n_outputs, s, |t, i| targets[t * n_rows + rows[i]]);
    let width = (rank + OVERSAMPLE).min(n_outputs).min(s);
    let mut state = seed ^ 0x5EED_5CE7_C4A1_0B1D;
    let omega = Mat::<f32>::from_fn(s, width, |_, _| uniform(&mut state));
    let mut range = product(a.as_ref(), omega.as_ref(), par);
    for _ in 0..POWER_ITERATIONS {
        let basis = range.qr().compute_thin_Q();
        let back = product(a.transpose(), basis.as_ref(), par);
        let back = back.qr().compute_thin_Q();
        range = product(a.as_ref(), back.as_ref(), par);
    }
    let basis = range.qr().compute_thin_Q();
    // Rotate the range basis onto the sample's leading left singular
    // vectors, so the first `rank` columns are the dominant directions.
    let small = product(basis.transpose(), a.as_ref(), par);
    let rotation = match small.thin_svd() {
        Ok(svd) => svd.U().to_owned(),
        // Not converging on a [width, s] matrix would be a faer bug; the
        // unrotated range basis is still a valid orthonormal basis.
        Err(_) => Mat::identity(width, width),
    };
    let dominant = product(basis.as_ref(), rotation.get(.., ..rank.min(width)), par);
    let kept = dominant.ncols();
    let mut out = vec![0.0f32; n_outputs * kept];
    for t in 0..n_outputs {
        for j in 0..kept {
            out[t * kept + j] = dominant[(t, j)];
        }
    }
    out
}

/// The targets in the basis: `Q^T Y`, row-major `[rank, n_rows]` (again
/// the [`crate::Targets::ByOutput`] layout, with `rank` outputs).
///
/// # Panics
///
/// If the slice lengths do not match the shapes.
#[track_caller]
pub fn project_targets(
    basis: &[f32],
    targets: &[f32],
    n_outputs: usize,
    n_rows: usize,
    threads: usize,
) -> Vec<f32> {
    assert_eq!(
        targets.len(),
        n_outputs * n_rows,
        "targets is not [n_outputs, n_rows]"
    );
    assert!(
        n_outputs > 0 && basis.len().is_multiple_of(n_outputs),
        "basis is not [n_outputs, rank]"
    );
    let rank = basis.len() / n_outputs;
    let mut out = vec![0.0f32; rank * n_rows];
    let q = MatRef::from_row_major_slice(basis, n_outputs, rank);
    let y = MatRef::from_row_major_slice(targets, n_outputs, n_rows);
    let dst = MatMut::from_row_major_slice_mut(&mut out, rank, n_rows);
    matmul(
        dst,
        Accum::Replace,
        q.transpose(),
        y,
        1.0f32,
        parallelism(threads),
    );
    out
}

fn product(a: MatRef<'_, f32>, b: MatRef<'_, f32>, par: Par) -> Mat<f32> {
    let mut out = Mat::<f32>::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, 1.0f32, par);
    out
}

/// Uniform in `[-1, 1)` from a xorshift state: any full-rank random test
/// matrix serves the range finder.
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets of exact rank 3 plus small noise: the rank-3 basis must
    /// capture all but the noise, and projecting must preserve the energy
    /// inside the span.
    #[test]
    fn the_basis_spans_the_dominant_directions() {
        let (n_outputs, n_rows) = (40, 500);
        let mut state = 7u64;
        let factors: Vec<f32> = (0..n_outputs * 3).map(|_| uniform(&mut state)).collect();
        let loadings: Vec<f32> = (0..3 * n_rows).map(|_| uniform(&mut state)).collect();
        let mut targets = vec![0.0f32; n_outputs * n_rows];
        for t in 0..n_outputs {
            for r in 0..n_rows {
                let signal: f32 = (0..3)
                    .map(|c| factors[t * 3 + c] * loadings[c * n_rows + r])
                    .sum();
                targets[t * n_rows + r] = signal + 1e-3 * uniform(&mut state);
            }
        }
        let basis = target_basis(&targets, n_outputs, n_rows, 3, 200, 1, 1);
        assert_eq!(basis.len(), n_outputs * 3);
        // Orthonormal columns.
        for i in 0..3 {
            for j in 0..3 {
                let dot: f32 = (0..n_outputs)
                    .map(|t| basis[t * 3 + i] * basis[t * 3 + j])
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-4, "column {i}.{j} = {dot}");
            }
        }
        let projected = project_targets(&basis, &targets, n_outputs, n_rows, 1);
        let energy = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        let kept = energy(&projected) / energy(&targets);
        assert!(
            kept > 0.9999,
            "the rank-3 basis keeps only {kept} of the energy"
        );
        // A rank-1 basis of the same targets keeps strictly less.
        let one = target_basis(&targets, n_outputs, n_rows, 1, 200, 1, 1);
        let kept_one =
            energy(&project_targets(&one, &targets, n_outputs, n_rows, 1)) / energy(&targets);
        assert!(kept_one < kept - 1e-3, "rank 1 kept {kept_one}");
    }

    #[test]
    fn rank_is_capped_at_the_outputs() {
        let targets: Vec<f32> = (0..6 * 10).map(|i| (i as f32 * 0.37).sin()).collect();
        let basis = target_basis(&targets, 6, 10, 50, 10, 0, 1);
        assert_eq!(basis.len(), 6 * 6);
        // A full basis keeps all the energy.
        let projected = project_targets(&basis, &targets, 6, 10, 1);
        let energy = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        assert!((energy(&projected) / energy(&targets) - 1.0).abs() < 1e-4);
    }
}
