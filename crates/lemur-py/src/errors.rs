//! Engine errors as Python exceptions: `OSError` when a file could not be
//! read or written (or is not what it claims to be), `ValueError` for
//! every bad input, each with the engine's message and its causes.

use std::error::Error;

use lemur::text::TextError;
use lemur::{BuildError, IndexError, SearchError, TextIndexError};
use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};

/// The message of `error` followed by each of its causes that adds words.
fn message(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether an index error comes from the file system or a file's contents.
fn is_file_error(error: &IndexError) -> bool {
    matches!(error, IndexError::Load(_) | IndexError::Format { .. })
}

/// `ValueError` with `text`.
pub(crate) fn value_error(text: impl Into<String>) -> PyErr {
    PyValueError::new_err(text.into())
}

/// An index error as `OSError` or `ValueError`.
pub(crate) fn index_error(error: IndexError) -> PyErr {
    if is_file_error(&error) {
        PyOSError::new_err(message(&error))
    } else {
        PyValueError::new_err(message(&error))
    }
}

/// A search error (always a bad input) as `ValueError`.
pub(crate) fn search_error(error: SearchError) -> PyErr {
    PyValueError::new_err(message(&error))
}

/// A build error as `OSError` (writing the index failed) or `ValueError`.
pub(crate) fn build_error(error: BuildError) -> PyErr {
    match error {
        BuildError::Index(error) => index_error(error),
        other => PyValueError::new_err(message(&other)),
    }
}

/// A text encoder error: `ValueError` for a text or option it cannot
/// take, `OSError` for a model directory it cannot load.
pub(crate) fn text_error(error: TextError) -> PyErr {
    match error {
        TextError::Tokenize { .. } | TextError::InvalidOption(_) | TextError::EmptyText { .. } => {
            PyValueError::new_err(message(&error))
        }
        other => PyOSError::new_err(message(&other)),
    }
}

/// A text index error as `OSError` (files, models) or `ValueError`.
pub(crate) fn text_index_error(error: TextIndexError) -> PyErr {
    match error {
        TextIndexError::Index(error) => index_error(error),
        TextIndexError::Build(error) => build_error(error),
        TextIndexError::Text(error) => text_error(error),
        TextIndexError::Format { .. } => PyOSError::new_err(message(&error)),
        other => PyValueError::new_err(message(&other)),
    }
}

/// The error of every call on an object after a change to it panicked
/// half-way (it may be inconsistent, so it is not used again).
pub(crate) fn poisoned(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "this {what} is unusable: a change to it failed half-way (open it again)"
    ))
}
