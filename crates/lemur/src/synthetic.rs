//! Seeded synthetic ColBERT-shaped data for demos, tests and benchmarks.
//!
//! Tokens are unit vectors scattered around a few hundred random centroids
//! (so MaxSim is far from degenerate: documents share topics, and a query
//! drawn from a document's topics has a clear best match). Every number
//! comes from a counter-based generator using only integer arithmetic and
//! IEEE-exact `+ - * / sqrt`, so the same seed gives the same bits on every
//! platform.

use lemur_maxsim::MultiVectors;
use lemur_mlp::{Activation, Block, FeatureMap};

/// A small, fast, seedable generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform integer in `lo..hi` (`lo < hi`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }

    /// Approximately standard normal: the Irwin-Hall sum of 12 uniforms
    /// (exact arithmetic only, unlike Box-Muller's `ln` and `cos`).
    pub fn normal(&mut self) -> f32 {
        let mut sum = 0.0;
        for _ in 0..12 {
            sum += self.uniform();
        }
        sum - 6.0
    }
}

/// The shape of a synthetic corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusSpec {
    /// Documents.
    pub n_docs: usize,
    /// Token width.
    pub dim: usize,
    /// Fewest tokens in a document.
    pub min_tokens: usize,
    /// Most tokens in a document (inclusive).
    pub max_tokens: usize,
    /// Topic centroids tokens are drawn around.
    pub n_centroids: usize,
    /// Topics per document.
    pub topics_per_doc: usize,
    /// Standard deviation of the per-coordinate noise around a centroid
    /// (before normalisation; centroids have unit norm).
    pub noise: f32,
    /// Seed.
    pub seed: u64,
}

impl CorpusSpec {
    /// The benchmark workload: 10k documents of 50..=150 tokens, d = 128,
    /// 256 centroids.
    pub fn colbert_10k() -> CorpusSpec {
        CorpusSpec {
            n_docs: 10_000,
            dim: 128,
            min_tokens: 50,
            max_tokens: 150,
            n_centroids: 256,
            topics_per_doc: 4,
            noise: 0.06,
            seed: 42,
        }
    }
}

/// A synthetic corpus and the centroids it was drawn around.
#[derive(Debug, Clone)]
pub struct SyntheticCorpus {
    /// The documents.
    pub corpus: MultiVectors,
    /// Topic centroids, `[n_centroids, dim]`.
    pub centroids: Vec<f32>,
    /// The topics of each document.
    pub doc_topics: Vec<Vec<usize>>,
    spec: CorpusSpec,
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

fn noisy_unit(rng: &mut Rng, center: &[f32], noise: f32, out: &mut Vec<f32>) {
    let start = out.len();
    out.extend(center.iter().map(|&c| c + noise * rng.normal()));
    normalize(&mut out[start..]);
}

/// Generates a corpus from `spec`.
///
/// # Panics
///
/// If `spec` has a zero width, no centroids, or `min_tokens` is 0 or above
/// `max_tokens`.
#[track_caller]
pub fn corpus(spec: &CorpusSpec) -> SyntheticCorpus {
    assert!(spec.dim >= 1 && spec.n_centroids >= 1 && spec.topics_per_doc >= 1);
    assert!(spec.min_tokens >= 1 && spec.min_tokens <= spec.max_tokens);
    let mut rng = Rng::new(spec.seed);
    let mut centroids = Vec::with_capacity(spec.n_centroids * spec.dim);
    for _ in 0..spec.n_centroids {
        let start = centroids.len();
        centroids.extend((0..spec.dim).map(|_| rng.normal()));
        normalize(&mut centroids[start..]);
    }
    let mut tokens = Vec::new();
    let mut counts = Vec::with_capacity(spec.n_docs);
    let mut doc_topics = Vec::with_capacity(spec.n_docs);
    for _ in 0..spec.n_docs {
        let n = rng.range(spec.min_tokens, spec.max_tokens + 1);
        let topics: Vec<usize> = (0..spec.topics_per_doc)
            .map(|_| rng.range(0, spec.n_centroids))
            .collect();
        for _ in 0..n {
            let topic = topics[rng.range(0, topics.len())];
            noisy_unit(
                &mut rng,
                &centroids[topic * spec.dim..][..spec.dim],
                spec.noise,
                &mut tokens,
            );
        }
        counts.push(n);
        doc_topics.push(topics);
    }
    let corpus = MultiVectors::new(tokens, spec.dim, &counts).expect("generated corpus is valid");
    SyntheticCorpus {
        corpus,
        centroids,
        doc_topics,
        spec: spec.clone(),
    }
}

impl SyntheticCorpus {
    /// `n_queries` queries of `tokens_per_query` tokens each. Each query
    /// picks a random document and draws its tokens around that document's
    /// topics, with twice the corpus noise, so it has a clear but not
    /// trivial best match.
    pub fn queries(&self, n_queries: usize, tokens_per_query: usize, seed: u64) -> MultiVectors {
        let dim = self.spec.dim;
        let mut rng = Rng::new(seed.wrapping_add(0xABCD));
        let mut tokens = Vec::with_capacity(n_queries * tokens_per_query * dim);
        for _ in 0..n_queries {
            let doc = rng.range(0, self.doc_topics.len());
            let topics = &self.doc_topics[doc];
            for _ in 0..tokens_per_query {
                let topic = topics[rng.range(0, topics.len())];
                noisy_unit(
                    &mut rng,
                    &self.centroids[topic * dim..][..dim],
                    2.0 * self.spec.noise,
                    &mut tokens,
                );
            }
        }
        MultiVectors::new(tokens, dim, &vec![tokens_per_query; n_queries])
            .expect("generated queries are valid")
    }

    /// `n` tokens sampled uniformly from the corpus (a learn sample).
    pub fn sample_tokens(&self, n: usize, seed: u64) -> Vec<f32> {
        let dim = self.spec.dim;
        let mut rng = Rng::new(seed);
        let rows = self.corpus.n_tokens();
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let row = rng.range(0, rows);
            out.extend_from_slice(&self.corpus.tokens()[row * dim..][..dim]);
        }
        out
    }
}

/// A random (untrained) learned-style feature map with the given widths
/// (`widths[0] = d`, last = `h`), PyTorch-like initialisation. Useful for
/// exercising the query path's speed; its features carry no learned signal.
///
/// # Panics
///
/// If fewer than two widths are given or one is 0.
#[track_caller]
pub fn random_mlp(widths: &[usize], activation: Activation, seed: u64) -> FeatureMap {
    assert!(widths.len() >= 2 && widths.iter().all(|&w| w >= 1));
    let mut rng = Rng::new(seed);
    let blocks = widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let (n_in, n_out) = (w[0], w[1]);
            let scale = 1.0 / (n_in as f32).sqrt();
            Block::new(
                i,
                (0..n_in * n_out).map(|_| rng.normal() * scale).collect(),
                n_in,
                n_out,
                (0..n_out).map(|_| rng.normal() * 0.1).collect(),
                (0..n_out).map(|_| 1.0 + rng.normal() * 0.1).collect(),
                (0..n_out).map(|_| rng.normal() * 0.1).collect(),
            )
            .expect("generated block is valid")
        })
        .collect();
    FeatureMap::mlp(blocks, activation).expect("generated widths connect")
}

/// The random-feature map with an i.i.d. N(0, 1) projection `[d, h]`.
pub fn random_features(dim: usize, h: usize, seed: u64) -> FeatureMap {
    let mut rng = Rng::new(seed);
    FeatureMap::random((0..dim * h).map(|_| rng.normal()).collect(), dim, h).expect("valid widths")
}
