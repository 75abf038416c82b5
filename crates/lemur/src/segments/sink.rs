//! Writing one segment's arrays a block of documents at a time: what a
//! streamed build, an added segment and a compaction have in common.

use std::time::{Duration, Instant};

use lemur_ann::ProjectedGraph;
use lemur_io::{ArrayStream, StoreWriter};
use lemur_maxsim::MultiVectors;

use crate::IndexError;
use crate::first_stage::{FirstStageConfig, GraphStage};
use crate::storage::{Compressed, StorageConfig};

/// One segment being written: its f32 rows of `W` and tokens go straight
/// to the generation's files, its compressed forms and graph grow in
/// memory (they are what an opened index keeps resident anyway).
pub(crate) struct SegmentSink {
    weight_file: ArrayStream,
    token_file: ArrayStream,
    offsets: Vec<u64>,
    width: usize,
    storage: Option<StorageConfig>,
    first_stage: Option<FirstStageConfig>,
    /// What the graph's axes are fitted to (see
    /// `first_stage::query_directions`); `None`: the first block's rows.
    query_directions: Option<Vec<f32>>,
    compressed: Option<Compressed>,
    graph: Option<ProjectedGraph>,
    compress_time: Duration,
    first_stage_time: Duration,
}

/// What a finished sink hands over: everything but the files, which are
/// recorded in the writer already.
pub(crate) struct SinkOutput {
    pub(crate) n_docs: usize,
    pub(crate) n_tokens: usize,
    pub(crate) first_stage: Option<GraphStage>,
    pub(crate) compressed: Option<Compressed>,
    pub(crate) compress_time: Duration,
    pub(crate) first_stage_time: Duration,
}

impl SegmentSink {
    /// Starts the arrays `<prefix>W` (`[n, width]`) and `<prefix>tokens`
    /// (`[n_tokens, dim]`). With `storage`, the segment keeps compressed
    /// forms; with `first_stage`, a graph whose axes are fitted to
    /// `query_directions` (else to the first block's rows).
    pub(crate) fn new(
        writer: &mut StoreWriter,
        prefix: &str,
        dim: usize,
        width: usize,
        storage: Option<StorageConfig>,
        first_stage: Option<FirstStageConfig>,
        query_directions: Option<Vec<f32>>,
    ) -> Result<SegmentSink, IndexError> {
        Ok(SegmentSink {
            weight_file: writer.stream_f32(&format!("{prefix}W"), &[width])?,
            token_file: writer.stream_f32(&format!("{prefix}tokens"), &[dim])?,
            offsets: vec![0],
            width,
            storage,
            first_stage,
            query_directions,
            compressed: None,
            graph: None,
            compress_time: Duration::ZERO,
            first_stage_time: Duration::ZERO,
        })
    }

    /// Appends a block of documents and their rows of `W` (`[n, width]`).
    pub(crate) fn push<T: AsRef<[f32]> + Sync>(
        &mut self,
        rows: &[f32],
        block: &MultiVectors<T>,
    ) -> Result<(), IndexError> {
        debug_assert_eq!(rows.len(), block.len() * self.width);
        self.weight_file.append_f32(rows)?;
        self.token_file.append_f32(block.tokens())?;
        let base = *self.offsets.last().expect("starts with 0");
        self.offsets
            .extend(block.offsets()[1..].iter().map(|&o| base + o as u64));

        let started = Instant::now();
        if let Some(config) = &self.storage {
            match &mut self.compressed {
                None => self.compressed = Some(Compressed::new(config, rows, self.width, block)),
                Some(all) => all.append(rows, self.width, block),
            }
        }
        self.compress_time += started.elapsed();
        let started = Instant::now();
        if let Some(config) = &self.first_stage {
            match &mut self.graph {
                None => {
                    self.graph = Some(ProjectedGraph::build_for_queries(
                        rows,
                        self.width,
                        config.projected(),
                        self.query_directions.as_deref(),
                    )?)
                }
                Some(graph) => {
                    graph.add(rows)?;
                }
            }
        }
        self.first_stage_time += started.elapsed();
        Ok(())
    }

    /// Finishes the files and writes `<prefix>offsets`.
    pub(crate) fn finish(
        self,
        writer: &mut StoreWriter,
        prefix: &str,
    ) -> Result<SinkOutput, IndexError> {
        writer.finish(self.weight_file)?;
        writer.finish(self.token_file)?;
        writer.u64(
            &format!("{prefix}offsets"),
            &[self.offsets.len()],
            &self.offsets,
        )?;
        let n_tokens =
            usize::try_from(*self.offsets.last().expect("starts with 0")).map_err(|_| {
                IndexError::Format {
                    path: Default::default(),
                    reason: "more tokens than fit in memory".into(),
                }
            })?;
        let refine_factor = self.first_stage.map_or(1, |config| config.refine_factor);
        Ok(SinkOutput {
            n_docs: self.offsets.len() - 1,
            n_tokens,
            first_stage: self.graph.map(|graph| GraphStage {
                graph,
                refine_factor,
            }),
            compressed: self.compressed,
            compress_time: self.compress_time,
            first_stage_time: self.first_stage_time,
        })
    }
}
