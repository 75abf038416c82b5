//! The index: a feature map, the document weights and the corpus tokens.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use lemur_io::{NpzOptions, TargetNorm, load_multivectors, load_npz};
use lemur_maxsim::{GrowableTokens, Isa, MultiVectors};
use lemur_mlp::FeatureMap;

use crate::build::BuildConfig;
use crate::error::{IndexError, SearchError};
use crate::first_stage::GraphStage;
use crate::fit::WeightSolver;
use crate::precision::ReducedCopies;
use crate::segments::Deleted;
use crate::storage::Compressed;
use crate::weights::DocWeights;

/// How many results and candidates a search returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchParams {
    /// Results per query (`k`). `0` returns empty lists.
    pub k: usize,
    /// Candidates per query taken from the approximate scores and reranked
    /// exactly (`k'`). Must be at least `k`; clamped to the corpus size.
    pub n_candidates: usize,
}

impl Default for SearchParams {
    /// The original's defaults: `k = 10`, `k' = 200`.
    fn default() -> Self {
        SearchParams {
            k: 10,
            n_candidates: 200,
        }
    }
}

impl SearchParams {
    /// `(k, k')` for a search over `n_docs` documents: `k'` clamped to
    /// them and `k` to `k'`; fewer candidates than results is an error.
    pub(crate) fn resolve(self, n_docs: usize) -> Result<(usize, usize), SearchError> {
        if self.n_candidates < self.k {
            return Err(SearchError::CandidatesBelowK {
                k: self.k,
                n_candidates: self.n_candidates,
            });
        }
        let n_candidates = self.n_candidates.min(n_docs);
        Ok((self.k.min(n_candidates), n_candidates))
    }
}

/// One search result: a document and its exact MaxSim score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// From an [`Index`]: the document's position, 0-based, in corpus
    /// order. From a [`crate::SegmentedIndex`]: its stable id.
    pub doc: u32,
    /// Exact MaxSim of the query against the document.
    pub score: f32,
}

/// A searchable LEMUR index.
///
/// Invariants (checked by [`Index::new`]): the feature map takes tokens as
/// wide as the corpus's; `W` has one row per corpus document and is as wide
/// as the feature map's output; every number is finite; every document has
/// at least one token.
#[derive(Debug, Clone)]
pub struct Index<T = Vec<f32>> {
    pub(crate) feature_map: Arc<FeatureMap>,
    pub(crate) weights: DocWeights,
    pub(crate) corpus: MultiVectors<T>,
    pub(crate) target_norm: Option<TargetNorm>,
    pub(crate) isa: Isa,
    /// The least-squares solver `W` was fitted with, when this index was
    /// built in Rust; it fits documents added later.
    pub(crate) solver: Option<SolverState>,
    /// The configuration the index was built with, when built in Rust.
    pub(crate) build_config: Option<BuildConfig>,
    /// Reduced-precision copies of `W` and the corpus that searches use
    /// instead of the f32 ones ([`Index::with_precision`]).
    pub(crate) reduced: Option<Arc<ReducedCopies>>,
    /// The graph first stage, for large indexes
    /// ([`Index::build_first_stage`]); `None` scans all of `W`.
    pub(crate) first_stage: Option<Arc<GraphStage>>,
    /// The compressed forms of `W` and the tokens searches run on, for
    /// large indexes ([`Index::compress`]); `None` searches in f32.
    pub(crate) compressed: Option<Arc<Compressed>>,
    /// The positions a segmented index has deleted
    /// ([`crate::SegmentedIndex`]): never candidates. `None` in a plain
    /// index.
    pub(crate) deleted: Option<Arc<Deleted>>,
}

