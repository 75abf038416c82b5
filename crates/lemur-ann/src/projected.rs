//! The first stage as one piece: rows projected onto their principal axes
//! and a graph over the projections.

use crate::error::AnnError;
use crate::graph::{Graph, GraphConfig, GraphParts};
use crate::projection::Projection;

/// Rows projected and added to the graph at a time (32 MiB of f32
/// projections at 2048 wide).
const ADD_BLOCK: usize = 4096;

/// How a [`ProjectedGraph`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectedConfig {
    /// Principal axes kept (`r`); the row width or more: none, the graph
    /// holds the rows as they are ([`Projection::identity`]).
    pub projection_dim: usize,
    /// Rows the axes are estimated from (evenly spaced over the rows).
    pub sample_rows: usize,
    /// The graph.
    pub graph: GraphConfig,
}

impl Default for ProjectedConfig {
    /// 256 axes from 32,768 rows; the graph's defaults.
    fn default() -> Self {
        ProjectedConfig {
            projection_dim: 256,
            sample_rows: 32_768,
            graph: GraphConfig::default(),
        }
    }
}

/// A graph over the principal-axis projections of a matrix's rows,
/// searched with queries projected the same way: it lists the rows whose
/// inner products with a query are likely the largest, for the caller to
/// score exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedGraph {
    projection: Projection,
    graph: Graph,
}

impl ProjectedGraph {
    /// Fits the projection on a sample of `rows` (`[n, dim]`, `n >= 1`)
    /// and builds the graph over all of them, on the current rayon pool.
    /// The rows are projected 4096 at a time, so a build over
    /// memory-mapped rows holds one block of projections beside the graph.
    pub fn build(rows: &[f32], dim: usize, config: ProjectedConfig) -> Result<Self, AnnError> {
        Self::build_for_queries(rows, dim, config, None)
    }

    /// [`ProjectedGraph::build`] with the axes fitted to a sample of
    /// queries (`[s, dim]`) when one is given
    /// ([`Projection::fit_to_queries`]), else to the rows.
    pub fn build_for_queries(
        rows: &[f32],
        dim: usize,
        config: ProjectedConfig,
        queries: Option<&[f32]>,
    ) -> Result<Self, AnnError> {
        let n = crate::check_rows(rows, dim)?;
        if n == 0 {
            return Err(AnnError::TooFewRows {
                rows: 0,
                axes: config.projection_dim,
            });
        }
        let projection = if config.projection_dim >= dim {
            Projection::identity(dim)
        } else {
            let step = n.div_ceil(config.sample_rows.max(1));
            let sample: Vec<f32> = rows
                .chunks_exact(dim)
                .step_by(step)
                .flatten()
                .copied()
                .collect();
            match queries {
                Some(queries) => {
                    Projection::fit_to_queries(&sample, queries, dim, config.projection_dim)?
                }
                None => Projection::fit(&sample, dim, config.projection_dim)?,
            }
        };
        let mut built = ProjectedGraph {
            graph: Graph::new(projection.out_dim(), config.graph)?,
            projection,
        };
        built.add(rows)?;
        Ok(built)
    }

    /// Adds rows (`[n, dim]`) as ids `len()..len() + n`, projected with the
    /// existing axes (4096 at a time). Returns the first new id.
    pub fn add(&mut self, rows: &[f32]) -> Result<u32, AnnError> {
        let dim = self.projection.dim();
        crate::check_rows(rows, dim)?;
        let first = self.graph.len() as u32;
        for block in rows.chunks(ADD_BLOCK * dim) {
            self.graph.add(&self.projection.project_rows(block))?;
        }
        Ok(first)
    }

    /// Rows indexed.
    pub fn len(&self) -> usize {
        self.graph.len()
    }

    /// Whether no rows are indexed.
    pub fn is_empty(&self) -> bool {
        self.graph.is_empty()
    }

