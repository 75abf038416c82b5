//! Why a first-stage index could not be built or assembled.

use thiserror::Error;

/// Why an [`crate::Graph`] could not be trained, extended or assembled from
/// parts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AnnError {
    /// A configuration value is unusable.
    #[error("invalid first-stage config: {0}")]
    Config(String),
    /// Rows are not whole rows of the index's width.
    #[error("{len} values are not whole rows of width {dim}")]
    Shape {
        /// Values given.
        len: usize,
        /// The expected width.
        dim: usize,
    },
    /// A row holds NaN or an infinity.
    #[error("row {row} holds a non-finite value")]
    NonFinite {
        /// The row, counted from the first one given.
        row: usize,
    },
    /// No rows to estimate the projection from.
    #[error("{rows} sample rows cannot give {axes} principal axes")]
    TooFewRows {
        /// Rows given.
        rows: usize,
        /// Axes asked for.
        axes: usize,
    },
    /// The SVD behind the projection did not converge.
    #[error("the SVD of the sample's covariance did not converge")]
    Svd,
    /// Stored parts do not describe a graph (links out of range, levels
    /// that disagree, widths that disagree).
    #[error("inconsistent first-stage parts: {0}")]
    Parts(String),
    /// More rows than `u32` ids can name.
    #[error("the graph is full: ids are u32")]
    Full,
}
