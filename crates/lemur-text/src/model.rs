//! The BERT encoder's forward pass on faer GEMMs, and the choice between
//! it and ModernBERT's ([`Backbone`]).
//!
//! A group of sequences of different lengths is processed as one
//! concatenated `[tokens, hidden]` matrix: every Linear layer is a single
//! GEMM over all real tokens (no padding is ever computed), and only the
//! attention, which must not mix sequences, runs per sequence and head.
//! Everything runs on the calling thread; callers parallelise across
//! groups.

use std::path::Path;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use lemur_mlp::gelu;
use lemur_mlp::gemm::matmul_a_bt;
use lemur_mlp::simd::{dispatch, layer_norm_with_eps, softmax};

use crate::config::{Architecture, HiddenAct};
use crate::modernbert::ModernBertModel;
use crate::weights::{BertWeights, Linear, Norm};
use crate::{BertConfig, TextError};

/// A loaded encoder: config plus weights.
#[derive(Debug, Clone)]
pub(crate) struct BertModel {
    pub(crate) config: BertConfig,
    weights: BertWeights,
}

/// The encoder a [`crate::TextEncoder`] runs: BERT or ModernBERT, with
/// the same contract for [`Backbone::forward_with_keys`].
#[derive(Debug, Clone)]
pub(crate) enum Backbone {
    Bert(BertModel),
    ModernBert(ModernBertModel),
}

impl Backbone {
    /// Loads the backbone `config` describes from the bytes of its
    /// safetensors file.
    pub(crate) fn from_bytes(bytes: &[u8], config: BertConfig) -> Result<Backbone, TextError> {
        match &config.architecture {
            Architecture::Bert => {
                let weights = BertWeights::from_bytes(bytes, &config)?;
                Ok(Backbone::Bert(BertModel::new(config, weights)))
            }
            Architecture::ModernBert(settings) => {
                let settings = settings.clone();
                Ok(Backbone::ModernBert(ModernBertModel::from_bytes(
                    bytes, config, settings,
                )?))
            }
        }
    }

