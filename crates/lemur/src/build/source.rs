//! Where a streamed build ([`crate::IndexBuilder::build_into`]) reads its
//! documents from: a block at a time, so the corpus is never in memory
//! whole.

use std::ops::Range;

use lemur_maxsim::{MultiVectorError, MultiVectors};

use crate::synthetic::StreamedCorpus;

/// A corpus read a block of documents at a time: an in-memory or
/// memory-mapped [`MultiVectors`], a generator ([`StreamedCorpus`]), or
/// anything else that can hand out documents by position.
pub trait DocumentSource: Sync {
    /// Documents in the corpus.
    fn len(&self) -> usize;

    /// Whether the corpus has no documents.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token width.
    fn dim(&self) -> usize;

    /// Documents `range` (within `0..len()`), validated: every document
    /// has tokens, every value is finite.
    fn documents(&self, range: Range<usize>) -> Result<MultiVectors, MultiVectorError>;

    /// The documents `ids` (each below `len()`), in that order.
    fn gather(&self, ids: &[usize]) -> Result<MultiVectors, MultiVectorError> {
        let mut tokens = Vec::new();
        let mut counts = Vec::with_capacity(ids.len());
        for &id in ids {
            let document = self.documents(id..id + 1)?;
            tokens.extend_from_slice(document.tokens());
            counts.push(document.n_tokens());
        }
        MultiVectors::new(tokens, self.dim(), &counts)
    }
}

impl<T: AsRef<[f32]> + Sync> DocumentSource for MultiVectors<T> {
    fn len(&self) -> usize {
        MultiVectors::len(self)
    }

    fn dim(&self) -> usize {
        MultiVectors::dim(self)
    }

    fn documents(&self, range: Range<usize>) -> Result<MultiVectors, MultiVectorError> {
        let (dim, offsets) = (MultiVectors::dim(self), self.offsets());
        let tokens = &self.tokens()[offsets[range.start] * dim..offsets[range.end] * dim];
        let counts: Vec<usize> = offsets[range.start..=range.end]
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .collect();
        MultiVectors::new(tokens.to_vec(), dim, &counts)
    }
}

impl DocumentSource for StreamedCorpus {
    fn len(&self) -> usize {
        StreamedCorpus::len(self)
    }

    fn dim(&self) -> usize {
        self.spec().dim
    }

    fn documents(&self, range: Range<usize>) -> Result<MultiVectors, MultiVectorError> {
        Ok(self.chunk(range))
    }

    fn gather(&self, ids: &[usize]) -> Result<MultiVectors, MultiVectorError> {
        let mut tokens = Vec::new();
        let counts: Vec<usize> = ids
            .iter()
            .map(|&id| self.document(id, &mut tokens))
            .collect();
        MultiVectors::new(tokens, self.dim(), &counts)
    }
}
