//! The per-document weight matrix `W`.

use crate::error::IndexError;

/// Document weights `W`: one row of `width` values per document, row-major,
/// all finite. Candidate scores are `f W^T`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocWeights {
    values: Vec<f32>,
    n_docs: usize,
    width: usize,
}

impl DocWeights {
    /// Validates a row-major `[n_docs, width]` matrix.
    pub fn new(values: Vec<f32>, n_docs: usize, width: usize) -> Result<DocWeights, IndexError> {
        if width == 0 || n_docs.checked_mul(width) != Some(values.len()) {
            return Err(IndexError::WeightShape {
                len: values.len(),
                n_docs,
                width,
            });
        }
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(IndexError::NonFiniteWeight {
                row: pos / width,
                col: pos % width,
                value: values[pos],
            });
        }
        Ok(DocWeights {
            values,
            n_docs,
            width,
        })
    }

    /// Rows (documents).
    pub fn n_docs(&self) -> usize {
        self.n_docs
    }

    /// Columns (the feature width `h`).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The row-major values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Appends validated rows of the same width.
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append(&mut self, rows: &DocWeights) {
        assert_eq!(self.width, rows.width, "appending rows of another width");
        self.values.extend_from_slice(&rows.values);
        self.n_docs += rows.n_docs;
    }

    /// Row `doc`.
    ///
    /// # Panics
    ///
    /// If `doc >= n_docs()`.
    #[track_caller]
    pub fn row(&self, doc: usize) -> &[f32] {
        &self.values[doc * self.width..(doc + 1) * self.width]
    }
}
