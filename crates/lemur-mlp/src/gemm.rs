//! Row-major matrix products on faer, sequential by design.
//!
//! Every product here runs on the calling thread (`Par::Seq`): callers
//! parallelise one level up (across token chunks, queries or blocks of
//! documents) and must never nest a parallel GEMM inside a parallel loop.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// `out[rows, n] = a[rows, k] * b[n, k]^T` (both inputs row-major), the
/// shape of `x A^T` for a Linear weight `A` and of `f W^T` for scoring.
///
/// # Panics
///
/// If a slice length does not match its shape.
#[track_caller]
pub fn matmul_a_bt(out: &mut [f32], a: &[f32], b: &[f32], rows: usize, k: usize, n: usize) {
    assert_eq!(a.len(), rows * k, "a is not [rows, k]");
    assert_eq!(b.len(), n * k, "b is not [n, k]");
    assert_eq!(out.len(), rows * n, "out is not [rows, n]");
    if rows == 0 || n == 0 {
        return;
    }
    let dst = MatMut::from_row_major_slice_mut(out, rows, n);
    let lhs = MatRef::from_row_major_slice(a, rows, k);
    let rhs = MatRef::from_row_major_slice(b, n, k).transpose();
    matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, Par::Seq);
}

/// `out[rows, n] = a[rows, k] * b[k, n]` (both inputs row-major), the shape
/// of `x R` for the random-feature projection `R: [d, h]`.
///
/// # Panics
///
/// If a slice length does not match its shape.
#[track_caller]
pub fn matmul_a_b(out: &mut [f32], a: &[f32], b: &[f32], rows: usize, k: usize, n: usize) {
    assert_eq!(a.len(), rows * k, "a is not [rows, k]");
    assert_eq!(b.len(), k * n, "b is not [k, n]");
    assert_eq!(out.len(), rows * n, "out is not [rows, n]");
    if rows == 0 || n == 0 {
        return;
    }
    let dst = MatMut::from_row_major_slice_mut(out, rows, n);
    let lhs = MatRef::from_row_major_slice(a, rows, k);
    let rhs = MatRef::from_row_major_slice(b, k, n);
    matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, Par::Seq);
}

/// `(Z^+)^T` `[s, h]` for a row-major `Z` `[s, h]`, via a thin SVD:
/// `Z^+ = V diag(1/sigma) U^T`, so `(Z^+)^T = U diag(1/sigma) V^T`, with
/// singular values at or below the cutoff `eps_f32 * max(s, h) * sigma_max`
/// treated as zero. `None` if the SVD does not converge. The SVD uses
/// faer's global parallelism setting; call it outside rayon tasks.
///
/// # Panics
///
/// If `z` is not `s * h` long.
#[track_caller]
pub fn pseudo_inverse_transposed(z: &[f32], s: usize, h: usize) -> Option<Vec<f32>> {
    assert_eq!(z.len(), s * h, "z is not [s, h]");
    let matrix = faer::MatRef::from_row_major_slice(z, s, h);
    let svd = matrix.thin_svd().ok()?;
    let (u, v) = (svd.U(), svd.V());
    let sigma = svd.S().column_vector();
    let rank_cap = sigma.nrows();
    let sigma_max = if rank_cap > 0 { sigma[0] } else { 0.0 };
    let cutoff = f32::EPSILON * s.max(h) as f32 * sigma_max;
    // U diag(1/sigma), then times V^T.
    let mut scaled_u = faer::Mat::<f32>::zeros(s, rank_cap);
    for j in 0..rank_cap {
        let inv = if sigma[j] > cutoff {
            1.0 / sigma[j]
        } else {
            0.0
        };
        for i in 0..s {
            scaled_u[(i, j)] = u[(i, j)] * inv;
        }
    }
    let mut out = vec![0.0f32; s * h];
    let dst = faer::MatMut::from_row_major_slice_mut(&mut out, s, h);
    faer::linalg::matmul::matmul(
        dst,
        faer::Accum::Replace,
        &scaled_u,
        v.transpose(),
        1.0f32,
        faer::Par::Seq,
    );
    Some(out)
}
