//! The sublinear first stage of LEMUR: which rows of `W` have the largest
//! inner products with a query's features, without scoring them all.
//!
//! An exact scan of `W` reads every row for every query: 8 KiB per
//! document at `h = 2048`, most of a second per query at a million
//! documents. This crate finds a short list instead:
//!
//! - [`Projection`] maps rows onto 256 of 2048 axes by default: the
//!   leading axes of a sample of the queries' directions
//!   ([`Projection::fit_to_queries`]), where the scores are decided, or of
//!   the rows themselves ([`Projection::fit`]). A short list ranked in the
//!   subspace holds nearly all of the true best rows, and the caller
//!   settles the order on the full rows.
//! - [`Graph`] is a hierarchical navigable small-world graph with inner
//!   product as the similarity, built deterministically in parallel
//!   batches (the same rows, split into the same `add` calls, and seed
//!   give the same graph on any number of threads; the projection comes
//!   from faer's SVD, which may use the pool's threads). Rows are stored
//!   as int8 codes with a scale each.
//! - [`ProjectedGraph`] is the two together.
//!
//! Partitioning (an inverted file of k-means lists) was measured first
//! and rejected: on the scale benchmark's `W`, probing a quarter of the
//! lists found 63% of the exact top 200, because a query's best documents
//! share some of its topics each and fall in many lists. The graph finds
//! 98% of them among the best 800 it lists, reading a few thousand rows.
//!
//! Compute only: nothing here touches files (the facade saves the parts).
//!
//! # Example
//!
//! ```
//! use lemur_ann::{ProjectedConfig, ProjectedGraph};
//!
//! // 500 rows of width 8: row i is mostly along axis i % 8.
//! let rows: Vec<f32> = (0..500 * 8)
//!     .map(|k| if k % 8 == (k / 8) % 8 { 1.0 + (k / 64) as f32 * 0.01 } else { 0.1 })
//!     .collect();
//! let config = ProjectedConfig { projection_dim: 8, ..ProjectedConfig::default() };
//! let ann = ProjectedGraph::build(&rows, 8, config)?;
//! let query = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
//! let best = ann.search(&query, 5, 50);
//! // Rows along axis 2 (ids 2, 10, 18, ...) score highest; the largest
//! // multiplier belongs to the last of them.
//! assert!(best.iter().all(|&id| id % 8 == 2));
//! # Ok::<(), lemur_ann::AnnError>(())
//! ```

mod error;
mod graph;
mod projected;
mod projection;

pub use error::AnnError;
pub use graph::{Graph, GraphConfig, GraphParts};
pub use projected::{ProjectedConfig, ProjectedGraph};
pub use projection::Projection;

/// Checks that `rows` are whole finite rows of width `dim`; their count.
pub(crate) fn check_rows(rows: &[f32], dim: usize) -> Result<usize, AnnError> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(AnnError::Shape {
            len: rows.len(),
            dim,
        });
    }
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        return Err(AnnError::NonFinite { row: i / dim });
    }
    Ok(rows.len() / dim)
}
