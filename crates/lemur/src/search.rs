//! The query path: features, approximate scores and candidates; the exact
//! rerank that follows is in `rerank.rs`.
//!
//! Every stage runs on the current rayon pool (the caller picks the thread
//! count with `ThreadPool::install`), and every matrix product inside a
//! rayon task is sequential: one level of parallelism, never nested.

use lemur_maxsim::MultiVectors;
use lemur_maxsim::bf16::{Bf16Matrix, dot_products_bf16};
use lemur_maxsim::int8::{
    Int8Matrix, Int8Queries, dot_products_int8, dot_products_int8_exact, int8_accelerated,
};
use lemur_mlp::gemm::matmul_a_bt;
use lemur_topk::{TopK, rank_order};
use rayon::prelude::*;

use crate::error::SearchError;
use crate::filter::Margins;
use crate::index::{Hit, Index, SearchParams};
use crate::precision::{ReducedWeights, WeightPrecision};
use crate::shortlist::{Rows, Shortlist, Survivors, rescore};

/// Documents per scoring block: the `[queries, block]` score tile stays
/// small while each GEMM is still large enough to run at full speed.
const DOC_BLOCK: usize = 512;
/// Documents per scoring block for a handful of queries: scoring is then a
/// stream through `W`, and small blocks spread it evenly over the threads.
const SMALL_BATCH_DOC_BLOCK: usize = 256;
/// Batches below this many queries use [`SMALL_BATCH_DOC_BLOCK`].
const SMALL_BATCH: usize = 16;
/// Runs of consecutive doc blocks per thread in the fused scoring: enough
/// for rayon to balance, few enough that each run's collectors warm up.
const FOLD_RUNS_PER_THREAD: usize = 2;
/// Queries scored together; bounds the score tile for huge batches.
const QUERY_BLOCK: usize = 1024;

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Searches a batch of queries given as one flat `[n_tokens, d]` buffer
    /// plus tokens per query. Returns one list of hits per query, best
    /// first, ties to the lower document id.
    pub fn search(
        &self,
        query_tokens: &[f32],
        query_counts: &[usize],
        params: SearchParams,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        let queries = self.queries(query_tokens, query_counts)?;
        self.search_batch(&queries, params)
    }

    /// Searches one query (`[q, d]`).
    pub fn search_one(
        &self,
        query_tokens: &[f32],
        params: SearchParams,
    ) -> Result<Vec<Hit>, SearchError> {
        let count = query_tokens.len() / self.dim().max(1);
        let mut hits = self.search(query_tokens, &[count], params)?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// Searches a validated batch of queries: one GEMM for the features,
    /// blocked GEMMs with fused top-k' for the candidates, then the exact
    /// rerank spread over the pool.
    pub fn search_batch<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        params: SearchParams,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        self.check_queries(queries)?;
        let (k, n_candidates) = params.resolve(self.len())?;
        if k == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let features = self.query_features(queries);
        let candidates = self.candidates(&features, n_candidates);
        Ok(self.rerank(queries, &candidates, k))
    }

    /// Stage 1: query features `[n_queries, h]`, `f = sum_x psi(x) / 32`.
    ///
    /// # Panics
    ///
    /// If the queries' width is not the index's.
    #[track_caller]
    pub fn query_features<Q: AsRef<[f32]>>(&self, queries: &MultiVectors<Q>) -> Vec<f32> {
        assert_eq!(queries.dim(), self.dim(), "query width");
        let mut features = vec![0.0; queries.len() * self.feature_dim()];
        self.feature_map
            .query_features(queries.tokens(), queries.offsets(), &mut features, true);
        features
    }

    /// Stage 2 alone: the full approximate score matrix `f W^T`
    /// (`[n_queries, m]`), always on the f32 `W`. The search path never
    /// builds it (see [`Index::candidates`]); benchmarks and tests do.
    ///
    /// # Panics
    ///
    /// If `features` is not `[n_queries, h]`.
    #[track_caller]
    pub fn approximate_scores(&self, features: &[f32]) -> Vec<f32> {
        let (h, m) = (self.feature_dim(), self.len());
        assert_eq!(features.len() % h, 0, "features is not [n_queries, h]");
        let n_queries = features.len() / h;
        let mut scores = vec![0.0; n_queries * m];
        // Blocks of whole query rows, one sequential GEMM each.
        let rows_per_task = 64;
        scores
            .par_chunks_mut(rows_per_task * m)
            .zip(features.par_chunks(rows_per_task * h))
            .for_each(|(out, f)| matmul_a_bt(out, f, self.weights.values(), f.len() / h, h, m));
        scores
    }

    /// Stages 2 and 3 fused: the `n_candidates` documents with the highest
    /// approximate scores for each query, best first. The `[n_queries, m]`
    /// score matrix is never materialised: `W` is scored in blocks of
    /// documents, each block feeding per-query top-k collectors that are
    /// merged at the end.
    ///
    /// # Panics
    ///
    /// If `features` is not `[n_queries, h]`.
    #[track_caller]
    pub fn candidates(&self, features: &[f32], n_candidates: usize) -> Vec<Vec<u32>> {
        self.scored_candidates(features, n_candidates)
            .iter()
            .map(|hits| ids(hits))
            .collect()
    }

    /// [`Index::candidates`] with their approximate scores (comparable
    /// across the segments of one index, which share the feature map).
    /// Deleted positions are never candidates.
    #[track_caller]
    pub(crate) fn scored_candidates(
        &self,
        features: &[f32],
        n_candidates: usize,
    ) -> Vec<Vec<lemur_topk::Hit>> {
        let mut lists = self.unfiltered_candidates(features, n_candidates);
        // The scan masks deleted positions and the graph drops them, but
        // with fewer live documents than `n_candidates` a masked score can
        // still fill a slot.
        if let Some(deleted) = &self.deleted {
            for list in &mut lists {
                list.retain(|hit| !deleted.contains(hit.id));
            }
        }
        lists
    }

    fn unfiltered_candidates(
        &self,
        features: &[f32],
        n_candidates: usize,
    ) -> Vec<Vec<lemur_topk::Hit>> {
        let (h, m) = (self.feature_dim(), self.len());
        assert_eq!(features.len() % h, 0, "features is not [n_queries, h]");
        let n_candidates = n_candidates.min(m);
        if let Some(stage) = &self.first_stage {
            return self.graph_candidates(stage, features, n_candidates);
        }
        let mut all = Vec::with_capacity(features.len() / h);
        for batch in features.chunks(QUERY_BLOCK * h) {
            // With a reduced copy, `W` is read at a half or a quarter of
            // the bytes (what a few queries are bound by) and the features
            // are prepared once per batch. Every batch size takes the same
            // path, so a query's candidates do not depend on what it is
            // batched with.
            let reduced = self
                .reduced
                .as_ref()
                .and_then(|copies| copies.weights.as_ref());
            let n_queries = batch.len() / h;
            // A compressed index has only its int8 `W` resident.
            let compressed = self
                .compressed
                .as_ref()
                .and_then(|compressed| compressed.weights.as_ref());
            let (prepared, margins): (Prepared<'_>, Option<Vec<Margins<'_>>>) = match reduced {
                _ if compressed.is_some() => {
                    let rows = compressed.expect("checked");
                    (Prepared::Int8(rows.pad_rows(batch), rows), None)
                }
                None => (Prepared::F32, None),
                Some(ReducedWeights::Bf16(rows)) => (Prepared::bf16(batch, h, rows), None),
                Some(ReducedWeights::Bf16Filter(rows, bounds)) => {
                    let margins = batch
                        .chunks_exact(h)
                        .map(|f| Margins::Same(bounds.margin(f)))
                        .collect();
                    (Prepared::bf16(batch, h, rows), Some(margins))
                }
                Some(ReducedWeights::Int8(rows)) => {
                    if self.precision().weights == WeightPrecision::Int8Dot {
                        (Prepared::Int8Dot(rows.quantise_queries(batch), rows), None)
                    } else {
                        (Prepared::Int8(rows.pad_rows(batch), rows), None)
                    }
                }
                // Without VNNI the integer loop is slower than the f32
                // product: the f32 `W` gives the same candidates.
                Some(ReducedWeights::Int8Filter(..)) if !int8_accelerated(self.isa) => {
                    (Prepared::F32, None)
                }
                Some(ReducedWeights::Int8Filter(rows, bounds)) => {
                    let margins: Vec<Margins<'_>> =
                        batch.chunks_exact(h).map(|f| bounds.margins(f)).collect();
                    // Features that overflow have infinite margins (their
                    // queries are scored in f32); zeros stand in for them
                    // in the quantised batch.
                    let finite: Vec<f32> = batch
                        .chunks_exact(h)
                        .zip(&margins)
                        .flat_map(|(f, margin)| {
                            let keep = margin.is_finite();
                            f.iter().map(move |&v| if keep { v } else { 0.0 })
                        })
                        .collect();
                    (
                        Prepared::Int8Dot(rows.quantise_queries(&finite), rows),
                        Some(margins),
                    )
                }
            };
            debug_assert!(margins.as_ref().is_none_or(|m| m.len() == n_queries));
            match margins {
                None => {
                    let tops = self.score_blocks(batch, &prepared, || TopK::new(n_candidates));
                    all.extend(tops.into_iter().map(TopK::into_sorted_vec));
                }
                Some(margins) => {
                    all.extend(self.filtered_candidates(batch, &prepared, &margins, n_candidates));
                }
            }
        }
        all
    }

    /// The candidates of `batch` under [`WeightPrecision::Bf16Filter`] or
    /// [`WeightPrecision::Int8Filter`]: shortlists of the reduced scores
    /// under each query's proven margins (`filter.rs`), rescored on the
    /// f32 rows of their survivors.
    fn filtered_candidates(
        &self,
        batch: &[f32],
        prepared: &Prepared<'_>,
        margins: &[Margins<'_>],
        n_candidates: usize,
    ) -> Vec<Vec<lemur_topk::Hit>> {
        let (h, m) = (self.feature_dim(), self.len());
        let shortlists = self.score_blocks_each(batch, prepared, |q| {
            Shortlist::new(n_candidates, margins[q])
        });
        let survivors: Vec<Option<Survivors>> = shortlists
            .into_par_iter()
            .map(|shortlist| shortlist.survivors(m))
            .collect();
        // The leaders are rescored on their f32 rows first, then the other
        // survivors that still reach the leaders' f32 floor; a query with
        // nothing provable, or too many survivors, is scored on the f32
        // `W` in full (its empty lists rescore to nothing).
        let unsettled: Vec<usize> = (0..survivors.len())
            .filter(|&q| survivors[q].is_none())
            .collect();
        let survivors: Vec<Survivors> = survivors
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let weights = self.weights.values();
        let leaders: Vec<&[u32]> = survivors.iter().map(|s| s.leaders.as_slice()).collect();
        let leader_hits = rescore(&leaders, batch, Rows::F32(weights), h, m, n_candidates);
        let others: Vec<Vec<u32>> = survivors
            .iter()
            .zip(&leader_hits)
            .map(|(survivors, hits)| survivors.others_above(hits, n_candidates))
            .collect();
        let other_hits = rescore(&others, batch, Rows::F32(weights), h, m, n_candidates);
        let mut batch_candidates: Vec<Vec<lemur_topk::Hit>> = leader_hits
            .into_iter()
            .zip(other_hits)
            .map(|(mut hits, others)| {
                hits.extend(others);
                hits.sort_by(rank_order);
                hits.truncate(n_candidates);
                hits
            })
            .collect();
        let unsettled_features: Vec<f32> = unsettled
            .iter()
            .flat_map(|&q| &batch[q * h..(q + 1) * h])
            .copied()
            .collect();
        let in_full = self.score_blocks(&unsettled_features, &Prepared::F32, || {
            TopK::new(n_candidates)
        });
        for (q, top) in unsettled.into_iter().zip(in_full) {
            batch_candidates[q] = top.into_sorted_vec();
        }
        batch_candidates
    }

    /// One collector per query of `batch`, all made by `fresh`, fed with
    /// the approximate scores of `W` (in the precision `prepared` holds).
    fn score_blocks<C: Collector>(
        &self,
        batch: &[f32],
        prepared: &Prepared<'_>,
        fresh: impl Fn() -> C + Sync,
    ) -> Vec<C> {
        self.score_blocks_each(batch, prepared, |_| fresh())
    }

    /// [`Index::score_blocks`] with a collector per query, `fresh(q)` for
    /// query `q`. `W` is scored in blocks of documents; each thread feeds a
    /// few long runs of blocks into its own collectors, merged at the end.
    fn score_blocks_each<C: Collector>(
        &self,
        batch: &[f32],
        prepared: &Prepared<'_>,
        fresh: impl Fn(usize) -> C + Sync,
    ) -> Vec<C> {
        let (h, m) = (self.feature_dim(), self.len());
        let n_queries = batch.len() / h;
        if n_queries == 0 {
            return Vec::new();
        }
        let weights = self.weights.values();
        let doc_block = if n_queries < SMALL_BATCH {
            SMALL_BATCH_DOC_BLOCK
        } else {
            DOC_BLOCK
        };
        let fresh = || (0..n_queries).map(&fresh).collect::<Vec<C>>();
        // Each fold state starts without a threshold and takes its first
        // 2k' scores per query unfiltered, then pays a selection per k'
        // accepted: a few long runs of blocks per thread, not one state per
        // block, keep that cost (and the merges) small.
        let n_blocks = m.div_ceil(doc_block);
        let run = n_blocks.div_ceil(FOLD_RUNS_PER_THREAD * rayon::current_num_threads());
        (0..n_blocks)
            .into_par_iter()
            .with_min_len(run.max(1))
            .fold(
                || (fresh(), Vec::new()),
                |(mut collectors, mut tile), block| {
                    let first = block * doc_block;
                    let n_docs = doc_block.min(m - first);
                    tile.resize(n_queries * n_docs, 0.0);
                    match prepared {
                        Prepared::F32 => {
                            let rows = &weights[first * h..(first + n_docs) * h];
                            matmul_a_bt(&mut tile, batch, rows, n_queries, h, n_docs);
                        }
                        Prepared::Bf16(queries, rows) => {
                            dot_products_bf16(self.isa, queries, rows, first, n_docs, &mut tile);
                        }
                        Prepared::Int8(queries, rows) => {
                            dot_products_int8(self.isa, queries, rows, first, n_docs, &mut tile);
                        }
                        Prepared::Int8Dot(queries, rows) => {
                            dot_products_int8_exact(
                                self.isa, queries, rows, first, n_docs, &mut tile,
                            );
                        }
                    }
                    if let Some(deleted) = &self.deleted {
                        deleted.mask(first, n_docs, &mut tile);
                    }
                    for (collector, scores) in collectors.iter_mut().zip(tile.chunks_exact(n_docs))
                    {
                        collector.extend_from_scores(first as u32, scores);
                    }
                    (collectors, tile)
                },
            )
            .map(|(collectors, _)| collectors)
            .reduce(fresh, |mut left, right| {
                for (l, r) in left.iter_mut().zip(&right) {
                    l.merge(r);
                }
                left
            })
    }

    /// Exact brute-force search: MaxSim of every query against every
    /// document, keeping the best `k`. This is what LEMUR avoids; it is the
    /// ground truth recall is measured against.
    ///
    /// # Panics
    ///
    /// If the queries' width is not the index's.
    #[track_caller]
    pub fn exhaustive_search<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        k: usize,
    ) -> Vec<Vec<Hit>> {
        assert_eq!(queries.dim(), self.dim(), "query width");
        let every_document: Vec<u32> = (0..self.len() as u32).collect();
        // Queries in groups, so the score buffer stays `group x m`.
        let group = 32;
        let mut hits = Vec::with_capacity(queries.len());
        for first in (0..queries.len()).step_by(group) {
            let last = (first + group).min(queries.len());
            let (start, end) = (queries.offsets()[first], queries.offsets()[last]);
            let counts: Vec<usize> = queries.counts().skip(first).take(last - first).collect();
            let slice = &queries.tokens()[start * self.dim()..end * self.dim()];
            let subset = MultiVectors::new(slice, self.dim(), &counts)
                .expect("a contiguous range of valid queries is valid");
            hits.extend(self.rerank(&subset, &vec![every_document.as_slice(); last - first], k));
        }
        hits
    }
}

