//! Scoring many documents for one query, and the exact rerank.

use lemur_topk::{Hit, TopK};

use crate::kernel::{MaxSimOp, PackedQuery};
use crate::{Isa, MultiVectors};

/// Exact MaxSim of a packed query against one document (`[n, dim]`,
/// row-major, `n >= 1`).
///
/// # Panics
///
/// If the document is empty or its length is not a multiple of the query's
/// `dim`.
#[track_caller]
#[inline]
pub fn maxsim_packed(isa: Isa, query: &PackedQuery, doc: &[f32]) -> f32 {
    maxsim_packed_before(isa, query, doc, &[])
}

/// [`maxsim_packed`] that also streams `next` into the cache while `doc`
/// is scored: a line per step of the kernel, so the misses overlap the
/// arithmetic. `next` is whatever is scored after `doc`: the next document,
/// or the next query's [`PackedQuery::values`] when the same document comes
/// again; it may be empty.
///
/// # Panics
///
/// As [`maxsim_packed`].
#[track_caller]
#[inline]
pub fn maxsim_packed_before(isa: Isa, query: &PackedQuery, doc: &[f32], next: &[f32]) -> f32 {
    assert!(
        !doc.is_empty() && doc.len().is_multiple_of(query.dim()),
        "document must be a non-empty [n, dim] matrix"
    );
    isa.dispatch(MaxSimOp {
        query,
        doc,
        maxima: None,
        next,
    })
}

/// Each query token's best match in `doc`: `maxima[i] = max_c <x_i, c>`
/// (the "single-token MaxSim" LEMUR's training targets are made of).
/// Returns their sum, the MaxSim.
///
/// # Panics
///
/// If the document is empty or not `[n, dim]`, or `maxima` is not one
/// value per query token.
#[track_caller]
pub fn token_maxima(isa: Isa, query: &PackedQuery, doc: &[f32], maxima: &mut [f32]) -> f32 {
    assert!(
        !doc.is_empty() && doc.len().is_multiple_of(query.dim()),
        "document must be a non-empty [n, dim] matrix"
    );
    assert_eq!(
        maxima.len(),
        query.n_tokens(),
        "one maximum per query token"
    );
    isa.dispatch(MaxSimOp {
        query,
        doc,
        maxima: Some(maxima),
        next: &[] as &[f32],
    })
}

/// Exact MaxSim of `query` (`[q, dim]`) against `doc` (`[n, dim]`).
///
/// Packs the query on every call; to score many documents against one
/// query, pack it once with [`PackedQuery::new`] and use [`maxsim_packed`].
///
/// # Panics
///
/// If `dim == 0`, either matrix is empty, or a length is not a multiple of
/// `dim`.
#[track_caller]
pub fn maxsim(isa: Isa, query: &[f32], doc: &[f32], dim: usize) -> f32 {
    maxsim_packed(isa, &PackedQuery::new(query, dim), doc)
}

/// Writes the exact MaxSim of `query` against each candidate document into
/// `scores` (same length as `candidates`).
///
/// # Panics
///
/// If a candidate id is out of range, the lengths differ, or the widths of
/// the query and the corpus differ.
#[track_caller]
pub fn score_candidates<T: AsRef<[f32]>>(
    isa: Isa,
    query: &PackedQuery,
    corpus: &MultiVectors<T>,
    candidates: &[u32],
    scores: &mut [f32],
) {
    assert_eq!(candidates.len(), scores.len());
    assert_eq!(query.dim(), corpus.dim(), "query and corpus widths differ");
    for (i, (&doc, score)) in candidates.iter().zip(scores).enumerate() {
        let next = candidates
            .get(i + 1)
            .map_or(&[][..], |&next| corpus.get(next as usize));
        *score = maxsim_packed_before(isa, query, corpus.get(doc as usize), next);
    }
}

/// Reusable state for reranking one query after another on one thread: the
/// packed query and the top-k collector keep their memory between queries.
#[derive(Debug, Clone)]
pub struct Reranker {
    isa: Isa,
    packed: PackedQuery,
    best: TopK,
}

impl Reranker {
    /// A reranker running at `isa`.
    pub fn new(isa: Isa) -> Self {
        Self {
            isa,
            packed: PackedQuery::default(),
            best: TopK::new(0),
        }
    }

    /// The `k` candidates with the highest exact MaxSim against `query`
    /// (`[q, dim]`), best first, ties to the lower id.
    ///
    /// # Panics
    ///
    /// If `query` is empty or not `[q, corpus.dim()]`, or a candidate id is
    /// out of range.
    #[track_caller]
    pub fn rerank<T: AsRef<[f32]>>(
        &mut self,
        query: &[f32],
        corpus: &MultiVectors<T>,
        candidates: &[u32],
        k: usize,
    ) -> Vec<Hit> {
        self.packed.repack(query, corpus.dim());
        self.best.reset(k.min(candidates.len()));
        for (i, &doc) in candidates.iter().enumerate() {
            let next = candidates
                .get(i + 1)
                .map_or(&[][..], |&next| corpus.get(next as usize));
            let score =
                maxsim_packed_before(self.isa, &self.packed, corpus.get(doc as usize), next);
            self.best.push(doc, score);
        }
        self.best.drain_sorted()
    }
}
