//! Compressed storage: what a large index keeps resident instead of its
//! f32 `W` and tokens.
//!
//! At a million documents the f32 `W` (8 KiB per document at h = 2048) and
//! the f32 tokens (512 B per token at d = 128, about 35 KB per document)
//! do not fit in memory. A compressed index keeps int8 rows of `W` (one
//! scale per row) and 4- or 8-bit tokens (one scale per token) in memory;
//! the f32 originals stay in the index directory, memory-mapped, and are
//! read only for the few documents whose order the compressed tokens
//! cannot settle: each query's `rescore_depth` leaders by compressed score
//! are scored again on their f32 tokens, and those scores are the hits'.

use std::sync::Arc;

use lemur_io::MappedF32;
use lemur_maxsim::int8::Int8Matrix;
use lemur_maxsim::{CodeBits, MultiVectors, QuantizedVectors};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::index::Index;

/// How the corpus tokens are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCodec {
    /// The f32 tokens (exact MaxSim for every candidate).
    F32,
    /// 8-bit codes and a scale per token: 132 B per token at d = 128.
    Int8,
    /// 4-bit codes and a scale per token: 68 B per token at d = 128.
    Int4,
}

/// How the rows of `W` are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightCodec {
    /// The f32 rows.
    F32,
    /// 8-bit codes and a scale per row: 2,052 B per row at h = 2048.
    Int8,
}

/// When and how an index keeps compressed forms of `W` and its tokens
/// instead of the f32 ones (part of [`crate::BuildConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Indexes with at least this many documents are compressed
    /// (`usize::MAX`: never); smaller ones keep everything in f32.
    pub compress_min_docs: usize,
    /// The token codec of a compressed index.
    pub tokens: TokenCodec,
    /// The `W` codec of a compressed index.
    pub weights: WeightCodec,
    /// Leaders per query, by compressed score, that are scored again on
    /// their f32 tokens (at least `k` are). More costs a read of more f32
    /// tokens from disk per query and brings the hits closer to the f32
    /// rerank's.
    pub rescore_depth: usize,
}

impl Default for StorageConfig {
    /// Compressed from 200,000 documents (where the graph first stage
    /// starts too), 4-bit tokens, int8 `W`, 32 leaders scored again in f32
    /// (docs/PERFORMANCE.md has the trade-offs).
    fn default() -> Self {
        StorageConfig {
            compress_min_docs: 200_000,
            tokens: TokenCodec::Int4,
            weights: WeightCodec::Int8,
            rescore_depth: 32,
        }
    }
}

impl StorageConfig {
    /// Everything in f32, whatever the size.
    pub const F32: StorageConfig = StorageConfig {
        compress_min_docs: usize::MAX,
        tokens: TokenCodec::F32,
        weights: WeightCodec::F32,
        rescore_depth: 0,
    };
}

/// Most leaders per query a compressed index may score again.
pub(crate) const MAX_RESCORE_DEPTH: usize = 1 << 16;

impl StorageConfig {
    /// Checks every value before a build starts.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.rescore_depth > MAX_RESCORE_DEPTH {
            return Err(format!(
                "storage.rescore_depth must be at most {MAX_RESCORE_DEPTH}"
            ));
        }
        Ok(())
    }
}

/// The compressed forms an index searches with.
#[derive(Debug, Clone)]
pub(crate) struct Compressed {
    pub(crate) tokens: Option<QuantizedVectors>,
    pub(crate) weights: Option<Int8Matrix>,
    pub(crate) rescore_depth: usize,
    /// The f32 tokens' file of an index opened from disk: the leaders are
    /// read from it with one positional read each (one I/O request when
    /// not cached, where the memory map would fault page by page), so
    /// their pages stay out of the process. `None` reads them from the
    /// corpus in memory.
    pub(crate) f32_tokens: Option<Arc<MappedF32>>,
}

impl Compressed {
    /// The compressed forms `config` asks for, of `rows` (`[n, width]`)
    /// and `corpus`, in parallel over blocks of documents.
    pub(crate) fn new<T: AsRef<[f32]> + Sync>(
        config: &StorageConfig,
        rows: &[f32],
        width: usize,
        corpus: &MultiVectors<T>,
    ) -> Self {
        Compressed {
            tokens: code_bits(config.tokens).map(|bits| quantise_tokens(corpus, bits)),
            weights: (config.weights == WeightCodec::Int8).then(|| quantise_rows(rows, width)),
            // What opening a saved index accepts.
            rescore_depth: config.rescore_depth.min(MAX_RESCORE_DEPTH),
            f32_tokens: None,
        }
    }

    /// Appends the compressed forms of added documents.
    pub(crate) fn append<T: AsRef<[f32]> + Sync>(
        &mut self,
        rows: &[f32],
        width: usize,
        added: &MultiVectors<T>,
    ) {
        if let Some(tokens) = &mut self.tokens {
            tokens.append(&quantise_tokens(added, tokens.bits()));
        }
        if let Some(weights) = &mut self.weights {
            weights.append(&quantise_rows(rows, width));
        }
    }

