//! Errors the facade returns: building an index, and searching one.

use lemur_io::LoadError;
use lemur_maxsim::MultiVectorError;
use lemur_mlp::MlpError;
use thiserror::Error;

/// An index could not be built from its parts.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A file could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The corpus is not a valid ragged token set.
    #[error("invalid corpus: {0}")]
    Corpus(#[from] MultiVectorError),
    /// The feature map is invalid.
    #[error("invalid feature map: {0}")]
    FeatureMap(#[from] MlpError),
    /// The weight buffer is not `[n_docs, width]`.
    #[error("document weights: {len} values are not [{n_docs}, {width}]")]
    WeightShape {
        /// Values given.
        len: usize,
        /// Rows claimed.
        n_docs: usize,
        /// Columns claimed.
        width: usize,
    },
    /// A document weight is NaN or infinite.
    #[error("document weights: row {row}, column {col} is {value} (not finite)")]
    NonFiniteWeight {
        /// Row (document).
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// `W` has a different number of rows than the corpus has documents.
    #[error("W has {weight_rows} rows but the corpus has {n_docs} documents")]
    WeightRows {
        /// Rows of `W`.
        weight_rows: usize,
        /// Documents in the corpus.
        n_docs: usize,
    },
    /// `W`'s width differs from the feature map's output width.
    #[error("W rows are {weight_width} wide but the feature map produces {feature_dim} features")]
    WeightWidth {
        /// Columns of `W`.
        weight_width: usize,
        /// The feature map's `h`.
        feature_dim: usize,
    },
    /// The first-stage graph could not be built, extended or assembled.
    #[error("first stage: {0}")]
    FirstStage(#[from] lemur_ann::AnnError),
    /// The weight solver could not be rebuilt for adding documents.
    #[error(transparent)]
    Fit(#[from] crate::fit::FitError),
    /// The index directory's metadata does not describe a valid index.
    #[error("{path}: {reason}")]
    Format {
        /// The index directory.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Documents can only be added to an index built in Rust, which keeps
    /// the least-squares solver its weights were fitted with.
    #[error(
        "this index has no weight solver (it was not built in Rust), so documents cannot be added"
    )]
    NoSolver,
    /// The feature map takes tokens of a different width than the corpus has.
    #[error(
        "the feature map takes {model_dim}-wide tokens but the corpus tokens are {corpus_dim} wide"
    )]
    DimMismatch {
        /// The feature map's `d`.
        model_dim: usize,
        /// The corpus token width.
        corpus_dim: usize,
    },
    /// The directory holds deletions or several segments, which a plain
    /// [`crate::Index`] cannot represent.
    #[error(
        "{path}: the index has {segments} segment(s) or deleted documents; open it as a SegmentedIndex"
    )]
    Segmented {
        /// The index directory.
        path: std::path::PathBuf,
        /// Its segments.
        segments: usize,
    },
    /// A document id that the index does not hold (never added, or
    /// deleted already).
    #[error("document id {id} is not in the index (never added, or deleted)")]
    UnknownDocument {
        /// The id.
        id: u32,
    },
    /// The change would leave the index without a document.
    #[error("the change would delete every document of the index")]
    NoDocumentsLeft,
    /// Adding the documents would run out of document ids.
    #[error("document ids are exhausted: {next_id} + {added} does not fit in 32 bits")]
    IdsExhausted {
        /// The next free id.
        next_id: u32,
        /// Documents being added.
        added: usize,
    },
}

/// A search request was invalid.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The queries are not a valid ragged token set (an empty query, NaN,
    /// counts that do not add up to the token rows, ...).
    #[error("invalid queries: {0}")]
    Queries(#[from] MultiVectorError),
    /// The query tokens are not as wide as the index's.
    #[error("query tokens are {found} wide but the index expects {expected}")]
    DimMismatch {
        /// The index's token width.
        expected: usize,
        /// The queries' token width.
        found: usize,
    },
    /// Fewer candidates than results were requested.
    #[error("n_candidates ({n_candidates}) must be at least k ({k})")]
    CandidatesBelowK {
        /// Results requested.
        k: usize,
        /// Candidates requested.
        n_candidates: usize,
    },
}
