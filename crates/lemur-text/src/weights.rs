//! Loading a BERT encoder's tensors from `model.safetensors` into f32
//! matrices laid out for the forward pass, with every shape checked
//! against the config first.

use safetensors::{Dtype, SafeTensors};

use crate::{BertConfig, TextError};

/// A Linear layer in PyTorch's layout: `weight` is `[out, in]` row-major,
/// which is exactly the right-hand side `matmul_a_bt` wants.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
}

/// LayerNorm gain and bias.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub(crate) gain: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

/// One transformer layer. The query, key and value projections are stacked
/// into one `[3 * hidden, hidden]` Linear so that they are a single GEMM.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) qkv: Linear,
    pub(crate) attention_out: Linear,
    pub(crate) attention_norm: Norm,
    pub(crate) intermediate: Linear,
    pub(crate) output: Linear,
    pub(crate) output_norm: Norm,
}

/// Every tensor of the encoder (the pooler, unused by mean pooling, is not
/// loaded).
#[derive(Debug, Clone)]
pub(crate) struct BertWeights {
    pub(crate) word_embeddings: Vec<f32>,
    pub(crate) position_embeddings: Vec<f32>,
    pub(crate) token_type_embeddings: Vec<f32>,
    pub(crate) embedding_norm: Norm,
    pub(crate) layers: Vec<Layer>,
}

/// Reads tensors by name, accepting the `bert.` prefix that checkpoints
/// saved from `BertFor*` heads carry.
pub(crate) struct TensorSource<'a> {
    pub(crate) tensors: SafeTensors<'a>,
    pub(crate) prefix: &'static str,
}

impl TensorSource<'_> {
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, TextError> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .tensors
            .tensor(&full)
            .map_err(|_| TextError::MissingTensor { name: name.into() })?;
        if view.shape() != shape {
            return Err(TextError::TensorShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| TextError::TensorDtype {
            name: name.into(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(TextError::NonFiniteTensor { name: name.into() });
        }
        Ok(values)
    }

    fn linear(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear, TextError> {
        Ok(Linear {
            weight: self.get(&format!("{name}.weight"), &[out_dim, in_dim])?,
            bias: self.get(&format!("{name}.bias"), &[out_dim])?,
            in_dim,
            out_dim,
        })
    }

    /// A LayerNorm's gain and bias, named `weight`/`bias` or, as older
    /// checkpoints and transformers 5's saves of them spell them,
    /// `gamma`/`beta`.
    fn norm(&self, name: &str, dim: usize) -> Result<Norm, TextError> {
        let either = |modern: &str, legacy: &str| {
            let modern = format!("{name}.{modern}");
            if self.has(&modern) {
                self.get(&modern, &[dim])
            } else {
                self.get(&format!("{name}.{legacy}"), &[dim])
            }
        };
        Ok(Norm {
            gain: either("weight", "gamma")?,
            bias: either("bias", "beta")?,
        })
    }

    /// A Linear layer whose bias exists only when `bias` (a zero bias
    /// otherwise, as ModernBERT's Linears without one compute).
    pub(crate) fn linear_with(
        &self,
        name: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
    ) -> Result<Linear, TextError> {
        if bias {
            return self.linear(name, out_dim, in_dim);
        }
        Ok(Linear {
            weight: self.get(&format!("{name}.weight"), &[out_dim, in_dim])?,
            bias: vec![0.0; out_dim],
            in_dim,
            out_dim,
        })
    }

    /// A LayerNorm whose bias exists only when `bias` (zero otherwise).
    pub(crate) fn norm_with(&self, name: &str, dim: usize, bias: bool) -> Result<Norm, TextError> {
        if bias {
            return self.norm(name, dim);
        }
        Ok(Norm {
            gain: self.get(&format!("{name}.weight"), &[dim])?,
            bias: vec![0.0; dim],
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.tensors
            .tensor(&format!("{}{name}", self.prefix))
            .is_ok()
    }
}

/// Little-endian f32, f16 or bf16 bytes as f32 values; `None` for any other
/// dtype.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        _ => return None,
    };
    Some(values)
}

/// IEEE half to single precision, exact for every half value.
fn f16_to_f32(half: u16) -> f32 {
    let sign = if half & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = f32::from(half & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24),
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}

impl BertWeights {
    /// Loads and checks every tensor from the bytes of a safetensors file.
    pub(crate) fn from_bytes(bytes: &[u8], config: &BertConfig) -> Result<BertWeights, TextError> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| TextError::Safetensors {
            path: Default::default(),
            message: e.to_string(),
        })?;
        let prefix = if tensors.tensor("embeddings.word_embeddings.weight").is_err()
            && tensors
                .tensor("bert.embeddings.word_embeddings.weight")
                .is_ok()
        {
            "bert."
        } else {
            ""
        };
        let source = TensorSource { tensors, prefix };
        let h = config.hidden_size;
        let ffn = config.intermediate_size;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let name = |part: &str| format!("encoder.layer.{i}.{part}");
            let q = source.linear(&name("attention.self.query"), h, h)?;
            let k = source.linear(&name("attention.self.key"), h, h)?;
            let v = source.linear(&name("attention.self.value"), h, h)?;
            let qkv = Linear {
                weight: [q.weight, k.weight, v.weight].concat(),
                bias: [q.bias, k.bias, v.bias].concat(),
                in_dim: h,
                out_dim: 3 * h,
            };
            layers.push(Layer {
                qkv,
                attention_out: source.linear(&name("attention.output.dense"), h, h)?,
                attention_norm: source.norm(&name("attention.output.LayerNorm"), h)?,
                intermediate: source.linear(&name("intermediate.dense"), ffn, h)?,
                output: source.linear(&name("output.dense"), h, ffn)?,
                output_norm: source.norm(&name("output.LayerNorm"), h)?,
            });
        }
        Ok(BertWeights {
            word_embeddings: source
                .get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: source.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_embeddings: source.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embedding_norm: source.norm("embeddings.LayerNorm", h)?,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions_are_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7e00).is_nan());
        let bf16 = to_f32(Dtype::BF16, &[0x80, 0x3f]).unwrap();
        assert_eq!(bf16, vec![1.0]);
        assert!(to_f32(Dtype::I64, &[0; 8]).is_none());
    }
}
