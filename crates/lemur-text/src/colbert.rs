//! ColBERT models: a PyLate model directory (`modules.json`, a Dense chain,
//! `config_sentence_transformers.json`) or a Stanford ColBERT checkpoint
//! (`HF_ColBERT`, `linear.weight`, `artifact.metadata`), and how PyLate
//! turns a query or a document into ids and rows.
//!
//! PyLate's pipeline, which [`crate::TextEncoder::encode_queries`] and
//! [`crate::TextEncoder::encode_documents`] follow exactly:
//! 1. the text is stripped (Python's `str.strip`) and, with
//!    `do_lower_case`, lower-cased;
//! 2. it is tokenized to at most `length - 1` ids counting `[CLS]` and
//!    `[SEP]` (`length` is `query_length` or `document_length`), the end
//!    cut off;
//! 3. a query is padded with `[MASK]` to `length - 1` ids (query
//!    expansion);
//! 4. the prefix id (`[Q] `/`[D] `, or `[unused0]`/`[unused1]` in a
//!    Stanford checkpoint) is inserted right after `[CLS]`;
//! 5. the backbone runs with the `[MASK]` padding masked as attention keys
//!    (unless `attend_to_expansion_tokens`), their rows still computed;
//! 6. a query keeps every row (exactly `query_length`), a document drops
//!    the rows of skiplist tokens (punctuation) but keeps `[CLS]`, the
//!    prefix and `[SEP]`;
//! 7. the Dense chain projects each row, which is then L2-normalised.

use std::path::Path;

use serde::Deserialize;

use crate::dense::Dense;
use crate::{BertConfig, TextError, TextTokenizer};

/// How a ColBERT model encodes: PyLate's settings, from
/// `config_sentence_transformers.json` (PyLate's defaults where a key is
/// absent) or a Stanford checkpoint's `artifact.metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColbertSettings {
    /// The token inserted after `[CLS]` in a query (`""`: none).
    pub query_prefix: String,
    /// The token inserted after `[CLS]` in a document (`""`: none).
    pub document_prefix: String,
    /// Rows of every query, special tokens and prefix included.
    pub query_length: usize,
    /// The most rows a document is cut to before skiplist rows are
    /// dropped, special tokens and prefix included.
    pub document_length: usize,
    /// Whether query tokens attend to the `[MASK]` expansion tokens.
    pub attend_to_expansion_tokens: bool,
    /// Whether queries are padded with `[MASK]` to `query_length`.
    pub do_query_expansion: bool,
    /// Tokens whose rows a document drops (punctuation by default).
    pub skiplist_words: Vec<String>,
    /// Whether texts are lower-cased before tokenizing
    /// (`sentence_bert_config.json`).
    pub do_lower_case: bool,
}

/// A loaded ColBERT head: its settings, their token ids, and the Dense
/// chain after the backbone.
#[derive(Debug, Clone)]
pub(crate) struct Colbert {
    pub(crate) settings: ColbertSettings,
    pub(crate) query_prefix_id: Option<u32>,
    pub(crate) document_prefix_id: Option<u32>,
    /// Sorted, deduplicated.
    pub(crate) skiplist: Vec<u32>,
    pub(crate) dense: Vec<Dense>,
}

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawSettings {
    #[serde(default = "query_prefix")]
    query_prefix: String,
    #[serde(default = "document_prefix")]
    document_prefix: String,
    #[serde(default = "query_length")]
    query_length: i64,
    #[serde(default = "document_length")]
    document_length: i64,
    #[serde(default)]
    attend_to_expansion_tokens: bool,
    #[serde(default = "yes")]
    do_query_expansion: bool,
    #[serde(default = "punctuation")]
    skiplist_words: Vec<String>,
    similarity_fn_name: Option<String>,
}

fn query_prefix() -> String {
    "[Q] ".into()
}
fn document_prefix() -> String {
    "[D] ".into()
}
fn query_length() -> i64 {
    32
}
fn document_length() -> i64 {
    180
}
fn yes() -> bool {
    true
}
/// Python's `string.punctuation`, one word per character.
fn punctuation() -> Vec<String> {
    r##"!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"##
        .chars()
        .map(String::from)
        .collect()
}

