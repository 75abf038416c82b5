//! Building indexes in Rust: determinism, quality, adding documents.

use std::sync::Mutex;

use lemur::synthetic::{self, CorpusSpec, SyntheticCorpus};
use lemur::{
    AlignedVec, BuildConfig, BuildError, Index, IndexBuilder, IndexError, MultiVectors, Pages,
    SearchParams, Stage,
};

fn data(n_docs: usize, seed: u64) -> SyntheticCorpus {
    synthetic::corpus(&CorpusSpec {
        n_docs,
        dim: 32,
        min_tokens: 5,
        max_tokens: 20,
        n_centroids: 24,
        topics_per_doc: 3,
        noise: 0.15,
        seed,
    })
}

fn small_config(epochs: usize) -> BuildConfig {
    BuildConfig {
        epochs,
        final_hidden_dim: 192,
        train_docs: 128,
        learn_rows: 1500,
        validation_rows: 200,
        fit_sample: 1024,
        batch_size: 128,
        seed: 7,
        ..BuildConfig::default()
    }
}

/// recall@k of the index against exact brute-force MaxSim.
fn recall(index: &Index, data: &SyntheticCorpus, n_candidates: usize) -> f64 {
    let queries = data.queries(40, 8, 99);
    let results = index
        .search_batch(
            &queries,
            SearchParams {
                k: 10,
                n_candidates,
            },
        )
        .unwrap();
    let exact = index.exhaustive_search(&queries, 10);
    let mut found = 0;
    for (hits, exact) in results.iter().zip(&exact) {
        found += hits
            .iter()
            .filter(|h| exact.iter().any(|e| e.doc == h.doc))
            .count();
    }
    found as f64 / (10 * results.len()) as f64
}

