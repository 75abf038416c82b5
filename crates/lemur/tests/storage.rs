//! Compressed storage: what the compressed forms find against the f32
//! ones, the size switch, saving, opening, adding documents and corrupt
//! files.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use lemur::io::LoadErrorKind;
use lemur::maxsim::int8::Int8Matrix;
use lemur::synthetic::{CorpusSpec, StreamedCorpus};
use lemur::{
    BuildConfig, Hit, Index, IndexBuilder, IndexError, MultiVectors, SearchParams, StorageConfig,
    TokenCodec, WeightCodec, current_generation,
};

const PARAMS: SearchParams = SearchParams {
    k: 10,
    n_candidates: 40,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-storage-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn corpus() -> &'static StreamedCorpus {
    static CORPUS: OnceLock<StreamedCorpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        StreamedCorpus::new(&CorpusSpec {
            dim: 32,
            min_tokens: 4,
            max_tokens: 16,
            n_centroids: 64,
            ..CorpusSpec::colbert_scale(3000)
        })
    })
}

fn config(storage: StorageConfig) -> BuildConfig {
    BuildConfig {
        epochs: 0,
        final_hidden_dim: 256,
        fit_sample: 1024,
        seed: 5,
        storage,
        ..BuildConfig::default()
    }
}

/// Compressed from any size, with `tokens`, `weights` and `rescore_depth`.
fn compressed(tokens: TokenCodec, weights: WeightCodec, rescore_depth: usize) -> StorageConfig {
    StorageConfig {
        compress_min_docs: 0,
        tokens,
        weights,
        rescore_depth,
    }
}

/// The f32 index over the first 2,500 documents.
fn f32_index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        IndexBuilder::new(config(StorageConfig::default()))
            .build(corpus().chunk(0..2500), None)
            .unwrap()
            .0
    })
}

fn queries() -> MultiVectors {
    corpus().queries(60, 8, 3)
}

fn shared(a: &[Hit], b: &[Hit]) -> usize {
    a.iter()
        .filter(|x| b.iter().any(|y| y.doc == x.doc))
        .count()
}

#[test]
fn small_indexes_stay_in_f32() {
    let index = f32_index();
    assert_eq!(index.storage(), StorageConfig::F32);
    assert_eq!(index.compressed_bytes(), 0);
    let mut copy = index.clone();
    // A depth past the limit is clamped, so the index still saves and
    // opens.
    let mut deep = index.clone();
    assert!(deep.compress(&compressed(TokenCodec::Int4, WeightCodec::Int8, usize::MAX)));
    assert_eq!(deep.storage().rescore_depth, 1 << 16);
    let dir = scratch("deep");
    deep.save(&dir).unwrap();
    assert_eq!(Index::open(&dir).unwrap().storage().rescore_depth, 1 << 16);
    let at_least = StorageConfig {
        compress_min_docs: 2501,
        ..StorageConfig::default()
    };
    assert!(!copy.compress(&at_least));
    assert_eq!(copy.storage(), StorageConfig::F32);
}

#[test]
fn compressed_tokens_scored_again_in_full_give_the_f32_hits() {
    let index = f32_index();
    let queries = queries();
    let expected = index.search_batch(&queries, PARAMS).unwrap();
    for tokens in [TokenCodec::Int8, TokenCodec::Int4] {
        let mut copy = index.clone();
        assert!(copy.compress(&compressed(tokens, WeightCodec::F32, PARAMS.n_candidates)));
        assert_eq!(copy.storage().tokens, tokens);
        assert_eq!(copy.search_batch(&queries, PARAMS).unwrap(), expected);
    }
}

#[test]
fn int8_rows_pick_the_best_candidates_by_their_decoded_rows() {
    let index = f32_index();
    let mut copy = index.clone();
    assert!(copy.compress(&compressed(TokenCodec::F32, WeightCodec::Int8, 0)));
    let h = index.feature_dim();
    let rows = Int8Matrix::from_f32(index.weights().values(), h);
    let queries = queries();
    let features = copy.query_features(&queries);
    let candidates = copy.candidates(&features, PARAMS.n_candidates);
    for (f, list) in features.chunks_exact(h).zip(&candidates) {
        let mut scores: Vec<f64> = (0..rows.n_rows())
            .map(|doc| lemur::maxsim::naive::dot(f, &rows.row(doc)))
            .collect();
        let listed: Vec<f64> = list.iter().map(|&doc| scores[doc as usize]).collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        let floor = scores[PARAMS.n_candidates - 1];
        assert_eq!(list.len(), PARAMS.n_candidates);
        for score in listed {
            assert!(
                score >= floor - 1e-4 * floor.abs().max(1.0),
                "{score} < {floor}"
            );
        }
    }
}

