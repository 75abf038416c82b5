//! The per-document weight matrix `W`.

use std::sync::Arc;

use lemur_io::MappedF32;

use crate::error::IndexError;

/// Document weights `W`: one row of `width` values per document, row-major,
/// all finite. Candidate scores are `f W^T`.
#[derive(Debug, Clone)]
pub struct DocWeights {
    values: Values,
    n_docs: usize,
    width: usize,
}

/// Where the rows live: in memory, or memory-mapped from an index
/// directory (a compressed index, which reads its f32 `W` rarely).
#[derive(Debug, Clone)]
enum Values {
    Owned(Vec<f32>),
    Mapped(Arc<MappedF32>),
}

impl PartialEq for DocWeights {
    fn eq(&self, other: &Self) -> bool {
        self.width == other.width && self.values() == other.values()
    }
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
            values: Values::Owned(values),
            n_docs,
            width,
        })
    }

    /// A memory-mapped `[n_docs, width]` matrix. Only its shape is
    /// checked here: the values are read from disk when used, and a
    /// store's checksum (verified by [`crate::Index::open_verified`]) is
    /// what vouches for them, as for the memory-mapped tokens.
    pub fn mapped(
        values: MappedF32,
        n_docs: usize,
        width: usize,
    ) -> Result<DocWeights, IndexError> {
        let len = values.as_ref().len();
        if width == 0 || n_docs.checked_mul(width) != Some(len) {
            return Err(IndexError::WeightShape { len, n_docs, width });
        }
        Ok(DocWeights {
            values: Values::Mapped(Arc::new(values)),
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
        match &self.values {
            Values::Owned(values) => values,
            Values::Mapped(values) => values.as_ref().as_ref(),
        }
    }

    /// Appends validated rows of the same width (a mapped matrix is read
    /// into memory first).
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append(&mut self, rows: &DocWeights) {
        assert_eq!(self.width, rows.width, "appending rows of another width");
        if let Values::Mapped(mapped) = &self.values {
            self.values = Values::Owned(mapped.as_ref().as_ref().to_vec());
        }
        if let Values::Owned(values) = &mut self.values {
            values.extend_from_slice(rows.values());
        }
        self.n_docs += rows.n_docs;
    }

    /// Row `doc`.
    ///
    /// # Panics
    ///
    /// If `doc >= n_docs()`.
    #[track_caller]
    pub fn row(&self, doc: usize) -> &[f32] {
        &self.values()[doc * self.width..(doc + 1) * self.width]
    }
}
