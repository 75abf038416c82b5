//! A projection of `W`'s rows onto their principal axes.
//!
//! A query's score is `<f, w_j> = <f, mu> + <f, w_j - mu>`, and the first
//! term is the same for every document, so the ranking only needs the
//! centred rows. Most of their variance lies in a few hundred directions
//! (on the scale benchmark's 100k-document `W`, 256 of 2048 axes hold 80%
//! of it), so scores in that subspace rank a short list that the full
//! rows then settle: the graph is built and searched in it at an eighth
//! of the bytes per row.
//!
//! A trained `W` holds its variance in no few hundred axes, and the
//! queries are nearly orthogonal to its leading ones, so
//! [`Projection::fit_to_queries`] takes the axes of the queries'
//! directions instead (a sample of token features, which every query
//! feature is a sum of): there, the queries keep their energy and the
//! score differences with them. The identity ([`Projection::identity`]:
//! no axes) keeps the rows as they are.

use lemur_mlp::gemm::matmul_a_bt;
use lemur_mlp::pca::principal_axes;
use rayon::prelude::*;

use crate::error::AnnError;

/// Rows projected per task: one sequential `[PROJECT_BLOCK, r]` product.
const PROJECT_BLOCK: usize = 256;

/// `x -> (x - mean) A^T` for rows and `f -> f A^T` for queries, with `A`
/// `[r, dim]` the sample's leading principal axes; or the identity, with
/// no axes and a zero mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    mean: Vec<f32>,
    axes: Vec<f32>,
    dim: usize,
}

impl Projection {
    /// The mean and `r` leading principal axes of `sample` (`[s, dim]`,
    /// row-major, `s >= 1`, `1 <= r <= dim`). Call it outside rayon tasks
    /// (the SVD uses faer's own parallelism).
    pub fn fit(sample: &[f32], dim: usize, r: usize) -> Result<Projection, AnnError> {
        let n = crate::check_rows(sample, dim)?;
        if r == 0 || r > dim {
            return Err(AnnError::Config(format!(
                "the projection needs 1 to {dim} axes, not {r}"
            )));
        }
        if n == 0 {
            return Err(AnnError::TooFewRows { rows: 0, axes: r });
        }
        let (mean, axes) = principal_axes(sample, dim, r).ok_or(AnnError::Svd)?;
        if !axes.iter().chain(&mean).all(|v| v.is_finite()) {
            return Err(AnnError::Svd);
        }
        Ok(Projection { mean, axes, dim })
    }

