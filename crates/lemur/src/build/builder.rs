//! `IndexBuilder`: targets, training, the least-squares fit of `W`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lemur_io::TargetNorm;
use lemur_maxsim::{Isa, MultiVectors};
use lemur_mlp::{FeatureMap, Network, Targets, TrainConfig, TrainReport, sketch, train};
use thiserror::Error;

use super::config::BuildConfig;
use super::targets;
use crate::IndexError;
use crate::fit::{FitError, WeightSolver};
use crate::index::{Index, SolverState};
use crate::synthetic::Rng;
use crate::weights::DocWeights;

/// Target rows the sketch's basis is estimated from: the output directions
/// are a property of the documents, which a few thousand rows pin down.
const SKETCH_SAMPLE_ROWS: usize = 8192;

/// A build step, as reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Computing training targets (unit: documents).
    Targets,
    /// Training the feature map (unit: epochs).
    Training,
    /// Features of the fit sample and their pseudo-inverse (unit: steps).
    Solver,
    /// Fitting the weight rows (unit: documents).
    FitWeights,
    /// Building the first-stage graph over `W`, for large indexes (unit:
    /// steps, 0 of 1 then 1 of 1).
    FirstStage,
    /// Compressing `W` and the tokens, for large indexes (unit: steps, 0
    /// of 1 then 1 of 1).
    Compress,
}

/// Why a build failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration value is unusable.
    #[error("invalid build config: {0}")]
    Config(String),
    /// The learn tokens are not `[L, d]` for the corpus width, or not
    /// finite.
    #[error("invalid learn tokens: {0}")]
    Learn(#[from] lemur_maxsim::MultiVectorError),
    /// The target budget cannot hold even one row of targets.
    #[error("target budget of {budget} bytes cannot hold one row of {train_docs} targets")]
    BudgetTooSmall {
        /// The configured budget.
        budget: u64,
        /// Documents per target row.
        train_docs: usize,
    },
    /// Fitting `W` failed.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// The trained parameters do not form a valid model (non-finite after
    /// a diverging run).
    #[error("training produced an invalid model: {0}")]
    Model(#[from] lemur_mlp::MlpError),
    /// Assembling the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A streamed corpus handed out invalid documents.
    #[error("invalid {documents}: {source}")]
    Corpus {
        /// Which documents, in words ("documents 0..4096").
        documents: String,
        /// What is wrong with them.
        source: lemur_maxsim::MultiVectorError,
    },
}

/// What a build did and how long each step took.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// Learn rows actually used for training (after the memory budget).
    pub learn_rows: usize,
    /// Documents used as training outputs.
    pub train_docs: usize,
    /// Outputs the network was trained on: `train_docs`, or the sketch's
    /// rank ([`BuildConfig::target_rank`]); 0 without training.
    pub trained_outputs: usize,
    /// The target normalisation.
    pub norm: TargetNorm,
    /// Training losses and the kept epoch (`None` for random features).
    pub training: Option<TrainReport>,
    /// Time computing targets (and projecting them for the sketch).
    pub targets_time: Duration,
    /// Time training.
    pub training_time: Duration,
    /// Time for the sample features and pseudo-inverse.
    pub solver_time: Duration,
    /// Time fitting `W`.
    pub fit_time: Duration,
    /// Time building the first-stage graph (zero below
    /// [`crate::FirstStageConfig::graph_min_docs`]).
    pub first_stage_time: Duration,
    /// Time compressing `W` and the tokens (zero below
    /// [`crate::StorageConfig::compress_min_docs`]).
    pub compress_time: Duration,
}

/// What training gives the fit of `W`.
pub(super) struct Trained {
    pub(super) feature_map: FeatureMap,
    pub(super) norm: TargetNorm,
    /// The token rows `W` is fitted on (`[s, d]`).
    pub(super) fit_tokens: Vec<f32>,
    /// The report so far; the steps after training are zero.
    pub(super) report: BuildReport,
}

