//! The text encoder's throughput on all-MiniLM-L6-v2 (`cargo xtask
//! fetch-models` first; `cargo xtask bench` does it): sentences per second
//! for `encode` on batches of 32 sentences of 20..60 tokens, and tokens
//! per second for `encode_tokens` on one long text of 1k, 8k and 32k
//! tokens (constant tokens/s means cost linear in length); and tokens per
//! second of a PyLate ColBERT model on the same backbone
//! (`models/pylate-minilm`): batches of 64 queries of 32 tokens and of 32
//! documents cut at 180 tokens, the rows `benches/peers/pylate_speed.py`
//! measures PyLate on PyTorch for.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lemur::text::{EncodeOptions, TextEncoder, TokenOptions};
use lemur_bench::pool;

fn model_dir() -> PathBuf {
    match std::env::var_os("LEMUR_TEXT_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2"),
    }
}

const WORDS: [&str; 40] = [
    "the", "river", "carried", "small", "boats", "past", "an", "old", "mill", "while", "farmers",
    "sold", "apples", "and", "bread", "at", "market", "near", "stone", "bridge", "children",
    "played", "quietly", "under", "tall", "trees", "during", "warm", "summer", "evening", "music",
    "from", "village", "square", "filled", "air", "with", "gentle", "songs", "again",
];

/// Deterministic text of `n_words` common single-piece words.
fn text(n_words: usize, seed: usize) -> String {
    (0..n_words)
        .map(|i| WORDS[(i * 7 + seed * 13 + i * i % 11) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn text_encoder(c: &mut Criterion) {
    let encoder = TextEncoder::from_dir(model_dir())
        .expect("the model is missing: run `cargo xtask fetch-models`");
    // 32 sentences of 18..58 words: 20..60 tokens with [CLS] and [SEP].
    let sentences: Vec<String> = (0..32).map(|i| text(18 + (i * 29) % 41, i)).collect();
    let options = EncodeOptions::default();
    let mut group = c.benchmark_group("text_encode");
    group.throughput(Throughput::Elements(sentences.len() as u64));
    for threads in [1, 2] {
        let pool = pool(threads);
        group.bench_function(BenchmarkId::new("batch32", format!("{threads}t")), |b| {
            b.iter(|| pool.install(|| encoder.encode(&sentences, &options).expect("encodes")))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("text_long");
    let pool = pool(2);
    for n_tokens in [1_000, 8_000, 32_000] {
        let long = text(n_tokens - 2, 1);
        group.throughput(Throughput::Elements(n_tokens as u64));
        group.bench_function(BenchmarkId::new("tokens_2t", n_tokens), |b| {
            b.iter(|| {
                pool.install(|| {
                    encoder
                        .encode_tokens(&[long.as_str()], &TokenOptions::default())
                        .expect("encodes")
                })
            })
        });
    }
    group.finish();
}

/// `models/pylate-minilm`, which `cargo xtask fetch-models` assembles.
fn pylate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/pylate-minilm")
}

fn colbert_encoder(c: &mut Criterion) {
    let encoder = TextEncoder::from_dir(pylate_dir())
        .expect("the PyLate model is missing: run `cargo xtask fetch-models`");
    let settings = encoder.colbert().expect("a ColBERT model").clone();
    // Queries of 20 words, padded to query_length (32) with [MASK];
    // documents of 200 words, cut at document_length (180).
    let queries: Vec<String> = (0..64).map(|i| text(20, i)).collect();
    let documents: Vec<String> = (0..32).map(|i| text(200, i)).collect();
    let mut group = c.benchmark_group("text_colbert");
    for threads in [1, 2] {
        let pool = pool(threads);
        group.throughput(Throughput::Elements(
            (queries.len() * settings.query_length) as u64,
        ));
        group.bench_function(BenchmarkId::new("queries32", format!("{threads}t")), |b| {
            b.iter(|| pool.install(|| encoder.encode_queries(&queries).expect("encodes")))
        });
        group.throughput(Throughput::Elements(
            (documents.len() * settings.document_length) as u64,
        ));
        group.bench_function(
            BenchmarkId::new("documents180", format!("{threads}t")),
            |b| b.iter(|| pool.install(|| encoder.encode_documents(&documents).expect("encodes"))),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = text_encoder, colbert_encoder
}
criterion_main!(benches);
