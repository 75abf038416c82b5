//! Principal axes of a set of rows: the directions a low-dimensional
//! projection of `W` keeps (the first-stage graph searches in them).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// The mean of `rows` (`[n, dim]`, row-major) and its `r` principal axes
/// (`[r, dim]`, unit rows, by decreasing variance), from the SVD of the
/// centred rows' covariance. `None` if the SVD does not converge. Uses
/// faer's global parallelism setting for the SVD: call it outside rayon
/// tasks.
///
/// # Panics
///
/// If `rows` is empty or not whole rows of width `dim`, or `r > dim`.
#[track_caller]
pub fn principal_axes(rows: &[f32], dim: usize, r: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    assert!(
        dim > 0 && !rows.is_empty() && rows.len().is_multiple_of(dim),
        "rows shape"
    );
    assert!(r <= dim, "more axes than dimensions");
    let n = rows.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    let mut centred = rows.to_vec();
    for row in centred.chunks_exact_mut(dim) {
        row.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
    }
    let x = MatRef::from_row_major_slice(&centred, n, dim);
    let mut covariance = vec![0.0f32; dim * dim];
    let dst = MatMut::from_row_major_slice_mut(&mut covariance, dim, dim);
    matmul(
        dst,
        Accum::Replace,
        x.transpose(),
        x,
        1.0 / n as f32,
        Par::Seq,
    );
    let svd = MatRef::from_row_major_slice(&covariance, dim, dim)
        .thin_svd()
        .ok()?;
    let u = svd.U();
    let mut axes = Vec::with_capacity(r * dim);
    for j in 0..r {
        axes.extend((0..dim).map(|i| u[(i, j)]));
    }
    Some((mean, axes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_axis_is_the_direction_of_most_variance() {
        // Points spread along (3, 4) / 5 with a little noise across it.
        let mut rows = Vec::new();
        for i in 0..200 {
            let t = (i as f32 - 99.5) / 10.0;
            let across = if i % 2 == 0 { 0.05 } else { -0.05 };
            rows.extend_from_slice(&[1.0 + 0.6 * t - 0.8 * across, 2.0 + 0.8 * t + 0.6 * across]);
        }
        let (mean, axes) = principal_axes(&rows, 2, 2).unwrap();
        assert!(
            (mean[0] - 1.0).abs() < 1e-3 && (mean[1] - 2.0).abs() < 1e-3,
            "{mean:?}"
        );
        let sign = axes[0].signum();
        assert!((axes[0] * sign - 0.6).abs() < 1e-4 && (axes[1] * sign - 0.8).abs() < 1e-4);
        let dot = axes[0] * axes[2] + axes[1] * axes[3];
        assert!(dot.abs() < 1e-4, "axes are orthogonal");
    }
}