/// What a Stanford checkpoint's `artifact.metadata` says (top level only,
/// as PyLate reads it).
#[derive(Deserialize)]
struct StanfordMetadata {
    #[serde(default = "unused0")]
    query_token_id: String,
    #[serde(default = "unused1")]
    doc_token_id: String,
    #[serde(default = "query_length")]
    query_maxlen: i64,
    #[serde(default = "document_length")]
    doc_maxlen: i64,
    #[serde(default)]
    attend_to_mask_tokens: bool,
}

fn unused0() -> String {
    "[unused0]".into()
}
fn unused1() -> String {
    "[unused1]".into()
}

/// Whether `config.json` declares a Stanford ColBERT checkpoint.
pub(crate) fn is_stanford(config_json: &str) -> bool {
    #[derive(Deserialize)]
    struct Architectures {
        #[serde(default)]
        architectures: Vec<String>,
    }
    serde_json::from_str::<Architectures>(config_json)
        .is_ok_and(|config| config.architectures.iter().any(|a| a == "HF_ColBERT"))
}

impl Colbert {
    /// The ColBERT head of the model directory `dir`, if it is a PyLate
    /// model (a `pylate.` module in `modules.json`, or MaxSim as its
    /// similarity) or a Stanford checkpoint (`stanford`); `None` for a
    /// plain sentence-transformers model. `backbone` is the model's
    /// config; `do_lower_case` is `sentence_bert_config.json`'s.
    pub(crate) fn load(
        dir: &Path,
        tokenizer: &TextTokenizer,
        backbone: &BertConfig,
        do_lower_case: bool,
        stanford: bool,
    ) -> Result<Option<Colbert>, TextError> {
        let (hidden, max_positions) = (backbone.hidden_size, backbone.max_position_embeddings);
        if stanford {
            return Self::load_stanford(dir, tokenizer, hidden, max_positions, do_lower_case)
                .map(Some);
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&modules_path).map_err(|e| TextError::io(&modules_path, e))?;
        let modules: Vec<Module> = serde_json::from_str(&text)
            .map_err(|e| TextError::config(&modules_path, e.to_string()))?;
        let settings_path = dir.join("config_sentence_transformers.json");
        let raw: Option<RawSettings> = match settings_path.is_file() {
            false => None,
            true => {
                let text = std::fs::read_to_string(&settings_path)
                    .map_err(|e| TextError::io(&settings_path, e))?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| TextError::config(&settings_path, e.to_string()))?,
                )
            }
        };
        let pylate = modules.iter().any(|m| m.kind.starts_with("pylate."))
            || raw
                .as_ref()
                .and_then(|raw| raw.similarity_fn_name.as_deref())
                .is_some_and(|name| name.eq_ignore_ascii_case("maxsim"));
        if !pylate {
            return Ok(None);
        }
        let raw = match raw {
            Some(raw) => raw,
            None => serde_json::from_str("{}").expect("every key has a default"),
        };
        // PyLate keeps the Transformer and the Dense modules, in order.
        let mut dense = Vec::new();
        let mut width = hidden;
        for module in &modules {
            let is_dense = module.kind.ends_with(".Dense");
            if !is_dense {
                continue;
            }
            if module.path.is_empty() || module.path.contains("..") {
                return Err(TextError::config(
                    &modules_path,
                    format!("Dense module path {:?} is not a subdirectory", module.path),
                ));
            }
            let layer = Dense::from_dir(&dir.join(&module.path), width)?;
            width = layer.out_dim;
            dense.push(layer);
        }
        let settings = ColbertSettings {
            query_prefix: raw.query_prefix,
            document_prefix: raw.document_prefix,
            query_length: checked_length(&settings_path, "query_length", raw.query_length)?,
            document_length: checked_length(
                &settings_path,
                "document_length",
                raw.document_length,
            )?,
            // PyLate turns attention to expansion tokens off without them.
            attend_to_expansion_tokens: raw.attend_to_expansion_tokens && raw.do_query_expansion,
            do_query_expansion: raw.do_query_expansion,
            skiplist_words: raw.skiplist_words,
            do_lower_case,
        };
        Self::with_settings(settings, dense, tokenizer, max_positions, &settings_path).map(Some)
    }

    fn load_stanford(
        dir: &Path,
        tokenizer: &TextTokenizer,
        hidden: usize,
        max_positions: usize,
        do_lower_case: bool,
    ) -> Result<Colbert, TextError> {
        let metadata_path = dir.join("artifact.metadata");
        let metadata: StanfordMetadata = match metadata_path.is_file() {
            false => serde_json::from_str("{}").expect("every key has a default"),
            true => {
                let text = std::fs::read_to_string(&metadata_path)
                    .map_err(|e| TextError::io(&metadata_path, e))?;
                serde_json::from_str(&text)
                    .map_err(|e| TextError::config(&metadata_path, e.to_string()))?
            }
        };
        let projection = Dense::from_stanford(&dir.join("model.safetensors"), hidden)?;
        let settings = ColbertSettings {
            query_prefix: metadata.query_token_id,
            document_prefix: metadata.doc_token_id,
            query_length: checked_length(&metadata_path, "query_maxlen", metadata.query_maxlen)?,
            document_length: checked_length(&metadata_path, "doc_maxlen", metadata.doc_maxlen)?,
            attend_to_expansion_tokens: metadata.attend_to_mask_tokens,
            do_query_expansion: true,
            skiplist_words: punctuation(),
            do_lower_case,
        };
        Self::with_settings(
            settings,
            vec![projection],
            tokenizer,
            max_positions,
            &metadata_path,
        )
    }

    /// Resolves the settings' tokens to ids and checks the lengths.
    fn with_settings(
        settings: ColbertSettings,
        dense: Vec<Dense>,
        tokenizer: &TextTokenizer,
        max_positions: usize,
        settings_path: &Path,
    ) -> Result<Colbert, TextError> {
        let prefix_id = |prefix: &str, field: &str| -> Result<Option<u32>, TextError> {
            if prefix.is_empty() {
                return Ok(None);
            }
            tokenizer.token_to_id(prefix).map(Some).ok_or_else(|| {
                TextError::config(
                    settings_path,
                    format!("{field} {prefix:?} is not a token of the tokenizer"),
                )
            })
        };
        let query_prefix_id = prefix_id(&settings.query_prefix, "query_prefix")?;
        let document_prefix_id = prefix_id(&settings.document_prefix, "document_prefix")?;
        for (field, length, prefix) in [
            ("query_length", settings.query_length, query_prefix_id),
            (
                "document_length",
                settings.document_length,
                document_prefix_id,
            ),
        ] {
            // [CLS], [SEP], the prefix and at least one token of text.
            let minimum = 3 + usize::from(prefix.is_some());
            if length < minimum || length > max_positions {
                return Err(TextError::config(
                    settings_path,
                    format!("{field} {length} is outside {minimum}..={max_positions}"),
                ));
            }
        }
        // A word the vocabulary lacks stands for [UNK], as in PyLate.
        let unknown = tokenizer.token_to_id("[UNK]");
        let mut skiplist: Vec<u32> = settings
            .skiplist_words
            .iter()
            .filter_map(|word| tokenizer.token_to_id(word).or(unknown))
            .collect();
        skiplist.sort_unstable();
        skiplist.dedup();
        Ok(Colbert {
            settings,
            query_prefix_id,
            document_prefix_id,
            skiplist,
            dense,
        })
    }

    /// Width of the token vectors (the last Dense module's output).
    pub(crate) fn output_dim(&self, hidden: usize) -> usize {
        self.dense.last().map_or(hidden, |dense| dense.out_dim)
    }

    /// The ids the backbone sees for one text's content ids, and how many
    /// of them (from the front) are attended to as keys.
    pub(crate) fn frame(
        &self,
        content: &[u32],
        is_query: bool,
        special: crate::SpecialTokens,
    ) -> (Vec<u32>, usize) {
        let settings = &self.settings;
        let (length, prefix) = match is_query {
            true => (settings.query_length, self.query_prefix_id),
            false => (settings.document_length, self.document_prefix_id),
        };
        let budget = length - usize::from(prefix.is_some());
        let kept = content.len().min(budget - 2);
        let mut ids = Vec::with_capacity(length);
        ids.push(special.cls);
        ids.extend_from_slice(&content[..kept]);
        ids.push(special.sep);
        let mut keys = ids.len();
        let expand = is_query && settings.do_query_expansion;
        if expand {
            ids.resize(budget, special.mask);
        }
        if let Some(prefix) = prefix {
            ids.insert(1, prefix);
            keys += 1;
        }
        if expand && settings.attend_to_expansion_tokens {
            keys = ids.len();
        }
        (ids, keys)
    }

    /// Whether a row with token `id` is kept.
    pub(crate) fn keeps(&self, id: u32, is_query: bool) -> bool {
        is_query || self.skiplist.binary_search(&id).is_err()
    }

    /// A text as PyLate hands it to the tokenizer: stripped as Python's
    /// `str.strip` strips, lower-cased with `do_lower_case`.
    pub(crate) fn prepare(&self, text: &str) -> String {
        let stripped =
            text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c));
        match self.settings.do_lower_case {
            true => stripped.to_lowercase(),
            false => stripped.to_owned(),
        }
    }
}

