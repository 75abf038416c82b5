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
//!
//! With a bf16 or int8 filter (`token_filter.rs`) every pair is scored on
//! the reduced tokens this way, and the pairs that survive its bound are
//! scored again in f32.

use lemur_io::MappedF32;
use lemur_maxsim::bf16::{Bf16Vectors, PackedQueryBf16, maxsim_bf16_before};
use lemur_maxsim::int8::{Int8Vectors, PackedQueryInt8, int8_accelerated, maxsim_int8_before};
use lemur_maxsim::{
    MultiVectors, PackedQuery, QuantizedVectors, maxsim_packed_before, prefetch_to_l2,
};
use lemur_topk::rank_order;
use rayon::prelude::*;

use crate::index::{Hit, Index};
use crate::pairs::{PairCost, PairsByDocument};
use crate::precision::ReducedTokens;
use crate::token_filter::{self, TokenBounds};

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
        if let Some(compressed) = &self.compressed
            && let Some(tokens) = &compressed.tokens
        {
            let scores = self.score_pairs_quantized(queries, &pairs, tokens);
            let depth = compressed.rescore_depth.max(k);
            let file = compressed.f32_tokens.as_deref();
            return into_hits(
                self.rescore_leaders(queries, candidates, &pairs, &scores, depth, k, file),
            );
        }
        let reduced = self
            .reduced
            .as_ref()
            .and_then(|copies| copies.tokens.as_ref())
            // Without VNNI the int8 pass costs more than f32 itself, and
            // the filter's hits are the f32 rerank's anyway.
            .filter(|tokens| {
                !matches!(tokens, ReducedTokens::Int8Filter(..)) || int8_accelerated(self.isa)
            });
        let hits = match reduced {
            None => {
                let scores = self.score_pairs_f32(queries, &pairs);
                pairs.top_per_list(candidates, &scores, k)
            }
            Some(ReducedTokens::Bf16(tokens)) => {
                let scores = self.score_pairs_bf16(queries, &pairs, tokens);
                pairs.top_per_list(candidates, &scores, k)
            }
            Some(ReducedTokens::Bf16Filter(tokens, bounds)) => {
                let scores = self.score_pairs_bf16(queries, &pairs, tokens);
                self.rerank_survivors(queries, candidates, &pairs, bounds, &scores, k)
            }
            Some(ReducedTokens::Int8Filter(tokens, bounds)) => {
                let scores = self.score_pairs_int8(queries, &pairs, tokens);
                self.rerank_survivors(queries, candidates, &pairs, bounds, &scores, k)
            }
        };
        into_hits(hits)
    }

    /// The `k` best of each query's candidates by f32 score among its
    /// `depth` leaders by `compressed_scores` (one per pair): the leaders
    /// are scored again on their f32 tokens, the only f32 tokens a
    /// compressed index reads (from `file` when it was opened from disk).
    #[allow(clippy::too_many_arguments)]
    fn rescore_leaders<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        candidates: &[C],
        pairs: &PairsByDocument,
        compressed_scores: &[f32],
        depth: usize,
        k: usize,
        file: Option<&MappedF32>,
    ) -> Vec<Vec<lemur_topk::Hit>> {
        let leaders: Vec<Vec<u32>> = pairs
            .top_per_list(candidates, compressed_scores, depth)
            .into_iter()
            .map(|hits| hits.into_iter().map(|hit| hit.id).collect())
            .collect();
        let scores = match file {
            Some(file) => self.score_lists_read(queries, &leaders, file),
            None => self.score_lists_f32(queries, &leaders),
        };
        let mut rest = scores.as_slice();
        leaders
            .iter()
            .map(|list| {
                let (these, after) = rest.split_at(list.len());
                rest = after;
                let mut hits: Vec<lemur_topk::Hit> = list
                    .iter()
                    .zip(these)
                    .map(|(&id, &score)| lemur_topk::Hit { id, score })
                    .collect();
                hits.sort_by(rank_order);
                hits.truncate(k);
                hits
            })
            .collect()
    }

    /// The `k` best of each query's candidates by f32 score, given every
    /// pair's score on a filter's reduced tokens: the `k` leaders by reduced
    /// score are scored in f32, then only the candidates the filter's bound
    /// and their scores cannot rule out (`token_filter.rs`).
    fn rerank_survivors<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        candidates: &[C],
        pairs: &PairsByDocument,
        bounds: &TokenBounds,
        reduced_scores: &[f32],
        k: usize,
    ) -> Vec<Vec<lemur_topk::Hit>> {
        let ranges = token_filter::ranges(bounds, queries, candidates, pairs, reduced_scores);
        let positions = token_filter::leaders(&ranges, k);
        let leaders = token_filter::documents_at(&ranges, &positions);
        let leader_scores = self.score_lists_f32(queries, &leaders);
        let survivors = token_filter::survivors(&ranges, &positions, &leader_scores, k);
        let survivor_scores = self.score_lists_f32(queries, &survivors);
        token_filter::best_of(&leaders, &leader_scores, &survivors, &survivor_scores, k)
    }

    /// Exact MaxSim of each query against each document of its list, in
    /// document order, returned query-major in list order.
    fn score_lists_f32<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        lists: &[Vec<u32>],
    ) -> Vec<f32> {
        let pairs = PairsByDocument::new(lists, self.len());
        pairs.by_slot(&self.score_pairs_f32(queries, &pairs))
    }

    /// [`Index::score_lists_f32`] with each document's f32 tokens read
    /// from `file` (the corpus's token file) by one positional read; a
    /// read that fails takes the same bytes through the memory map.
    fn score_lists_read<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        lists: &[Vec<u32>],
        file: &MappedF32,
    ) -> Vec<f32> {
        let pairs = PairsByDocument::new(lists, self.len());
        let (dim, offsets) = (self.dim(), self.corpus.offsets());
        // Every document's read starts now; the reads below then wait for
        // the slowest of them rather than for each in turn.
        for (i, &doc) in pairs.docs.iter().enumerate() {
            if i == 0 || pairs.docs[i - 1] != doc {
                let doc = doc as usize;
                file.will_need(offsets[doc] * dim, (offsets[doc + 1] - offsets[doc]) * dim);
            }
        }
        let packed = self.packed_queries(queries);
        let scores = pairs.score_runs(PairCost::MaxSim, |run, out| {
            let mut tokens = Vec::new();
            let mut current = None;
            for (i, out) in run.zip(out) {
                let doc = pairs.docs[i] as usize;
                if current != Some(doc) {
                    tokens.resize((offsets[doc + 1] - offsets[doc]) * dim, 0.0);
                    if file.read_into(offsets[doc] * dim, &mut tokens).is_err() {
                        tokens.copy_from_slice(self.corpus.get(doc));
                    }
                    current = Some(doc);
                }
                let query = &packed[pairs.queries[i] as usize];
                *out = maxsim_packed_before(self.isa, query, &tokens, &[]);
            }
        });
        pairs.by_slot(&scores)
    }

    /// Every query packed for the f32 kernel (cheap next to scoring).
    fn packed_queries<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
    ) -> Vec<PackedQuery> {
        (0..queries.len())
            .into_par_iter()
            .map(|q| PackedQuery::new(queries.get(q), self.dim()))
            .collect()
    }

    /// Exact MaxSim of every pair on the f32 tokens, in the pairs'
    /// (document) order.
    fn score_pairs_f32<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        pairs: &PairsByDocument,
    ) -> Vec<f32> {
        let packed = self.packed_queries(queries);
        score_in_document_order(pairs, |query, doc, next| {
            let next = match next {
                Some((_, next_doc)) if next_doc != doc => self.corpus.get(next_doc as usize),
                Some((next_query, _)) => packed[next_query as usize].values(),
                None => &[],
            };
            let doc = self.corpus.get(doc as usize);
            maxsim_packed_before(self.isa, &packed[query as usize], doc, next)
        })
    }

    /// MaxSim of every pair on the bf16 tokens, in the pairs' (document)
    /// order.
    fn score_pairs_bf16<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        pairs: &PairsByDocument,
        tokens: &Bf16Vectors,
    ) -> Vec<f32> {
        let packed: Vec<PackedQueryBf16> = (0..queries.len())
            .into_par_iter()
            .map(|q| PackedQueryBf16::new(queries.get(q), self.dim()).with_isa(self.isa))
            .collect();
        score_in_document_order(pairs, |query, doc, next| {
            let next = match next {
                Some((_, next_doc)) if next_doc != doc => tokens.get(next_doc as usize),
                Some((next_query, _)) => packed[next_query as usize].values(),
                None => &[],
            };
            maxsim_bf16_before(&packed[query as usize], tokens.get(doc as usize), next)
        })
    }

    /// MaxSim of every pair on the decoded tokens of a compressed index,
    /// in the pairs' (document) order: each document is decoded once per
    /// run of its pairs, and the next one's codes are fetched meanwhile.
    fn score_pairs_quantized<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        pairs: &PairsByDocument,
        tokens: &QuantizedVectors,
    ) -> Vec<f32> {
        let packed = self.packed_queries(queries);
        pairs.score_runs(PairCost::MaxSim, |run, out| {
            let mut decoded = Vec::new();
            let mut current = None;
            for (i, out) in run.zip(out) {
                let doc = pairs.docs[i];
                if current != Some(doc) {
                    if let Some(&next) = pairs.docs.get(i + 1)
                        && next != doc
                    {
                        prefetch_to_l2(tokens.set_codes(next as usize));
                    }
                    tokens.decode_into(self.isa, doc as usize, &mut decoded);
                    current = Some(doc);
                }
                let query = &packed[pairs.queries[i] as usize];
                *out = maxsim_packed_before(self.isa, query, &decoded, &[]);
            }
        })
    }

    /// MaxSim of every pair on the int8 tokens, in the pairs' (document)
    /// order.
    fn score_pairs_int8<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        pairs: &PairsByDocument,
        tokens: &Int8Vectors,
    ) -> Vec<f32> {
        let packed: Vec<PackedQueryInt8> = (0..queries.len())
            .into_par_iter()
            .map(|q| PackedQueryInt8::new(queries.get(q), self.dim()).with_isa(self.isa))
            .collect();
        score_in_document_order(pairs, |query, doc, next| {
            let next = match next {
                Some((_, next_doc)) if next_doc != doc => tokens.get(next_doc as usize).words,
                Some((next_query, _)) => packed[next_query as usize].values(),
                None => &[],
            };
            maxsim_int8_before(&packed[query as usize], tokens.get(doc as usize), next)
        })
    }
}

/// Ids and scores as the index's hits.
fn into_hits(hits: Vec<Vec<lemur_topk::Hit>>) -> Vec<Vec<Hit>> {
    hits.into_iter()
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

/// `score(query, doc, next)` of every pair, in tasks spread over the
/// current pool, where `next` is the (query, document) of the pair after
/// it in document order: what comes next is streamed in while a pair is
/// scored, a new document or else the next query against this document
/// (which is in the cache).
fn score_in_document_order(
    pairs: &PairsByDocument,
    score: impl Fn(u32, u32, Option<(u32, u32)>) -> f32 + Sync,
) -> Vec<f32> {
    pairs.score_runs(PairCost::MaxSim, |run, out| {
        for (i, out) in run.zip(out) {
            let next = pairs
                .docs
                .get(i + 1)
                .map(|&doc| (pairs.queries[i + 1], doc));
            *out = score(pairs.queries[i], pairs.docs[i], next);
        }
    })
}
