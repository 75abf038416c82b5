//! The architecture numbers of a BERT-family encoder, read from the
//! Hugging Face `config.json` and validated before any weight is loaded.

use std::path::Path;

use serde::Deserialize;

use crate::TextError;

/// Shape and numerics of a BERT-family encoder. Every number comes from the
/// model's `config.json`; nothing is specific to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Token embedding rows.
    pub vocab_size: usize,
    /// Width of every token state.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_layers: usize,
    /// Attention heads per layer (`hidden_size` is a multiple of it).
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position embedding table: the longest window the model
    /// can see.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// The feed-forward activation.
    pub hidden_act: HiddenAct,
    /// BERT, or ModernBERT with its attention and position settings.
    pub architecture: Architecture,
}

/// The encoder families lemur-text runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// BERT: learned absolute positions and token types, LayerNorm after
    /// each residual add, biases everywhere.
    Bert,
    /// ModernBERT: rotary positions, LayerNorm before each block, a GeGLU
    /// feed-forward, and attention that alternates between global and a
    /// sliding window (`type_vocab_size` is 0: no token types).
    ModernBert(ModernBertSettings),
}

/// What a ModernBERT `config.json` adds to the shape numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertSettings {
    /// Per layer: whether it attends globally (else within `window`).
    pub global_layers: Vec<bool>,
    /// A sliding layer's token attends to the keys at most this many
    /// positions away (`local_attention / 2`).
    pub window: usize,
    /// RoPE base of the global layers.
    pub global_rope_theta: f32,
    /// RoPE base of the sliding layers.
    pub local_rope_theta: f32,
    /// Whether the LayerNorms have a bias.
    pub norm_bias: bool,
    /// Whether the attention's Linears have biases.
    pub attention_bias: bool,
    /// Whether the feed-forward's Linears have biases.
    pub mlp_bias: bool,
}

/// Feed-forward activations BERT-family configs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// Exact GELU with `erf` (`"gelu"`).
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

/// A ModernBERT `config.json` as transformers 5 writes it (or 4.x, with
/// the legacy `global_attn_every_n_layers` and `*_rope_theta` keys).
#[derive(Deserialize)]
struct RawModernBert {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_modern_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_modern_eps")]
    norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_activation: String,
    #[serde(default)]
    norm_bias: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_local_attention")]
    local_attention: usize,
    #[serde(default = "default_global_every")]
    global_attn_every_n_layers: usize,
    layer_types: Option<Vec<String>>,
    rope_parameters: Option<std::collections::HashMap<String, RawRope>>,
    global_rope_theta: Option<f64>,
    local_rope_theta: Option<f64>,
    head_dim: Option<usize>,
    rope_scaling: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawRope {
    rope_theta: Option<f64>,
    #[serde(default = "default_rope_type")]
    rope_type: String,
}

fn default_modern_positions() -> usize {
    8192
}
fn default_modern_eps() -> f64 {
    1e-5
}
fn default_local_attention() -> usize {
    128
}
fn default_global_every() -> usize {
    3
}
fn default_rope_type() -> String {
    "default".into()
}

/// `hidden_act` / `hidden_activation` as an activation.
fn activation(name: &str) -> Result<HiddenAct, String> {
    match name {
        "gelu" => Ok(HiddenAct::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(HiddenAct::GeluTanh),
        "relu" => Ok(HiddenAct::Relu),
        other => Err(format!("hidden_act {other:?} is not supported")),
    }
}

/// The checks every architecture's numbers pass.
fn check_shape(
    positive: &[(&str, usize)],
    hidden_size: usize,
    num_heads: usize,
    max_positions: usize,
    eps: f64,
) -> Result<f32, String> {
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{name} is 0"));
    }
    // Room for [CLS], one token and [SEP].
    if max_positions < 3 {
        return Err("max_position_embeddings is below 3".into());
    }
    if !hidden_size.is_multiple_of(num_heads) {
        return Err(format!(
            "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
        ));
    }
    let eps32 = eps as f32;
    if !(eps32.is_finite() && eps32 > 0.0) {
        return Err(format!("layer_norm_eps {eps} is not positive"));
    }
    Ok(eps32)
}

impl BertConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<BertConfig, TextError> {
        let text = std::fs::read_to_string(path).map_err(|e| TextError::io(path, e))?;
        Self::from_json(&text).map_err(|message| TextError::config(path, message))
    }

