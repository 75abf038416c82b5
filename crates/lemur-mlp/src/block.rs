//! One `Linear -> LayerNorm -> activation` block, validated on construction.

use crate::error::{MlpError, Param};

/// One block of the learned feature map: `act(LN(x A^T + b))`.
///
/// Weights are row-major `[out_dim, in_dim]`, PyTorch's Linear layout (and
/// the LEMUR-NumPy export's).
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub(crate) weight: Vec<f32>,
    /// The same weight transposed, `[in_dim, out_dim]`: the forward pass
    /// reads it row after row, which streams from memory at full speed when
    /// a search has pushed it out of the caches (faer reads `weight` itself
    /// column-wise there, at about half the speed).
    pub(crate) weight_by_input: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) ln_gain: Vec<f32>,
    pub(crate) ln_bias: Vec<f32>,
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
}

impl Block {
    /// Validates and builds a block. `index` is the block's position, used
    /// only to name it in errors.
    pub fn new(
        index: usize,
        weight: Vec<f32>,
        in_dim: usize,
        out_dim: usize,
        bias: Vec<f32>,
        ln_gain: Vec<f32>,
        ln_bias: Vec<f32>,
    ) -> Result<Block, MlpError> {
        if in_dim == 0 || out_dim == 0 {
            return Err(MlpError::ZeroWidth {
                block: index,
                in_dim,
                out_dim,
            });
        }
        let checks = [
            (Param::Weight, &weight, in_dim * out_dim),
            (Param::Bias, &bias, out_dim),
            (Param::LnGain, &ln_gain, out_dim),
            (Param::LnBias, &ln_bias, out_dim),
        ];
        for (param, values, expected) in checks {
            check_values(index, param, values, expected)?;
        }
        let mut weight_by_input = vec![0.0; in_dim * out_dim];
        for (o, row) in weight.chunks_exact(in_dim).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                weight_by_input[i * out_dim + o] = w;
            }
        }
        Ok(Block {
            weight,
            weight_by_input,
            bias,
            ln_gain,
            ln_bias,
            in_dim,
            out_dim,
        })
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The Linear weight, row-major `[out_dim, in_dim]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The Linear bias, `[out_dim]`.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// The LayerNorm gain, `[out_dim]`.
    pub fn ln_gain(&self) -> &[f32] {
        &self.ln_gain
    }

    /// The LayerNorm bias, `[out_dim]`.
    pub fn ln_bias(&self) -> &[f32] {
        &self.ln_bias
    }
}

/// Checks a parameter's length and that every value is finite.
pub(crate) fn check_values(
    block: usize,
    param: Param,
    values: &[f32],
    expected: usize,
) -> Result<(), MlpError> {
    if values.len() != expected {
        return Err(MlpError::Length {
            block,
            param,
            expected,
            found: values.len(),
        });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(MlpError::NonFinite {
            block,
            param,
            index,
            value: values[index],
        });
    }
    Ok(())
}
