//! Ragged sets of token vectors: the corpus and query storage format.

use thiserror::Error;

use crate::{AlignedVec, Pages};

/// Why a ragged token set was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MultiVectorError {
    /// The token width was 0.
    #[error("token width (dim) must be at least 1")]
    ZeroDim,
    /// The flat token buffer is not a whole number of `dim`-wide rows.
    #[error("{len} token values are not a whole number of rows of width {dim}")]
    RaggedRows {
        /// Length of the flat buffer.
        len: usize,
        /// The token width.
        dim: usize,
    },
    /// The per-set counts do not add up to the number of token rows.
    #[error("counts add up to {sum} tokens but there are {rows} token rows")]
    CountsMismatch {
        /// Sum of the counts.
        sum: u128,
        /// Rows in the token matrix.
        rows: usize,
    },
    /// A set (document or query) has no tokens.
    #[error("set {index} has 0 tokens; every document and query needs at least one")]
    EmptySet {
        /// Position of the empty set.
        index: usize,
    },
    /// A token value is NaN or infinite.
    #[error("token row {row}, column {col} is {value} (not finite)")]
    NonFinite {
        /// Token row.
        row: usize,
        /// Column within the row.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// More sets than a `u32` id can name.
    #[error("{count} sets exceed the u32 id space")]
    TooManySets {
        /// Number of sets.
        count: usize,
    },
}

/// A validated ragged collection of token-vector sets (documents or queries).
///
/// Storage is one flat row-major `[n_tokens, dim]` buffer plus `usize`
/// offsets (never `i32`: corpora past 2^31 tokens are fine). The buffer type
/// is generic so the same validated view works over a `Vec<f32>`, a borrowed
/// slice or a memory map.
///
/// Invariants, checked once by [`MultiVectors::new`]: `dim >= 1`; the buffer
/// is `n_tokens * dim` long; every set has at least one token; every value
/// is finite; there are at most `u32::MAX` sets.
#[derive(Debug, Clone)]
pub struct MultiVectors<T = Vec<f32>> {
    tokens: T,
    dim: usize,
    offsets: Vec<usize>,
}

