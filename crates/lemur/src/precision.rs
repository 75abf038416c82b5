//! Opt-in reduced precision: the copies of `W` and of the corpus tokens a
//! search runs on instead of the f32 originals.
//!
//! The two stages have different needs. The approximate scores only pick
//! candidates, and a single query's latency is the time to stream `W`, so
//! `W` can be stored at a half (bf16) or a quarter (int8) of f32's bytes.
//! The rerank decides the final order, so its tokens are either exact f32,
//! bf16 (whose rounding keeps 99.9% of the f32 top 10 on W10k), or a bf16
//! or int8 copy that only filters what the f32 tokens score again.

use std::sync::Arc;

use lemur_maxsim::MultiVectors;
use lemur_maxsim::bf16::{Bf16Matrix, Bf16Vectors};
use lemur_maxsim::int8::{Int8Matrix, Int8Vectors};

use crate::filter::{FilterBounds, RowBounds};
use crate::index::Index;
use crate::token_filter::{Rounding, TokenBounds};

/// How searches store `W` for the approximate scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightPrecision {
    /// The f32 `W` itself (faer GEMMs).
    #[default]
    F32,
    /// A bf16 copy, half the bytes; query features are rounded to bf16 too.
    Bf16,
    /// An int8 copy with one scale per document, a quarter of the bytes;
    /// query features stay f32.
    Int8,
    /// A bf16 copy that only shortlists: a bound on the bf16 scores' error
    /// says which documents can still be among the best by f32 score, and
    /// those rows of the f32 `W` score them again. The candidates are the
    /// f32 ones (up to f32 rounding) at about the bytes of bf16 per query;
    /// the f32 `W` stays resident beside the copy (1.5x the memory of
    /// `W`). A query whose margin is not finite, or whose survivors pass
    /// an eighth of `W`, is scored on the f32 `W` in full.
    Bf16Filter,
    /// The same int8 copy, scored against query features quantised to
    /// int8 as well (one scale per query): exact integer dot products,
    /// `vpdpbusd` on CPUs with AVX512-VNNI (64 byte products per
    /// instruction), a portable integer loop elsewhere, the same scores
    /// on every CPU.
    Int8Dot,
    /// That int8 copy and those integer dot products as a filter, like
    /// [`WeightPrecision::Bf16Filter`]: a bound per document (its own
    /// norms: each row has its own scale) says which documents can still
    /// be among the best by f32 score, and their f32 rows decide. The
    /// candidates are the f32 ones at about a quarter of f32's bytes per
    /// query plus the survivors' rows; the f32 `W` stays resident (1.25x
    /// the memory of `W`). The bound is wider than bf16's, so it settles
    /// only where the approximate scores of the best documents stand out
    /// from the rest, as a fitted `W`'s do (docs/PERFORMANCE.md); a query
    /// with survivors past an eighth of `W` is scored on the f32 `W` in
    /// full. Where the integer dot products have no VNNI
    /// ([`lemur_maxsim::int8::int8_accelerated`]) the integer loop would
    /// be slower than the f32 product, so `W` is scored in f32 directly.
    Int8Filter,
}

/// How the rerank stores the corpus tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenPrecision {
    /// The f32 tokens: the rerank is exact MaxSim.
    #[default]
    F32,
    /// A bf16 copy, half the bytes; query tokens are rounded to bf16 too
    /// and products are accumulated in f32.
    Bf16,
    /// A bf16 copy that only filters: every candidate is scored in bf16, a
    /// bound on those scores' error says which can still be among the `k`
    /// best by f32 score, and only those are scored again on the f32
    /// tokens. The hits are the f32 rerank's, scores and ties included,
    /// at the bf16 rerank's cost plus a few f32 candidates per query (on
    /// W10k about 12 of 200); the f32 tokens stay beside the copy (1.5x
    /// the corpus memory).
    Bf16Filter,
    /// The same filter on an int8 copy (one scale per token, a quarter of
    /// the bytes): exact integer dot products with `vpdpbusd` (about 1.8x
    /// the bf16 kernel's speed on an AMD EPYC Zen 4). Its bound is about
    /// four times bf16's, so more candidates are scored again in f32 (on
    /// W10k about 16 of 200); the hits are still the f32 rerank's. Where
    /// the index runs below the AVX-512 level or the CPU lacks
    /// AVX512-VNNI ([`lemur_maxsim::int8::int8_accelerated`]) the integer
    /// loop would be slower than f32 itself, so the rerank runs in f32
    /// directly: the same hits.
    Int8Filter,
}

/// What a search runs on: see [`Index::with_precision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Precision {
    /// Storage of `W` for the approximate scores.
    pub weights: WeightPrecision,
    /// Storage of the corpus tokens for the rerank.
    pub tokens: TokenPrecision,
}

