//! [`TextEncoder`]: raw text to sentence embeddings and to per-token
//! multi-vectors.

use std::path::{Path, PathBuf};

use lemur_maxsim::MultiVectors;
use rayon::prelude::*;

use crate::colbert::{self, Colbert};
use crate::config::SentenceConfig;
use crate::model::Backbone;
use crate::windows::{WindowSpan, plan_windows};
use crate::{BertConfig, ColbertSettings, Embeddings, TextError, TextTokenizer};

/// Options of [`TextEncoder::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Keep only the first `output_dim` dimensions (Matryoshka truncation);
    /// `None` keeps all `hidden_size`.
    pub output_dim: Option<usize>,
    /// L2-normalise each embedding (after truncation), as
    /// sentence-transformers' `Normalize` module does.
    pub normalize: bool,
    /// Texts tokenized and held in memory at once.
    pub batch_size: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            output_dim: None,
            normalize: true,
            batch_size: 32,
        }
    }
}

/// ColBERT's marker token, inserted right after `[CLS]` to tell the model
/// whether it reads a query or a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `[unused0]`, ColBERT's `[Q]`.
    Query,
    /// `[unused1]`, ColBERT's `[D]`.
    Document,
}

/// Options of [`TextEncoder::encode_tokens`]. The default is plain BERT
/// token vectors: no marker, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOptions {
    /// ColBERT-style marker after `[CLS]` (off by default: the model here
    /// was not trained with markers).
    pub marker: Option<Marker>,
    /// ColBERT-style query augmentation: pad every text with `[MASK]` to
    /// exactly this many tokens (truncating longer ones) instead of
    /// splitting into windows. Off by default.
    pub query_length: Option<usize>,
    /// Tokens per model window for long texts, special tokens included
    /// (`None`: the model's `max_seq_length`). Shorter windows give each
    /// token vector a more local context, closer to the short sentences
    /// sentence-transformers models are trained on; the cost per token
    /// stays about the same.
    pub window: Option<usize>,
    /// Texts tokenized and held in memory at once.
    pub batch_size: usize,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            marker: None,
            query_length: None,
            window: None,
            batch_size: 32,
        }
    }
}

/// A BERT-family encoder with its tokenizer, loaded from a Hugging Face /
/// sentence-transformers model directory.
///
/// Texts longer than the model's window (`max_seq_length`) are split into
/// overlapping windows: the multi-vector takes each token's vector once,
/// from the window where it is farthest from a cut, and the sentence
/// embedding is the token-count-weighted mean of the windows' normalised
/// embeddings, re-normalised. Work runs on the current rayon pool, one
/// level deep (groups of windows in parallel, each GEMM sequential).
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: TextTokenizer,
    model: Backbone,
    max_seq_len: usize,
    /// The ColBERT head and settings of a PyLate or Stanford model.
    colbert: Option<Colbert>,
    /// The directory the model was loaded from, made absolute.
    model_dir: Option<PathBuf>,
}

/// The encoder's output for one batch of texts: hidden states of every
/// window, with the plan that says which rows belong to which text.
struct Encoded {
    /// Per text, its windows' hidden states `[window_len, hidden]`.
    windows: Vec<Vec<Window>>,
}

struct Window {
    states: Vec<f32>,
    /// Rows of `states` that the multi-vector keeps.
    keep: std::ops::Range<usize>,
}

/// What one encoding pass produces.
struct Plan {
    /// Sentence embeddings of this width, normalised or not.
    embeddings: Option<(usize, bool)>,
    /// Token vectors.
    tokens: bool,
    marker: Option<u32>,
    query_length: Option<usize>,
    window: usize,
    batch_size: usize,
}

/// Target tokens per parallel group: enough rows for efficient GEMMs, few
/// enough groups that both threads get work on a batch of short sentences.
const MIN_GROUP_TOKENS: usize = 128;
const MAX_GROUP_TOKENS: usize = 2048;