/// The weight solver of an index built in Rust.
#[derive(Debug, Clone)]
pub(crate) enum SolverState {
    /// Ready to fit rows.
    Ready(Arc<WeightSolver>),
    /// Loaded from disk: the sample and normalisation are known, and the
    /// pseudo-inverse is recomputed the first time documents are added.
    Saved {
        sample: Arc<Vec<f32>>,
        norm: TargetNorm,
    },
}

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Assembles an index from validated parts.
    pub fn new(
        feature_map: FeatureMap,
        weights: DocWeights,
        corpus: MultiVectors<T>,
    ) -> Result<Self, IndexError> {
        Self::with_shared_map(Arc::new(feature_map), weights, corpus)
    }

    /// [`Index::new`] around a feature map other indexes share (the
    /// segments of one index directory).
    pub(crate) fn with_shared_map(
        feature_map: Arc<FeatureMap>,
        weights: DocWeights,
        corpus: MultiVectors<T>,
    ) -> Result<Self, IndexError> {
        if feature_map.input_dim() != corpus.dim() {
            return Err(IndexError::DimMismatch {
                model_dim: feature_map.input_dim(),
                corpus_dim: corpus.dim(),
            });
        }
        if weights.width() != feature_map.output_dim() {
            return Err(IndexError::WeightWidth {
                weight_width: weights.width(),
                feature_dim: feature_map.output_dim(),
            });
        }
        if weights.n_docs() != corpus.len() {
            return Err(IndexError::WeightRows {
                weight_rows: weights.n_docs(),
                n_docs: corpus.len(),
            });
        }
        Ok(Index {
            feature_map,
            weights,
            corpus,
            target_norm: None,
            isa: Isa::detect(),
            solver: None,
            build_config: None,
            reduced: None,
            first_stage: None,
            compressed: None,
            deleted: None,
        })
    }

    /// Runs the MaxSim kernels at `isa` instead of the best level detected
    /// (for benchmarks and cross-level tests).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// The SIMD level the rerank runs at.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.corpus.len()
    }

    /// Whether the index has no documents (never true for a valid index:
    /// kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.corpus.is_empty()
    }

    /// Token width `d`.
    pub fn dim(&self) -> usize {
        self.corpus.dim()
    }

    /// Feature width `h`.
    pub fn feature_dim(&self) -> usize {
        self.feature_map.output_dim()
    }

    /// The feature map `psi`.
    pub fn feature_map(&self) -> &FeatureMap {
        &self.feature_map
    }

    /// The document weights `W`.
    pub fn weights(&self) -> &DocWeights {
        &self.weights
    }

    /// The corpus tokens.
    pub fn corpus(&self) -> &MultiVectors<T> {
        &self.corpus
    }

    /// The configuration this index was built with, when it was built in
    /// Rust.
    pub fn build_config(&self) -> Option<&BuildConfig> {
        self.build_config.as_ref()
    }

    /// The training-target normalisation, when known (needed to add
    /// documents to an index later).
    pub fn target_norm(&self) -> Option<TargetNorm> {
        self.target_norm
    }

    /// Checks a flat query batch (`[n_tokens, d]` row-major, `d` the
    /// index's width) and wraps it in a validated view (no copy).
    pub fn queries<'q>(
        &self,
        query_tokens: &'q [f32],
        query_counts: &[usize],
    ) -> Result<MultiVectors<&'q [f32]>, SearchError> {
        let dim = self.dim();
        Ok(MultiVectors::new(query_tokens, dim, query_counts)?)
    }

    pub(crate) fn check_queries<Q: AsRef<[f32]>>(
        &self,
        queries: &MultiVectors<Q>,
    ) -> Result<(), SearchError> {
        if queries.dim() != self.dim() {
            return Err(SearchError::DimMismatch {
                expected: self.dim(),
                found: queries.dim(),
            });
        }
        Ok(())
    }
}

