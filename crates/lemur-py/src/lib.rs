//! The native module of the `lemur_rs` Python package.
//!
//! Everything here takes and returns NumPy arrays of one exact type
//! (C-contiguous `float32` tokens, `int64` counts and ids): the package's
//! Python layer (`python/lemur_rs`) accepts NumPy arrays and PyTorch
//! tensors of any integer or float type, checks them and converts them
//! once, so this layer only checks what the engine needs. Every call
//! releases the GIL while it computes, on `num_threads` threads (`-1`:
//! every core), and every engine error becomes a Python exception with
//! the engine's message: `OSError` for files, `ValueError` otherwise.
//!
//! ```python
//! import numpy as np
//! from lemur_rs import Index
//!
//! rng = np.random.default_rng(0)
//! counts = np.full(500, 12)
//! tokens = rng.standard_normal((counts.sum(), 64), dtype=np.float32)
//! index = Index.build(tokens, counts, epochs=0, final_hidden_dim=256)
//! ids, scores = index.search(tokens[:24], np.array([12, 12]), k=5)
//! assert ids[0, 0] == 0 and ids[1, 0] == 1
//! ```

mod arrays;
mod errors;
mod index;
mod maxsim;
mod pool;
mod text;

use pyo3::prelude::*;

/// The compiled core of `lemur_rs`.
#[pymodule]
mod _lemur_rs {
    #[pymodule_export]
    use super::index::NativeIndex;
    #[pymodule_export]
    use super::maxsim::NativeMaxSim;
    #[pymodule_export]
    use super::text::{NativeTextEncoder, NativeTextIndex};

    /// The version of the Rust crates this module was built from.
    #[pymodule_export]
    const VERSION: &str = env!("CARGO_PKG_VERSION");

    /// The SIMD level the MaxSim kernels run at on this CPU.
    #[pyo3::pyfunction]
    fn simd_level() -> &'static str {
        lemur::Isa::detect().level().name()
    }
}
