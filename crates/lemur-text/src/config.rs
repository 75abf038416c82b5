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

impl BertConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<BertConfig, TextError> {
        let text = std::fs::read_to_string(path).map_err(|e| TextError::io(path, e))?;
        Self::from_json(&text).map_err(|message| TextError::config(path, message))
    }

    /// Parses and validates the JSON text of a `config.json`; the error is
    /// a sentence saying what is wrong.
    pub fn from_json(text: &str) -> Result<BertConfig, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(kind) = &raw.model_type {
            // RoBERTa-style models offset their positions and DistilBERT
            // names its tensors differently, so only plain BERT is accepted.
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
        let hidden_act = match raw.hidden_act.as_str() {
            "gelu" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            other => return Err(format!("hidden_act {other:?} is not supported")),
        };
        let positive = [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("type_vocab_size", raw.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} is 0"));
        }
        // BERT needs room for [CLS], one token and [SEP].
        if raw.max_position_embeddings < 3 {
            return Err("max_position_embeddings is below 3".into());
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            ));
        }
        let eps = raw.layer_norm_eps as f32;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(format!(
                "layer_norm_eps {} is not positive",
                raw.layer_norm_eps
            ));
        }
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
}
