//! The LEMUR feature map `psi: R^d -> R^h`, on faer.
//!
//! LEMUR approximates each document's single-token MaxSim `g_j(x) = max_c
//! <x, c>` by `<w_j, psi(x)>`, so that a query is scored against every
//! document with one inner product of its feature `f = sum_x psi(x) / 32`.
//! This crate computes `psi` and `f`:
//!
//! - [`FeatureMap::mlp`]: `L` blocks of Linear -> LayerNorm (eps 1e-5) ->
//!   activation ([`Activation`]: exact-erf GELU by default, ReLU, SiLU,
//!   Mish), each a validated [`Block`];
//! - [`FeatureMap::random`]: the random-feature ("ELM") map
//!   `LN(sqrt(2/h) * gelu(x R))` used when no training is done;
//! - [`FeatureMap::forward`] (a batch of tokens) and
//!   [`FeatureMap::query_features`] (ragged query batches, optionally
//!   parallel over groups of queries);
//! - [`Network`] and [`train`]: the trainable `psi(x) V^T` model with a
//!   hand-written backward pass, Adam, gradient clipping and best-epoch
//!   keeping, generic over f32 and f64 ([`Real`]);
//! - [`gemm`]: the row-major faer products the rest of the workspace uses;
//! - [`naive`]: an f64 reference for tests.
//!
//! Constructors validate shapes, finiteness and the width chain, so the
//! forward pass itself cannot fail. Nothing here reads files.
//!
//! # Example
//!
//! ```
//! use lemur_mlp::{Activation, Block, FeatureMap};
//!
//! // One block mapping d = 2 to h = 3.
//! let block = Block::new(
//!     0,
//!     vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], // [3, 2]
//!     2,
//!     3,
//!     vec![0.0; 3],
//!     vec![1.0; 3],
//!     vec![0.0; 3],
//! )?;
//! let psi = FeatureMap::mlp(vec![block], Activation::Gelu)?;
//! let mut out = vec![0.0; 3];
//! psi.forward(&[0.5, -0.5], &mut out);
//! assert!(out.iter().all(|v| v.is_finite()));
//! # Ok::<(), lemur_mlp::MlpError>(())
//! ```

mod activation;
mod block;
mod error;
pub mod gemm;
mod map;
pub mod naive;
mod network;
pub mod pca;
mod real;
pub mod simd;
pub mod sketch;
mod train;

pub use activation::{Activation, LAYER_NORM_EPS, erf, gelu};
pub use block::Block;
pub use error::{MlpError, Param};
pub use map::{FeatureMap, QUERY_FEATURE_SCALE};
pub use network::{ForwardCache, Network};
pub use real::{Op, Real};
pub use train::{Targets, TrainConfig, TrainReport, clip_grad_norm, evaluate, train};