#[test]
fn the_default_compression_keeps_the_f32_top_10_with_exact_scores() {
    let index = f32_index();
    let mut copy = index.clone();
    assert!(copy.compress(&compressed(TokenCodec::Int4, WeightCodec::Int8, 32)));
    assert!(copy.compressed_bytes() > 0);
    let queries = queries();
    let expected = index.search_batch(&queries, PARAMS).unwrap();
    let found = copy.search_batch(&queries, PARAMS).unwrap();
    let kept: usize = found.iter().zip(&expected).map(|(a, b)| shared(a, b)).sum();
    let recall = kept as f64 / (10 * queries.len()) as f64;
    assert!(recall >= 0.9, "recall@10 against the f32 index {recall}");
    // Every hit carries its f32 MaxSim.
    for (q, hits) in found.iter().enumerate() {
        for hit in hits {
            let exact = naive_maxsim(index, queries.get(q), hit.doc);
            assert!((hit.score - exact).abs() <= 1e-4 * (1.0 + exact.abs()));
        }
    }
}

fn naive_maxsim(index: &Index, query: &[f32], doc: u32) -> f32 {
    lemur::maxsim::naive::maxsim(query, index.corpus().get(doc as usize), index.dim())
}

#[test]
fn a_compressed_index_saves_opens_and_grows() {
    let storage = compressed(TokenCodec::Int4, WeightCodec::Int8, 16);
    let (index, report) = IndexBuilder::new(config(storage))
        .build(corpus().chunk(0..2500), None)
        .unwrap();
    assert!(report.compress_time.as_nanos() > 0);
    assert_eq!(index.storage(), storage);
    let dir = scratch("round-trip");
    index.save(&dir).unwrap();
    let queries = queries();
    let before = index.search_batch(&queries, PARAMS).unwrap();
    let opened = Index::open(&dir).unwrap();
    assert_eq!(opened.storage(), storage);
    assert_eq!(opened.compressed_bytes(), index.compressed_bytes());
    assert_eq!(opened.search_batch(&queries, PARAMS).unwrap(), before);

    // Added documents are compressed as they come: a query made of an
    // added document's own tokens finds it first, and the saved result
    // searches like the grown index.
    let mut loaded = Index::load(&dir).unwrap();
    assert_eq!(loaded.search_batch(&queries, PARAMS).unwrap(), before);
    let added = corpus().chunk(2500..3000);
    let counts: Vec<usize> = added.counts().collect();
    assert_eq!(
        loaded.add_documents(added.tokens(), &counts).unwrap(),
        2500..3000
    );
    for doc in [2500usize, 2999] {
        let hits = loaded.search_one(added.get(doc - 2500), PARAMS).unwrap();
        assert_eq!(hits[0].doc as usize, doc, "document {doc} finds itself");
    }
    loaded.save(&dir).unwrap();
    let reopened = Index::open_verified(&dir).unwrap();
    assert_eq!(reopened.len(), 3000);
    assert_eq!(
        reopened.search_batch(&queries, PARAMS).unwrap(),
        loaded.search_batch(&queries, PARAMS).unwrap()
    );
}

#[test]
fn corrupt_compressed_arrays_are_typed_errors() {
    let mut index = f32_index().clone();
    index.compress(&compressed(TokenCodec::Int4, WeightCodec::Int8, 16));
    for name in ["token_codes", "W_codes"] {
        let dir = scratch(name);
        index.save(&dir).unwrap();
        let path = current_generation(&dir)
            .unwrap()
            .join(format!("{name}.npy"));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        match Index::open(&dir) {
            Err(IndexError::Load(e)) => {
                assert!(
                    matches!(e.kind, LoadErrorKind::Checksum { ref key, .. } if key == name),
                    "{e}"
                )
            }
            other => panic!("expected a checksum error for {name}, got {other:?}"),
        }
    }
}