/// A length setting as a count (negative values are refused).
fn checked_length(path: &Path, field: &str, value: i64) -> Result<usize, TextError> {
    usize::try_from(value)
        .map_err(|_| TextError::config(path, format!("{field} {value} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpecialTokens;

    fn head(query_length: usize, document_length: usize, attend: bool) -> Colbert {
        Colbert {
            settings: ColbertSettings {
                query_prefix: "[Q] ".into(),
                document_prefix: "[D] ".into(),
                query_length,
                document_length,
                attend_to_expansion_tokens: attend,
                do_query_expansion: true,
                skiplist_words: punctuation(),
                do_lower_case: false,
            },
            query_prefix_id: Some(7),
            document_prefix_id: Some(8),
            skiplist: vec![50, 51],
            dense: Vec::new(),
        }
    }

    const SPECIAL: SpecialTokens = SpecialTokens {
        cls: 1,
        sep: 2,
        mask: 3,
        query_marker: None,
        document_marker: None,
    };

    #[test]
    fn queries_are_cut_padded_and_prefixed_to_exactly_query_length() {
        let colbert = head(8, 6, false);
        // Short: [CLS] [Q] a b [SEP] then [MASK]s; keys stop at [SEP].
        let (ids, keys) = colbert.frame(&[20, 21], true, SPECIAL);
        assert_eq!(ids, [1, 7, 20, 21, 2, 3, 3, 3]);
        assert_eq!(keys, 5);
        // Long: cut to length - 1 ids with [CLS] and [SEP], then the prefix.
        let (ids, keys) = colbert.frame(&[20, 21, 22, 23, 24, 25, 26], true, SPECIAL);
        assert_eq!(ids, [1, 7, 20, 21, 22, 23, 24, 2]);
        assert_eq!(keys, 8);
        // Attending to the expansion tokens makes every key visible.
        let (_, keys) = head(8, 6, true).frame(&[20], true, SPECIAL);
        assert_eq!(keys, 8);
    }

    #[test]
    fn documents_are_cut_but_not_padded_and_drop_skiplist_rows() {
        let colbert = head(8, 6, false);
        let (ids, keys) = colbert.frame(&[20, 50, 21, 22, 23], false, SPECIAL);
        assert_eq!(ids, [1, 8, 20, 50, 21, 2]);
        assert_eq!(keys, ids.len());
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| colbert.keeps(id, false))
            .collect();
        assert_eq!(kept, [1, 8, 20, 21, 2]);
        assert!(colbert.keeps(50, true));
    }

    #[test]
    fn texts_are_stripped_as_python_strips_them() {
        let colbert = head(8, 6, false);
        assert_eq!(
            colbert.prepare("  \u{1c}\u{3000}text here\n\u{1f} "),
            "text here"
        );
        assert_eq!(colbert.prepare("Case"), "Case");
        let mut lower = head(8, 6, false);
        lower.settings.do_lower_case = true;
        assert_eq!(lower.prepare(" Case "), "case");
    }
}