    /// Parses and validates the JSON text of a `config.json`; the error is
    /// a sentence saying what is wrong.
    pub fn from_json(text: &str) -> Result<BertConfig, String> {
        #[derive(Deserialize)]
        struct Kind {
            model_type: Option<String>,
        }
        let kind: Kind = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if kind.model_type.as_deref() == Some("modernbert") {
            return Self::modern_bert(text);
        }
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(kind) = &raw.model_type {
            // RoBERTa-style models offset their positions and DistilBERT
            // names its tensors differently, so only plain BERT and
            // ModernBERT are accepted.
            if kind != "bert" {
                return Err(format!("model_type {kind:?} is not a BERT-family encoder"));
            }
        }
        if raw.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                raw.position_embedding_type
            ));
        }
        let hidden_act = activation(&raw.hidden_act)?;
        let positive = [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("type_vocab_size", raw.type_vocab_size),
        ];
        let eps = check_shape(
            &positive,
            raw.hidden_size,
            raw.num_attention_heads,
            raw.max_position_embeddings,
            raw.layer_norm_eps,
        )?;
        Ok(BertConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: eps,
            hidden_act,
            architecture: Architecture::Bert,
        })
    }

    /// A ModernBERT config: its layer types (an explicit `layer_types`,
    /// else global every `global_attn_every_n_layers` layers from layer
    /// 0), window and RoPE bases (`rope_parameters`, else the legacy
    /// keys, else 160,000 global and 10,000 sliding), as transformers 5
    /// reads them.
    fn modern_bert(text: &str) -> Result<BertConfig, String> {
        let raw: RawModernBert = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let hidden_act = activation(&raw.hidden_activation)?;
        let positive = [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("global_attn_every_n_layers", raw.global_attn_every_n_layers),
        ];
        let eps = check_shape(
            &positive,
            raw.hidden_size,
            raw.num_attention_heads,
            raw.max_position_embeddings,
            raw.norm_eps,
        )?;
        let head_dim = raw.hidden_size / raw.num_attention_heads;
        if raw.head_dim.is_some_and(|d| d != head_dim) {
            return Err(format!(
                "head_dim {:?} differs from hidden_size / num_attention_heads = {head_dim}",
                raw.head_dim
            ));
        }
        // RoPE rotates pairs of a head's dimensions.
        if !head_dim.is_multiple_of(2) {
            return Err(format!("the head width {head_dim} is odd"));
        }
        if raw.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is not supported (only default RoPE)".into());
        }
        let global_layers: Vec<bool> = match &raw.layer_types {
            Some(types) => types
                .iter()
                .map(|kind| match kind.as_str() {
                    "full_attention" => Ok(true),
                    "sliding_attention" => Ok(false),
                    other => Err(format!("layer type {other:?} is not supported")),
                })
                .collect::<Result<_, _>>()?,
            None => (0..raw.num_hidden_layers)
                .map(|i| i % raw.global_attn_every_n_layers == 0)
                .collect(),
        };
        if global_layers.len() != raw.num_hidden_layers {
            return Err(format!(
                "layer_types has {} entries for {} layers",
                global_layers.len(),
                raw.num_hidden_layers
            ));
        }
        let theta = |kind: &str, legacy: Option<f64>, default: f64| -> Result<f32, String> {
            let rope = raw.rope_parameters.as_ref().and_then(|p| p.get(kind));
            if let Some(rope) = rope
                && rope.rope_type != "default"
            {
                return Err(format!(
                    "rope_type {:?} is not supported (only \"default\")",
                    rope.rope_type
                ));
            }
            let value = rope
                .and_then(|r| r.rope_theta)
                .or(legacy)
                .unwrap_or(default) as f32;
            if !(value.is_finite() && value > 1.0) {
                return Err(format!("the {kind} rope_theta {value} is not above 1"));
            }
            Ok(value)
        };
        let settings = ModernBertSettings {
            global_rope_theta: theta("full_attention", raw.global_rope_theta, 160_000.0)?,
            local_rope_theta: theta("sliding_attention", raw.local_rope_theta, 10_000.0)?,
            global_layers,
            window: raw.local_attention / 2,
            norm_bias: raw.norm_bias,
            attention_bias: raw.attention_bias,
            mlp_bias: raw.mlp_bias,
        };
        Ok(BertConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: 0,
            layer_norm_eps: eps,
            hidden_act,
            architecture: Architecture::ModernBert(settings),
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// What `sentence_bert_config.json` says (all defaults when the file is
/// absent): the window length and whether texts are lower-cased.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct SentenceConfig {
    /// sentence-transformers' `max_seq_length`.
    pub(crate) max_seq_length: Option<usize>,
    /// Whether texts are lower-cased before tokenizing.
    #[serde(default)]
    pub(crate) do_lower_case: bool,
}

