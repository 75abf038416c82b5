//! The committed fixtures: a LEMUR-NumPy `.npz` model, a ragged corpus,
//! queries and the naive pipeline's results on them.
//!
//! `cargo xtask fixtures` regenerates them (it runs this file with
//! `LEMUR_BLESS=1`); otherwise the files are regenerated in memory and
//! compared with the committed ones, so they can never silently go stale.
//! The end-to-end test then checks that the fast pipeline, loading the
//! files the way a user would, returns exactly the naive pipeline's ids.

use std::path::{Path, PathBuf};

use lemur::io::{
    ExportedModel, NpzOptions, load_multivectors, load_npz, save_multivectors, save_npz, write_npy,
};
use lemur::synthetic::{self, CorpusSpec, Rng};
use lemur::{Activation, DocWeights, Index, MultiVectors, SearchParams, naive};
use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;

const PARAMS: SearchParams = SearchParams {
    k: 5,
    n_candidates: 12,
};
const N_DOCS: usize = 60;
const DIM: usize = 16;
const WIDTHS: [usize; 3] = [DIM, 48, 64];
const N_QUERIES: usize = 8;

struct Fixtures {
    model: ExportedModel,
    corpus: MultiVectors,
    queries: MultiVectors,
    expected_ids: Array2<i64>,
    expected_scores: Array2<f32>,
}