impl<T: AsRef<[f32]>> MultiVectors<T> {
    /// Validates `tokens` (`[sum(counts), dim]`, row-major) and `counts`
    /// (tokens per set, in order).
    pub fn new(tokens: T, dim: usize, counts: &[usize]) -> Result<Self, MultiVectorError> {
        if dim == 0 {
            return Err(MultiVectorError::ZeroDim);
        }
        let values = tokens.as_ref();
        if !values.len().is_multiple_of(dim) {
            return Err(MultiVectorError::RaggedRows {
                len: values.len(),
                dim,
            });
        }
        let rows = values.len() / dim;
        let sum: u128 = counts.iter().map(|&c| c as u128).sum();
        if sum != rows as u128 {
            return Err(MultiVectorError::CountsMismatch { sum, rows });
        }
        if counts.len() > u32::MAX as usize {
            return Err(MultiVectorError::TooManySets {
                count: counts.len(),
            });
        }
        if let Some(index) = counts.iter().position(|&c| c == 0) {
            return Err(MultiVectorError::EmptySet { index });
        }
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(MultiVectorError::NonFinite {
                row: pos / dim,
                col: pos % dim,
                value: values[pos],
            });
        }
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut end = 0usize;
        offsets.push(0);
        for &count in counts {
            end += count;
            offsets.push(end);
        }
        Ok(Self {
            tokens,
            dim,
            offsets,
        })
    }

    /// Wraps `tokens` with explicit row offsets (`offsets[0] = 0`, one more
    /// than the number of sets, strictly increasing, ending at the token
    /// rows), checking the structure but **not** scanning the values.
    ///
    /// For memory-mapped corpora whose contents are covered by a checksum
    /// checked separately: opening stays O(number of sets) and never
    /// touches the token pages. A non-finite value can only make scores
    /// wrong, never cause undefined behaviour.
    pub fn with_offsets(
        tokens: T,
        dim: usize,
        offsets: Vec<usize>,
    ) -> Result<Self, MultiVectorError> {
        if dim == 0 {
            return Err(MultiVectorError::ZeroDim);
        }
        let len = tokens.as_ref().len();
        if !len.is_multiple_of(dim) {
            return Err(MultiVectorError::RaggedRows { len, dim });
        }
        let rows = len / dim;
        if offsets.first() != Some(&0) || offsets.last() != Some(&rows) {
            return Err(MultiVectorError::CountsMismatch {
                sum: offsets.last().copied().unwrap_or(0) as u128,
                rows,
            });
        }
        if offsets.len() - 1 > u32::MAX as usize {
            return Err(MultiVectorError::TooManySets {
                count: offsets.len() - 1,
            });
        }
        if let Some(index) = offsets.windows(2).position(|w| w[1] <= w[0]) {
            return Err(MultiVectorError::EmptySet { index });
        }
        Ok(Self {
            tokens,
            dim,
            offsets,
        })
    }

    /// Number of sets (documents or queries).
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no sets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Total token rows over all sets.
    pub fn n_tokens(&self) -> usize {
        self.offsets[self.len()]
    }

    /// The flat `[n_tokens, dim]` buffer.
    pub fn tokens(&self) -> &[f32] {
        self.tokens.as_ref()
    }

    /// Token-row offsets, `len() + 1` long: set `i` is rows
    /// `offsets[i]..offsets[i + 1]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Number of tokens in set `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    #[track_caller]
    pub fn token_count(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    /// Set `i` as a flat `[token_count(i), dim]` slice.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    #[track_caller]
    #[inline]
    pub fn get(&self, i: usize) -> &[f32] {
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        &self.tokens.as_ref()[start * self.dim..end * self.dim]
    }

    /// Tokens per set, in order.
    pub fn counts(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.offsets.windows(2).map(|w| w[1] - w[0])
    }

    /// The underlying buffer, giving up the validated view.
    pub fn into_tokens(self) -> T {
        self.tokens
    }

    /// The same sets with their tokens copied into an [`AlignedVec`] in
    /// `pages` (already validated, so not checked again): with
    /// [`Pages::Huge`], a large corpus that one or a
    /// few short queries at a time scan from memory streams faster.
    pub fn to_aligned(&self, pages: Pages) -> MultiVectors<AlignedVec<f32>> {
        MultiVectors {
            tokens: AlignedVec::from_slice_in(self.tokens(), pages),
            dim: self.dim,
            offsets: self.offsets.clone(),
        }
    }
}

/// Token storage that grows at its end: what [`MultiVectors::append`]
/// needs (and, above this crate, adding documents to an index).
pub trait GrowableTokens: AsRef<[f32]> {
    /// Appends `values` after the existing ones.
    fn extend_from_slice(&mut self, values: &[f32]);
}

impl GrowableTokens for Vec<f32> {
    fn extend_from_slice(&mut self, values: &[f32]) {
        Vec::extend_from_slice(self, values);
    }
}

impl GrowableTokens for AlignedVec<f32> {
    fn extend_from_slice(&mut self, values: &[f32]) {
        AlignedVec::extend_from_slice(self, values);
    }
}

impl<T: GrowableTokens> MultiVectors<T> {
    /// Appends every set of `other` (same width) after the existing ones.
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append<U: AsRef<[f32]>>(
        &mut self,
        other: &MultiVectors<U>,
    ) -> Result<(), MultiVectorError> {
        assert_eq!(self.dim, other.dim(), "appending sets of another width");
        let count = self.len() + other.len();
        if count > u32::MAX as usize {
            return Err(MultiVectorError::TooManySets { count });
        }
        let base = self.n_tokens();
        self.tokens.extend_from_slice(other.tokens());
        self.offsets
            .extend(other.offsets()[1..].iter().map(|o| base + o));
        Ok(())
    }
}