    /// The mean of `rows` (`[n, dim]`, `n >= 1`) and the `r` leading
    /// axes of `queries` (`[s, dim]`, `s >= 1`) about the origin: the
    /// subspace the queries' directions span, where their inner products
    /// with the rows are decided. For a trained `W` this is the subspace
    /// to keep: queries there hold little of the rows' variance (at 200k
    /// documents, 0.2% of their energy lies on `W`'s 256 leading axes and
    /// 99% on their own). Call it outside rayon tasks.
    pub fn fit_to_queries(
        rows: &[f32],
        queries: &[f32],
        dim: usize,
        r: usize,
    ) -> Result<Projection, AnnError> {
        let n = crate::check_rows(rows, dim)?;
        let s = crate::check_rows(queries, dim)?;
        if r == 0 || r > dim {
            return Err(AnnError::Config(format!(
                "the projection needs 1 to {dim} axes, not {r}"
            )));
        }
        if n == 0 || s == 0 {
            return Err(AnnError::TooFewRows {
                rows: n.min(s),
                axes: r,
            });
        }
        let mut mean = vec![0.0f64; dim];
        for row in rows.chunks_exact(dim) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += f64::from(v));
        }
        let mean: Vec<f32> = mean.iter().map(|&m| (m / n as f64) as f32).collect();
        // The queries beside their negations have mean zero, so their
        // principal axes are the queries' axes about the origin.
        let mut both = Vec::with_capacity(2 * queries.len());
        both.extend_from_slice(queries);
        both.extend(queries.iter().map(|&v| -v));
        let (_, axes) = principal_axes(&both, dim, r).ok_or(AnnError::Svd)?;
        if !axes.iter().chain(&mean).all(|v| v.is_finite()) {
            return Err(AnnError::Svd);
        }
        Ok(Projection { mean, axes, dim })
    }

    /// The projection that keeps rows and queries as they are (`dim >= 1`
    /// wide).
    pub fn identity(dim: usize) -> Projection {
        Projection {
            mean: vec![0.0; dim],
            axes: Vec::new(),
            dim,
        }
    }

    /// Whether this is the identity.
    pub fn is_identity(&self) -> bool {
        self.axes.is_empty()
    }

    /// Reassembles a projection from its mean (`[dim]`) and axes
    /// (`[r, dim]`), as [`Projection::mean`] and [`Projection::axes`] give
    /// them; no axes and a zero mean give the identity.
    pub fn from_parts(mean: Vec<f32>, axes: Vec<f32>) -> Result<Projection, AnnError> {
        let dim = mean.len();
        let r = crate::check_rows(&axes, dim)?;
        crate::check_rows(&mean, dim)?;
        if dim == 0 {
            return Err(AnnError::Parts("a projection needs a width".into()));
        }
        if r == 0 && mean.iter().any(|&m| m != 0.0) {
            return Err(AnnError::Parts(
                "a projection without axes (the identity) has a zero mean".into(),
            ));
        }
        Ok(Projection { mean, axes, dim })
    }

    /// Input width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Output width: `r`, or `dim` for the identity.
    pub fn out_dim(&self) -> usize {
        if self.is_identity() {
            self.dim
        } else {
            self.axes.len() / self.dim
        }
    }

    /// The mean subtracted from rows.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The axes, `[r, dim]` row-major (none for the identity).
    pub fn axes(&self) -> &[f32] {
        &self.axes
    }

    /// `(rows - mean) A^T`, `[n, r]`, on the current rayon pool.
    ///
    /// # Panics
    ///
    /// If `rows` is not whole rows of width `dim()`.
    #[track_caller]
    pub fn project_rows(&self, rows: &[f32]) -> Vec<f32> {
        assert!(rows.len().is_multiple_of(self.dim), "rows width");
        if self.is_identity() {
            return rows.to_vec();
        }
        let (dim, r) = (self.dim, self.out_dim());
        let mut out = vec![0.0f32; rows.len() / dim * r];
        out.par_chunks_mut(PROJECT_BLOCK * r)
            .zip(rows.par_chunks(PROJECT_BLOCK * dim))
            .for_each(|(out, block)| {
                let mut centred = block.to_vec();
                for row in centred.chunks_exact_mut(dim) {
                    row.iter_mut().zip(&self.mean).for_each(|(v, m)| *v -= m);
                }
                matmul_a_bt(out, &centred, &self.axes, block.len() / dim, dim, r);
            });
        out
    }

    /// `queries A^T`, `[n, r]`, sequential: scores in the subspace then
    /// differ from the centred rows' by the same constant for every row.
    ///
    /// # Panics
    ///
    /// If `queries` is not whole rows of width `dim()`.
    #[track_caller]
    pub fn project_queries(&self, queries: &[f32]) -> Vec<f32> {
        assert!(queries.len().is_multiple_of(self.dim), "queries width");
        if self.is_identity() {
            return queries.to_vec();
        }
        let (dim, r) = (self.dim, self.out_dim());
        let n = queries.len() / dim;
        let mut out = vec![0.0f32; n * r];
        matmul_a_bt(&mut out, queries, &self.axes, n, dim, r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projected_scores_keep_the_ranking_of_rows_in_the_subspace() {
        // Rows that vary only along two directions of a 6-wide space:
        // two axes keep every score difference exactly.
        let (u, v) = (
            [1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        );
        let offset = [0.5, -0.25, 1.0, 2.0, 0.0, -1.0];
        let mut rows = Vec::new();
        for i in 0..40 {
            let (a, b) = ((i % 7) as f32 - 3.0, (i % 5) as f32 * 0.5 - 1.0);
            rows.extend((0..6).map(|k| offset[k] + a * u[k] + b * v[k]));
        }
        let projection = Projection::fit(&rows, 6, 2).unwrap();
        let query = [0.3, -1.0, 2.0, 0.7, 0.1, -0.4];
        let projected_rows = projection.project_rows(&rows);
        let projected_query = projection.project_queries(&query);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let full: Vec<f32> = rows.chunks_exact(6).map(|r| dot(r, &query)).collect();
        let reduced: Vec<f32> = projected_rows
            .chunks_exact(2)
            .map(|r| dot(r, &projected_query))
            .collect();
        let shift = full[0] - reduced[0];
        for (f, r) in full.iter().zip(&reduced) {
            assert!((f - r - shift).abs() < 1e-3, "{f} vs {r} + {shift}");
        }
    }

    #[test]
    fn axes_fitted_to_queries_keep_their_scores_where_the_rows_axes_lose_them() {
        // Rows vary widely along u and a little along v; queries point
        // along v and w (a direction the rows share): the rows' leading
        // axis (u) loses every score difference, the queries' two keep them.
        let (u, v, w) = (
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0, 0.0],
        );
        let mut rows = Vec::new();
        for i in 0..50 {
            let (a, b) = ((i % 9) as f32 * 10.0 - 40.0, (i % 7) as f32 * 0.1 - 0.3);
            rows.extend((0..5).map(|k| a * u[k] + b * v[k] + 0.5 * w[k]));
        }
        let queries: Vec<f32> = (0..8)
            .flat_map(|i| {
                let (c, e) = (1.0 + i as f32 * 0.25, 0.5 - i as f32 * 0.1);
                (0..5).map(move |k| c * v[k] + e * w[k])
            })
            .collect();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let spread = |projection: &Projection| -> f32 {
            // The largest error of the projected score differences of one
            // query against the true ones.
            let query = &queries[..5];
            let projected = projection.project_rows(&rows);
            let q = projection.project_queries(query);
            let r = projection.out_dim();
            let reduced: Vec<f32> = projected.chunks_exact(r).map(|row| dot(row, &q)).collect();
            let exact: Vec<f32> = rows.chunks_exact(5).map(|row| dot(row, query)).collect();
            let shift = exact[0] - reduced[0];
            exact
                .iter()
                .zip(&reduced)
                .map(|(e, r)| (e - r - shift).abs())
                .fold(0.0, f32::max)
        };
        let fitted = Projection::fit_to_queries(&rows, &queries, 5, 2).unwrap();
        assert!(spread(&fitted) < 1e-3, "{}", spread(&fitted));
        let of_rows = Projection::fit(&rows, 5, 1).unwrap();
        assert!(spread(&of_rows) > 0.1);
        assert!(matches!(
            Projection::fit_to_queries(&rows, &[], 5, 2),
            Err(AnnError::TooFewRows { .. })
        ));
        assert!(matches!(
            Projection::fit_to_queries(&rows, &queries, 5, 6),
            Err(AnnError::Config(_))
        ));
    }

    #[test]
    fn bad_shapes_and_axis_counts_are_errors() {
        assert!(matches!(
            Projection::fit(&[1.0; 7], 3, 1),
            Err(AnnError::Shape { .. })
        ));
        assert!(matches!(
            Projection::fit(&[1.0; 6], 3, 4),
            Err(AnnError::Config(_))
        ));
        assert!(matches!(
            Projection::fit(&[], 3, 1),
            Err(AnnError::TooFewRows { .. })
        ));
        assert!(matches!(
            Projection::fit(&[1.0, f32::NAN, 0.0], 3, 1),
            Err(AnnError::NonFinite { row: 0 })
        ));
        assert!(Projection::from_parts(vec![0.0; 3], vec![1.0; 4]).is_err());
        assert!(Projection::from_parts(vec![0.0, 1.0, 0.0], Vec::new()).is_err());
        assert!(Projection::from_parts(Vec::new(), Vec::new()).is_err());
    }

    #[test]
    fn the_identity_keeps_rows_and_queries_and_round_trips() {
        let identity = Projection::identity(3);
        let rows = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0];
        assert_eq!(identity.project_rows(&rows), rows);
        assert_eq!(identity.project_queries(&rows[..3]), &rows[..3]);
        assert_eq!((identity.out_dim(), identity.dim()), (3, 3));
        let again =
            Projection::from_parts(identity.mean().to_vec(), identity.axes().to_vec()).unwrap();
        assert!(again.is_identity());
        assert_eq!(again, identity);
    }
}
