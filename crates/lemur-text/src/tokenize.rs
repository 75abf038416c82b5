//! Text to token ids with the model's own `tokenizer.json`, with the
//! special tokens the encoder adds itself.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::TextError;

/// The model's tokenizer, configured to return every token of the input:
/// the padding and truncation settings baked into `tokenizer.json` are
/// removed, because the encoder splits long inputs into windows itself and
/// never computes on padding.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    special: SpecialTokens,
}

/// Ids of the special tokens the encoder places around the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `[CLS]`, first in every window.
    pub cls: u32,
    /// `[SEP]`, last in every window.
    pub sep: u32,
    /// `[MASK]`, used to pad ColBERT-style queries.
    pub mask: u32,
    /// ColBERT's query marker `[unused0]`, if the vocabulary has it.
    pub query_marker: Option<u32>,
    /// ColBERT's document marker `[unused1]`, if the vocabulary has it.
    pub document_marker: Option<u32>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and removes its padding and truncation.
    pub fn from_file(path: &Path) -> Result<TextTokenizer, TextError> {
        let error = |message: String| TextError::Tokenizer {
            path: PathBuf::from(path),
            message,
        };
        if !path.is_file() {
            return Err(TextError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| error(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| error(e.to_string()))?;
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TextError::MissingSpecialToken {
                    token: token.into(),
                })
        };
        let special = SpecialTokens {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
            query_marker: inner.token_to_id("[unused0]"),
            document_marker: inner.token_to_id("[unused1]"),
        };
        Ok(TextTokenizer { inner, special })
    }

    /// The id of `token` (a vocabulary entry or an added token, matched
    /// whole, e.g. PyLate's `"[Q] "` with its space), if the tokenizer has
    /// it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The special token ids.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    /// Size of the vocabulary including added tokens; every id this
    /// tokenizer returns is below it.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token ids of `text` without special tokens, however long the
    /// text is. `index` only labels an error.
    pub fn content_ids(&self, text: &str, index: usize) -> Result<Vec<u32>, TextError> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TextError::Tokenize {
                index,
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// [`TextTokenizer::content_ids`] of every text, in parallel on the
    /// current rayon pool.
    pub fn content_ids_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<u32>>, TextError> {
        texts
            .par_iter()
            .enumerate()
            .map(|(index, text)| self.content_ids(text.as_ref(), index))
            .collect()
    }

    /// The ids the model sees for a text that fits one window:
    /// `[CLS] content [SEP]`, what the tokenizer itself produces with
    /// special tokens and no truncation.
    pub fn ids_with_special_tokens(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let content = self.content_ids(text, 0)?;
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.special.cls);
        ids.extend(content);
        ids.push(self.special.sep);
        Ok(ids)
    }

    /// The number of tokens (special tokens included) the encoder produces
    /// for `text` without markers or query padding.
    pub fn count_tokens(&self, text: &str) -> Result<usize, TextError> {
        Ok(self.content_ids(text, 0)?.len() + 2)
    }
}
