//! Every knob of an index build, serialisable, with the spec's defaults.

use lemur_mlp::Activation;

use crate::first_stage::FirstStageConfig;
use crate::storage::StorageConfig;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How to build an index. `Default` gives the original LEMUR's settings;
/// every field can be set from a config file (serde, unknown fields
/// rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildConfig {
    /// Training epochs. `0` skips training and uses the random-feature map.
    pub epochs: usize,
    /// Widths of the hidden blocks before the last one (empty: a single
    /// block `d -> final_hidden_dim`).
    pub hidden_dims: Vec<usize>,
    /// The feature width `h`.
    pub final_hidden_dim: usize,
    /// Activation of the learned blocks.
    #[serde(
        serialize_with = "activation_to_name",
        deserialize_with = "activation_from_name"
    )]
    pub activation: Activation,
    /// Documents sampled as training outputs.
    pub train_docs: usize,
    /// Learn tokens sampled as training inputs.
    pub learn_rows: usize,
    /// Extra learn tokens held out to pick the best epoch (0: pick by the
    /// mean training loss).
    pub validation_rows: usize,
    /// Learn tokens the least-squares fit of `W` uses.
    pub fit_sample: usize,
    /// Rows per mini-batch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Adam `beta1`.
    pub beta1: f64,
    /// Adam `beta2`.
    pub beta2: f64,
    /// Adam `eps`.
    pub eps: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Train against the targets projected onto their `target_rank`
    /// dominant output directions (`lemur_mlp::sketch`) instead of all
    /// `train_docs` outputs: exact for an output layer restricted to that
    /// span, and `train_docs / target_rank` times less work in the output
    /// layer. `0` (or at least `train_docs`) trains on the full targets, as
    /// the original does.
    pub target_rank: usize,
    /// Most bytes the training-target matrix may take; `learn_rows` is
    /// reduced to fit (the matrix is built once, in place).
    pub target_budget_bytes: u64,
    /// Seed of every random choice: the same seed and thread count give a
    /// bit-identical index.
    pub seed: u64,
    /// When the index gets a graph first stage instead of the exact scan
    /// of `W`, and its shape.
    pub first_stage: FirstStageConfig,
    /// When the index keeps compressed forms of `W` and its tokens
    /// resident instead of the f32 ones, and which.
    pub storage: StorageConfig,
    /// Documents a streamed build ([`crate::IndexBuilder::build_into`])
    /// reads, fits and writes at a time: its memory beyond the index it
    /// keeps is about this many documents' f32 tokens and rows of `W`.
    pub block_docs: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            epochs: 100,
            hidden_dims: Vec::new(),
            final_hidden_dim: 2048,
            activation: Activation::Gelu,
            train_docs: 8192,
            learn_rows: 100_000,
            validation_rows: 0,
            fit_sample: 16_384,
            batch_size: 512,
            learning_rate: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: 0.5,
            target_rank: 512,
            target_budget_bytes: 4 << 30,
            seed: 0,
            first_stage: FirstStageConfig::default(),
            storage: StorageConfig::default(),
            block_docs: 32_768,
        }
    }
}

fn activation_to_name<S: Serializer>(
    activation: &Activation,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(activation.name())
}

fn activation_from_name<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Activation, D::Error> {
    let name = String::deserialize(deserializer)?;
    Activation::from_name(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown activation {name:?} (gelu, relu, silu, mish)"
        ))
    })
}