    /// Loads the backbone from a `model.safetensors` file.
    pub(crate) fn from_file(path: &Path, config: BertConfig) -> Result<Backbone, TextError> {
        let bytes = std::fs::read(path).map_err(|e| TextError::io(path, e))?;
        Self::from_bytes(&bytes, config).map_err(|e| match e {
            TextError::Safetensors { message, .. } => TextError::Safetensors {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    /// The architecture numbers.
    pub(crate) fn config(&self) -> &BertConfig {
        match self {
            Backbone::Bert(model) => &model.config,
            Backbone::ModernBert(model) => &model.config,
        }
    }

    /// See [`BertModel::forward_with_keys`].
    pub(crate) fn forward_with_keys(&self, sequences: &[(&[u32], usize)]) -> Vec<f32> {
        match self {
            Backbone::Bert(model) => model.forward_with_keys(sequences),
            Backbone::ModernBert(model) => model.forward_with_keys(sequences),
        }
    }
}

/// Scratch buffers reused across the layers of one forward call.
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
    scores: Vec<f32>,
}

impl BertModel {
    pub(crate) fn new(config: BertConfig, weights: BertWeights) -> Self {
        BertModel { config, weights }
    }

    /// Last hidden states `[sum of lengths, hidden]` of `sequences`, rows in
    /// sequence order, where each sequence's tokens attend only to its
    /// first `keys` tokens (a key-padding mask: ColBERT's query expansion
    /// tokens are computed but not attended to; `keys` equal to the length
    /// attends to all). Every id must be below `vocab_size` and every
    /// sequence at most `max_position_embeddings` long (the encoder
    /// guarantees both).
    pub(crate) fn forward_with_keys(&self, sequences: &[(&[u32], usize)]) -> Vec<f32> {
        let h = self.config.hidden_size;
        let n_tokens: usize = sequences.iter().map(|(s, _)| s.len()).sum();
        let ids: Vec<&[u32]> = sequences.iter().map(|(s, _)| *s).collect();
        let mut states = self.embed(&ids, n_tokens);
        let mut scratch = Scratch {
            qkv: vec![0.0; n_tokens * 3 * h],
            context: vec![0.0; n_tokens * h],
            projected: vec![0.0; n_tokens * h],
            intermediate: vec![0.0; n_tokens * self.config.intermediate_size],
            scores: Vec::new(),
        };
        for layer in &self.weights.layers {
            linear(&mut scratch.qkv, &states, &layer.qkv, n_tokens);
            let mut offset = 0;
            for (sequence, keys) in sequences {
                self.attention(&mut scratch, offset, sequence.len(), *keys);
                offset += sequence.len();
            }
            linear(
                &mut scratch.projected,
                &scratch.context,
                &layer.attention_out,
                n_tokens,
            );
            self.add_and_norm(&mut states, &scratch.projected, &layer.attention_norm);
            linear(
                &mut scratch.intermediate,
                &states,
                &layer.intermediate,
                n_tokens,
            );
            self.activate(&mut scratch.intermediate);
            linear(
                &mut scratch.projected,
                &scratch.intermediate,
                &layer.output,
                n_tokens,
            );
            self.add_and_norm(&mut states, &scratch.projected, &layer.output_norm);
        }
        states
    }

    /// Word + position + token-type (0) embeddings, then LayerNorm.
    fn embed(&self, sequences: &[&[u32]], n_tokens: usize) -> Vec<f32> {
        let h = self.config.hidden_size;
        let w = &self.weights;
        let mut states = Vec::with_capacity(n_tokens * h);
        for sequence in sequences {
            for (position, &id) in sequence.iter().enumerate() {
                let word = &w.word_embeddings[id as usize * h..][..h];
                let pos = &w.position_embeddings[position * h..][..h];
                let kind = &w.token_type_embeddings[..h];
                states.extend(word.iter().zip(pos).zip(kind).map(|((a, b), c)| a + b + c));
            }
        }
        let norm = &w.embedding_norm;
        dispatch(
            #[inline(always)]
            || {
                for row in states.chunks_exact_mut(h) {
                    layer_norm_with_eps(
                        row,
                        Some((&norm.gain, &norm.bias)),
                        self.config.layer_norm_eps,
                    );
                }
            },
        );
        states
    }

    /// Multi-head self-attention of the sequence at rows
    /// `offset..offset + len` of `scratch.qkv` over its first `keys` rows
    /// as keys and values, written to the same rows of `scratch.context`.
    fn attention(&self, scratch: &mut Scratch, offset: usize, len: usize, keys: usize) {
        let h = self.config.hidden_size;
        let shape = AttentionShape {
            hidden: h,
            num_heads: self.config.num_heads,
            keys,
            window: None,
        };
        attend(
            &scratch.qkv[offset * 3 * h..][..len * 3 * h],
            &mut scratch.context[offset * h..][..len * h],
            &mut scratch.scores,
            shape,
        );
    }

    /// `states = LayerNorm(states + residual)`, row by row.
    fn add_and_norm(&self, states: &mut [f32], residual: &[f32], norm: &Norm) {
        let h = self.config.hidden_size;
        dispatch(
            #[inline(always)]
            || {
                for (row, add) in states.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
                    for (a, b) in row.iter_mut().zip(add) {
                        *a += b;
                    }
                    layer_norm_with_eps(
                        row,
                        Some((&norm.gain, &norm.bias)),
                        self.config.layer_norm_eps,
                    );
                }
            },
        );
    }

    fn activate(&self, values: &mut [f32]) {
        let act = self.config.hidden_act;
        dispatch(
            #[inline(always)]
            || activate(act, values),
        )
    }
}

/// `values = act(values)`, one loop per activation so each vectorises
/// (a `match` inside one loop kept GELU scalar: 13% of an encoding).
#[inline(always)]
pub(crate) fn activate(act: HiddenAct, values: &mut [f32]) {
    match act {
        HiddenAct::Gelu => values.iter_mut().for_each(|v| *v = gelu(*v)),
        HiddenAct::GeluTanh => values.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
        HiddenAct::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// The shape of one sequence's attention: `hidden` wide rows of
/// `num_heads` heads, the first `keys` rows attended to, and with a
/// `window` only those at most that many positions away.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub(crate) hidden: usize,
    pub(crate) num_heads: usize,
    pub(crate) keys: usize,
    pub(crate) window: Option<usize>,
}

/// Multi-head attention of one sequence: `qkv` its `[len, 3 hidden]` rows
/// (queries, keys, values, heads contiguous in each), written to
/// `context`, its `[len, hidden]` rows. A query that sees no key (only
/// possible with a window) gets a zero context. `scores` is scratch.
pub(crate) fn attend(
    qkv: &[f32],
    context: &mut [f32],
    scores: &mut Vec<f32>,
    shape: AttentionShape,
) {
    let AttentionShape {
        hidden: h,
        num_heads,
        keys,
        window,
    } = shape;
    let len = context.len() / h;
    let head_dim = h / num_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    scores.resize(len * keys, 0.0);
    let qkv = MatRef::from_row_major_slice(qkv, len, 3 * h);
    let mut context = MatMut::from_row_major_slice_mut(context, len, h);
    for head in 0..num_heads {
        let start = head * head_dim;
        let query = qkv.subcols(start, head_dim);
        let key = qkv.subrows(0, keys).subcols(h + start, head_dim);
        let value = qkv.subrows(0, keys).subcols(2 * h + start, head_dim);
        matmul(
            MatMut::from_row_major_slice_mut(scores, len, keys),
            Accum::Replace,
            query,
            key.transpose(),
            scale,
            Par::Seq,
        );
        dispatch(
            #[inline(always)]
            || {
                for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
                    let Some(window) = window else {
                        softmax(row);
                        continue;
                    };
                    for (j, score) in row.iter_mut().enumerate() {
                        if i.abs_diff(j) > window {
                            *score = f32::NEG_INFINITY;
                        }
                    }
                    if row.iter().all(|s| *s == f32::NEG_INFINITY) {
                        row.fill(0.0);
                    } else {
                        softmax(row);
                    }
                }
            },
        );
        matmul(
            context.as_mut().subcols_mut(start, head_dim),
            Accum::Replace,
            MatRef::from_row_major_slice(scores, len, keys),
            value,
            1.0,
            Par::Seq,
        );
    }
}

/// `out[rows, out_dim] = x W^T + b`.
pub(crate) fn linear(out: &mut [f32], x: &[f32], layer: &Linear, rows: usize) {
    matmul_a_bt(out, x, &layer.weight, rows, layer.in_dim, layer.out_dim);
    dispatch(
        #[inline(always)]
        || {
            for row in out.chunks_exact_mut(layer.out_dim) {
                for (v, b) in row.iter_mut().zip(&layer.bias) {
                    *v += b;
                }
            }
        },
    );
}

/// The tanh approximation of GELU (`gelu_new`).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_gelu_is_close_to_exact_gelu() {
        for i in -40..=40 {
            let x = i as f32 / 10.0;
            assert!((gelu_tanh(x) - gelu(x)).abs() < 1e-3, "{x}");
        }
    }
}
