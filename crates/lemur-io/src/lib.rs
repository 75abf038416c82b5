//! Files in, validated LEMUR types out.
//!
//! This is the only crate that reads files, and it builds every value
//! through the compute crates' validating constructors, so nothing loaded
//! from disk can break an invariant:
//!
//! - [`load_npz`] reads the LEMUR-NumPy `.npz` export of the original
//!   (PyTorch) LEMUR: the feature-map blocks and the document weights `W`;
//!   [`save_npz`] writes the same layout.
//! - [`load_multivectors`] reads a ragged corpus or query batch stored as
//!   `tokens.npy` (`[N_tok, d]` float32) plus `counts.npy` (`[m]`, any of
//!   int32/int64/uint32/uint64); [`save_multivectors`] writes one, and
//!   [`map_multivectors`] maps one larger than memory without reading it.
//!
//! - [`StoreWriter`] / [`Store`] are the crash-safe array directory the
//!   on-disk index format is built on (generations, a checksummed JSON
//!   manifest, memory-mapped arrays validated before use).
//!
//! Every error is a [`LoadError`] naming the file and, for arrays, the key,
//! with the expected and found shape or dtype. Writes are atomic (temporary
//! file, fsync, rename).
//!
//! # Example
//!
//! ```no_run
//! use lemur_io::{NpzOptions, load_multivectors, load_npz};
//!
//! let model = load_npz("model.npz", NpzOptions::default())?;
//! let corpus = load_multivectors("tokens.npy", "counts.npy")?;
//! assert_eq!(model.feature_map.input_dim(), corpus.dim());
//! # Ok::<(), lemur_io::LoadError>(())
//! ```

mod array;
mod corpus;
mod error;
mod npz;
mod store;
mod write;

pub use corpus::{
    load_matrix, load_multivectors, map_multivectors, save_matrix, save_multivectors, write_npy,
};
pub use error::{LoadError, LoadErrorKind};
pub use npz::{ExportedModel, NpzOptions, TargetNorm, load_npz, save_npz};
pub use store::{ArrayEntry, ArrayStream, FORMAT_VERSION, MappedF32, Store, StoreWriter};
pub use write::write_atomically;
