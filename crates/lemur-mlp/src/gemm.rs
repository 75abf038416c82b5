//! Row-major matrix products on faer, sequential by design.
//!
//! Every faer product here is `Par::Seq`: callers parallelise one level up
//! (across token chunks, queries or blocks of documents) and must never
//! nest a parallel GEMM inside a parallel loop. The one exception is
//! [`matmul_a_b_in_parts`], which is that level itself: rayon tasks of
//! sequential products over column ranges, for a product with nothing
//! else to spread.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

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

/// [`matmul_a_b`] with the columns of `out` (and `b`) split into `parts`
/// ranges, each a rayon task in the current pool with a sequential
/// product: one product over several threads when there is nothing else to
/// spread, such as a single query's forward pass. Call it only outside
/// rayon tasks (one level of parallelism). Every column is computed as
/// [`matmul_a_b`] computes it; `parts` <= 1 is [`matmul_a_b`].
///
/// # Panics
///
/// If a slice length does not match its shape.
#[track_caller]
pub fn matmul_a_b_in_parts(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    parts: usize,
) {
    // Columns per task: whole SIMD registers, and not so few that a task
    // costs more to start than to run.
    let width = n
        .div_ceil(parts.max(1))
        .next_multiple_of(16)
        .max(MIN_PART_COLUMNS);
    if width >= n || rows == 0 {
        matmul_a_b(out, a, b, rows, k, n);
        return;
    }
    assert_eq!(a.len(), rows * k, "a is not [rows, k]");
    assert_eq!(b.len(), k * n, "b is not [k, n]");
    assert_eq!(out.len(), rows * n, "out is not [rows, n]");
    let lhs = MatRef::from_row_major_slice(a, rows, k);
    let rhs = MatRef::from_row_major_slice(b, k, n);
    let mut rest = MatMut::from_row_major_slice_mut(out, rows, n);
    let mut pieces = Vec::with_capacity(n.div_ceil(width));
    let mut start = 0;
    while start < n {
        let len = width.min(n - start);
        let (head, tail) = rest.split_at_col_mut(len);
        pieces.push((head, rhs.subcols(start, len)));
        rest = tail;
        start += len;
    }
    pieces
        .into_par_iter()
        .for_each(|(dst, rhs)| matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, Par::Seq));
}

/// Fewest output columns per task of [`matmul_a_b_in_parts`].
const MIN_PART_COLUMNS: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Split into column parts, every value is the unsplit product's, bit
    /// for bit (a query's features must not depend on the pool's size).
    #[test]
    fn products_in_parts_equal_the_whole_product() {
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        for (rows, k, n) in [(1, 3, 100), (32, 128, 2048), (7, 24, 130), (5, 9, 64)] {
            let a: Vec<f32> = (0..rows * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 13)).collect();
            let mut whole = vec![0.0; rows * n];
            matmul_a_b(&mut whole, &a, &b, rows, k, n);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            for parts in [1, 2, 3, 5] {
                let mut split = vec![f32::NAN; rows * n];
                pool.install(|| matmul_a_b_in_parts(&mut split, &a, &b, rows, k, n, parts));
                assert_eq!(split, whole, "{rows}x{k}x{n} in {parts} parts");
            }
        }
    }
}