impl SentenceConfig {
    /// Reads `path`, if the file exists.
    pub(crate) fn from_file(path: &Path) -> Result<SentenceConfig, TextError> {
        if !path.exists() {
            return Ok(SentenceConfig::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| TextError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| TextError::config(path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"model_type":"bert","vocab_size":30522,"hidden_size":384,
        "num_hidden_layers":6,"num_attention_heads":12,"intermediate_size":1536,
        "max_position_embeddings":512,"type_vocab_size":2,"layer_norm_eps":1e-12,
        "hidden_act":"gelu"}"#;

    #[test]
    fn reads_minilm_numbers() {
        let config = BertConfig::from_json(MINILM).unwrap();
        assert_eq!(config.hidden_size, 384);
        assert_eq!(config.head_dim(), 32);
        assert_eq!(config.hidden_act, HiddenAct::Gelu);
    }

    #[test]
    fn rejects_inconsistent_configs() {
        let heads = MINILM.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7");
        assert!(
            BertConfig::from_json(&heads)
                .unwrap_err()
                .contains("multiple")
        );
        let act = MINILM.replace("\"gelu\"", "\"swish\"");
        assert!(
            BertConfig::from_json(&act)
                .unwrap_err()
                .contains("hidden_act")
        );
        let zero = MINILM.replace("\"num_hidden_layers\":6", "\"num_hidden_layers\":0");
        assert!(
            BertConfig::from_json(&zero)
                .unwrap_err()
                .contains("num_hidden_layers")
        );
        let kind = MINILM.replace("\"bert\"", "\"gpt2\"");
        assert!(BertConfig::from_json(&kind).is_err());
        assert!(BertConfig::from_json("{").is_err());
    }

    const MODERN: &str = r#"{"model_type":"modernbert","vocab_size":50368,"hidden_size":768,
        "num_hidden_layers":4,"num_attention_heads":12,"intermediate_size":1152,
        "global_attn_every_n_layers":3,"local_attention":128,"global_rope_theta":160000.0,
        "local_rope_theta":10000.0,"norm_eps":1e-05}"#;

    #[test]
    fn reads_modern_bert_layer_types_windows_and_rope_bases() {
        let config = BertConfig::from_json(MODERN).unwrap();
        let Architecture::ModernBert(settings) = &config.architecture else {
            panic!("not ModernBERT: {config:?}");
        };
        assert_eq!(settings.global_layers, [true, false, false, true]);
        assert_eq!(settings.window, 64);
        assert_eq!(
            (settings.global_rope_theta, settings.local_rope_theta),
            (160_000.0, 10_000.0)
        );
        assert!(!settings.norm_bias && !settings.mlp_bias && !settings.attention_bias);
        assert_eq!(
            (config.max_position_embeddings, config.head_dim()),
            (8192, 64)
        );
        // transformers 5's form: explicit layer types and rope_parameters.
        let modern = r#"{"model_type":"modernbert","vocab_size":100,"hidden_size":16,
            "num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":24,
            "layer_types":["sliding_attention","full_attention"],
            "rope_parameters":{"full_attention":{"rope_theta":500.0,"rope_type":"default"},
            "sliding_attention":{"rope_theta":20.0,"rope_type":"default"}}}"#;
        let config = BertConfig::from_json(modern).unwrap();
        let Architecture::ModernBert(settings) = &config.architecture else {
            panic!("not ModernBERT");
        };
        assert_eq!(settings.global_layers, [false, true]);
        assert_eq!(
            (settings.global_rope_theta, settings.local_rope_theta),
            (500.0, 20.0)
        );
        let scaled = modern.replace("\"rope_type\":\"default\"}}", "\"rope_type\":\"yarn\"}}");
        assert!(BertConfig::from_json(&scaled).unwrap_err().contains("yarn"));
        let types = modern.replace("\"sliding_attention\",\"full", "\"chunked\",\"full");
        assert!(
            BertConfig::from_json(&types)
                .unwrap_err()
                .contains("chunked")
        );
        let short = modern.replace("[\"sliding_attention\",", "[");
        assert!(
            BertConfig::from_json(&short)
                .unwrap_err()
                .contains("entries")
        );
    }
}
