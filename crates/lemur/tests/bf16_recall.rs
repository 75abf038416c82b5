//! bf16 storage keeps the exact f32 MaxSim ranking: on a synthetic
//! ColBERT-shaped corpus (d = 128, clustered tokens), the bf16 top 10 over
//! every document holds at least 99.8% of the exact f32 top 10.

use lemur::maxsim::bf16::{Bf16Vectors, PackedQueryBf16, rerank_bf16};
use lemur::maxsim::{Isa, Reranker};
use lemur::synthetic::{self, CorpusSpec};

#[test]
fn bf16_top10_matches_f32_top10() {
    let spec = CorpusSpec {
        n_docs: 1000,
        ..CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let queries = data.queries(50, 32, 9);
    let stored = Bf16Vectors::from_f32(&data.corpus);
    assert_eq!(stored.token_bytes() * 2, data.corpus.tokens().len() * 4);
    let all: Vec<u32> = (0..spec.n_docs as u32).collect();
    let mut reranker = Reranker::new(Isa::detect());
    let mut kept = 0;
    for i in 0..queries.len() {
        let exact = reranker.rerank(queries.get(i), &data.corpus, &all, 10);
        let packed = PackedQueryBf16::new(queries.get(i), spec.dim);
        let approx = rerank_bf16(&packed, &stored, &all, 10);
        kept += exact
            .iter()
            .filter(|e| approx.iter().any(|a| a.id == e.id))
            .count();
    }
    let recall = kept as f64 / (queries.len() * 10) as f64;
    println!("bf16 recall@10 against exact f32: {recall:.4}");
    assert!(recall >= 0.998, "recall {recall}");
}

#[test]
fn an_index_searched_in_bf16_keeps_the_f32_results() {
    use lemur::{DocWeights, Index, SearchParams, WeightSolver};

    let spec = CorpusSpec {
        n_docs: 600,
        dim: 64,
        ..CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let psi = synthetic::random_features(64, 512, 7);
    let sample = data.sample_tokens(2048, 1);
    let norm = WeightSolver::estimate_norm(&sample, &data.corpus, 50);
    let solver = WeightSolver::new(&psi, &sample, norm).unwrap();
    let weights = DocWeights::new(solver.fit(&data.corpus), spec.n_docs, 512).unwrap();
    let index = Index::new(psi, weights, data.corpus.clone()).unwrap();
    let bf16 = index.clone().with_bf16();
    assert!(bf16.uses_bf16() && !index.uses_bf16());
    let queries = data.queries(40, 32, 5);
    let params = SearchParams {
        k: 10,
        n_candidates: 100,
    };
    let exact = index.search_batch(&queries, params).unwrap();
    let reduced = bf16.search_batch(&queries, params).unwrap();
    let kept: usize = exact
        .iter()
        .zip(&reduced)
        .map(|(e, r)| {
            e.iter()
                .filter(|h| r.iter().any(|x| x.doc == h.doc))
                .count()
        })
        .sum();
    let recall = kept as f64 / 400.0;
    println!("bf16 pipeline keeps {recall:.4} of the f32 top 10");
    // A query alone (a small batch: small scoring blocks) finds what it
    // finds inside the batch.
    for q in [0, 17, 39] {
        assert_eq!(bf16.search_one(queries.get(q), params).unwrap(), reduced[q]);
    }
    assert!(recall >= 0.998, "{recall}");
    for (e, r) in exact.iter().zip(&reduced) {
        for (a, b) in e.iter().zip(r) {
            if a.doc == b.doc {
                assert!((a.score - b.score).abs() <= 0.02 * a.score.abs().max(1.0));
            }
        }
    }
}
