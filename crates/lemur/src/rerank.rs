//! Stages 4 and 5: exact MaxSim of each query against its candidates, in
//! document order.
//!
//! A batch's candidate lists overlap: on W10k, 1000 queries x 200
//! candidates name each document about 20 times. Scoring query by query
//! reads a document from memory once per query that names it, and with
//! two threads the rerank is then bound by memory bandwidth, not FMAs. So
//! every (query, candidate) pair is sorted by document, each document is
//! read once and scored against all its queries while it sits in the
//! cache, and the scores go back to their query's slots at the end.

use lemur_maxsim::bf16::{PackedQueryBf16, maxsim_bf16_before};
use lemur_maxsim::{MultiVectors, PackedQuery, maxsim_packed_before};
use rayon::prelude::*;

use crate::index::{Hit, Index};
use crate::pairs::PairsByDocument;

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Stages 4 and 5: exact MaxSim of each query against its candidates,
    /// keeping the best `k` (best first, ties to the lower id). The pairs
    /// are scored in document order, in tasks spread over the current pool,
    /// so each document is read once per batch and one query alone still
    /// uses every thread.
    ///
    /// # Panics
    ///
    /// If `candidates` does not have one list per query or names a document
    /// outside the corpus.
    #[track_caller]
    pub fn rerank<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        candidates: &[C],
        k: usize,
    ) -> Vec<Vec<Hit>> {
        assert_eq!(
            queries.len(),
            candidates.len(),
            "one candidate list per query"
        );
        assert_eq!(queries.dim(), self.dim(), "query width");
        assert!(
            candidates
                .iter()
                .flat_map(|list| list.as_ref())
                .all(|&doc| (doc as usize) < self.len()),
            "a candidate names a document outside the corpus"
        );
        let pairs = PairsByDocument::new(candidates, self.len());
        let scores = self.score_pairs(queries, &pairs);
        pairs
            .top_per_list(candidates, &scores, k)
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|hit| Hit {
                        doc: hit.id,
                        score: hit.score,
                    })
                    .collect()
            })
            .collect()
    }

    /// Exact MaxSim of every pair, in the pairs' (document) order, on the
    /// f32 tokens or on their bf16 copy when the index has one.
    fn score_pairs<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        pairs: &PairsByDocument,
    ) -> Vec<f32> {
        let dim = self.dim();
        let mut scores = vec![0.0f32; pairs.slots.len()];
        let task = pairs.task_size();
        let tasks = scores
            .par_chunks_mut(task)
            .zip(pairs.queries.par_chunks(task))
            .zip(pairs.docs.par_chunks(task));
        let bf16_tokens = self
            .reduced
            .as_ref()
            .and_then(|copies| copies.tokens.as_ref());
        // Query packing is cheap next to scoring; only the kind the rerank
        // uses is built.
        match bf16_tokens {
            None => {
                let packed: Vec<PackedQuery> = (0..queries.len())
                    .into_par_iter()
                    .map(|q| PackedQuery::new(queries.get(q), dim))
                    .collect();
                tasks.for_each(|((out, task_queries), task_docs)| {
                    for (i, score) in out.iter_mut().enumerate() {
                        let doc = task_docs[i];
                        // What comes next is streamed in while this pair is
                        // scored: a new document, or else the next query
                        // against this document, which is in the cache.
                        let next = match task_docs.get(i + 1) {
                            Some(&next) if next != doc => self.corpus.get(next as usize),
                            Some(_) => packed[task_queries[i + 1] as usize].values(),
                            None => &[],
                        };
                        let query = &packed[task_queries[i] as usize];
                        *score = maxsim_packed_before(
                            self.isa,
                            query,
                            self.corpus.get(doc as usize),
                            next,
                        );
                    }
                });
            }
            Some(tokens) => {
                let packed: Vec<PackedQueryBf16> = (0..queries.len())
                    .into_par_iter()
                    .map(|q| PackedQueryBf16::new(queries.get(q), dim).with_isa(self.isa))
                    .collect();
                tasks.for_each(|((out, task_queries), task_docs)| {
                    for (i, score) in out.iter_mut().enumerate() {
                        let doc = task_docs[i];
                        let next = match task_docs.get(i + 1) {
                            Some(&next) if next != doc => tokens.get(next as usize),
                            Some(_) => packed[task_queries[i + 1] as usize].values(),
                            None => &[],
                        };
                        let query = &packed[task_queries[i] as usize];
                        *score = maxsim_bf16_before(query, tokens.get(doc as usize), next);
                    }
                });
            }
        }
        scores
    }
}
