//! The ModernBERT encoder's forward pass (transformers' `ModernBertModel`,
//! as it runs on a CPU: eager attention, no unpadding).
//!
//! What differs from BERT: no position or token-type embeddings, rotary
//! position embeddings on queries and keys instead (NeoX's half split,
//! one base for global layers and one for sliding ones); LayerNorm before
//! each block (none before layer 0's attention) and once more at the end;
//! no biases unless the config asks for them; a GeGLU feed-forward
//! (`Wo(gelu(x Wi_in^T) * x Wi_gate^T)`, the first half of `Wi`'s outputs
//! activated); and attention that is global on some layers and limited to
//! keys at most `window` positions away on the others. As in
//! [`crate::model`], sequences are concatenated rows, every Linear is one
//! GEMM over all real tokens, and attention runs per sequence and head.

use lemur_mlp::simd::{dispatch, layer_norm_with_eps};
use safetensors::SafeTensors;

use crate::config::ModernBertSettings;
use crate::model::{AttentionShape, activate, attend, linear};
use crate::weights::{Linear, Norm, TensorSource};
use crate::{BertConfig, TextError};

/// One layer's tensors (`attn_norm` is `None` on layer 0, whose attention
/// reads the embeddings as they are).
#[derive(Debug, Clone)]
struct ModernLayer {
    attention_norm: Option<Norm>,
    qkv: Linear,
    attention_out: Linear,
    mlp_norm: Norm,
    /// `[2 * intermediate, hidden]`: the activated half, then the gate.
    mlp_in: Linear,
    mlp_out: Linear,
}

/// A loaded ModernBERT encoder.
#[derive(Debug, Clone)]
pub(crate) struct ModernBertModel {
    pub(crate) config: BertConfig,
    settings: ModernBertSettings,
    embeddings: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<ModernLayer>,
    final_norm: Norm,
    /// RoPE inverse frequencies of global and sliding layers, `[head_dim / 2]`.
    global_frequencies: Vec<f32>,
    local_frequencies: Vec<f32>,
}

/// Scratch buffers reused across the layers of one forward call.
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    gated: Vec<f32>,
    intermediate: Vec<f32>,
    scores: Vec<f32>,
}

/// RoPE's inverse frequencies as transformers computes them in float32:
/// `1 / theta^(2j / head_dim)`.
fn inverse_frequencies(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f32 / head_dim as f32))
        .collect()
}

