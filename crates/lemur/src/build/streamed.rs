//! The out-of-core build: an index written into its directory a block of
//! documents at a time, for corpora larger than memory.
//!
//! Training needs only a sample of documents. Everything after it goes
//! block by block: each block's rows of `W` are fitted, its f32 rows and
//! tokens are appended to the generation's `W` and `tokens` files, its
//! compressed forms are kept, and its rows join the first-stage graph
//! (whose axes are fitted on the first block's rows). What stays in
//! memory is the compressed index, the graph and one block, so the peak
//! is about `block_docs` documents plus what the opened index keeps
//! resident.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lemur_io::StoreWriter;

use super::builder::{BuildError, BuildReport, IndexBuilder, Stage, checked_learn_tokens};
use super::source::DocumentSource;
use crate::IndexError;
use crate::first_stage::token_features;
use crate::fit::WeightSolver;
use crate::index::{Index, SolverState};
use crate::persist::{MappedIndex, ModelParts};
use crate::segments::sink::SegmentSink;
use crate::storage::{TokenCodec, WeightCodec};
use crate::synthetic::Rng;
use crate::weights::DocWeights;

impl IndexBuilder<'_> {
    /// Builds an index over `source` straight into the index directory
    /// `dir` (as [`Index::save`] would write it, committed atomically at
    /// the end) and opens it. Documents are read, fitted and written
    /// [`crate::BuildConfig::block_docs`] at a time, so the corpus is
    /// never in memory whole: the peak is about one block plus what the
    /// opened index keeps resident (its compressed forms and graph, or the
    /// f32 `W` of an uncompressed index). `learn` is a sample of query
    /// tokens (`[L, d]`); without it, training and the fit sample draw
    /// tokens from the training documents.
    ///
    /// The training documents and every sampled row are drawn as
    /// [`IndexBuilder::build`] draws them, so with the same `learn` the
    /// feature map and `W` are bit-identical to an in-memory build's; the
    /// graph's axes come from the first block's rows and it is grown a
    /// block at a time, so it differs from an in-memory build's.
    pub fn build_into<S: DocumentSource + ?Sized>(
        &self,
        source: &S,
        learn: Option<&[f32]>,
        dir: impl AsRef<Path>,
    ) -> Result<(MappedIndex, BuildReport), BuildError> {
        self.check_config()?;
        let c = self.config();
        let (n_docs, dim) = (source.len(), source.dim());
        if n_docs == 0 || dim == 0 {
            return Err(BuildError::Config(
                "the corpus has no documents or zero width".into(),
            ));
        }
        let mut rng = Rng::new(c.seed);
        let docs = super::builder::sample_indices(n_docs, c.train_docs.min(n_docs), &mut rng);
        let trained = {
            let sample = source.gather(&docs).map_err(|source| BuildError::Corpus {
                documents: "training documents".into(),
                source,
            })?;
            let local: Vec<usize> = (0..docs.len()).collect();
            let learn_tokens = match learn {
                Some(tokens) => checked_learn_tokens(tokens, dim)?,
                None => sample.tokens(),
            };
            self.train_feature_map(&sample, &local, learn_tokens, &mut rng)?
        };

        let started = Instant::now();
        self.report(Stage::Solver, 0, 1);
        let solver = WeightSolver::new(&trained.feature_map, &trained.fit_tokens, trained.norm)?;
        self.report(Stage::Solver, 1, 1);
        let solver_time = started.elapsed();

        let h = trained.feature_map.output_dim();
        let mut writer = StoreWriter::new(dir.as_ref()).map_err(IndexError::from)?;
        let compress = n_docs >= c.storage.compress_min_docs
            && (c.storage.tokens != TokenCodec::F32 || c.storage.weights != WeightCodec::F32);
        let with_graph = n_docs >= c.first_stage.graph_min_docs;
        let directions = with_graph
            .then(|| token_features(&trained.feature_map, solver.sample_tokens()))
            .flatten();
        let mut sink = SegmentSink::new(
            &mut writer,
            "",
            dim,
            h,
            compress.then_some(c.storage),
            with_graph.then_some(c.first_stage),
            directions,
        )?;
        let mut fit_time = Duration::ZERO;
        let block_docs = c.block_docs;
        self.report(Stage::FitWeights, 0, n_docs);
        for first in (0..n_docs).step_by(block_docs) {
            let range = first..(first + block_docs).min(n_docs);
            let block = source
                .documents(range.clone())
                .map_err(|source| BuildError::Corpus {
                    documents: format!("documents {range:?}"),
                    source,
                })?;
            if block.len() != range.len() {
                return Err(BuildError::Config(format!(
                    "the corpus handed out {} documents for documents {range:?}",
                    block.len()
                )));
            }
            if block.dim() != dim {
                return Err(IndexError::DimMismatch {
                    model_dim: dim,
                    corpus_dim: block.dim(),
                }
                .into());
            }
            let started = Instant::now();
            let rows = DocWeights::new(solver.fit(&block), block.len(), h)?;
            fit_time += started.elapsed();
            sink.push(rows.values(), &block)?;
            self.report(Stage::FitWeights, first + block.len(), n_docs);
        }
        let written = sink.finish(&mut writer, "")?;
        let solver = SolverState::Ready(Arc::new(solver));
        ModelParts {
            feature_map: &trained.feature_map,
            dim,
            n_docs,
            n_tokens: written.n_tokens,
            target_norm: Some(trained.norm),
            solver: Some(&solver),
            build_config: Some(c),
            first_stage: written.first_stage.as_ref(),
            compressed: written.compressed.as_ref(),
            segments: None,
        }
        .commit(writer, None)?;
        let (first_stage_time, compress_time) = (written.first_stage_time, written.compress_time);
        drop(written);
        let index = Index::open(dir)?;
        let report = BuildReport {
            solver_time,
            fit_time,
            first_stage_time,
            compress_time,
            ..trained.report
        };
        Ok((index, report))
    }
}
