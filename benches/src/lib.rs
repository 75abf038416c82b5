//! Shared workloads for the criterion benchmarks (see `benches/search.rs`).
//!
//! W10k: 10,000 synthetic ColBERT-shaped documents of 50..=150 tokens,
//! d = 128, tokens around 256 centroids; 32-token queries; a one-block
//! 128 -> 2048 feature map; k' = 200 candidates, k = 10. Everything is
//! seeded, so every run measures the same data.

use lemur::synthetic::{self, CorpusSpec, Rng};
use lemur::{Activation, DocWeights, Index, MultiVectors};

/// The feature width of the benchmark model (the original's default).
pub const FEATURE_DIM: usize = 2048;
/// Tokens per query.
pub const QUERY_TOKENS: usize = 32;

/// A benchmark workload: an index and a batch of queries.
pub struct Workload {
    /// The index (random feature map and `W`: speed does not depend on
    /// their values).
    pub index: Index,
    /// Queries drawn from the corpus's topics.
    pub queries: MultiVectors,
}

/// Builds W10k-shaped data with `n_docs` documents and `n_queries` queries.
pub fn workload(n_docs: usize, n_queries: usize) -> Workload {
    let spec = CorpusSpec {
        n_docs,
        ..CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let queries = data.queries(n_queries, QUERY_TOKENS, 1);
    let map = synthetic::random_mlp(&[spec.dim, FEATURE_DIM], Activation::Gelu, 2);
    let mut rng = Rng::new(3);
    let scale = 1.0 / (FEATURE_DIM as f32).sqrt();
    let weights: Vec<f32> = (0..n_docs * FEATURE_DIM)
        .map(|_| rng.normal() * scale)
        .collect();
    let weights = DocWeights::new(weights, n_docs, FEATURE_DIM).expect("valid weights");
    let index = Index::new(map, weights, data.corpus).expect("valid index");
    Workload { index, queries }
}

/// A rayon pool with `threads` threads.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}
