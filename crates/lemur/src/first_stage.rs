//! The first stage at scale: a graph over `W`'s projected rows lists a
//! few times `k'` documents per query, and their full rows settle the
//! `k'` candidates (`lemur-ann`). Small indexes keep the exact scan.

use std::sync::Arc;

use lemur_ann::{AnnError, GraphConfig, ProjectedConfig, ProjectedGraph};
use lemur_mlp::FeatureMap;
use lemur_topk::Hit as ScoredId;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::IndexError;
use crate::index::{Index, SolverState};
use crate::shortlist::{Rows, rescore};

/// When and how an index gets a graph first stage (part of
/// [`crate::BuildConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirstStageConfig {
    /// Indexes with at least this many documents search a graph instead of
    /// scanning all of `W` (`usize::MAX`: never; 200,000 by default).
    pub graph_min_docs: usize,
    /// Principal axes of `W` the graph works in; `h` or more: none, the
    /// graph holds the rows of `W` as they are (int8).
    pub projection_dim: usize,
    /// Links per graph node on its upper levels (`M`; level 0 keeps `2 M`).
    pub max_degree: usize,
    /// Candidates a node gathers per level while the graph is built.
    pub ef_construction: usize,
    /// The graph lists `refine_factor * k'` documents per query, whose full
    /// rows of `W` pick the `k'` candidates.
    pub refine_factor: usize,
}

impl Default for FirstStageConfig {
    /// A graph from 200,000 documents (where the storage compresses too):
    /// 256 axes, `M = 16`, `ef_construction = 200`, refine factor 4.
    /// An index built in Rust fits the axes to its solver's token features
    /// (the queries' directions). Measured on a trained `W` at 1M
    /// documents (docs/SCALE.md): 94% of the exact scan's top 200 and
    /// 0.983 of the exact top 10, at 5.6 ms per query on two threads
    /// (the int8 scan of all of `W`: 73.5 ms per query even in batches,
    /// on a slower machine). An index without a solver
    /// (imported) takes `W`'s own axes, which fail on a trained `W`: give
    /// it `graph_min_docs = usize::MAX`, the exact scan.
    fn default() -> Self {
        FirstStageConfig {
            graph_min_docs: 200_000,
            projection_dim: 256,
            max_degree: 16,
            ef_construction: 200,
            refine_factor: 4,
        }
    }
}

/// The graph of an index and how many rows it lists per candidate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GraphStage {
    pub(crate) graph: ProjectedGraph,
    pub(crate) refine_factor: usize,
}

impl FirstStageConfig {
    /// The graph's configuration.
    pub(crate) fn projected(&self) -> ProjectedConfig {
        ProjectedConfig {
            projection_dim: self.projection_dim,
            graph: GraphConfig {
                max_degree: self.max_degree,
                ef_construction: self.ef_construction,
                seed: 0,
            },
            ..ProjectedConfig::default()
        }
    }
}

/// Most links per node a graph may keep on its upper levels.
pub(crate) const MAX_GRAPH_DEGREE: usize = 1024;
/// Most documents per candidate a graph may list.
pub(crate) const MAX_REFINE_FACTOR: usize = 1 << 16;