impl Index<Vec<f32>> {
    /// Loads a LEMUR-NumPy `.npz` export and the corpus it was built on
    /// (`tokens.npy` `[N_tok, d]` + `counts.npy` `[m]`).
    pub fn from_files(
        npz: impl AsRef<Path>,
        tokens: impl AsRef<Path>,
        counts: impl AsRef<Path>,
    ) -> Result<Self, IndexError> {
        let model = load_npz(npz, NpzOptions::default())?;
        let corpus = load_multivectors(tokens, counts)?;
        let weights = DocWeights::new(
            model.doc_weights,
            model.n_docs,
            model.feature_map.output_dim(),
        )?;
        let mut index = Index::new(model.feature_map, weights, corpus)?;
        index.target_norm = model.target_norm;
        Ok(index)
    }
}

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Fits weight rows for documents (`tokens` `[n_tokens, d]`, `counts`
    /// tokens per document) without adding them: the rows
    /// [`Index::add_documents`] would give them, one per document, `[n, h]`.
    /// The original LEMUR's `compute_weights`.
    ///
    /// Fails with [`IndexError::NoSolver`] for an index that was not built
    /// in Rust, and on invalid documents.
    pub fn fit_weights(
        &mut self,
        tokens: &[f32],
        counts: &[usize],
    ) -> Result<DocWeights, IndexError> {
        let documents = MultiVectors::new(tokens, self.dim(), counts)?;
        self.fit_rows(&documents)
    }

    /// Gives an index assembled from parts (an imported model) the solver
    /// that fits rows of `W` for new documents, and its target
    /// normalisation: [`Index::add_documents`] and [`Index::fit_weights`]
    /// then work as on an index built in Rust. The solver must come from
    /// this index's feature map.
    pub fn set_solver(&mut self, solver: WeightSolver) -> Result<(), IndexError> {
        if solver.feature_dim() != self.feature_dim() {
            return Err(IndexError::WeightWidth {
                weight_width: solver.feature_dim(),
                feature_dim: self.feature_dim(),
            });
        }
        self.target_norm = Some(solver.norm());
        self.solver = Some(SolverState::Ready(Arc::new(solver)));
        Ok(())
    }

    /// Rows of `W` for `documents` from the index's solver, computing its
    /// pseudo-inverse the first time after a load.
    fn fit_rows(&mut self, documents: &MultiVectors<&[f32]>) -> Result<DocWeights, IndexError> {
        // A failed solver build leaves the saved state as it was.
        let solver = match &self.solver {
            Some(SolverState::Ready(solver)) => solver.clone(),
            Some(SolverState::Saved { sample, norm }) => {
                Arc::new(WeightSolver::new(&self.feature_map, sample, *norm)?)
            }
            None => return Err(IndexError::NoSolver),
        };
        self.solver = Some(SolverState::Ready(solver.clone()));
        DocWeights::new(solver.fit(documents), documents.len(), self.feature_dim())
    }
}

impl<T: GrowableTokens + Sync> Index<T> {
    /// Adds documents (`tokens` `[n_tokens, d]`, `counts` tokens per
    /// document) without retraining: their weight rows are fitted with the
    /// same sample pseudo-inverse and target normalisation the index was
    /// built with, so they equal what a full rebuild with the same sample
    /// and feature map would give. Returns the new documents' ids.
    ///
    /// Fails with [`IndexError::NoSolver`] for an index that was not built
    /// in Rust (e.g. loaded from an export), and on invalid documents.
    pub fn add_documents(
        &mut self,
        tokens: &[f32],
        counts: &[usize],
    ) -> Result<Range<u32>, IndexError> {
        let added = MultiVectors::new(tokens, self.dim(), counts)?;
        let rows = self.fit_rows(&added)?;
        let first = self.len();
        if let Some(stage) = &mut self.first_stage {
            Arc::make_mut(stage).graph.add(rows.values())?;
        }
        if let Some(compressed) = &mut self.compressed {
            Arc::make_mut(compressed).append(rows.values(), rows.width(), &added);
        }
        if let Some(copies) = &mut self.reduced {
            Arc::make_mut(copies).append(rows.values(), rows.width(), &added);
        }
        self.corpus.append(&added)?;
        self.weights.append(&rows);
        Ok(first as u32..self.len() as u32)
    }
}