    /// Bytes held (projection, projected rows, links).
    pub fn bytes(&self) -> usize {
        4 * (self.projection.axes().len() + self.projection.mean().len()) + self.graph.bytes()
    }

    /// The projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Up to `n` row ids for `query` (`[dim]`), best projected score first,
    /// from a beam of width `max(n, ef)`. Sequential.
    ///
    /// # Panics
    ///
    /// If `query` is not `dim` wide.
    #[track_caller]
    pub fn search(&self, query: &[f32], n: usize, ef: usize) -> Vec<u32> {
        let projected = self.projection.project_queries(query);
        self.graph
            .search(&projected, n, ef.max(n))
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The parts to save: the projection's mean and axes, and the graph's.
    pub fn to_parts(&self) -> (Vec<f32>, Vec<f32>, GraphParts) {
        (
            self.projection.mean().to_vec(),
            self.projection.axes().to_vec(),
            self.graph.to_parts(),
        )
    }

    /// Reassembles a projected graph from [`ProjectedGraph::to_parts`].
    pub fn from_parts(mean: Vec<f32>, axes: Vec<f32>, graph: GraphParts) -> Result<Self, AnnError> {
        let projection = Projection::from_parts(mean, axes)?;
        if graph.dim != projection.out_dim() {
            return Err(AnnError::Parts(format!(
                "the graph is {} wide, the projection gives {}",
                graph.dim,
                projection.out_dim()
            )));
        }
        Ok(ProjectedGraph {
            projection,
            graph: Graph::from_parts(graph)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projected_graph_round_trips_through_its_parts_and_finds_the_best_rows() {
        // Rows with a few dominant directions plus a small spread in all.
        let (n, dim) = (600, 40);
        let rows: Vec<f32> = (0..n * dim)
            .map(|k| {
                let (i, j) = (k / dim, k % dim);
                ((i * 7 + j * 13) % 17) as f32 * if j < 6 { 1.0 } else { 0.05 }
                    + ((i * j) % 5) as f32 * 0.01
            })
            .collect();
        let config = ProjectedConfig {
            projection_dim: 12,
            sample_rows: 300,
            ..ProjectedConfig::default()
        };
        let built = ProjectedGraph::build(&rows, dim, config).unwrap();
        let (mean, axes, graph) = built.to_parts();
        assert_eq!(
            ProjectedGraph::from_parts(mean, axes, graph).unwrap(),
            built
        );
        // The rows differ mostly in the first six columns, which twelve
        // axes keep: the best row by full inner product comes first.
        let query: Vec<f32> = (0..dim)
            .map(|j| if j < 6 { 1.0 - j as f32 * 0.3 } else { 0.0 })
            .collect();
        let dot = |i: usize| -> f32 {
            rows[i * dim..][..dim]
                .iter()
                .zip(&query)
                .map(|(a, b)| a * b)
                .sum()
        };
        let best = (0..n)
            .max_by(|&a, &b| dot(a).total_cmp(&dot(b)).then(b.cmp(&a)))
            .unwrap();
        let found = built.search(&query, 10, 50);
        assert!(
            found.iter().any(|&id| dot(id as usize) >= dot(best) - 1e-4),
            "{found:?}"
        );

        // With as many axes as columns or more, the rows are kept as they
        // are: the graph is as wide as they are and finds the best row.
        let config = ProjectedConfig {
            projection_dim: dim,
            ..config
        };
        let full = ProjectedGraph::build(&rows, dim, config).unwrap();
        assert!(full.projection().is_identity());
        assert_eq!(full.graph().dim(), dim);
        let found = full.search(&query, 10, 50);
        assert!(
            found.iter().any(|&id| dot(id as usize) >= dot(best) - 1e-4),
            "{found:?}"
        );
        let (mean, axes, graph) = full.to_parts();
        assert_eq!(ProjectedGraph::from_parts(mean, axes, graph).unwrap(), full);
    }
}