/// Builds LEMUR indexes in Rust: no Python, no PyTorch.
///
/// Every stage runs on the current rayon pool; `pool.install(|| builder
/// .build(..))` chooses the thread count. The same config (seed included)
/// and thread count give a bit-identical index.
pub struct IndexBuilder<'p> {
    config: BuildConfig,
    progress: Option<&'p (dyn Fn(Stage, usize, usize) + Sync)>,
    isa: Isa,
}

/// `k` distinct indices below `n` (all of them, shuffled, when `k >= n`),
/// in a deterministic order.
pub(super) fn sample_indices(n: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    if k >= n {
        let mut all: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            all.swap(i, rng.range(0, i + 1));
        }
        return all;
    }
    // Floyd's algorithm: k draws, no O(n) buffer.
    let mut chosen = BTreeSet::new();
    for j in n - k..n {
        let t = rng.range(0, j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// `tokens` once they are checked to be whole, finite rows of width `dim`
/// (at least one).
pub(super) fn checked_learn_tokens(tokens: &[f32], dim: usize) -> Result<&[f32], BuildError> {
    MultiVectors::new(tokens, dim, &[tokens.len() / dim.max(1)])?;
    Ok(tokens)
}

fn gather_rows(tokens: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &row in rows {
        out.extend_from_slice(&tokens[row * dim..(row + 1) * dim]);
    }
    out
}

impl<'p> IndexBuilder<'p> {
    /// A builder with `config`.
    pub fn new(config: BuildConfig) -> Self {
        IndexBuilder {
            config,
            progress: None,
            isa: Isa::detect(),
        }
    }

    /// Reports `(stage, done, total)` as the build proceeds (called from
    /// worker threads too, hence `Sync`).
    pub fn progress(mut self, progress: &'p (dyn Fn(Stage, usize, usize) + Sync)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &BuildConfig {
        &self.config
    }

    pub(super) fn report(&self, stage: Stage, done: usize, total: usize) {
        if let Some(progress) = self.progress {
            progress(stage, done, total);
        }
    }

    pub(super) fn check_config(&self) -> Result<(), BuildError> {
        let c = &self.config;
        let bad = |what: &str| Err(BuildError::Config(what.to_owned()));
        if c.final_hidden_dim == 0 || c.hidden_dims.contains(&0) {
            return bad("layer widths must be at least 1");
        }
        if c.fit_sample == 0 || c.batch_size == 0 {
            return bad("fit_sample and batch_size must be at least 1");
        }
        if c.epochs > 0 && (c.train_docs == 0 || c.learn_rows == 0) {
            return bad("training needs train_docs >= 1 and learn_rows >= 1");
        }
        if !(c.learning_rate > 0.0 && c.learning_rate.is_finite()) {
            return bad("learning_rate must be positive");
        }
        c.first_stage.validate().map_err(BuildError::Config)?;
        c.storage.validate().map_err(BuildError::Config)?;
        if c.block_docs == 0 {
            return bad("block_docs must be at least 1");
        }
        Ok(())
    }

    /// Builds an index over `corpus`. `learn` is a sample of tokens from
    /// the query distribution (`[L, d]`); without it the corpus tokens are
    /// used.
    pub fn build<T: AsRef<[f32]> + Sync>(
        &self,
        corpus: MultiVectors<T>,
        learn: Option<&[f32]>,
    ) -> Result<(Index<T>, BuildReport), BuildError> {
        self.check_config()?;
        let c = &self.config;
        let mut rng = Rng::new(c.seed);
        let train_docs = c.train_docs.min(corpus.len());
        let docs = sample_indices(corpus.len(), train_docs, &mut rng);
        let learn_tokens = match learn {
            Some(tokens) => checked_learn_tokens(tokens, corpus.dim())?,
            None => corpus.tokens(),
        };
        let trained = self.train_feature_map(&corpus, &docs, learn_tokens, &mut rng)?;
        let (mut index, solver_time, fit_time) = self.fit(
            trained.feature_map,
            trained.norm,
            &trained.fit_tokens,
            corpus,
        )?;
        let started = Instant::now();
        if index.len() >= c.first_stage.graph_min_docs {
            self.report(Stage::FirstStage, 0, 1);
            index.build_first_stage(&c.first_stage)?;
            self.report(Stage::FirstStage, 1, 1);
        }
        let first_stage_time = started.elapsed();
        let started = Instant::now();
        if index.len() >= c.storage.compress_min_docs {
            self.report(Stage::Compress, 0, 1);
            index.compress(&c.storage);
            self.report(Stage::Compress, 1, 1);
        }
        let compress_time = started.elapsed();
        let report = BuildReport {
            solver_time,
            fit_time,
            first_stage_time,
            compress_time,
            ..trained.report
        };
        Ok((index, report))
    }

    /// The feature map, the target normalisation and the fit sample, from
    /// the documents `docs` of `corpus` and token rows of `learn_tokens`
    /// (`[L, d]`, at least one row) drawn with `rng`.
    pub(super) fn train_feature_map<T: AsRef<[f32]> + Sync>(
        &self,
        corpus: &MultiVectors<T>,
        docs: &[usize],
        learn_tokens: &[f32],
        rng: &mut Rng,
    ) -> Result<Trained, BuildError> {
        let c = &self.config;
        let dim = corpus.dim();
        let available = learn_tokens.len() / dim;
        let train_docs = docs.len();
        let row_bytes = 4 * train_docs.max(1) as u64;
        let budget_rows = (c.target_budget_bytes / row_bytes) as usize;
        if c.epochs > 0 && budget_rows == 0 {
            return Err(BuildError::BudgetTooSmall {
                budget: c.target_budget_bytes,
                train_docs,
            });
        }
        // With no training the targets only provide the normalisation,
        // which shifts and scales every approximate score alike (the
        // ranking does not depend on it), so a small sample of rows
        // estimates it; each row costs a pass over every token of the
        // sampled documents.
        let wanted_rows = if c.epochs > 0 {
            c.learn_rows
        } else {
            c.learn_rows.min(512)
        };
        let validation_rows = if c.epochs > 0 {
            c.validation_rows.min(available / 2)
        } else {
            0
        };
        let learn_rows = wanted_rows
            .min(budget_rows.max(1))
            .min(available - validation_rows)
            .max(1);
        let picked = sample_indices(available, learn_rows + validation_rows, rng);
        let (train_rows, held_out) = picked.split_at(learn_rows.min(picked.len()));
        let train_inputs = gather_rows(learn_tokens, dim, train_rows);

        let started = Instant::now();
        let total_docs = docs.len();
        let targets = targets::compute(self.isa, &train_inputs, corpus, docs, &|done| {
            self.report(Stage::Targets, done, total_docs)
        });
        let norm = targets.norm;
        let threads = rayon::current_num_threads();
        // The sketch's basis, when training on projected targets; the full
        // target matrix is dropped as soon as it is projected.
        let basis = (c.epochs > 0 && c.target_rank > 0 && c.target_rank < docs.len()).then(|| {
            sketch::target_basis(
                &targets.values,
                docs.len(),
                train_rows.len(),
                c.target_rank,
                SKETCH_SAMPLE_ROWS,
                c.seed,
                threads,
            )
        });
        let project = |values: Vec<f32>, rows: usize| match &basis {
            Some(basis) => sketch::project_targets(basis, &values, docs.len(), rows, threads),
            None => values,
        };
        let training_targets = project(targets.values, train_rows.len());
        let n_outputs = training_targets.len() / train_rows.len();
        let targets_time = started.elapsed();

        let started = Instant::now();
        let (feature_map, training) = if c.epochs == 0 {
            let mut projection_rng = Rng::new(c.seed ^ 0xE1F0);
            let h = c.final_hidden_dim;
            let projection = (0..dim * h).map(|_| projection_rng.normal()).collect();
            (FeatureMap::random(projection, dim, h)?, None)
        } else {
            let mut dims = vec![dim];
            dims.extend_from_slice(&c.hidden_dims);
            dims.push(c.final_hidden_dim);
            let mut network = Network::<f32>::new(&dims, n_outputs, c.activation, c.seed);
            let validation_inputs = gather_rows(learn_tokens, dim, held_out);
            let validation_targets = (!held_out.is_empty()).then(|| {
                let raw = targets::compute(self.isa, &validation_inputs, corpus, docs, &|_| {});
                // Normalise with the training statistics, not their own.
                let (mean, std) = (raw.norm.mean, raw.norm.std);
                let values = raw
                    .values
                    .iter()
                    .map(|v| (v * std + mean - norm.mean) / norm.std)
                    .collect::<Vec<f32>>();
                project(values, held_out.len())
            });
            let config = TrainConfig {
                epochs: c.epochs,
                batch_size: c.batch_size,
                learning_rate: c.learning_rate,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                grad_clip: c.grad_clip,
                seed: c.seed,
                threads,
            };
            let validation = validation_targets
                .as_deref()
                .map(|v| (validation_inputs.as_slice(), Targets::ByOutput(v)));
            let report = train(
                &mut network,
                &train_inputs,
                Targets::ByOutput(&training_targets),
                validation,
                &config,
                &mut |done, total| self.report(Stage::Training, done, total),
            );
            (network.to_feature_map()?, Some(report))
        };
        let training_time = started.elapsed();
        drop(training_targets);

        let fit_rows = sample_indices(available, c.fit_sample, rng);
        let fit_tokens = gather_rows(learn_tokens, dim, &fit_rows);
        Ok(Trained {
            feature_map,
            norm,
            fit_tokens,
            report: BuildReport {
                learn_rows: train_rows.len(),
                train_docs: docs.len(),
                trained_outputs: if c.epochs > 0 { n_outputs } else { 0 },
                norm,
                training,
                targets_time,
                training_time,
                solver_time: Duration::ZERO,
                fit_time: Duration::ZERO,
                first_stage_time: Duration::ZERO,
                compress_time: Duration::ZERO,
            },
        })
    }

    /// Builds an index from an existing feature map and target
    /// normalisation, fitting only `W` on `fit_tokens` (`[s, d]`). This is
    /// the build step that adding documents repeats.
    pub fn build_with_feature_map<T: AsRef<[f32]> + Sync>(
        &self,
        feature_map: FeatureMap,
        norm: TargetNorm,
        fit_tokens: &[f32],
        corpus: MultiVectors<T>,
    ) -> Result<Index<T>, BuildError> {
        Ok(self.fit(feature_map, norm, fit_tokens, corpus)?.0)
    }

    fn fit<T: AsRef<[f32]> + Sync>(
        &self,
        feature_map: FeatureMap,
        norm: TargetNorm,
        fit_tokens: &[f32],
        corpus: MultiVectors<T>,
    ) -> Result<(Index<T>, Duration, Duration), BuildError> {
        if feature_map.input_dim() != corpus.dim() {
            return Err(IndexError::DimMismatch {
                model_dim: feature_map.input_dim(),
                corpus_dim: corpus.dim(),
            }
            .into());
        }
        let started = Instant::now();
        self.report(Stage::Solver, 0, 1);
        let solver = WeightSolver::new(&feature_map, fit_tokens, norm)?;
        self.report(Stage::Solver, 1, 1);
        let solver_time = started.elapsed();
        let started = Instant::now();
        let total = corpus.len();
        let weights =
            solver.fit_with_progress(&corpus, &|done| self.report(Stage::FitWeights, done, total));
        let fit_time = started.elapsed();
        let weights = DocWeights::new(weights, corpus.len(), feature_map.output_dim())?;
        let mut index = Index::new(feature_map, weights, corpus)?;
        index.target_norm = Some(norm);
        index.solver = Some(SolverState::Ready(Arc::new(solver)));
        index.build_config = Some(self.config.clone());
        Ok((index, solver_time, fit_time))
    }
}
