//! Exact late-interaction scoring (MaxSim) with run-time SIMD dispatch.
//!
//! `MaxSim(X, C) = sum over query tokens x of max over document tokens c of
//! <x, c>` is the score ColBERT-style retrievers rank by. This crate computes
//! it exactly, as fast as the CPU allows, for any token width `d >= 1` and
//! any query and document lengths:
//!
//! - [`Isa`] is a CPU capability as a value: [`Isa::detect`] picks the best
//!   level (AVX-512, AVX2+FMA, NEON or scalar), [`Isa::available`] lists
//!   them all so tests can run every one.
//! - [`maxsim`] scores one query against one document; [`PackedQuery`] +
//!   [`maxsim_packed`] amortise the query's transposition over many
//!   documents; [`Reranker`] keeps the `k` best candidates;
//!   [`token_maxima`] gives each query token's best match (LEMUR's
//!   training targets).
//! - [`MultiVectors`] is the validated ragged storage (one flat token matrix
//!   plus offsets) for corpora and query batches; [`AlignedVec`] is a
//!   cache-line-aligned buffer for it that can ask for 2 MiB pages
//!   ([`Pages::Huge`]), from which large corpora stream faster.
//! - [`bf16`] stores corpora at half the memory and scores them with AMX
//!   tiles or AVX512-BF16 dot products where the CPU has them; [`int8`]
//!   stores `W` rows and corpus tokens at a quarter, scored with exact
//!   integer dot products (`vpdpbusd` with AVX512-VNNI).
//! - [`QuantizedVectors`] keeps a corpus as 8- or 4-bit codes with a
//!   scale per token, decoded into a scratch buffer for the f32 kernel
//!   ([`maxsim_quantized`]): the resident form of large corpora.
//! - [`naive`] holds the f64 reference the kernels are tested against.
//!
//! Inputs are assumed finite: the x86 `max` instructions do not propagate
//! NaN, so callers validate at their boundary ([`MultiVectors::new`] does).
//!
//! # Example
//!
//! ```
//! use lemur_maxsim::{maxsim, naive, Isa};
//!
//! let dim = 3;
//! let query = [1.0, 0.0, 0.0, /* token 2 */ 0.0, 1.0, 0.0];
//! let doc = [0.5, 0.5, 0.0, /* token 2 */ 0.9, 0.0, 0.1];
//! let score = maxsim(Isa::detect(), &query, &doc, dim);
//! // Query token 1 matches doc token 2 (0.9), query token 2 doc token 1 (0.5).
//! assert_eq!(score, 1.4);
//! assert_eq!(score, naive::maxsim(&query, &doc, dim));
//! ```

mod aligned;
pub mod bf16;
pub mod int8;
mod kernel;
mod level;
mod multivec;
pub mod naive;
mod prefetch;
mod quantized;
mod rerank;
mod spread;

pub use aligned::{AlignedVec, HUGE_PAGE_BYTES, Pages};
pub use kernel::PackedQuery;
pub use lemur_topk::Hit;
pub use level::{Isa, Level};
pub use multivec::{GrowableTokens, MultiVectorError, MultiVectors};
pub use prefetch::{prefetch, prefetch_to_l2};
pub use quantized::{CodeBits, QuantizedError, QuantizedVectors, maxsim_quantized};
pub use rerank::{
    Reranker, maxsim, maxsim_packed, maxsim_packed_before, score_candidates, token_maxima,
};
