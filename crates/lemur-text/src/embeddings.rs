//! A dense row-major matrix of embeddings.

/// `len()` embeddings of `dim()` values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    values: Vec<f32>,
    dim: usize,
}

impl Embeddings {
    pub(crate) fn new(values: Vec<f32>, dim: usize) -> Self {
        debug_assert!(dim > 0 && values.len().is_multiple_of(dim));
        Embeddings { values, dim }
    }

    /// Number of embeddings.
    pub fn len(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Values per embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embedding `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Every embedding, row-major `[len, dim]`.
    pub fn as_slice(&self) -> &[f32] {
        &self.values
    }

    /// The row-major values, `[len, dim]`.
    pub fn into_vec(self) -> Vec<f32> {
        self.values
    }
}
