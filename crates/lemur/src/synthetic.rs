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

/// `spec.n_centroids` unit centroids drawn from `rng`.
fn centroids_of(spec: &CorpusSpec, rng: &mut Rng) -> Vec<f32> {
    let mut centroids = Vec::with_capacity(spec.n_centroids * spec.dim);
    for _ in 0..spec.n_centroids {
        let start = centroids.len();
        centroids.extend((0..spec.dim).map(|_| rng.normal()));
        normalize(&mut centroids[start..]);
    }
    centroids
}

/// Appends `n` tokens to `out`, each around a centroid picked from
/// `topics`, with per-coordinate `noise` before normalisation.
fn draw_tokens(
    rng: &mut Rng,
    centroids: &[f32],
    dim: usize,
    topics: &[usize],
    n: usize,
    noise: f32,
    out: &mut Vec<f32>,
) {
    for _ in 0..n {
        let topic = topics[rng.range(0, topics.len())];
        noisy_unit(rng, &centroids[topic * dim..][..dim], noise, out);
    }
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
    let centroids = centroids_of(spec, &mut rng);
    let mut tokens = Vec::new();
    let mut counts = Vec::with_capacity(spec.n_docs);
    let mut doc_topics = Vec::with_capacity(spec.n_docs);
    for _ in 0..spec.n_docs {
        let n = rng.range(spec.min_tokens, spec.max_tokens + 1);
        let topics: Vec<usize> = (0..spec.topics_per_doc)
            .map(|_| rng.range(0, spec.n_centroids))
            .collect();
        draw_tokens(
            &mut rng,
            &centroids,
            spec.dim,
            &topics,
            n,
            spec.noise,
            &mut tokens,
        );
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
            let noise = 2.0 * self.spec.noise;
            draw_tokens(
                &mut rng,
                &self.centroids,
                dim,
                topics,
                tokens_per_query,
                noise,
                &mut tokens,
            );
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

/// Mixes a seed and an index into an unrelated generator state, so that
/// the streams of neighbouring documents do not overlap (SplitMix64
/// streams from nearby states are shifted copies of each other).
fn stream_seed(seed: u64, index: u64) -> u64 {
    let mut mix = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    mix.next_u64() ^ index
}

/// A synthetic corpus too large to hold: every document is generated on
/// demand from `(spec.seed, document id)`, so a build can stream it in
/// chunks and an exact ground truth can be computed chunk by chunk without
/// the whole corpus on disk or in memory. The distribution is
/// [`CorpusSpec`]'s (tokens around shared topic centroids).
#[derive(Debug, Clone)]
pub struct StreamedCorpus {
    spec: CorpusSpec,
    centroids: Vec<f32>,
}

impl CorpusSpec {
    /// The scale benchmark's workload: `n_docs` documents of 16..=120
    /// tokens (68 on average, MS MARCO passages' mean under ColBERT),
    /// d = 128, otherwise W10k's distribution.
    pub fn colbert_scale(n_docs: usize) -> CorpusSpec {
        CorpusSpec {
            n_docs,
            min_tokens: 16,
            max_tokens: 120,
            ..CorpusSpec::colbert_10k()
        }
    }
}

impl StreamedCorpus {
    /// The corpus described by `spec` (only its centroids are made now).
    ///
    /// # Panics
    ///
    /// As [`corpus`].
    #[track_caller]
    pub fn new(spec: &CorpusSpec) -> StreamedCorpus {
        assert!(spec.dim >= 1 && spec.n_centroids >= 1 && spec.topics_per_doc >= 1);
        assert!(spec.min_tokens >= 1 && spec.min_tokens <= spec.max_tokens);
        StreamedCorpus {
            spec: spec.clone(),
            centroids: centroids_of(spec, &mut Rng::new(spec.seed)),
        }
    }

    /// The specification.
    pub fn spec(&self) -> &CorpusSpec {
        &self.spec
    }

    /// Documents in the corpus.
    pub fn len(&self) -> usize {
        self.spec.n_docs
    }

    /// Whether the corpus has no documents.
    pub fn is_empty(&self) -> bool {
        self.spec.n_docs == 0
    }

    /// The generator of document `doc`, positioned after its length and
    /// topics, with them.
    fn document_header(&self, doc: usize) -> (Rng, usize, Vec<usize>) {
        let mut rng = Rng::new(stream_seed(self.spec.seed, doc as u64));
        let n = rng.range(self.spec.min_tokens, self.spec.max_tokens + 1);
        let topics = (0..self.spec.topics_per_doc)
            .map(|_| rng.range(0, self.spec.n_centroids))
            .collect();
        (rng, n, topics)
    }

    /// Tokens in document `doc`.
    pub fn doc_len(&self, doc: usize) -> usize {
        self.document_header(doc).1
    }

    /// Appends document `doc`'s tokens (`[n, d]`) to `out`; returns `n`.
    pub fn document(&self, doc: usize, out: &mut Vec<f32>) -> usize {
        let (mut rng, n, topics) = self.document_header(doc);
        let (dim, noise) = (self.spec.dim, self.spec.noise);
        draw_tokens(&mut rng, &self.centroids, dim, &topics, n, noise, out);
        n
    }

    /// Documents `docs` as one ragged batch, generated in parallel on the
    /// current rayon pool.
    ///
    /// # Panics
    ///
    /// If the range is empty or reaches past the corpus.
    #[track_caller]
    pub fn chunk(&self, docs: std::ops::Range<usize>) -> MultiVectors {
        use rayon::prelude::*;
        assert!(
            !docs.is_empty() && docs.end <= self.spec.n_docs,
            "chunk range"
        );
        let parts: Vec<(Vec<f32>, Vec<usize>)> = docs
            .clone()
            .into_par_iter()
            .chunks(256)
            .map(|ids| {
                let mut tokens = Vec::new();
                let counts = ids
                    .iter()
                    .map(|&id| self.document(id, &mut tokens))
                    .collect();
                (tokens, counts)
            })
            .collect();
        let total: usize = parts.iter().map(|(t, _)| t.len()).sum();
        let mut tokens = Vec::with_capacity(total);
        let mut counts = Vec::with_capacity(docs.len());
        for (t, c) in parts {
            tokens.extend_from_slice(&t);
            counts.extend_from_slice(&c);
        }
        MultiVectors::new(tokens, self.spec.dim, &counts).expect("generated documents are valid")
    }

    /// `n_queries` queries of `tokens_per_query` tokens, each drawn around
    /// the topics of a random document with twice the corpus noise (as
    /// [`SyntheticCorpus::queries`]); query `i` depends only on
    /// `(seed, i)` and the corpus spec.
    ///
    /// # Panics
    ///
    /// If the corpus has no documents.
    #[track_caller]
    pub fn queries(&self, n_queries: usize, tokens_per_query: usize, seed: u64) -> MultiVectors {
        let dim = self.spec.dim;
        let mut tokens = Vec::with_capacity(n_queries * tokens_per_query * dim);
        for query in 0..n_queries {
            let mut rng = Rng::new(stream_seed(seed.wrapping_add(0xABCD), query as u64));
            let doc = rng.range(0, self.spec.n_docs);
            let topics = self.document_header(doc).2;
            let noise = 2.0 * self.spec.noise;
            draw_tokens(
                &mut rng,
                &self.centroids,
                dim,
                &topics,
                tokens_per_query,
                noise,
                &mut tokens,
            );
        }
        MultiVectors::new(tokens, dim, &vec![tokens_per_query; n_queries])
            .expect("generated queries are valid")
    }
}