impl FirstStageConfig {
    /// Checks every value, so a build fails before its hours of fitting
    /// rather than after.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.projection_dim == 0 {
            return Err("first_stage.projection_dim must be at least 1".into());
        }
        if !(2..=MAX_GRAPH_DEGREE).contains(&self.max_degree) {
            return Err(format!(
                "first_stage.max_degree must be 2 to {MAX_GRAPH_DEGREE}"
            ));
        }
        if self.ef_construction == 0 {
            return Err("first_stage.ef_construction must be at least 1".into());
        }
        if !(1..=MAX_REFINE_FACTOR).contains(&self.refine_factor) {
            return Err(format!(
                "first_stage.refine_factor must be 1 to {MAX_REFINE_FACTOR}"
            ));
        }
        Ok(())
    }
}

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Builds the graph first stage over `W` when the index has at least
    /// `config.graph_min_docs` documents (and drops any graph otherwise);
    /// returns whether it did. Runs on the current rayon pool; call it
    /// outside rayon tasks.
    pub fn build_first_stage(&mut self, config: &FirstStageConfig) -> Result<bool, IndexError> {
        self.first_stage = self.graph_stage(config)?.map(Arc::new);
        Ok(self.first_stage.is_some())
    }

    /// The graph first stage `config` gives this index's rows of `W`
    /// (`None` below `config.graph_min_docs` documents), leaving the
    /// index as it is.
    pub(crate) fn graph_stage(
        &self,
        config: &FirstStageConfig,
    ) -> Result<Option<GraphStage>, IndexError> {
        if self.len() < config.graph_min_docs {
            return Ok(None);
        }
        config
            .validate()
            .map_err(|reason| IndexError::FirstStage(AnnError::Config(reason)))?;
        let queries = query_directions(&self.feature_map, self.solver.as_ref());
        let graph = ProjectedGraph::build_for_queries(
            self.weights.values(),
            self.feature_dim(),
            config.projected(),
            queries.as_deref(),
        )?;
        Ok(Some(GraphStage {
            graph,
            refine_factor: config.refine_factor,
        }))
    }

    /// The index without its graph: every search scans all of `W`.
    pub fn with_exact_first_stage(mut self) -> Self {
        self.first_stage = None;
        self
    }

    /// The first-stage graph, when the index has one.
    pub fn first_stage_graph(&self) -> Option<&ProjectedGraph> {
        self.first_stage.as_ref().map(|stage| &stage.graph)
    }

    /// How many documents per candidate the graph lists, when the index
    /// has one.
    pub fn first_stage_refine_factor(&self) -> Option<usize> {
        self.first_stage.as_ref().map(|stage| stage.refine_factor)
    }

    /// Sets how many documents per candidate the graph lists (clamped to
    /// 1..=65536; more finds more of the exact scan's candidates, at a
    /// cost linear in it). No effect without a graph.
    pub fn set_refine_factor(&mut self, refine_factor: usize) {
        if let Some(stage) = &mut self.first_stage {
            Arc::make_mut(stage).refine_factor = refine_factor.clamp(1, MAX_REFINE_FACTOR);
        }
    }

    /// The graph's candidates of `batch` (`[n_queries, h]` features): per
    /// query, `refine_factor * n_candidates` documents by projected score,
    /// then the `n_candidates` best of those by their full rows of `W`
    /// (int8 in a compressed index, f32 otherwise), best first.
    /// One query per task. A query gets fewer candidates only when its
    /// beam reaches fewer documents than it lists (a graph cut into parts
    /// it cannot cross; not seen on the scale benchmark).
    pub(crate) fn graph_candidates(
        &self,
        stage: &GraphStage,
        batch: &[f32],
        n_candidates: usize,
    ) -> Vec<Vec<ScoredId>> {
        let h = self.feature_dim();
        // Deleted documents stay in the graph until a compaction; the graph
        // lists that many more, in proportion, and they are dropped.
        let n_deleted = self.deleted.as_ref().map_or(0, |deleted| deleted.len());
        let live = (self.len() - n_deleted).max(1);
        let listed = stage
            .refine_factor
            .saturating_mul(n_candidates)
            .saturating_mul(self.len())
            .div_ceil(live)
            .min(self.len());
        let lists: Vec<Vec<u32>> = batch
            .par_chunks_exact(h)
            .map(|features| {
                let mut list = stage.graph.search(features, listed, listed);
                if let Some(deleted) = &self.deleted {
                    list.retain(|&doc| !deleted.contains(doc));
                }
                list
            })
            .collect();
        let rows = match self
            .compressed
            .as_ref()
            .and_then(|compressed| compressed.weights.as_ref())
        {
            Some(rows) => Rows::Int8(rows, self.isa),
            None => Rows::F32(self.weights.values()),
        };
        rescore(&lists, batch, rows, h, self.len(), n_candidates)
    }
}

/// The features of the solver's token sample (`[s, h]`), the directions
/// every query feature is a sum of, for the graph's axes
/// ([`lemur_ann::Projection::fit_to_queries`]); `None` for an index
/// without a solver (imported), whose graph takes `W`'s own axes.
pub(crate) fn query_directions(
    feature_map: &FeatureMap,
    solver: Option<&SolverState>,
) -> Option<Vec<f32>> {
    let tokens: &[f32] = match solver? {
        SolverState::Ready(solver) => solver.sample_tokens(),
        SolverState::Saved { sample, .. } => sample,
    };
    token_features(feature_map, tokens)
}

/// The features of single tokens (`[n, d]`): `[n, h]`, or `None` for none.
pub(crate) fn token_features(feature_map: &FeatureMap, tokens: &[f32]) -> Option<Vec<f32>> {
    let n = tokens.len() / feature_map.input_dim();
    if n == 0 {
        return None;
    }
    let offsets: Vec<usize> = (0..=n).collect();
    let mut features = vec![0.0; n * feature_map.output_dim()];
    feature_map.query_features(tokens, &offsets, &mut features, true);
    Some(features)
}