impl ModernBertModel {
    /// Loads and checks every tensor `config` implies from the bytes of a
    /// safetensors file (names with or without the `model.` prefix of a
    /// masked-LM checkpoint; its head is not read).
    pub(crate) fn from_bytes(
        bytes: &[u8],
        config: BertConfig,
        settings: ModernBertSettings,
    ) -> Result<ModernBertModel, TextError> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| TextError::Safetensors {
            path: Default::default(),
            message: e.to_string(),
        })?;
        let prefix = if tensors.tensor("embeddings.tok_embeddings.weight").is_err()
            && tensors
                .tensor("model.embeddings.tok_embeddings.weight")
                .is_ok()
        {
            "model."
        } else {
            ""
        };
        let source = TensorSource { tensors, prefix };
        let (h, ffn) = (config.hidden_size, config.intermediate_size);
        let norm = |name: &str| source.norm_with(name, h, settings.norm_bias);
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let name = |part: &str| format!("layers.{i}.{part}");
            layers.push(ModernLayer {
                attention_norm: match i {
                    0 => None,
                    _ => Some(norm(&name("attn_norm"))?),
                },
                qkv: source.linear_with(&name("attn.Wqkv"), 3 * h, h, settings.attention_bias)?,
                attention_out: source.linear_with(
                    &name("attn.Wo"),
                    h,
                    h,
                    settings.attention_bias,
                )?,
                mlp_norm: norm(&name("mlp_norm"))?,
                mlp_in: source.linear_with(&name("mlp.Wi"), 2 * ffn, h, settings.mlp_bias)?,
                mlp_out: source.linear_with(&name("mlp.Wo"), h, ffn, settings.mlp_bias)?,
            });
        }
        let head_dim = config.head_dim();
        Ok(ModernBertModel {
            embeddings: source.get("embeddings.tok_embeddings.weight", &[config.vocab_size, h])?,
            embedding_norm: norm("embeddings.norm")?,
            layers,
            final_norm: norm("final_norm")?,
            global_frequencies: inverse_frequencies(settings.global_rope_theta, head_dim),
            local_frequencies: inverse_frequencies(settings.local_rope_theta, head_dim),
            config,
            settings,
        })
    }

    /// Last hidden states (after the final LayerNorm) `[sum of lengths,
    /// hidden]` of `sequences`, as [`crate::model::BertModel::forward_with_keys`]
    /// gives them: each sequence attends only to its first `keys` tokens
    /// (and, on sliding layers, to those within the window), positions
    /// count from 0 in every sequence.
    pub(crate) fn forward_with_keys(&self, sequences: &[(&[u32], usize)]) -> Vec<f32> {
        let (h, ffn) = (self.config.hidden_size, self.config.intermediate_size);
        let n_tokens: usize = sequences.iter().map(|(s, _)| s.len()).sum();
        let mut states = Vec::with_capacity(n_tokens * h);
        for (sequence, _) in sequences {
            for &id in *sequence {
                states.extend_from_slice(&self.embeddings[id as usize * h..][..h]);
            }
        }
        self.normalize(&mut states, &self.embedding_norm);
        let mut scratch = Scratch {
            normed: vec![0.0; n_tokens * h],
            qkv: vec![0.0; n_tokens * 3 * h],
            context: vec![0.0; n_tokens * h],
            projected: vec![0.0; n_tokens * h],
            gated: vec![0.0; n_tokens * 2 * ffn],
            intermediate: vec![0.0; n_tokens * ffn],
            scores: Vec::new(),
        };
        for (layer, &global) in self.layers.iter().zip(&self.settings.global_layers) {
            scratch.normed.copy_from_slice(&states);
            if let Some(norm) = &layer.attention_norm {
                self.normalize(&mut scratch.normed, norm);
            }
            linear(&mut scratch.qkv, &scratch.normed, &layer.qkv, n_tokens);
            let mut offset = 0;
            for (sequence, keys) in sequences {
                self.attention(&mut scratch, offset, sequence.len(), *keys, global);
                offset += sequence.len();
            }
            linear(
                &mut scratch.projected,
                &scratch.context,
                &layer.attention_out,
                n_tokens,
            );
            add(&mut states, &scratch.projected);
            scratch.normed.copy_from_slice(&states);
            self.normalize(&mut scratch.normed, &layer.mlp_norm);
            linear(&mut scratch.gated, &scratch.normed, &layer.mlp_in, n_tokens);
            self.gate(&scratch.gated, &mut scratch.intermediate);
            linear(
                &mut scratch.projected,
                &scratch.intermediate,
                &layer.mlp_out,
                n_tokens,
            );
            add(&mut states, &scratch.projected);
        }
        self.normalize(&mut states, &self.final_norm);
        states
    }

    /// LayerNorm of every row of `states`.
    fn normalize(&self, states: &mut [f32], norm: &Norm) {
        let (h, eps) = (self.config.hidden_size, self.config.layer_norm_eps);
        dispatch(
            #[inline(always)]
            || {
                for row in states.chunks_exact_mut(h) {
                    layer_norm_with_eps(row, Some((&norm.gain, &norm.bias)), eps);
                }
            },
        );
    }

    /// `intermediate = act(gated[:, :I]) * gated[:, I:]`, row by row.
    fn gate(&self, gated: &[f32], intermediate: &mut [f32]) {
        let ffn = self.config.intermediate_size;
        let act = self.config.hidden_act;
        dispatch(
            #[inline(always)]
            || {
                for (out, row) in intermediate
                    .chunks_exact_mut(ffn)
                    .zip(gated.chunks_exact(2 * ffn))
                {
                    let (input, gate) = row.split_at(ffn);
                    out.copy_from_slice(input);
                    activate(act, out);
                    out.iter_mut().zip(gate).for_each(|(o, g)| *o *= g);
                }
            },
        );
    }

    /// Rotates the queries and keys of rows `offset..offset + len` of
    /// `qkv` by their positions `0..len` (every head, NeoX's half split:
    /// dimension `j` pairs with `j + head_dim / 2`).
    fn rotate(&self, qkv: &mut [f32], len: usize, global: bool) {
        let h = self.config.hidden_size;
        let head_dim = self.config.head_dim();
        let half = head_dim / 2;
        let frequencies = match global {
            true => &self.global_frequencies,
            false => &self.local_frequencies,
        };
        let mut cos = vec![0.0f32; half];
        let mut sin = vec![0.0f32; half];
        for (position, row) in qkv.chunks_exact_mut(3 * h).take(len).enumerate() {
            for ((c, s), &frequency) in cos.iter_mut().zip(&mut sin).zip(frequencies) {
                // The angle rounded to f32 first, as transformers computes it.
                let angle = position as f32 * frequency;
                (*s, *c) = angle.sin_cos();
            }
            // Queries and keys: the first two thirds of the row.
            for head in row[..2 * h].chunks_exact_mut(head_dim) {
                let (first, second) = head.split_at_mut(half);
                for (((x1, x2), &c), &s) in first.iter_mut().zip(second).zip(&cos).zip(&sin) {
                    let (a, b) = (*x1, *x2);
                    *x1 = a * c - b * s;
                    *x2 = b * c + a * s;
                }
            }
        }
    }

    /// Rotary positions, then multi-head attention of the sequence at
    /// rows `offset..offset + len` of `scratch.qkv` over its first `keys`
    /// rows (on a sliding layer only those within the window), written to
    /// the same rows of `scratch.context`.
    fn attention(
        &self,
        scratch: &mut Scratch,
        offset: usize,
        len: usize,
        keys: usize,
        global: bool,
    ) {
        let h = self.config.hidden_size;
        let rows = &mut scratch.qkv[offset * 3 * h..][..len * 3 * h];
        self.rotate(rows, len, global);
        let shape = AttentionShape {
            hidden: h,
            num_heads: self.config.num_heads,
            keys,
            window: (!global).then_some(self.settings.window),
        };
        attend(
            rows,
            &mut scratch.context[offset * h..][..len * h],
            &mut scratch.scores,
            shape,
        );
    }
}

/// `states += residual`.
fn add(states: &mut [f32], residual: &[f32]) {
    dispatch(
        #[inline(always)]
        || {
            for (a, b) in states.iter_mut().zip(residual) {
                *a += b;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_frequencies_fall_from_one_by_the_base() {
        let f = inverse_frequencies(10_000.0, 8);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.1).abs() < 1e-7 && (f[3] - 0.001).abs() < 1e-9);
    }
}
