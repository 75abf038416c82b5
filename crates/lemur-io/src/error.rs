//! Load errors: always the file, usually the array key, and what was wrong.

use std::path::PathBuf;

use lemur_maxsim::MultiVectorError;
use lemur_mlp::MlpError;
use thiserror::Error;

/// A file could not be loaded. `path` is the file; `kind` says what was
/// wrong and, for arrays, which key.
#[derive(Debug, Error)]
#[error("{}: {kind}", path.display())]
pub struct LoadError {
    /// The file being read.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: LoadErrorKind,
}

/// What went wrong while loading.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a readable `.npz` / `.npy` (bad zip, bad header,
    /// truncated or trailing data).
    #[error("array {key:?}: {reason}")]
    Corrupt {
        /// The array key (the file name for a `.npy`).
        key: String,
        /// What the parser reported.
        reason: String,
    },
    /// A required array is missing from the archive.
    #[error("missing array {key:?}")]
    MissingArray {
        /// The missing key.
        key: String,
    },
    /// An array has the wrong rank or shape.
    #[error("array {key:?}: expected shape {expected}, found {found:?}")]
    Shape {
        /// The array key.
        key: String,
        /// The expected shape, e.g. `[2048, 128]` or `[*, 128]`.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// An array has the wrong element type.
    #[error("array {key:?}: expected dtype {expected}, found {found}")]
    Dtype {
        /// The array key.
        key: String,
        /// The expected dtype(s).
        expected: &'static str,
        /// The dtype descriptor found.
        found: String,
    },
    /// An array holds NaN or infinity.
    #[error("array {key:?}: value at flat index {index} is {value} (not finite)")]
    NonFinite {
        /// The array key.
        key: String,
        /// Flat (row-major) index of the first bad value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// An integer array holds a value outside its valid range (e.g. a
    /// negative token count).
    #[error("array {key:?}: value at index {index} is {value}, outside {valid}")]
    OutOfRange {
        /// The array key.
        key: String,
        /// Index of the bad value.
        index: usize,
        /// The value.
        value: i128,
        /// The valid range, in words.
        valid: &'static str,
    },
    /// Block `block`'s weight does not take the previous block's output
    /// width.
    #[error("array {key:?}: takes {found_in} inputs but the previous layer produces {expected_in}")]
    LayerChain {
        /// The weight key of the block that does not connect.
        key: String,
        /// Width the previous block produces.
        expected_in: usize,
        /// Width this block takes.
        found_in: usize,
    },
    /// The index directory's format version is not one this build reads.
    #[error("unsupported index format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the manifest.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The manifest is missing or not valid JSON of the expected shape.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// A file in the index directory is not listed in its manifest.
    #[error("unexpected file {name:?} (not in the manifest)")]
    UnexpectedFile {
        /// The file's name.
        name: String,
    },
    /// A file's contents do not match the checksum recorded when it was
    /// written.
    #[error("array {key:?}: checksum mismatch (expected crc32 {expected:08x}, found {found:08x})")]
    Checksum {
        /// The array.
        key: String,
        /// The recorded checksum.
        expected: u32,
        /// The checksum of the file as it is.
        found: u32,
    },
    /// The arrays are individually fine but do not form a valid model.
    #[error("invalid model: {0}")]
    Model(#[from] MlpError),
    /// The tokens and counts do not form a valid ragged corpus.
    #[error("invalid corpus: {0}")]
    Corpus(#[from] MultiVectorError),
}

impl LoadError {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: impl Into<LoadErrorKind>) -> Self {
        LoadError {
            path: path.into(),
            kind: kind.into(),
        }
    }
}
