//! Late-interaction (ColBERT-style) multi-vector retrieval with LEMUR, in
//! pure Rust on the CPU.
//!
//! A query and a document are sets of token vectors; their relevance is
//! `MaxSim(X, C) = sum over query tokens of the best dot product with a
//! document token`. Scoring every document that way is too slow for a
//! large corpus, so LEMUR learns a feature map `psi` and one weight row
//! `w_j` per document such that `MaxSim(X, C_j) ~ <w_j, sum_x psi(x)>`.
//! A search then takes four steps, all here:
//!
//! 1. query features `f = sum_x psi(x) / 32` (one GEMM for a whole batch);
//! 2. approximate scores `f W^T` (blocked GEMMs);
//! 3. the `k'` best candidates (fused into step 2, linear-time selection);
//! 4. exact MaxSim of the query against each candidate (SIMD, dispatched at
//!    run time) and the `k` best of those.
//!
//! [`Index`] holds the feature map, `W` and the corpus tokens. It is built
//! from in-memory parts ([`Index::new`]), from the original LEMUR's
//! LEMUR-NumPy export ([`Index::from_files`]), or entirely in Rust with
//! [`IndexBuilder`] (training targets, the feature map, least-squares `W`;
//! documents can be added later with [`Index::add_documents`]). An index
//! directory grows and shrinks in place through [`SegmentedIndex`]:
//! added documents become segments, deletions tombstones, and a
//! compaction merges them, each change one atomic commit, and hits carry
//! stable document ids. Threads: every stage runs on the current rayon pool,
//! so `pool.install(|| index.search(..))` picks the thread count.
//!
//! The building blocks are separate crates, re-exported here:
//! [`topk`], [`maxsim`], [`mlp`] and [`io`].
//!
//! # Example
//!
//! ```
//! use lemur::{DocWeights, Index, SearchParams, TargetNorm, WeightSolver, synthetic};
//!
//! // A small synthetic corpus and a random-feature map.
//! let mut spec = synthetic::CorpusSpec::colbert_10k();
//! spec.n_docs = 200;
//! spec.dim = 32;
//! let data = synthetic::corpus(&spec);
//! let psi = synthetic::random_features(32, 256, 7);
//!
//! // Fit W by least squares on a token sample.
//! let sample = data.sample_tokens(1024, 1);
//! let norm = WeightSolver::estimate_norm(&sample, &data.corpus, 50);
//! let solver = WeightSolver::new(&psi, &sample, norm)?;
//! let weights = DocWeights::new(solver.fit(&data.corpus), 200, 256)?;
//! let index = Index::new(psi, weights, data.corpus.clone())?;
//!
//! // Search two queries of 8 tokens each.
//! let queries = data.queries(2, 8, 3);
//! let hits = index.search(queries.tokens(), &[8, 8], SearchParams { k: 5, n_candidates: 40 })?;
//! assert_eq!(hits.len(), 2);
//! assert!(hits[0].windows(2).all(|w| w[0].score >= w[1].score));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod build;
mod error;
mod filter;
mod first_stage;
mod fit;
mod index;
pub mod naive;
mod pairs;
mod persist;
mod precision;
mod rerank;
mod search;
mod segments;
mod shortlist;
mod storage;
pub mod synthetic;
#[cfg(feature = "text")]
mod text_index;
mod token_filter;
mod weights;

pub use build::{BuildConfig, BuildError, BuildReport, DocumentSource, IndexBuilder, Stage};
pub use error::{IndexError, SearchError};
pub use first_stage::FirstStageConfig;
pub use fit::{FitError, WeightSolver};
pub use index::{Hit, Index, SearchParams};
pub use lemur_io::{MappedF32, TargetNorm};
pub use lemur_maxsim::{AlignedVec, Isa, Level, MultiVectors, Pages};
pub use lemur_mlp::{Activation, FeatureMap};
pub use persist::{MappedIndex, current_generation};
pub use precision::{Precision, TokenPrecision, WeightPrecision};
pub use segments::{SegmentInfo, SegmentedIndex, StoredDocument};
pub use storage::{StorageConfig, TokenCodec, WeightCodec};
#[cfg(feature = "text")]
pub use text_index::{TextDocument, TextIndex, TextIndexConfig, TextIndexError, TextIndexStats};
pub use weights::DocWeights;

/// The graph first stage over `W` (`lemur-ann`).
pub use lemur_ann as ann;
/// Loading and saving files (`lemur-io`).
pub use lemur_io as io;
/// Exact MaxSim kernels (`lemur-maxsim`).
pub use lemur_maxsim as maxsim;
/// The feature map (`lemur-mlp`).
pub use lemur_mlp as mlp;
/// The pure-Rust text encoder (`lemur-text`), with the `text` feature.
#[cfg(feature = "text")]
pub use lemur_text as text;
/// Top-k selection (`lemur-topk`).
pub use lemur_topk as topk;
