//! Reduced precision keeps the f32 results: bf16 storage keeps the exact
//! f32 MaxSim ranking (on a synthetic ColBERT-shaped corpus, d = 128,
//! clustered tokens, the bf16 top 10 over every document holds at least
//! 99.8% of the exact f32 top 10), and an index searched on bf16 or int8
//! copies keeps the f32 pipeline's top 10 whatever the batching.

use lemur::maxsim::bf16::{Bf16Vectors, PackedQueryBf16, rerank_bf16};
use lemur::maxsim::{Isa, Reranker};
use lemur::synthetic::{self, CorpusSpec};
use lemur::{
    DocWeights, Index, MultiVectors, Precision, SearchParams, TokenPrecision, WeightPrecision,
    WeightSolver,
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

/// An index of 600 documents (d = 64, h = 512) with a fitted `W`, and 40
/// queries.
fn fitted_index() -> (Index, MultiVectors) {
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
    (index, data.queries(40, 32, 5))
}

/// Searches the same queries in f32 and at `precision`; returns the share
/// of the f32 top 10 kept, after checking that single queries get their
/// batch results and that scores of shared hits agree.
fn kept_by(precision: Precision, max_score_error: f32) -> f64 {
    let (index, queries) = fitted_index();
    let reduced_index = index.clone().with_precision(precision);
    assert_eq!(reduced_index.precision(), precision);
    assert_eq!(index.precision(), Precision::F32);
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

#[test]
fn an_index_shortlisted_in_bf16_keeps_every_f32_candidate() {
    // The rerank is f32 and the candidates are f32's: the top 10 is the
    // f32 top 10 with identical scores.
    let recall = kept_by(Precision::BF16_FILTER, 0.0);
    assert_eq!(recall, 1.0);
}

/// An index of small documents whose `W` rows hold `columns[c][j]` in
/// coordinate `c` and zeros elsewhere (h = 32), and query features (one
/// per column, `[n_columns, h]`) that score row `j` as `columns[c][j]`
/// exactly.
fn index_of_columns(columns: &[&[f32]]) -> (Index, Vec<f32>) {
    const H: usize = 32;
    let n_docs = columns[0].len();
    let spec = CorpusSpec {
        n_docs,
        dim: 16,
        min_tokens: 2,
        max_tokens: 4,
        ..CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let mut weights = vec![0.0; n_docs * H];
    let mut features = vec![0.0; columns.len() * H];
    for (c, column) in columns.iter().enumerate() {
        for (row, &value) in weights.chunks_exact_mut(H).zip(*column) {
            row[c] = value;
        }
        features[c * H + c] = 1.0;
    }
    let weights = DocWeights::new(weights, n_docs, H).unwrap();
    let index = Index::new(synthetic::random_features(16, H, 3), weights, data.corpus).unwrap();
    (index, features)
}

/// Checks one query's candidates: `f32_ids` in f32 and with the bf16
/// shortlist, `bf16_ids` (a different list, so the check can fail) with
/// bf16 scores alone.
fn check_candidates(index: &Index, features: &[f32], n: usize, f32_ids: &[u32], bf16_ids: &[u32]) {
    assert_ne!(f32_ids, bf16_ids);
    assert_eq!(index.candidates(features, n), vec![f32_ids.to_vec()]);
    let bf16 = index.clone().with_precision(Precision::BF16);
    assert_eq!(bf16.candidates(features, n), vec![bf16_ids.to_vec()]);
    let filtered = index.clone().with_precision(Precision::BF16_FILTER);
    assert_eq!(filtered.candidates(features, n), vec![f32_ids.to_vec()]);
    for isa in Isa::available() {
        let int8 = index
            .clone()
            .with_isa(isa)
            .with_precision(Precision::INT8_FILTERS);
        assert_eq!(
            int8.candidates(features, n),
            vec![f32_ids.to_vec()],
            "{}",
            isa.level()
        );
    }
}

#[test]
fn features_that_round_to_a_bf16_tie_are_ranked_by_the_f32_scores() {
    // Features [1 + 3 2^-9, 1 + 2^-7 + 2^-10] both round to 1 + 2^-7 in
    // bf16, so rows [1, 0] (id 0) and [0, 1] (id 1) tie there and bf16
    // takes id 0; in f32 row 1 wins, and the margin covers the features'
    // rounding.
    let mut first = vec![-1.0f32; 100];
    let mut second = vec![-1.0f32; 100];
    (first[0], second[0]) = (1.0, 0.0);
    (first[1], second[1]) = (0.0, 1.0);
    let (index, mut features) = index_of_columns(&[&first, &second]);
    features.truncate(32);
    features[0] = 1.0 + 3.0 * 2f32.powi(-9);
    features[1] = 1.0 + 2f32.powi(-7) + 2f32.powi(-10);
    check_candidates(&index, &features, 1, &[1], &[0]);
}

#[test]
fn the_bf16_shortlist_is_ranked_by_the_f32_scores() {
    // Rows 490..500 score 10 + k 2^-16: all 10.0 in bf16, so bf16 ranks
    // them by id; the rest are far below, so the bound settles the
    // shortlist and the f32 rows decide.
    let values: Vec<f32> = (0..500)
        .map(|j| match j {
            490.. => 10.0 + (j - 490) as f32 * 2f32.powi(-16),
            _ => j as f32 * 0.01,
        })
        .collect();
    let (index, features) = index_of_columns(&[&values]);
    let best_f32: Vec<u32> = (495..500).rev().collect();
    check_candidates(&index, &features, 5, &best_f32, &[490, 491, 492, 493, 494]);
}

#[test]
fn a_shortlist_of_bf16_ties_is_ranked_by_the_f32_rows() {
    // In the first column every row rounds to 1.0 in bf16 (1 + j 2^-20 <
    // 1 + 2^-8), so bf16 ranks by id and every row is within the margin:
    // that query is scored on all of the f32 `W` (cheaper than rescoring
    // every row), whose best are the last rows. The second column (best
    // rows first, a few apart in bf16) keeps a short list of survivors, in
    // the same batch.
    let ties: Vec<f32> = (0..500).map(|j| 1.0 + j as f32 * 2f32.powi(-20)).collect();
    let spread: Vec<f32> = (0..500).map(|j| (499 - j) as f32 * 0.01).collect();
    let (index, features) = index_of_columns(&[&ties, &spread]);
    let expected = vec![(490..500).rev().collect::<Vec<u32>>(), (0..10).collect()];
    assert_eq!(index.candidates(&features, 10), expected);
    let bf16 = index.clone().with_precision(Precision::BF16);
    assert_eq!(
        bf16.candidates(&features[..32], 10),
        vec![(0..10).collect::<Vec<u32>>()]
    );
    for precision in [Precision::BF16_FILTER, Precision::INT8_FILTERS] {
        let filtered = index.clone().with_precision(precision);
        assert_eq!(filtered.candidates(&features, 10), expected);
        assert_eq!(filtered.candidates(&features[..32], 10), expected[..1]);
        assert_eq!(filtered.candidates(&features[32..], 10), expected[1..]);
    }
}

#[test]
fn values_that_overflow_bf16_are_scored_in_f32() {
    // Rows 0..10 are within 0.1% of f32::MAX, infinite in bf16: bf16 ranks
    // them by id, no margin covers them, and the query is scored on the
    // f32 `W` in full (largest value last).
    let values: Vec<f32> = (0..300)
        .map(|j| match j {
            0..10 => f32::MAX * (1.0 - (9 - j) as f32 * 1e-4),
            _ => j as f32,
        })
        .collect();
    let (index, features) = index_of_columns(&[&values]);
    check_candidates(&index, &features, 5, &[9, 8, 7, 6, 5], &[0, 1, 2, 3, 4]);
}

#[test]
fn a_row_that_rounds_below_the_bf16_best_can_still_win_in_f32() {
    // Features [1, 1, 0, ...]. Row 7 is [1 + 2^-8 - 2^-16, 0]: 1.00389 in
    // f32, 1.0 in bf16. Row 3 is [0.5, 0.5 + 2^-9 + 2^-16]: 1.00197 in
    // f32, 1 + 2^-8 in bf16 (its second value rounds up). bf16 ranks row 3
    // first; only a margin for the rounding brings row 7 back.
    let mut first = vec![-1.0f32; 200];
    let mut second = vec![0.0f32; 200];
    first[7] = 1.0 + 2f32.powi(-8) - 2f32.powi(-16);
    (first[3], second[3]) = (0.5, 0.5 + 2f32.powi(-9) + 2f32.powi(-16));
    let (index, mut features) = index_of_columns(&[&first, &second]);
    features.truncate(32);
    features[1] = 1.0;
    check_candidates(&index, &features, 1, &[7], &[3]);
}

#[test]
fn an_index_reranked_through_a_bf16_filter_keeps_the_f32_results() {
    // The filter rescores in f32 whatever its bound cannot rule out, so
    // the hits are the f32 rerank's with identical scores.
    let filtered = Precision {
        weights: WeightPrecision::F32,
        tokens: TokenPrecision::Bf16Filter,
    };
    assert_eq!(kept_by(filtered, 0.0), 1.0);
    assert_eq!(kept_by(Precision::BF16_FILTER_ALL, 0.0), 1.0);
}

#[test]
fn an_index_shortlisted_in_int8_keeps_every_f32_candidate() {
    // A fitted `W`: its best rows stand out, so the per-row int8 margins
    // settle most queries without the f32 product.
    let (index, queries) = fitted_index();
    let features = index.query_features(&queries);
    let n_candidates = 50;
    let f32_candidates = index.candidates(&features, n_candidates);
    let int8 = index.clone().with_precision(Precision::INT8_DOT);
    assert_ne!(int8.candidates(&features, n_candidates), f32_candidates);
    for isa in Isa::available() {
        let filtered = index
            .clone()
            .with_isa(isa)
            .with_precision(Precision::INT8_FILTERS);
        assert_eq!(
            filtered.candidates(&features, n_candidates),
            f32_candidates,
            "{}",
            isa.level()
        );
        // One query at a time, as a single search scores it.
        for (q, expected) in f32_candidates.iter().enumerate().step_by(7) {
            let one = &features[q * 512..(q + 1) * 512];
            assert_eq!(&filtered.candidates(one, n_candidates)[0], expected);
        }
    }
    assert_eq!(kept_by(Precision::INT8_FILTERS, 0.0), 1.0);
}

#[test]
fn an_index_reranked_through_an_int8_filter_keeps_the_f32_results() {
    let filtered = Precision {
        weights: WeightPrecision::F32,
        tokens: TokenPrecision::Int8Filter,
    };
    assert_eq!(kept_by(filtered, 0.0), 1.0);
    assert_eq!(kept_by(Precision::BF16_INT8_FILTER, 0.0), 1.0);
}

/// An index over `docs` (`[n_tokens, dim]` with `counts` tokens each) whose
/// `W` does not matter: these tests call the rerank directly.
fn index_of_tokens(docs: Vec<f32>, dim: usize, counts: &[usize]) -> Index {
    let corpus = lemur::MultiVectors::new(docs, dim, counts).unwrap();
    let weights = DocWeights::new(vec![0.5; counts.len() * 8], counts.len(), 8).unwrap();
    Index::new(synthetic::random_features(dim, 8, 1), weights, corpus).unwrap()
}

/// Reranks `candidates` of one query in f32, in bf16 and through the bf16
/// and int8 filters; checks the filters against f32 (hits and scores) and
/// returns the f32 and bf16 ids.
fn rerank_three_ways(index: &Index, query: &[f32], candidates: &[u32], k: usize) -> [Vec<u32>; 2] {
    let queries =
        lemur::MultiVectors::new(query.to_vec(), index.dim(), &[query.len() / index.dim()])
            .unwrap();
    let lists = [candidates.to_vec()];
    let exact = index.rerank(&queries, &lists, k);
    let filtered = index
        .clone()
        .with_precision(Precision {
            weights: WeightPrecision::F32,
            tokens: TokenPrecision::Bf16Filter,
        })
        .rerank(&queries, &lists, k);
    assert_eq!(filtered, exact);
    let int8_filtered = index
        .clone()
        .with_precision(Precision {
            weights: WeightPrecision::F32,
            tokens: TokenPrecision::Int8Filter,
        })
        .rerank(&queries, &lists, k);
    assert_eq!(int8_filtered, exact);
    let bf16 = index.clone().with_bf16().rerank(&queries, &lists, k);
    let ids = |hits: &[lemur::Hit]| hits.iter().map(|h| h.doc).collect::<Vec<u32>>();
    [ids(&exact[0]), ids(&bf16[0])]
}

#[test]
fn the_bf16_filter_ranks_bf16_ties_by_their_f32_scores() {
    // Document j's one token is (1 + j 2^-20, 0, ...): every one rounds to
    // 1.0 in bf16, so bf16 ranks them by id, and f32 by j, best last.
    let dim = 16;
    let n_docs = 40;
    let mut docs = vec![0.0f32; n_docs * dim];
    for (j, token) in docs.chunks_exact_mut(dim).enumerate() {
        token[0] = 1.0 + j as f32 * 2f32.powi(-20);
    }
    let index = index_of_tokens(docs, dim, &vec![1; n_docs]);
    let mut query = vec![0.0f32; 2 * dim];
    query[0] = 1.0;
    query[dim] = 0.5;
    let all: Vec<u32> = (0..n_docs as u32).collect();
    let [f32_ids, bf16_ids] = rerank_three_ways(&index, &query, &all, 5);
    assert_eq!(f32_ids, vec![39, 38, 37, 36, 35]);
    assert_eq!(bf16_ids, vec![0, 1, 2, 3, 4]);
}

#[test]
fn the_bf16_filter_keeps_everything_past_bf16_range() {
    // Values past bf16's largest finite value round to infinity: nothing
    // is provable, so every candidate is scored in f32.
    let dim = 4;
    let docs = vec![
        3.39e38, 0.0, 0.0, 0.0, //
        1.0, 2.0, 0.0, 0.0, //
        2.0, 1.0, 0.0, 0.0, //
        -1.0, 0.5, 0.0, 0.0,
    ];
    let index = index_of_tokens(docs, dim, &[1, 1, 1, 1]);
    let query = [1e-38, 0.5, 0.25, 0.0];
    let [f32_ids, _] = rerank_three_ways(&index, &query, &[3, 2, 1, 0], 2);
    assert_eq!(f32_ids.len(), 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// On values clustered near one another (so many scores round alike in
    /// bf16), the filtered rerank is the f32 rerank, for any `k`.
    #[test]
    fn the_bf16_filter_is_the_f32_rerank(
        seeds in proptest::collection::vec(0u32..64, 60..200),
        spread in 0u32..12,
        k in 1usize..12,
    ) {
        let dim = 8;
        let scale = 2f32.powi(-(spread as i32));
        let values: Vec<f32> = seeds.iter().cycle().take(3 * 30 * dim).enumerate()
            .map(|(i, &s)| 1.0 + scale * (s as f32 - 32.0) / 64.0 + (i % 7) as f32 * 2f32.powi(-18))
            .collect();
        let index = index_of_tokens(values, dim, &[3; 30]);
        let query: Vec<f32> = seeds.iter().rev().cycle().take(4 * dim)
            .map(|&s| 0.25 + s as f32 / 256.0)
            .collect();
        let candidates: Vec<u32> = (0..30).rev().collect();
        rerank_three_ways(&index, &query, &candidates, k);
    }
}

#[test]
fn the_bf16_filter_rescores_what_bf16_ranks_in_the_wrong_order() {
    // Document 0 rounds up in both values (bf16 2.0156, f32 2.0078),
    // document 1 rounds down (bf16 2.0078, f32 2.0117): bf16 puts 0 first,
    // f32 puts 1 first. Documents 2.. are far below.
    let dim = 2;
    let up = 1.0 + 2f32.powi(-8) + 2f32.powi(-16);
    let down = 1.0 + 2f32.powi(-7) + 2f32.powi(-8) - 2f32.powi(-16);
    let mut docs = vec![up, up, down, 1.0];
    let n_docs = 20;
    for j in 2..n_docs {
        docs.extend([0.5 - j as f32 * 0.01, 0.25]);
    }
    let index = index_of_tokens(docs, dim, &vec![1; n_docs]);
    let all: Vec<u32> = (0..n_docs as u32).collect();
    let [f32_ids, bf16_ids] = rerank_three_ways(&index, &[1.0, 1.0], &all, 1);
    assert_eq!(f32_ids, vec![1]);
    assert_eq!(bf16_ids, vec![0]);
}
