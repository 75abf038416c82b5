//! Why a feature map could not be built.

use thiserror::Error;

/// Which parameter of a block an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// The Linear weight `[out, in]` (or the random projection `[d, h]`).
    Weight,
    /// The Linear bias `[out]`.
    Bias,
    /// The LayerNorm gain `[out]`.
    LnGain,
    /// The LayerNorm bias `[out]`.
    LnBias,
}

impl Param {
    /// The suffix the LEMUR-NumPy layout uses for this parameter
    /// (`weight`, `bias`, `ln_weight`, `ln_bias`).
    pub fn key_suffix(self) -> &'static str {
        match self {
            Param::Weight => "weight",
            Param::Bias => "bias",
            Param::LnGain => "ln_weight",
            Param::LnBias => "ln_bias",
        }
    }
}

/// A feature map's parameters did not describe a valid network.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MlpError {
    /// A network needs at least one block.
    #[error("a feature map needs at least one block")]
    NoBlocks,
    /// A width was 0.
    #[error("block {block}: widths must be at least 1 (in {in_dim}, out {out_dim})")]
    ZeroWidth {
        /// Block index.
        block: usize,
        /// Input width.
        in_dim: usize,
        /// Output width.
        out_dim: usize,
    },
    /// A parameter has the wrong number of values.
    #[error("block {block} {}: expected {expected} values, found {found}", param.key_suffix())]
    Length {
        /// Block index.
        block: usize,
        /// Which parameter.
        param: Param,
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// A parameter holds NaN or infinity.
    #[error("block {block} {}: value {index} is {value} (not finite)", param.key_suffix())]
    NonFinite {
        /// Block index.
        block: usize,
        /// Which parameter.
        param: Param,
        /// Flat index of the value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Block `block` takes `expected_in` inputs, but the previous block
    /// produces `found_in`.
    #[error("block {block} takes {found_in} inputs but block {} produces {expected_in}", block - 1)]
    Chain {
        /// Block index.
        block: usize,
        /// Width the previous block produces.
        expected_in: usize,
        /// Width this block takes.
        found_in: usize,
    },
}