/// What the fused scoring feeds a query's scores into.
trait Collector: Send {
    /// Offers `scores[i]` with id `first_id + i` for every `i`.
    fn extend_from_scores(&mut self, first_id: u32, scores: &[f32]);
    /// Takes in another collector of the same query.
    fn merge(&mut self, other: &Self);
}

impl Collector for TopK {
    fn extend_from_scores(&mut self, first_id: u32, scores: &[f32]) {
        TopK::extend_from_scores(self, first_id, scores);
    }

    fn merge(&mut self, other: &Self) {
        TopK::merge(self, other);
    }
}

impl Collector for Shortlist<'_> {
    fn extend_from_scores(&mut self, first_id: u32, scores: &[f32]) {
        Shortlist::extend_from_scores(self, first_id, scores);
    }

    fn merge(&mut self, other: &Self) {
        Shortlist::merge(self, other);
    }
}

/// The ids of best-first hits.
fn ids(hits: &[lemur_topk::Hit]) -> Vec<u32> {
    hits.iter().map(|hit| hit.id).collect()
}

/// A query batch prepared for scoring one copy of `W`.
enum Prepared<'a> {
    /// The f32 `W`: the features as they are.
    F32,
    /// The features rounded to bf16 (with their AMX tile layout), and the
    /// bf16 `W`.
    Bf16(Bf16Matrix, &'a Bf16Matrix),
    /// The features padded to the int8 blocks, and the int8 `W`.
    Int8(Vec<f32>, &'a Int8Matrix),
    /// The features quantised to int8, and the int8 `W`.
    Int8Dot(Int8Queries, &'a Int8Matrix),
}

impl<'a> Prepared<'a> {
    /// `[n, h]` features rounded to bf16 for the bf16 `rows`.
    fn bf16(features: &[f32], h: usize, rows: &'a Bf16Matrix) -> Self {
        Prepared::Bf16(Bf16Matrix::from_f32(features, h).with_tile_layout(), rows)
    }
}
