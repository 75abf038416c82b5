//! The batch rerank scores (query, candidate) pairs in document order; its
//! results must be exactly what ranking each query's candidates by the
//! naive MaxSim gives (on the bf16 copy: by the bf16 kernel, pair by pair),
//! whatever the overlap between the lists, on one thread or two.

use lemur::maxsim::MultiVectors;
use lemur::maxsim::bf16::{Bf16Vectors, PackedQueryBf16, maxsim_bf16};
use lemur::synthetic::{self, CorpusSpec, Rng};
use lemur::{DocWeights, Hit, Index, Isa, Precision, TokenPrecision, WeightPrecision};

/// The oracle: each candidate's naive MaxSim, best first, ties to the
/// lower id, cut to `k`.
fn naive_rerank(index: &Index, query: &[f32], candidates: &[u32], k: usize) -> Vec<Hit> {
    let mut scored: Vec<(u32, f32)> = candidates
        .iter()
        .map(|&doc| {
            let score =
                lemur::maxsim::naive::maxsim(query, index.corpus().get(doc as usize), index.dim());
            (doc, score)
        })
        .collect();
    lemur::naive::sort_ranked(&mut scored);
    scored.truncate(k);
    scored
        .into_iter()
        .map(|(doc, score)| Hit { doc, score })
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// An index over 300 documents, 24 queries and their candidate lists.
fn fixture() -> (Index, MultiVectors, Vec<Vec<u32>>) {
    let spec = CorpusSpec {
        n_docs: 300,
        dim: 128,
        ..CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let psi = synthetic::random_features(spec.dim, 64, 3);
    let weights = DocWeights::new(vec![0.0; spec.n_docs * 64], spec.n_docs, 64).unwrap();
    let index = Index::new(psi, weights, data.corpus.clone()).unwrap();
    let queries = data.queries(24, 32, 11);

    // Lists that overlap heavily (drawn from the first 60 documents), one
    // that names the same document twice, a single candidate and an empty
    // list, so documents are shared across queries and within one.
    let mut rng = Rng::new(5);
    let mut candidates: Vec<Vec<u32>> = (0..queries.len())
        .map(|q| {
            let n = 1 + (q * 7) % 40;
            let pool = if q % 2 == 0 { 60 } else { spec.n_docs };
            (0..n).map(|_| rng.range(0, pool) as u32).collect()
        })
        .collect();
    candidates[3] = vec![17, 17, 4, 17];
    candidates[4] = vec![spec.n_docs as u32 - 1];
    candidates[5] = Vec::new();
    (index, queries, candidates)
}

#[test]
fn batch_rerank_matches_naive_maxsim_per_query() {
    let (index, queries, candidates) = fixture();
    let k = 10;
    for threads in [1, 2] {
        let pool = pool(threads);
        let hits = pool.install(|| index.rerank(&queries, &candidates, k));
        assert_eq!(hits.len(), queries.len());
        for (q, (got, list)) in hits.iter().zip(&candidates).enumerate() {
            let want = naive_rerank(&index, queries.get(q), list, k);
            assert_eq!(got.len(), want.len(), "query {q}, {threads} threads");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.doc, w.doc, "query {q}, {threads} threads");
                let tolerance = 1e-4 * w.score.abs().max(1.0);
                assert!(
                    (g.score - w.score).abs() <= tolerance,
                    "query {q}: {} vs naive {}",
                    g.score,
                    w.score
                );
            }
        }
    }
}

#[test]
fn bf16_batch_rerank_matches_the_bf16_kernel_pair_by_pair() {
    let (index, queries, candidates) = fixture();
    let stored = Bf16Vectors::from_f32(index.corpus());
    let index = index.with_bf16();
    let k = 10;
    for threads in [1, 2] {
        let pool = pool(threads);
        let hits = pool.install(|| index.rerank(&queries, &candidates, k));
        for (q, (got, list)) in hits.iter().zip(&candidates).enumerate() {
            // The oracle scores the pairs in query order, one call each, with
            // nothing streamed in: the same kernel on the same values.
            let packed = PackedQueryBf16::new(queries.get(q), index.dim());
            let mut want: Vec<(u32, f32)> = list
                .iter()
                .map(|&doc| (doc, maxsim_bf16(&packed, stored.get(doc as usize))))
                .collect();
            lemur::naive::sort_ranked(&mut want);
            want.truncate(k);
            let got: Vec<(u32, f32)> = got.iter().map(|h| (h.doc, h.score)).collect();
            assert_eq!(got, want, "query {q}, {threads} threads");
        }
    }
}

#[test]
fn filtered_reranks_return_the_f32_hits() {
    // Through either filter the hits are the f32 rerank's, scores and ties
    // included, on lists that repeat a document, hold one candidate or none,
    // for k below, at and above the lists' lengths.
    // At every level: the int8 filter runs where the CPU has AVX512-VNNI
    // and falls back to the f32 rerank below AVX-512.
    let (index, queries, candidates) = fixture();
    for isa in Isa::available() {
        let index = index.clone().with_isa(isa);
        for tokens in [TokenPrecision::Bf16Filter, TokenPrecision::Int8Filter] {
            let filtered = index.clone().with_precision(Precision {
                weights: WeightPrecision::F32,
                tokens,
            });
            for threads in [1, 2] {
                let pool = pool(threads);
                for k in [1, 3, 10, 50] {
                    let want = pool.install(|| index.rerank(&queries, &candidates, k));
                    let got = pool.install(|| filtered.rerank(&queries, &candidates, k));
                    let level = isa.level();
                    assert_eq!(got, want, "{level}, {tokens:?}, k = {k}, {threads} threads");
                }
            }
        }
    }
}