impl TextEncoder {
    /// Loads `config.json`, `tokenizer.json`, `model.safetensors` and, if
    /// present, `sentence_bert_config.json` (its `max_seq_length` sets the
    /// window) from `dir`.
    ///
    /// A ColBERT model directory loads with its head: a PyLate model
    /// (`modules.json` with its Dense modules and
    /// `config_sentence_transformers.json`) or a Stanford checkpoint
    /// (`config.json` naming `HF_ColBERT`, `linear.weight` beside the
    /// backbone, `artifact.metadata`). [`TextEncoder::encode_queries`] and
    /// [`TextEncoder::encode_documents`] then encode as PyLate does.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<TextEncoder, TextError> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| TextError::io(&config_path, e))?;
        let config = BertConfig::from_json(&config_text)
            .map_err(|message| TextError::config(&config_path, message))?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let sentence = SentenceConfig::from_file(&dir.join("sentence_bert_config.json"))?;
        let colbert = Colbert::load(
            dir,
            &tokenizer,
            &config,
            sentence.do_lower_case,
            colbert::is_stanford(&config_text),
        )?;
        let model = Backbone::from_file(&dir.join("model.safetensors"), config)?;
        let mut encoder = Self::from_parts(tokenizer, model, sentence.max_seq_length)
            .map_err(|message| TextError::config(&config_path, message))?;
        encoder.colbert = colbert;
        encoder.model_dir = Some(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
        Ok(encoder)
    }

    /// Loads an encoder from a config, a tokenizer and the bytes of a
    /// safetensors file (for models not laid out as a directory).
    pub fn from_bytes(
        config: BertConfig,
        tokenizer: TextTokenizer,
        safetensors: &[u8],
        max_seq_len: Option<usize>,
    ) -> Result<TextEncoder, TextError> {
        let model = Backbone::from_bytes(safetensors, config)?;
        Self::from_parts(tokenizer, model, max_seq_len).map_err(TextError::InvalidOption)
    }