#[test]
fn config_round_trips_through_json_and_rejects_unknown_fields() {
    let config = BuildConfig {
        epochs: 3,
        hidden_dims: vec![64],
        activation: lemur::Activation::Mish,
        ..BuildConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"activation\":\"mish\""));
    let back: BuildConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
    let partial: BuildConfig = serde_json::from_str(r#"{"epochs": 0}"#).unwrap();
    assert_eq!(
        partial,
        BuildConfig {
            epochs: 0,
            ..BuildConfig::default()
        }
    );
    assert!(serde_json::from_str::<BuildConfig>(r#"{"epoch": 3}"#).is_err());
    assert!(serde_json::from_str::<BuildConfig>(r#"{"activation": "tanh"}"#).is_err());
    let defaults = BuildConfig::default();
    assert_eq!(
        (
            defaults.epochs,
            defaults.final_hidden_dim,
            defaults.train_docs
        ),
        (100, 2048, 8192)
    );
    assert_eq!(
        (
            defaults.learn_rows,
            defaults.fit_sample,
            defaults.batch_size
        ),
        (100_000, 16_384, 512)
    );
}

#[test]
fn trained_and_random_feature_indexes_find_the_exact_top_10() {
    let data = data(400, 1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut recalls = Vec::new();
    // Random features, training on all 128 outputs, and training on the
    // targets' 32 dominant directions (the sketch).
    for (epochs, target_rank) in [(0, 0), (8, 0), (8, 32)] {
        let config = BuildConfig {
            target_rank,
            ..small_config(epochs)
        };
        let (index, report) = pool
            .install(|| IndexBuilder::new(config).build(data.corpus.clone(), None))
            .unwrap();
        assert_eq!(index.len(), 400);
        let outputs = match (epochs, target_rank) {
            (0, _) => 0,
            (_, 0) => 128,
            (_, rank) => rank,
        };
        assert_eq!(report.trained_outputs, outputs);
        recalls.push(recall(&index, &data, 30));
        if let Some(training) = &report.training {
            assert!(
                training.train_losses.last() < training.train_losses.first(),
                "{training:?}"
            );
            let best = training.best_epoch.unwrap();
            let min = training
                .validation_losses
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            assert_eq!(training.validation_losses[best], min);
        }
    }
    // 30 candidates of 400 documents: the random features get most of the
    // exact top 10, and training must do clearly better.
    eprintln!(
        "recall@10 with 30 of 400 candidates: random features {}, trained {}, trained on 32 directions {}",
        recalls[0], recalls[1], recalls[2]
    );
    assert!(recalls[0] >= 0.85, "random features: {}", recalls[0]);
    for trained in &recalls[1..] {
        assert!(*trained >= 0.92, "trained: {recalls:?}");
        assert!(
            *trained > recalls[0] + 0.03,
            "training must improve on random features: {recalls:?}"
        );
    }
}

#[test]
fn the_same_seed_and_threads_give_an_identical_index() {
    let data = data(150, 2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let build = || {
        pool.install(|| IndexBuilder::new(small_config(2)).build(data.corpus.clone(), None))
            .unwrap()
            .0
    };
    let (a, b) = (build(), build());
    assert_eq!(a.feature_map(), b.feature_map());
    assert_eq!(a.weights(), b.weights());
    let other = pool
        .install(|| {
            IndexBuilder::new(BuildConfig {
                seed: 8,
                ..small_config(2)
            })
            .build(data.corpus.clone(), None)
        })
        .unwrap()
        .0;
    assert_ne!(a.weights(), other.weights(), "the seed must matter");
}

#[test]
fn added_documents_get_the_rows_a_full_build_gives() {
    let data = data(240, 3);
    let (trained, report) = IndexBuilder::new(small_config(2))
        .build(data.corpus.clone(), None)
        .unwrap();
    let fit_tokens = data.sample_tokens(1024, 5);
    let builder = IndexBuilder::new(small_config(2));
    let full = builder
        .build_with_feature_map(
            trained.feature_map().clone(),
            report.norm,
            &fit_tokens,
            data.corpus.clone(),
        )
        .unwrap();

    let split = data.corpus.offsets()[120];
    let dim = data.corpus.dim();
    let counts: Vec<usize> = data.corpus.counts().collect();
    let first_half = lemur::MultiVectors::new(
        data.corpus.tokens()[..split * dim].to_vec(),
        dim,
        &counts[..120],
    )
    .unwrap();
    let mut half = builder
        .build_with_feature_map(
            trained.feature_map().clone(),
            report.norm,
            &fit_tokens,
            first_half,
        )
        .unwrap()
        // The bf16 copy of the corpus must grow with it.
        .with_bf16();
    // So must an int8 copy of `W`.
    let mut half_int8 = half.clone().with_precision(lemur::Precision::INT8_WEIGHTS);
    // And one scored with integer dot products on the same int8 copy.
    let mut half_int8_dot = half.clone().with_precision(lemur::Precision::INT8_DOT);
    // And the bf16 filters' copies and their bounds.
    let mut half_filtered = half
        .clone()
        .with_precision(lemur::Precision::BF16_FILTER_ALL);
    let ids = half
        .add_documents(&data.corpus.tokens()[split * dim..], &counts[120..])
        .unwrap();
    half_int8
        .add_documents(&data.corpus.tokens()[split * dim..], &counts[120..])
        .unwrap();
    half_int8_dot
        .add_documents(&data.corpus.tokens()[split * dim..], &counts[120..])
        .unwrap();
    half_filtered
        .add_documents(&data.corpus.tokens()[split * dim..], &counts[120..])
        .unwrap();
    assert_eq!(half_int8_dot.precision(), lemur::Precision::INT8_DOT);
    assert_eq!(ids, 120..240);
    assert_eq!(half.len(), 240);
    assert_eq!(half.corpus().tokens(), data.corpus.tokens());
    for doc in 0..240 {
        let (got, want) = (half.weights().row(doc), full.weights().row(doc));
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-4 * scale, "doc {doc}: {g} vs {w}");
        }
    }
    // Searching the grown index (its rerank on the bf16 copy) finds the
    // added documents.
    assert_eq!(half.precision(), lemur::Precision::BF16);
    let hits = half
        .search_one(
            data.corpus.get(200),
            SearchParams {
                k: 1,
                n_candidates: 20,
            },
        )
        .unwrap();
    assert_eq!(hits[0].doc, 200);
    // Copies grown by appending equal copies made from the grown f32 data.
    let params = SearchParams {
        k: 5,
        n_candidates: 20,
    };
    for grown in [&half, &half_int8, &half_int8_dot, &half_filtered] {
        let rebuilt = grown.clone().with_precision(grown.precision());
        for doc in [3, 150, 239] {
            let query = data.corpus.get(doc);
            assert_eq!(
                grown.search_one(query, params).unwrap(),
                rebuilt.search_one(query, params).unwrap()
            );
        }
    }
    // The filtered index answers as the f32 one grown alike does.
    let half_f32 = half.clone().with_precision(lemur::Precision::F32);
    for doc in [3, 150, 239] {
        let query = data.corpus.get(doc);
        assert_eq!(
            half_filtered.search_one(query, params).unwrap(),
            half_f32.search_one(query, params).unwrap()
        );
    }
}

#[test]
fn an_index_over_huge_pages_builds_searches_and_grows_as_one_over_a_vec() {
    // Enough documents that the first part of the corpus passes 2 MiB, so
    // the `AlignedVec` is a memory map, not heap lines.
    let data = data(1800, 6);
    let (dim, first) = (data.corpus.dim(), 1600);
    let split = data.corpus.offsets()[first] * dim;
    let counts: Vec<usize> = data.corpus.counts().collect();
    let on_heap = MultiVectors::new(
        data.corpus.tokens()[..split].to_vec(),
        dim,
        &counts[..first],
    )
    .unwrap();
    let on_maps = on_heap.to_aligned(Pages::Huge);
    assert_eq!(on_maps.tokens(), on_heap.tokens());
    assert_eq!(on_maps.offsets(), on_heap.offsets());
    let paged: AlignedVec<f32> = on_maps.clone().into_tokens();
    assert!(paged.is_mapped(), "{} bytes are not mapped", 4 * split);
    let builder = IndexBuilder::new(small_config(1));
    let mut on_vec = builder.build(on_heap, None).unwrap().0;
    let mut on_pages = builder.build(on_maps, None).unwrap().0;
    on_vec
        .add_documents(&data.corpus.tokens()[split..], &counts[first..])
        .unwrap();
    let ids = on_pages
        .add_documents(&data.corpus.tokens()[split..], &counts[first..])
        .unwrap();
    assert_eq!(ids, 1600..1800);
    assert_eq!(on_pages.corpus().tokens(), data.corpus.tokens());
    assert_eq!(on_pages.weights(), on_vec.weights());
    let queries = data.queries(20, 8, 5);
    let params = SearchParams {
        k: 10,
        n_candidates: 50,
    };
    assert_eq!(
        on_pages.search_batch(&queries, params).unwrap(),
        on_vec.search_batch(&queries, params).unwrap()
    );
    assert_eq!(
        on_pages.exhaustive_search(&queries, 10),
        on_vec.exhaustive_search(&queries, 10)
    );
}

#[test]
fn progress_reports_every_stage_in_order() {
    let data = data(100, 4);
    let seen = Mutex::new(Vec::new());
    let progress =
        |stage: Stage, done: usize, total: usize| seen.lock().unwrap().push((stage, done, total));
    IndexBuilder::new(small_config(3))
        .progress(&progress)
        .build(data.corpus.clone(), None)
        .unwrap();
    let seen = seen.into_inner().unwrap();
    let stages: Vec<Stage> = seen.iter().map(|s| s.0).collect();
    let first = |s: Stage| stages.iter().position(|x| *x == s).unwrap();
    assert!(first(Stage::Targets) < first(Stage::Training));
    assert!(first(Stage::Training) < first(Stage::Solver));
    assert!(first(Stage::Solver) < first(Stage::FitWeights));
    assert!(seen.contains(&(Stage::Training, 3, 3)));
    assert!(
        seen.contains(&(Stage::Targets, 100, 100)),
        "all 100 documents are training outputs"
    );
    assert!(seen.contains(&(Stage::FitWeights, 100, 100)));
}

#[test]
fn the_target_budget_bounds_the_learn_rows() {
    let data = data(100, 5);
    // 100 training documents x 4 bytes = 400 bytes a row; 40,000 bytes is 100 rows.
    let config = BuildConfig {
        target_budget_bytes: 40_000,
        ..small_config(1)
    };
    let (_, report) = IndexBuilder::new(config)
        .build(data.corpus.clone(), None)
        .unwrap();
    assert_eq!(report.learn_rows, 100);
    let config = BuildConfig {
        target_budget_bytes: 100,
        ..small_config(1)
    };
    let err = IndexBuilder::new(config)
        .build(data.corpus.clone(), None)
        .unwrap_err();
    assert!(matches!(err, BuildError::BudgetTooSmall { .. }), "{err}");
}

#[test]
fn bad_builds_get_typed_errors() {
    let data = data(30, 6);
    let err = IndexBuilder::new(BuildConfig {
        final_hidden_dim: 0,
        ..small_config(1)
    })
    .build(data.corpus.clone(), None)
    .unwrap_err();
    assert!(matches!(err, BuildError::Config(_)));
    let mut learn = data.sample_tokens(10, 1);
    learn[3] = f32::NAN;
    let err = IndexBuilder::new(small_config(1))
        .build(data.corpus.clone(), Some(&learn))
        .unwrap_err();
    assert!(matches!(err, BuildError::Learn(_)), "{err}");
    let err = IndexBuilder::new(small_config(1))
        .build(data.corpus.clone(), Some(&[0.5; 33]))
        .unwrap_err();
    assert!(matches!(err, BuildError::Learn(_)), "{err}");
    // An index loaded from an export has no solver to add documents with.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut loaded = Index::from_files(
        dir.join("model.npz"),
        dir.join("corpus_tokens.npy"),
        dir.join("corpus_counts.npy"),
    )
    .unwrap();
    let err = loaded.add_documents(&[0.5; 16], &[1]).unwrap_err();
    assert!(matches!(err, IndexError::NoSolver));
}
