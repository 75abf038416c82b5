//! The one error type of the text front end.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or encoding text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// A model file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// `config.json` (or `sentence_bert_config.json`) is not a usable
    /// BERT-family configuration.
    #[error("invalid model config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `tokenizer.json` could not be loaded or configured.
    #[error("invalid tokenizer {path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizer library's message.
        message: String,
    },
    /// The tokenizer lacks a special token the encoder needs.
    #[error("the tokenizer has no {token} token")]
    MissingSpecialToken {
        /// The token, e.g. `[CLS]`.
        token: String,
    },
    /// Tokenizing an input failed.
    #[error("cannot tokenize input {index}: {message}")]
    Tokenize {
        /// Position of the text in the batch.
        index: usize,
        /// The tokenizer library's message.
        message: String,
    },
    /// `model.safetensors` is not a valid safetensors file.
    #[error("invalid weights file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The safetensors library's message.
        message: String,
    },
    /// A tensor the architecture needs is not in the weights file.
    #[error("weights file has no tensor {name}")]
    MissingTensor {
        /// Tensor name without any `bert.` prefix.
        name: String,
    },
    /// A tensor's shape disagrees with the config.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Tensor name.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype the encoder cannot convert to f32.
    #[error("tensor {name} has unsupported dtype {dtype}")]
    TensorDtype {
        /// Tensor name.
        name: String,
        /// The dtype as safetensors names it.
        dtype: String,
    },
    /// A tensor holds NaN or infinity.
    #[error("tensor {name} holds a non-finite value")]
    NonFiniteTensor {
        /// Tensor name.
        name: String,
    },
    /// An option is out of range (output dimension, batch size, query
    /// length).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A text that must have content (a document to index, a query) has
    /// none after tokenization.
    #[error("text {index} is empty")]
    EmptyText {
        /// Position of the text in the batch.
        index: usize,
    },
}

impl TextError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TextError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TextError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}
