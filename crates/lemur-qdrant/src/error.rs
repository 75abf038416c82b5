//! What can go wrong between an index and a Qdrant collection.

use lemur::{IndexError, SearchError};

/// An error of the Qdrant connector.
#[derive(Debug, thiserror::Error)]
pub enum QdrantError {
    /// The server URL is not a valid URI.
    #[error("invalid Qdrant URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why it is invalid.
        message: String,
    },
    /// Qdrant could not be reached, or kept failing, through every retry.
    #[error("{what} failed after {tries} tries: {message}")]
    Unavailable {
        /// The request.
        what: String,
        /// How many times it was sent.
        tries: usize,
        /// The last failure.
        message: String,
    },
    /// Qdrant refused a request (a bad request, not a passing failure).
    #[error("{what} was refused: {message}")]
    Refused {
        /// The request.
        what: String,
        /// Qdrant's answer.
        message: String,
    },
    /// The collection exists but does not fit the index.
    #[error("collection {collection:?} does not fit the index: {reason}")]
    Mismatch {
        /// The collection.
        collection: String,
        /// What differs.
        reason: String,
    },
    /// An argument is out of range (`k = 0`, no shards, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The index refused (an unknown document id, say).
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The queries are not valid for the index.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The text index could not encode the queries, or holds no documents
    /// (boxed: it is large and rare).
    #[cfg(feature = "text")]
    #[error(transparent)]
    Text(Box<lemur::TextIndexError>),
    /// The runtime the client's calls run on could not start.
    #[error("cannot start the Qdrant client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

#[cfg(feature = "text")]
impl From<lemur::TextIndexError> for QdrantError {
    fn from(error: lemur::TextIndexError) -> Self {
        QdrantError::Text(Box::new(error))
    }
}
