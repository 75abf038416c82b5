//! Reduced precision keeps the f32 results: bf16 storage keeps the exact
//! f32 MaxSim ranking (on a synthetic ColBERT-shaped corpus, d = 128,
//! clustered tokens, the bf16 top 10 over every document holds at least
//! 99.8% of the exact f32 top 10), and an index searched on bf16 or int8
//! copies keeps the f32 pipeline's top 10 whatever the batching.

use lemur::maxsim::bf16::{Bf16Vectors, PackedQueryBf16, rerank_bf16};
use lemur::maxsim::{Isa, Reranker};
use lemur::synthetic::{self, CorpusSpec};
use lemur::{
    DocWeights, Index, Precision, SearchParams, TokenPrecision, WeightPrecision, WeightSolver,
};

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

/// Searches the same queries in f32 and at `precision`; returns the share
/// of the f32 top 10 kept, after checking that single queries get their
/// batch results and that scores of shared hits agree.
fn kept_by(precision: Precision, max_score_error: f32) -> f64 {
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
    let reduced_index = index.clone().with_precision(precision);
    assert_eq!(reduced_index.precision(), precision);
    assert_eq!(index.precision(), Precision::F32);
    let queries = data.queries(40, 32, 5);
    let params = SearchParams {
        k: 10,
        n_candidates: 100,
    };
    let exact = index.search_batch(&queries, params).unwrap();
    let reduced = reduced_index.search_batch(&queries, params).unwrap();
    let kept: usize = exact
        .iter()
        .zip(&reduced)
        .map(|(e, r)| {
            e.iter()
                .filter(|h| r.iter().any(|x| x.doc == h.doc))
                .count()
        })
        .sum();
    // A query alone (a small batch: small scoring blocks, single-query
    // tiles) finds what it finds inside the batch.
    for q in [0, 17, 39] {
        assert_eq!(
            reduced_index.search_one(queries.get(q), params).unwrap(),
            reduced[q],
            "{precision:?} query {q}"
        );
    }
    for (e, r) in exact.iter().zip(&reduced) {
        for (a, b) in e.iter().zip(r) {
            if a.doc == b.doc {
                assert!((a.score - b.score).abs() <= max_score_error * a.score.abs().max(1.0));
            }
        }
    }
    // Back to f32: the copies are dropped and the results are f32's.
    let back = reduced_index.with_precision(Precision::F32);
    assert_eq!(back.precision(), Precision::F32);
    assert_eq!(back.search_batch(&queries, params).unwrap(), exact);
    let recall = kept as f64 / 400.0;
    println!("{precision:?} pipeline keeps {recall:.4} of the f32 top 10");
    recall
}

#[test]
fn an_index_searched_in_bf16_keeps_the_f32_results() {
    let recall = kept_by(Precision::BF16, 0.02);
    assert!(recall >= 0.998, "{recall}");
}

#[test]
fn an_index_scored_on_int8_weights_keeps_the_f32_results() {
    // The rerank is f32, so shared hits have identical scores; only the
    // candidates can differ.
    let recall = kept_by(Precision::INT8_WEIGHTS, 0.0);
    assert!(recall >= 0.998, "{recall}");
    let recall = kept_by(
        Precision {
            weights: WeightPrecision::Int8,
            tokens: TokenPrecision::Bf16,
        },
        0.02,
    );
    assert!(recall >= 0.998, "{recall}");
}

#[test]
fn an_index_scored_with_integer_dot_products_keeps_the_f32_results() {
    // Query features are quantised too; the rerank is still exact f32.
    let recall = kept_by(Precision::INT8_DOT, 0.0);
    assert!(recall >= 0.998, "{recall}");
}
