//! A pure-Rust BERT-family text encoder: sentence embeddings compatible
//! with sentence-transformers, and per-token multi-vectors for
//! late-interaction (ColBERT-style) retrieval with LEMUR.
//!
//! [`TextEncoder::from_dir`] loads a Hugging Face model directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, optionally
//! `sentence_bert_config.json`); any BERT-shaped config loads, its layer,
//! head and width numbers read from the file, and so does a ModernBERT
//! one ([`Architecture::ModernBert`]: rotary positions, GeGLU, global and
//! sliding-window attention). The forward pass runs on faer
//! GEMMs over the concatenated real tokens of a batch (never on padding).
//!
//! - [`TextEncoder::encode`]: `[N, output_dim]` embeddings, mean pooling
//!   then L2 normalisation, with Matryoshka truncation.
//! - [`TextEncoder::encode_tokens`]: a ragged [`MultiVectors`] of
//!   L2-normalised token vectors, `[CLS]` and `[SEP]` included.
//!
//! - [`TextEncoder::encode_queries`] / [`TextEncoder::encode_documents`]:
//!   a ColBERT model's token vectors exactly as PyLate computes them, for a
//!   PyLate model directory (Dense head, prefixes, query expansion,
//!   skiplist) or a Stanford ColBERT checkpoint ([`ColbertSettings`]).
//!
//! Texts longer than the model's window are split into overlapping
//! windows, so cost is linear in length and a 32k-token text works (a
//! ColBERT model's documents are cut at `document_length`, as PyLate
//! cuts them).
//!
//! This crate is kept out of the search engine's dependency graph: the
//! `lemur` facade exposes it only behind its `text` feature.
//!
//! # Example
//!
//! ```no_run
//! use lemur_text::{EncodeOptions, TextEncoder, TokenOptions};
//!
//! // A sentence-transformers model directory, e.g. all-MiniLM-L6-v2 as
//! // `cargo xtask fetch-models` unpacks it.
//! let encoder = TextEncoder::from_dir("models/all-MiniLM-L6-v2")?;
//! let texts = ["This is an example sentence", "Each sentence is converted"];
//!
//! let embeddings = encoder.encode(&texts, &EncodeOptions::default())?;
//! assert_eq!((embeddings.len(), embeddings.dim()), (2, 384));
//! let cosine: f32 = embeddings.row(0).iter().zip(embeddings.row(1)).map(|(a, b)| a * b).sum();
//! println!("cosine {cosine:.4}");
//!
//! let short = EncodeOptions { output_dim: Some(128), ..EncodeOptions::default() };
//! assert_eq!(encoder.encode(&texts, &short)?.dim(), 128);
//!
//! let token_vectors = encoder.encode_tokens(&texts, &TokenOptions::default())?;
//! assert_eq!(token_vectors.token_count(0), 7); // [CLS] this is an example sentence [SEP]
//! # Ok::<(), lemur_text::TextError>(())
//! ```

mod colbert;
mod config;
mod dense;
mod embeddings;
mod encoder;
mod error;
mod model;
mod modernbert;
mod tokenize;
mod weights;
mod windows;

pub use colbert::ColbertSettings;
pub use config::{Architecture, BertConfig, HiddenAct, ModernBertSettings};
pub use embeddings::Embeddings;
pub use encoder::{EncodeOptions, Marker, TextEncoder, TokenOptions};
pub use error::TextError;
pub use lemur_maxsim::MultiVectors;
pub use tokenize::{SpecialTokens, TextTokenizer};