/// The committed export and corpus, loaded the way a user would.
fn fixture_index(dir: &Path) -> Index {
    Index::from_files(
        dir.join("model.npz"),
        dir.join("corpus_tokens.npy"),
        dir.join("corpus_counts.npy"),
    )
    .unwrap()
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Smallest gap, relative to the score scale, between consecutive ranked
/// scores around every cut the pipeline makes; the fixtures need a clear
/// margin so f32 versus f64 rounding cannot reorder them.
fn margins_ok(
    map: &lemur::FeatureMap,
    weights: &DocWeights,
    corpus: &MultiVectors,
    queries: &MultiVectors,
) -> bool {
    let features = naive::query_features(map, queries);
    features.iter().enumerate().all(|(q, f)| {
        let mut approx: Vec<(u32, f64)> = naive::approximate_scores(f, weights)
            .into_iter()
            .enumerate()
            .map(|(j, s)| (j as u32, s))
            .collect();
        naive::sort_ranked(&mut approx);
        let scale = approx[0].1.abs().max(1e-9);
        let cut = PARAMS.n_candidates;
        let approx_ok = (approx[cut - 1].1 - approx[cut].1) / scale > 1e-3;
        let mut exact: Vec<(u32, f64)> = approx[..cut]
            .iter()
            .map(|&(j, _)| {
                (
                    j,
                    lemur::maxsim::naive::maxsim(queries.get(q), corpus.get(j as usize), DIM)
                        as f64,
                )
            })
            .collect();
        naive::sort_ranked(&mut exact);
        let scale = exact[0].1.abs().max(1e-9);
        let exact_ok = exact
            .windows(2)
            .take(PARAMS.k)
            .all(|w| (w[0].1 - w[1].1) / scale > 1e-4);
        approx_ok && exact_ok
    })
}

/// Generates the fixtures deterministically, trying seeds in order until
/// every ranking cut has a clear margin.
fn generate() -> Fixtures {
    for seed in 1u64.. {
        let spec = CorpusSpec {
            n_docs: N_DOCS,
            dim: DIM,
            min_tokens: 1,
            max_tokens: 12,
            n_centroids: 10,
            topics_per_doc: 2,
            noise: 0.3,
            seed,
        };
        let data = synthetic::corpus(&spec);
        let queries = data.queries(N_QUERIES, 5, seed);
        let map = synthetic::random_mlp(&WIDTHS, Activation::Gelu, seed);
        let mut rng = Rng::new(seed + 1000);
        let h = WIDTHS[2];
        let w: Vec<f32> = (0..N_DOCS * h).map(|_| rng.normal()).collect();
        let weights = DocWeights::new(w.clone(), N_DOCS, h).unwrap();
        if !margins_ok(&map, &weights, &data.corpus, &queries) {
            continue;
        }
        let hits = naive::search(&map, &weights, &data.corpus, &queries, PARAMS);
        let ids: Vec<i64> = hits
            .iter()
            .flat_map(|q| q.iter().map(|h| h.doc as i64))
            .collect();
        let scores: Vec<f32> = hits
            .iter()
            .flat_map(|q| q.iter().map(|h| h.score))
            .collect();
        return Fixtures {
            model: ExportedModel {
                feature_map: map,
                doc_weights: w,
                n_docs: N_DOCS,
                target_norm: Some(lemur::TargetNorm {
                    mean: 0.25,
                    std: 1.5,
                }),
            },
            corpus: data.corpus,
            queries,
            expected_ids: Array2::from_shape_vec((N_QUERIES, PARAMS.k), ids).unwrap(),
            expected_scores: Array2::from_shape_vec((N_QUERIES, PARAMS.k), scores).unwrap(),
        };
    }
    unreachable!("some seed has clear margins")
}

fn write(fixtures: &Fixtures, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    save_npz(dir.join("model.npz"), &fixtures.model).unwrap();
    save_multivectors(
        &fixtures.corpus,
        dir.join("corpus_tokens.npy"),
        dir.join("corpus_counts.npy"),
    )
    .unwrap();
    save_multivectors(
        &fixtures.queries,
        dir.join("query_tokens.npy"),
        dir.join("query_counts.npy"),
    )
    .unwrap();
    write_npy(&dir.join("expected_ids.npy"), &fixtures.expected_ids).unwrap();
    write_npy(&dir.join("expected_scores.npy"), &fixtures.expected_scores).unwrap();
    write_npy(
        &dir.join("params.npy"),
        &Array1::from(vec![PARAMS.k as i64, PARAMS.n_candidates as i64]),
    )
    .unwrap();
}

#[test]
fn fixtures_are_fresh() {
    let fresh = generate();
    let dir = data_dir();
    if std::env::var_os("LEMUR_BLESS").is_some() {
        write(&fresh, &dir);
        println!("wrote fixtures to {}", dir.display());
        return;
    }
    let stale = "fixtures are stale or missing: run `cargo xtask fixtures`";
    // Compare decoded arrays, never bytes (zip entries carry timestamps).
    let model = load_npz(dir.join("model.npz"), NpzOptions::default()).expect(stale);
    assert_eq!(model.feature_map, fresh.model.feature_map, "{stale}");
    assert_eq!(model.doc_weights, fresh.model.doc_weights, "{stale}");
    assert_eq!(model.target_norm, fresh.model.target_norm, "{stale}");
    let corpus = load_multivectors(dir.join("corpus_tokens.npy"), dir.join("corpus_counts.npy"))
        .expect(stale);
    assert_eq!(corpus.tokens(), fresh.corpus.tokens(), "{stale}");
    assert_eq!(corpus.offsets(), fresh.corpus.offsets(), "{stale}");
    let queries =
        load_multivectors(dir.join("query_tokens.npy"), dir.join("query_counts.npy")).expect(stale);
    assert_eq!(queries.tokens(), fresh.queries.tokens(), "{stale}");
    assert_eq!(queries.offsets(), fresh.queries.offsets(), "{stale}");
    let ids: Array2<i64> = read_npy(dir.join("expected_ids.npy")).expect(stale);
    assert_eq!(ids, fresh.expected_ids, "{stale}");
    let scores: Array2<f32> = read_npy(dir.join("expected_scores.npy")).expect(stale);
    assert_eq!(scores, fresh.expected_scores, "{stale}");
}

#[test]
fn search_from_files_matches_the_naive_pipeline() {
    let dir = data_dir();
    let index = fixture_index(&dir);
    assert_eq!(
        index.target_norm(),
        Some(lemur::TargetNorm {
            mean: 0.25,
            std: 1.5
        })
    );
    let queries =
        load_multivectors(dir.join("query_tokens.npy"), dir.join("query_counts.npy")).unwrap();
    let params: Array1<i64> = read_npy(dir.join("params.npy")).unwrap();
    let params = SearchParams {
        k: params[0] as usize,
        n_candidates: params[1] as usize,
    };
    let ids: Array2<i64> = read_npy(dir.join("expected_ids.npy")).unwrap();
    let scores: Array2<f32> = read_npy(dir.join("expected_scores.npy")).unwrap();
    let counts: Vec<usize> = queries.counts().collect();
    for isa in lemur::Isa::available() {
        let index = index.clone().with_isa(isa);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let hits = pool
                .install(|| index.search(queries.tokens(), &counts, params))
                .unwrap();
            assert_eq!(hits.len(), ids.nrows());
            for (q, hits) in hits.iter().enumerate() {
                let got: Vec<i64> = hits.iter().map(|h| h.doc as i64).collect();
                assert_eq!(
                    got,
                    ids.row(q).to_vec(),
                    "query {q}, level {}, {threads} threads",
                    isa.level()
                );
                for (hit, &want) in hits.iter().zip(scores.row(q)) {
                    let rel = (hit.score - want).abs() / want.abs().max(1e-6);
                    assert!(rel <= 1e-4, "query {q}: score {} vs {want}", hit.score);
                }
            }
            // One query at a time gives the same answers as the batch.
            for (q, batch_hits) in hits.iter().enumerate() {
                let one = pool
                    .install(|| index.search_one(queries.get(q), params))
                    .unwrap();
                assert_eq!(&one, batch_hits);
            }
        }
    }
}

#[test]
fn exhaustive_search_matches_the_naive_brute_force() {
    let dir = data_dir();
    let index = fixture_index(&dir);
    let queries =
        load_multivectors(dir.join("query_tokens.npy"), dir.join("query_counts.npy")).unwrap();
    let fast = index.exhaustive_search(&queries, 7);
    for (q, hits) in fast.iter().enumerate() {
        let want = naive::exact_top_k(index.corpus(), queries.get(q), 7);
        let ids: Vec<u32> = hits.iter().map(|h| h.doc).collect();
        let want_ids: Vec<u32> = want.iter().map(|h| h.doc).collect();
        assert_eq!(ids, want_ids, "query {q}");
        for (a, b) in hits.iter().zip(&want) {
            assert!((a.score - b.score).abs() <= 1e-4 * b.score.abs().max(1.0));
        }
    }
}
