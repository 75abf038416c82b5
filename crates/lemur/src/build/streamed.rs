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

use lemur_ann::ProjectedGraph;
use lemur_io::StoreWriter;

use super::builder::{BuildError, BuildReport, IndexBuilder, Stage, checked_learn_tokens};
use super::source::DocumentSource;
use crate::IndexError;
use crate::first_stage::GraphStage;
use crate::fit::WeightSolver;
use crate::index::{Index, SolverState};
use crate::persist::{MappedIndex, ModelParts};
use crate::storage::{Compressed, TokenCodec, WeightCodec};
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
        let mut weight_file = writer.stream_f32("W", &[h]).map_err(IndexError::from)?;
        let mut token_file = writer
            .stream_f32("tokens", &[dim])
            .map_err(IndexError::from)?;
        let mut offsets = vec![0u64];
        let compress = n_docs >= c.storage.compress_min_docs
            && (c.storage.tokens != TokenCodec::F32 || c.storage.weights != WeightCodec::F32);
        let with_graph = n_docs >= c.first_stage.graph_min_docs;
        let mut compressed: Option<Compressed> = None;
        let mut graph: Option<ProjectedGraph> = None;
        let (mut fit_time, mut first_stage_time, mut compress_time) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
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
            weight_file
                .append_f32(rows.values())
                .map_err(IndexError::from)?;
            token_file
                .append_f32(block.tokens())
                .map_err(IndexError::from)?;
            let base = *offsets.last().expect("starts with 0");
            offsets.extend(block.offsets()[1..].iter().map(|&o| base + o as u64));

            let started = Instant::now();
            if compress {
                match &mut compressed {
                    None => {
                        compressed = Some(Compressed::new(&c.storage, rows.values(), h, &block))
                    }
                    Some(all) => all.append(rows.values(), h, &block),
                }
            }
            compress_time += started.elapsed();
            let started = Instant::now();
            if with_graph {
                match &mut graph {
                    None => {
                        graph = Some(
                            ProjectedGraph::build(rows.values(), h, c.first_stage.projected())
                                .map_err(IndexError::from)?,
                        )
                    }
                    Some(graph) => {
                        graph.add(rows.values()).map_err(IndexError::from)?;
                    }
                }
            }
            first_stage_time += started.elapsed();
            self.report(Stage::FitWeights, first + block.len(), n_docs);
        }
        writer.finish(weight_file).map_err(IndexError::from)?;
        writer.finish(token_file).map_err(IndexError::from)?;
        writer
            .u64("offsets", &[offsets.len()], &offsets)
            .map_err(IndexError::from)?;
        let n_tokens = usize::try_from(*offsets.last().expect("starts with 0")).map_err(|_| {
            BuildError::Config("the corpus has more tokens than fit in memory".into())
        })?;
        let solver = SolverState::Ready(Arc::new(solver));
        let first_stage = graph.map(|graph| GraphStage {
            graph,
            refine_factor: c.first_stage.refine_factor,
        });
        ModelParts {
            feature_map: &trained.feature_map,
            dim,
            n_docs,
            n_tokens,
            target_norm: Some(trained.norm),
            solver: Some(&solver),
            build_config: Some(c),
            first_stage: first_stage.as_ref(),
            compressed: compressed.as_ref(),
        }
        .commit(writer, None)?;
        drop((first_stage, compressed));
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