impl Precision {
    /// Everything in f32 (the default).
    pub const F32: Precision = Precision {
        weights: WeightPrecision::F32,
        tokens: TokenPrecision::F32,
    };
    /// `W` and the tokens in bf16 ([`Index::with_bf16`]).
    pub const BF16: Precision = Precision {
        weights: WeightPrecision::Bf16,
        tokens: TokenPrecision::Bf16,
    };
    /// `W` shortlisted in bf16 and decided in f32 (the f32 candidates), and
    /// an exact f32 rerank: the f32 results at about bf16's scoring cost.
    pub const BF16_FILTER: Precision = Precision {
        weights: WeightPrecision::Bf16Filter,
        tokens: TokenPrecision::F32,
    };
    /// Both stages through bf16 filters ([`WeightPrecision::Bf16Filter`],
    /// [`TokenPrecision::Bf16Filter`]): the f32 pipeline's hits at about
    /// the bf16 pipeline's cost, with the f32 `W` and tokens resident
    /// beside their bf16 copies.
    pub const BF16_FILTER_ALL: Precision = Precision {
        weights: WeightPrecision::Bf16Filter,
        tokens: TokenPrecision::Bf16Filter,
    };
    /// `W` shortlisted in bf16 and the rerank filtered on int8 tokens
    /// ([`WeightPrecision::Bf16Filter`], [`TokenPrecision::Int8Filter`]):
    /// the f32 pipeline's hits, the fastest way to them on CPUs with
    /// AVX512-VNNI (docs/PERFORMANCE.md).
    pub const BF16_INT8_FILTER: Precision = Precision {
        weights: WeightPrecision::Bf16Filter,
        tokens: TokenPrecision::Int8Filter,
    };
    /// Both stages through int8 filters ([`WeightPrecision::Int8Filter`],
    /// [`TokenPrecision::Int8Filter`]): the f32 pipeline's hits at the
    /// fewest bytes per query, the lowest single-query latency to them on
    /// CPUs with AVX512-VNNI and a fitted `W` (docs/PERFORMANCE.md).
    pub const INT8_FILTERS: Precision = Precision {
        weights: WeightPrecision::Int8Filter,
        tokens: TokenPrecision::Int8Filter,
    };
    /// `W` in int8, scored against f32 features, and an exact f32
    /// rerank.
    pub const INT8_WEIGHTS: Precision = Precision {
        weights: WeightPrecision::Int8,
        tokens: TokenPrecision::F32,
    };
    /// `W` and the query features in int8 (integer dot products) and an
    /// exact f32 rerank: the fastest single query measured so far, at
    /// some loss of the f32 top 10 (docs/PERFORMANCE.md).
    pub const INT8_DOT: Precision = Precision {
        weights: WeightPrecision::Int8Dot,
        tokens: TokenPrecision::F32,
    };
}

/// A reduced copy of `W`.
#[derive(Debug, Clone)]
pub(crate) enum ReducedWeights {
    Bf16(Bf16Matrix),
    /// The bf16 copy of [`WeightPrecision::Bf16Filter`] and its bounds.
    Bf16Filter(Bf16Matrix, FilterBounds),
    Int8(Int8Matrix),
    /// The int8 copy of [`WeightPrecision::Int8Filter`] and its row norms.
    Int8Filter(Int8Matrix, RowBounds),
}

/// A reduced copy of the corpus tokens.
#[derive(Debug, Clone)]
pub(crate) enum ReducedTokens {
    Bf16(Bf16Vectors),
    /// The bf16 copy of [`TokenPrecision::Bf16Filter`] and its bounds.
    Bf16Filter(Bf16Vectors, TokenBounds),
    /// The int8 copy of [`TokenPrecision::Int8Filter`] and its bounds.
    Int8Filter(Int8Vectors, TokenBounds),
}

/// The reduced copies an index searches with; `None` fields mean f32.
#[derive(Debug, Clone)]
pub(crate) struct ReducedCopies {
    /// What the copies were built for (two weight precisions share the
    /// int8 copy).
    pub(crate) precision: Precision,
    pub(crate) weights: Option<ReducedWeights>,
    pub(crate) tokens: Option<ReducedTokens>,
}

impl ReducedCopies {
    /// Builds the copies `precision` asks for from the f32 originals.
    fn new<T: AsRef<[f32]> + Sync>(
        precision: Precision,
        weights: &[f32],
        width: usize,
        corpus: &MultiVectors<T>,
    ) -> Self {
        ReducedCopies {
            precision,
            weights: reduce_weights(precision.weights, weights, width),
            tokens: match precision.tokens {
                TokenPrecision::F32 => None,
                TokenPrecision::Bf16 => Some(ReducedTokens::Bf16(Bf16Vectors::from_f32(corpus))),
                TokenPrecision::Bf16Filter => Some(ReducedTokens::Bf16Filter(
                    Bf16Vectors::from_f32(corpus),
                    TokenBounds::new(corpus, Rounding::Bf16),
                )),
                TokenPrecision::Int8Filter => Some(ReducedTokens::Int8Filter(
                    Int8Vectors::from_f32(corpus),
                    TokenBounds::new(corpus, Rounding::Int8),
                )),
            },
        }
    }