    /// What these forms are, as a configuration that applies at any size.
    pub(crate) fn config(&self) -> StorageConfig {
        StorageConfig {
            compress_min_docs: 0,
            tokens: match self.tokens.as_ref().map(QuantizedVectors::bits) {
                None => TokenCodec::F32,
                Some(CodeBits::Eight) => TokenCodec::Int8,
                Some(CodeBits::Four) => TokenCodec::Int4,
            },
            weights: match self.weights {
                None => WeightCodec::F32,
                Some(_) => WeightCodec::Int8,
            },
            rescore_depth: self.rescore_depth,
        }
    }

    /// Resident bytes of the compressed forms.
    pub(crate) fn bytes(&self) -> usize {
        self.tokens.as_ref().map_or(0, QuantizedVectors::bytes)
            + self.weights.as_ref().map_or(0, Int8Matrix::bytes)
    }
}

/// The code width of a token codec (`None`: f32).
pub(crate) fn code_bits(codec: TokenCodec) -> Option<CodeBits> {
    match codec {
        TokenCodec::F32 => None,
        TokenCodec::Int8 => Some(CodeBits::Eight),
        TokenCodec::Int4 => Some(CodeBits::Four),
    }
}

/// Documents per task when compressing.
const DOCS_PER_TASK: usize = 4096;

fn quantise_tokens<T: AsRef<[f32]> + Sync>(
    corpus: &MultiVectors<T>,
    bits: CodeBits,
) -> QuantizedVectors {
    let (dim, offsets) = (corpus.dim(), corpus.offsets());
    let parts: Vec<QuantizedVectors> = (0..corpus.len())
        .step_by(DOCS_PER_TASK)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let end = (first + DOCS_PER_TASK).min(corpus.len());
            let tokens = &corpus.tokens()[offsets[first] * dim..offsets[end] * dim];
            let counts: Vec<usize> = offsets[first..=end]
                .windows(2)
                .map(|w| w[1] - w[0])
                .collect();
            let block = MultiVectors::new(tokens, dim, &counts)
                .expect("a range of valid documents is valid");
            QuantizedVectors::from_f32(&block, bits)
        })
        .collect();
    joined(parts, QuantizedVectors::append)
}

/// The parts in order, appended to the first with `append`.
fn joined<T>(parts: Vec<T>, append: impl Fn(&mut T, &T)) -> T {
    let mut parts = parts.into_iter();
    let mut all = parts.next().expect("an index has documents");
    for part in parts {
        append(&mut all, &part);
    }
    all
}

fn quantise_rows(rows: &[f32], width: usize) -> Int8Matrix {
    let parts: Vec<Int8Matrix> = rows
        .par_chunks(DOCS_PER_TASK * width)
        .map(|block| Int8Matrix::from_f32(block, width))
        .collect();
    joined(parts, Int8Matrix::append)
}

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Keeps the compressed forms `config` asks for when the index has at
    /// least `config.compress_min_docs` documents (and drops any
    /// otherwise); returns whether it did. Searches then score `W` and
    /// rerank on them, and read the f32 tokens only for each query's
    /// `rescore_depth` leaders; saving writes them beside the f32
    /// originals, and [`Index::open`] keeps only them in memory.
    /// Precision copies ([`Index::with_precision`]) apply to whatever
    /// stays in f32. Runs on the current rayon pool.
    pub fn compress(&mut self, config: &StorageConfig) -> bool {
        let applies = self.len() >= config.compress_min_docs
            && (config.tokens != TokenCodec::F32 || config.weights != WeightCodec::F32);
        self.compressed = applies.then(|| {
            Arc::new(Compressed::new(
                config,
                self.weights.values(),
                self.feature_dim(),
                &self.corpus,
            ))
        });
        applies
    }

    /// How this index keeps `W` and its tokens in memory:
    /// [`StorageConfig::F32`] when uncompressed.
    pub fn storage(&self) -> StorageConfig {
        self.compressed
            .as_ref()
            .map_or(StorageConfig::F32, |compressed| compressed.config())
    }

    /// Resident bytes of the compressed forms (0 when uncompressed).
    pub fn compressed_bytes(&self) -> usize {
        self.compressed.as_ref().map_or(0, |c| c.bytes())
    }

    /// Sets how many leaders per query are scored again on their f32
    /// tokens (clamped to 65536). No effect on an uncompressed index.
    pub fn set_rescore_depth(&mut self, rescore_depth: usize) {
        if let Some(compressed) = &mut self.compressed {
            Arc::make_mut(compressed).rescore_depth = rescore_depth.min(MAX_RESCORE_DEPTH);
        }
    }
}