    fn from_parts(
        tokenizer: TextTokenizer,
        model: Backbone,
        max_seq_len: Option<usize>,
    ) -> Result<TextEncoder, String> {
        let config = model.config();
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                config.vocab_size
            ));
        }
        let max_seq_len = max_seq_len
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        // Room for [CLS], a marker, one token and [SEP].
        if max_seq_len < 4 {
            return Err(format!("max_seq_length {max_seq_len} is below 4"));
        }
        Ok(TextEncoder {
            tokenizer,
            model,
            max_seq_len,
            colbert: None,
            model_dir: None,
        })
    }

    /// The directory [`TextEncoder::from_dir`] loaded the model from (as
    /// an absolute path); `None` for [`TextEncoder::from_bytes`].
    pub fn model_dir(&self) -> Option<&Path> {
        self.model_dir.as_deref()
    }

    /// The ColBERT settings, when the model is a ColBERT model.
    pub fn colbert(&self) -> Option<&ColbertSettings> {
        self.colbert.as_ref().map(|colbert| &colbert.settings)
    }

    /// Width of the token vectors [`TextEncoder::encode_queries`] and
    /// [`TextEncoder::encode_documents`] return: a ColBERT model's
    /// projection width, else `hidden_size`.
    pub fn token_dim(&self) -> usize {
        match &self.colbert {
            Some(colbert) => colbert.output_dim(self.hidden_size()),
            None => self.hidden_size(),
        }
    }

    /// Query token vectors, one L2-normalised row per kept token. For a
    /// ColBERT model exactly as PyLate's `encode(texts, is_query=True)`:
    /// `query_length` rows per query (`[CLS]`, the prefix, the text cut to
    /// fit, `[SEP]`, `[MASK]` expansion tokens), projected by the Dense
    /// chain. For any other model, [`TextEncoder::encode_tokens`] with the
    /// default options.
    pub fn encode_queries<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<MultiVectors, TextError> {
        match &self.colbert {
            Some(colbert) => self.encode_colbert(colbert, texts, true),
            None => self.encode_tokens(texts, &TokenOptions::default()),
        }
    }

    /// Document token vectors, one L2-normalised row per kept token. For a
    /// ColBERT model exactly as PyLate's `encode(texts, is_query=False)`:
    /// the text cut to `document_length` rows (special tokens and prefix
    /// included), then the rows of skiplist tokens (punctuation) dropped,
    /// projected by the Dense chain; a longer text loses its end. For any
    /// other model, [`TextEncoder::encode_tokens`] with the default
    /// options (every token kept, through overlapping windows).
    pub fn encode_documents<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<MultiVectors, TextError> {
        match &self.colbert {
            Some(colbert) => self.encode_colbert(colbert, texts, false),
            None => self.encode_tokens(texts, &TokenOptions::default()),
        }
    }

    /// The ids a ColBERT model's backbone sees for each text, as PyLate
    /// builds them (its `input_ids` without batch padding): `[CLS]`, the
    /// prefix, the text cut to fit, `[SEP]`, and a query's `[MASK]`
    /// expansion tokens. An error for a model that is not a ColBERT model.
    pub fn colbert_ids<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        is_query: bool,
    ) -> Result<Vec<Vec<u32>>, TextError> {
        let colbert = self
            .colbert
            .as_ref()
            .ok_or_else(|| TextError::InvalidOption("the model is not a ColBERT model".into()))?;
        let prepared: Vec<String> = texts.iter().map(|t| colbert.prepare(t.as_ref())).collect();
        let special = self.tokenizer.special_tokens();
        Ok(self
            .tokenizer
            .content_ids_batch(&prepared)?
            .iter()
            .map(|content| colbert.frame(content, is_query, special).0)
            .collect())
    }

    fn encode_colbert<S: AsRef<str> + Sync>(
        &self,
        colbert: &Colbert,
        texts: &[S],
        is_query: bool,
    ) -> Result<MultiVectors, TextError> {
        let (h, out_dim) = (self.hidden_size(), self.token_dim());
        let special = self.tokenizer.special_tokens();
        let mut tokens = Vec::new();
        let mut counts = Vec::with_capacity(texts.len());
        for (batch, chunk) in texts.chunks(COLBERT_BATCH).enumerate() {
            let prepared: Vec<String> = chunk
                .iter()
                .map(|text| colbert.prepare(text.as_ref()))
                .collect();
            let contents = self
                .tokenizer
                .content_ids_batch(&prepared)
                .map_err(|e| match e {
                    TextError::Tokenize { index, message } => TextError::Tokenize {
                        index: batch * COLBERT_BATCH + index,
                        message,
                    },
                    other => other,
                })?;
            let framed: Vec<(Vec<u32>, usize)> = contents
                .iter()
                .map(|content| colbert.frame(content, is_query, special))
                .collect();
            let views: Vec<(&[u32], usize)> = framed
                .iter()
                .map(|(ids, keys)| (ids.as_slice(), *keys))
                .collect();
            let states = self.forward_grouped(&views);
            let mut rows = Vec::new();
            let first = counts.len();
            for ((ids, _), state) in framed.iter().zip(&states) {
                let before = rows.len();
                for (id, row) in ids.iter().zip(state.chunks_exact(h)) {
                    if colbert.keeps(*id, is_query) {
                        rows.extend_from_slice(row);
                    }
                }
                counts.push((rows.len() - before) / h);
            }
            let n_rows: usize = counts[first..].iter().sum();
            for dense in &colbert.dense {
                rows = dense.forward(&rows, n_rows);
            }
            for row in rows.chunks_exact_mut(out_dim) {
                normalize_clamped(row);
            }
            tokens.extend(rows);
        }
        MultiVectors::new(tokens, out_dim, &counts)
            .map_err(|e| TextError::InvalidOption(format!("token vectors: {e}")))
    }

    /// The model's architecture numbers.
    pub fn config(&self) -> &BertConfig {
        self.model.config()
    }

    /// Width of the embeddings and token vectors.
    pub fn hidden_size(&self) -> usize {
        self.model.config().hidden_size
    }

    /// Tokens per model window, special tokens included.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Sentence embeddings `[texts.len(), output_dim]`: mean pooling over
    /// every token (special tokens included, as sentence-transformers does
    /// without padding), then L2 normalisation; `output_dim` keeps the
    /// prefix and re-normalises (Matryoshka). An empty text is
    /// `[CLS] [SEP]` and has a well-defined embedding.
    pub fn encode<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Embeddings, TextError> {
        let dim = self.check_output_dim(options.output_dim)?;
        let plan = Plan {
            embeddings: Some((dim, options.normalize)),
            tokens: false,
            marker: None,
            query_length: None,
            window: self.max_seq_len,
            batch_size: options.batch_size,
        };
        Ok(self.encode_planned(texts, &plan)?.0)
    }

    /// Per-token vectors of every text, L2-normalised, as a ragged
    /// multi-vector ready for a LEMUR index: `[CLS]`, every content token
    /// once (however long the text), `[SEP]`, plus the marker and `[MASK]`
    /// padding when [`TokenOptions`] asks for them.
    pub fn encode_tokens<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &TokenOptions,
    ) -> Result<MultiVectors, TextError> {
        let plan = self.token_plan(options, None)?;
        Ok(self.encode_planned(texts, &plan)?.1)
    }

    /// Both outputs from one pass of the model: the sentence embeddings of
    /// [`TextEncoder::encode`] (with `embedding_options`' dimension and
    /// normalisation) and the token vectors of
    /// [`TextEncoder::encode_tokens`] (batch size from `token_options`).
    pub fn encode_with_tokens<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        embedding_options: &EncodeOptions,
        token_options: &TokenOptions,
    ) -> Result<(Embeddings, MultiVectors), TextError> {
        let dim = self.check_output_dim(embedding_options.output_dim)?;
        let plan = self.token_plan(token_options, Some((dim, embedding_options.normalize)))?;
        self.encode_planned(texts, &plan)
    }

    fn token_plan(
        &self,
        options: &TokenOptions,
        embeddings: Option<(usize, bool)>,
    ) -> Result<Plan, TextError> {
        let marker = self.marker_id(options.marker)?;
        if let Some(length) = options.query_length {
            let minimum = 2 + usize::from(marker.is_some());
            if length < minimum || length > self.max_seq_len {
                return Err(TextError::InvalidOption(format!(
                    "query_length {length} is outside {minimum}..={}",
                    self.max_seq_len
                )));
            }
        }
        let window = options.window.unwrap_or(self.max_seq_len);
        let minimum = 3 + usize::from(marker.is_some());
        if window < minimum || window > self.max_seq_len {
            return Err(TextError::InvalidOption(format!(
                "window {window} is outside {minimum}..={}",
                self.max_seq_len
            )));
        }
        Ok(Plan {
            embeddings,
            tokens: true,
            marker,
            query_length: options.query_length,
            window,
            batch_size: options.batch_size,
        })
    }

    /// Runs the model over `texts` in batches and collects what `plan`
    /// asks for (an empty placeholder for the other output).
    fn encode_planned<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        plan: &Plan,
    ) -> Result<(Embeddings, MultiVectors), TextError> {
        check_batch_size(plan.batch_size)?;
        let h = self.hidden_size();
        let dim = plan.embeddings.map_or(1, |(dim, _)| dim);
        let mut embedding_values = Vec::new();
        let mut tokens = Vec::new();
        let mut counts = Vec::new();
        for chunk in texts.chunks(plan.batch_size) {
            let encoded = self.run(chunk, plan)?;
            for windows in &encoded.windows {
                if let Some((dim, normalize_output)) = plan.embeddings {
                    let full = self.pool(windows, normalize_output);
                    let mut prefix = full[..dim].to_vec();
                    if normalize_output {
                        normalize(&mut prefix);
                    }
                    embedding_values.extend(prefix);
                }
                if plan.tokens {
                    let before = tokens.len();
                    for window in windows {
                        tokens.extend_from_slice(
                            &window.states[window.keep.start * h..window.keep.end * h],
                        );
                    }
                    for row in tokens[before..].chunks_exact_mut(h) {
                        normalize(row);
                    }
                    counts.push((tokens.len() - before) / h);
                }
            }
        }
        let vectors = MultiVectors::new(tokens, h, &counts)
            .map_err(|e| TextError::InvalidOption(format!("token vectors: {e}")))?;
        Ok((Embeddings::new(embedding_values, dim), vectors))
    }

    fn check_output_dim(&self, output_dim: Option<usize>) -> Result<usize, TextError> {
        let hidden = self.hidden_size();
        match output_dim {
            None => Ok(hidden),
            Some(dim) if (1..=hidden).contains(&dim) => Ok(dim),
            Some(dim) => Err(TextError::InvalidOption(format!(
                "output_dim {dim} is outside 1..={hidden}"
            ))),
        }
    }

    fn marker_id(&self, marker: Option<Marker>) -> Result<Option<u32>, TextError> {
        let special = self.tokenizer.special_tokens();
        match marker {
            None => Ok(None),
            Some(Marker::Query) => {
                special
                    .query_marker
                    .map(Some)
                    .ok_or_else(|| TextError::MissingSpecialToken {
                        token: "[unused0]".into(),
                    })
            }
            Some(Marker::Document) => {
                special
                    .document_marker
                    .map(Some)
                    .ok_or_else(|| TextError::MissingSpecialToken {
                        token: "[unused1]".into(),
                    })
            }
        }
    }

    /// Token-count-weighted mean of the windows' mean-pooled embeddings
    /// (each normalised first when `normalize`), normalised when asked.
    fn pool(&self, windows: &[Window], normalize_output: bool) -> Vec<f32> {
        let h = self.hidden_size();
        let mut total = vec![0.0f32; h];
        for window in windows {
            let rows = window.states.len() / h;
            let mut mean = vec![0.0f32; h];
            for row in window.states.chunks_exact(h) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            mean.iter_mut().for_each(|m| *m /= rows as f32);
            if normalize_output {
                normalize(&mut mean);
            }
            let weight = rows as f32;
            total
                .iter_mut()
                .zip(&mean)
                .for_each(|(t, m)| *t += weight * m);
        }
        let all_rows: usize = windows.iter().map(|w| w.states.len() / h).sum();
        total.iter_mut().for_each(|t| *t /= all_rows as f32);
        if normalize_output {
            normalize(&mut total);
        }
        total
    }

    /// Tokenizes `texts`, cuts them into windows, and runs the model on
    /// groups of windows in parallel.
    fn run<S: AsRef<str> + Sync>(&self, texts: &[S], plan: &Plan) -> Result<Encoded, TextError> {
        let (marker, query_length) = (plan.marker, plan.query_length);
        let contents = self.tokenizer.content_ids_batch(texts)?;
        let special = self.tokenizer.special_tokens();
        let prefix_len = 1 + usize::from(marker.is_some());
        let capacity = plan.window - prefix_len - 1;
        // Every window of every text, in order, with its owner and the rows
        // it keeps.
        let mut sequences: Vec<(usize, Vec<u32>, std::ops::Range<usize>)> = Vec::new();
        for (text, content) in contents.iter().enumerate() {
            let frame = |slice: &[u32]| {
                let mut ids = Vec::with_capacity(slice.len() + prefix_len + 1);
                ids.push(special.cls);
                ids.extend(marker);
                ids.extend_from_slice(slice);
                ids.push(special.sep);
                ids
            };
            if let Some(length) = query_length {
                let kept = content.len().min(length - prefix_len - 1);
                let mut ids = frame(&content[..kept]);
                ids.resize(length, special.mask);
                sequences.push((text, ids, 0..length));
                continue;
            }
            let plan = plan_windows(content.len(), capacity);
            let last = plan.len() - 1;
            for (i, WindowSpan { span, keep }) in plan.into_iter().enumerate() {
                let ids = frame(&content[span.clone()]);
                // Content token p sits at row p - span.start + prefix_len;
                // the first window also keeps [CLS] (and the marker), the
                // last one [SEP].
                let start = if i == 0 {
                    0
                } else {
                    keep.start - span.start + prefix_len
                };
                let end = if i == last {
                    ids.len()
                } else {
                    keep.end - span.start + prefix_len
                };
                sequences.push((text, ids, start..end));
            }
        }
        let views: Vec<(&[u32], usize)> = sequences
            .iter()
            .map(|(_, ids, _)| (ids.as_slice(), ids.len()))
            .collect();
        let states = self.forward_grouped(&views);
        drop(views);
        let mut windows: Vec<Vec<Window>> = (0..texts.len()).map(|_| Vec::new()).collect();
        for ((text, _, keep), states) in sequences.into_iter().zip(states) {
            windows[text].push(Window { states, keep });
        }
        Ok(Encoded { windows })
    }
}