    /// Appends the reduced copies of added documents.
    pub(crate) fn append<T: AsRef<[f32]> + Sync>(
        &mut self,
        weights: &[f32],
        width: usize,
        added: &MultiVectors<T>,
    ) {
        let added_copies = ReducedCopies::new(self.precision, weights, width, added);
        match (&mut self.weights, added_copies.weights) {
            (Some(ReducedWeights::Bf16(all)), Some(ReducedWeights::Bf16(rows))) => {
                all.append(&rows)
            }
            (Some(ReducedWeights::Int8(all)), Some(ReducedWeights::Int8(rows))) => {
                all.append(&rows)
            }
            (
                Some(ReducedWeights::Bf16Filter(all, bounds)),
                Some(ReducedWeights::Bf16Filter(rows, added)),
            ) => {
                all.append(&rows);
                bounds.append(&added);
            }
            (
                Some(ReducedWeights::Int8Filter(all, bounds)),
                Some(ReducedWeights::Int8Filter(rows, added)),
            ) => {
                all.append(&rows);
                bounds.append(&added);
            }
            _ => {}
        }
        match (&mut self.tokens, added_copies.tokens) {
            (Some(ReducedTokens::Bf16(all)), Some(ReducedTokens::Bf16(tokens))) => {
                all.append(&tokens)
            }
            (
                Some(ReducedTokens::Bf16Filter(all, bounds)),
                Some(ReducedTokens::Bf16Filter(tokens, added)),
            ) => {
                all.append(&tokens);
                bounds.append(&added);
            }
            (
                Some(ReducedTokens::Int8Filter(all, bounds)),
                Some(ReducedTokens::Int8Filter(tokens, added)),
            ) => {
                all.append(&tokens);
                bounds.append(&added);
            }
            _ => {}
        }
    }
}

fn reduce_weights(
    precision: WeightPrecision,
    weights: &[f32],
    width: usize,
) -> Option<ReducedWeights> {
    match precision {
        WeightPrecision::F32 => None,
        WeightPrecision::Bf16 => Some(ReducedWeights::Bf16(Bf16Matrix::from_f32(weights, width))),
        WeightPrecision::Bf16Filter => Some(ReducedWeights::Bf16Filter(
            Bf16Matrix::from_f32(weights, width),
            FilterBounds::new(weights, width),
        )),
        WeightPrecision::Int8 | WeightPrecision::Int8Dot => {
            Some(ReducedWeights::Int8(Int8Matrix::from_f32(weights, width)))
        }
        WeightPrecision::Int8Filter => Some(ReducedWeights::Int8Filter(
            Int8Matrix::from_f32(weights, width),
            RowBounds::new(weights, width),
        )),
    }
}

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Opt-in reduced precision: searches score `W` and rerank the corpus
    /// on copies built here (see [`WeightPrecision`] and
    /// [`TokenPrecision`]); `Precision::F32` drops them again. The f32
    /// data stays the source of truth: saving writes it, documents added
    /// later are fitted in f32 and then reduced, and the copies are not
    /// saved (call this again after opening). With [`Index::open`] the f32
    /// tokens stay memory-mapped and untouched by searches that rerank in
    /// bf16, so only the bf16 tokens are resident.
    ///
    /// Every batch size runs the same kernels, so a query's results do not
    /// depend on what it is batched with. Measured trade-offs are in
    /// docs/PERFORMANCE.md: a single query's scoring streams all of `W`,
    /// so bf16 and int8 copies make it faster at every SIMD level, most of
    /// all [`Precision::INT8_DOT`] on CPUs with AVX512-VNNI; whether the
    /// bf16 rerank beats the f32 one depends on the CPU (about 3x with AMX
    /// on an Intel Xeon, 1.9x with AVX512-BF16 on an AMD EPYC Zen 5,
    /// slower without either). For the f32 hits on an AMD EPYC Zen 4
    /// (AVX512-VNNI), [`Precision::BF16_INT8_FILTER`] gives the fastest
    /// batches and [`Precision::INT8_FILTERS`] the fastest single queries.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.reduced = (precision != Precision::F32).then(|| {
            Arc::new(ReducedCopies::new(
                precision,
                self.weights.values(),
                self.feature_dim(),
                &self.corpus,
            ))
        });
        self
    }

    /// Shorthand for `with_precision(Precision::BF16)`: `W` and the corpus
    /// tokens in bf16, half the bytes of each.
    pub fn with_bf16(self) -> Self {
        self.with_precision(Precision::BF16)
    }

    /// What searches run on ([`Index::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.reduced
            .as_ref()
            .map_or(Precision::F32, |copies| copies.precision)
    }
}