impl TextEncoder {
    /// Hidden states (`[len, hidden]`) of every sequence, each attending
    /// to its first `keys` tokens: consecutive runs of sequences of about
    /// an even share of the tokens run on the pool in parallel, each as
    /// one forward pass.
    fn forward_grouped(&self, sequences: &[(&[u32], usize)]) -> Vec<Vec<f32>> {
        let total_tokens: usize = sequences.iter().map(|(ids, _)| ids.len()).sum();
        let target = (total_tokens / (2 * rayon::current_num_threads()))
            .clamp(MIN_GROUP_TOKENS, MAX_GROUP_TOKENS);
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        let mut group_start = 0;
        let mut group_tokens = 0;
        for (i, (ids, _)) in sequences.iter().enumerate() {
            group_tokens += ids.len();
            if group_tokens >= target || i + 1 == sequences.len() {
                groups.push(group_start..i + 1);
                group_start = i + 1;
                group_tokens = 0;
            }
        }
        let h = self.hidden_size();
        let group_states: Vec<Vec<f32>> = groups
            .par_iter()
            .map(|group| self.model.forward_with_keys(&sequences[group.clone()]))
            .collect();
        let mut states = Vec::with_capacity(sequences.len());
        for (group, all) in groups.into_iter().zip(&group_states) {
            let mut row = 0;
            for (ids, _) in &sequences[group] {
                states.push(all[row * h..(row + ids.len()) * h].to_vec());
                row += ids.len();
            }
        }
        states
    }
}

/// Texts a ColBERT encoding tokenizes and holds at once.
const COLBERT_BATCH: usize = 32;

/// Scales `v` to unit L2 norm as PyTorch's `normalize` does: divided by
/// `max(|v|, 1e-12)`.
fn normalize_clamped(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

fn check_batch_size(batch_size: usize) -> Result<(), TextError> {
    if batch_size == 0 {
        return Err(TextError::InvalidOption("batch_size is 0".into()));
    }
    Ok(())
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
