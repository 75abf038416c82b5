//! The text front end for Python: a model directory's encoder
//! (sentence-transformers embeddings, per-token vectors, ColBERT queries and
//! documents as PyLate encodes them) and the text index over it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use lemur::text::{EncodeOptions, TextEncoder};
use lemur::{MultiVectors, TextIndex, TextIndexConfig};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray2};
use pyo3::prelude::*;

use crate::arrays::matrix;
use crate::errors::{poisoned, text_error, text_index_error, value_error};
use crate::index::StoredDocuments;
use crate::pool;

/// A text encoder loaded from a model directory (a sentence-transformers
/// BERT or ModernBERT model, or a PyLate or Stanford ColBERT model).
#[pyclass(frozen, module = "lemur_rs._lemur_rs", name = "TextEncoder")]
pub(crate) struct NativeTextEncoder {
    encoder: Arc<TextEncoder>,
}

/// Token vectors `[n_tokens, d]` and tokens per text, as NumPy arrays.
type TokenSets<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<i64>>);

/// Query token vectors, tokens per query and query features `[n, h]`.
type QueryVectors<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<f32>>,
);

#[pymethods]
impl NativeTextEncoder {
    /// Loads the model in `path`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let encoder = py
            .detach(|| TextEncoder::from_dir(&path))
            .map_err(text_error)?;
        Ok(NativeTextEncoder {
            encoder: Arc::new(encoder),
        })
    }

    /// Sentence embeddings `[len(texts), dim]`, as sentence-transformers'
    /// `encode` gives them.
    #[pyo3(signature = (texts, batch_size = 32, normalize_embeddings = true, output_dim = None, num_threads = -1))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        batch_size: usize,
        normalize_embeddings: bool,
        output_dim: Option<usize>,
        num_threads: i64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == 0 {
            return Err(value_error("batch_size must be at least 1"));
        }
        let options = EncodeOptions {
            output_dim,
            normalize: normalize_embeddings,
            batch_size,
        };
        let embeddings = py
            .detach(|| pool::run(num_threads, || self.encoder.encode(&texts, &options)))?
            .map_err(text_error)?;
        let (n, dim) = (embeddings.len(), embeddings.dim());
        Ok(matrix(py, embeddings.into_vec(), n, dim))
    }

    /// Token vectors of every text, queries or documents (for a ColBERT
    /// model exactly as PyLate's `encode(texts, is_query=...)`; for any
    /// other model every token through overlapping windows).
    #[pyo3(signature = (texts, is_query, num_threads = -1))]
    fn encode_tokens<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        is_query: bool,
        num_threads: i64,
    ) -> PyResult<TokenSets<'py>> {
        let vectors = py
            .detach(|| {
                pool::run(num_threads, || {
                    if is_query {
                        self.encoder.encode_queries(&texts)
                    } else {
                        self.encoder.encode_documents(&texts)
                    }
                })
            })?
            .map_err(text_error)?;
        Ok(token_sets(py, &vectors))
    }

    /// The directory the model was loaded from, made absolute.
    #[getter]
    fn model_dir(&self) -> Option<PathBuf> {
        self.encoder.model_dir().map(PathBuf::from)
    }

    /// Width of the token vectors.
    #[getter]
    fn token_dim(&self) -> usize {
        self.encoder.token_dim()
    }

    /// Width of the sentence embeddings (the backbone's hidden size).
    #[getter]
    fn hidden_size(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// The model's window, `max_seq_length`.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.encoder.max_seq_len()
    }

    /// Whether the model is a ColBERT model (PyLate or Stanford).
    #[getter]
    fn is_colbert(&self) -> bool {
        self.encoder.colbert().is_some()
    }
}

/// A text index: string ids over a LEMUR index of the documents' token
/// vectors.
#[pyclass(frozen, module = "lemur_rs._lemur_rs", name = "TextIndex")]
pub(crate) struct NativeTextIndex {
    index: RwLock<TextIndex>,
}

#[pymethods]
impl NativeTextIndex {
    /// An empty index over `encoder`; `config` is a JSON object of
    /// `TextIndexConfig` fields.
    #[new]
    #[pyo3(signature = (encoder, config = "{}"))]
    fn new(encoder: &NativeTextEncoder, config: &str) -> PyResult<Self> {
        let config: TextIndexConfig = serde_json::from_str(config)
            .map_err(|error| value_error(format!("text index config: {error}")))?;
        let index = TextIndex::new(encoder.encoder.clone(), config).map_err(text_index_error)?;
        Ok(Self::wrap(index))
    }

    /// Opens a saved text index with `encoder`.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf, encoder: &NativeTextEncoder) -> PyResult<Self> {
        let encoder = encoder.encoder.clone();
        let index = py.detach(|| TextIndex::open(&path, encoder).map_err(text_index_error))?;
        Ok(Self::wrap(index))
    }

    /// The model directory a saved index records, if any.
    #[staticmethod]
    fn saved_model_dir(path: PathBuf) -> PyResult<Option<PathBuf>> {
        TextIndex::saved_model_dir(&path).map_err(text_index_error)
    }

    /// Indexes (or replaces) documents by id.
    #[pyo3(signature = (ids, texts, num_threads = -1))]
    fn index(
        &self,
        py: Python<'_>,
        ids: Vec<String>,
        texts: Vec<String>,
        num_threads: i64,
    ) -> PyResult<()> {
        if ids.len() != texts.len() {
            return Err(value_error(format!(
                "{} ids but {} texts",
                ids.len(),
                texts.len()
            )));
        }
        let docs: Vec<(String, String)> = ids.into_iter().zip(texts).collect();
        py.detach(|| {
            pool::run(num_threads, || {
                self.write()?
                    .index_batch(&docs, None)
                    .map_err(text_index_error)
            })
        })?
    }

    /// The `k` best documents of each query: `(id, score)` lists.
    #[pyo3(signature = (queries, k = 10, num_threads = -1))]
    fn search(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        k: usize,
        num_threads: i64,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        py.detach(|| {
            pool::run(num_threads, || {
                self.read()?
                    .search_batch(&queries, k)
                    .map_err(text_index_error)
            })
        })?
    }

    /// The ids of every searchable document, in storage order.
    fn doc_ids(&self) -> PyResult<Vec<String>> {
        Ok(self
            .read()?
            .documents()
            .map(|document| document.doc_id.to_string())
            .collect())
    }

    /// Documents as stored, by id: their rows of `W` (`[n, h]`), their
    /// tokens (`[n_tokens, d]`) and tokens per document, for exporting the
    /// index to another engine. An id that is not searchable is an error.
    fn documents<'py>(
        &self,
        py: Python<'py>,
        doc_ids: Vec<String>,
    ) -> PyResult<StoredDocuments<'py>> {
        let guard = self.read()?;
        let lemur = guard
            .lemur_index()
            .ok_or_else(|| text_index_error(lemur::TextIndexError::NoDocuments))?;
        let (h, d) = (lemur.feature_dim(), lemur.dim());
        let (mut weights, mut tokens) = (Vec::with_capacity(doc_ids.len() * h), Vec::new());
        let mut counts = Vec::with_capacity(doc_ids.len());
        for doc_id in &doc_ids {
            let document = guard.document(doc_id).ok_or_else(|| {
                value_error(format!(
                    "no searchable document {doc_id:?} in the text index"
                ))
            })?;
            weights.extend_from_slice(document.weights);
            tokens.extend_from_slice(document.tokens);
            counts.push((document.tokens.len() / d) as i64);
        }
        let n_tokens = tokens.len() / d;
        Ok((
            matrix(py, weights, doc_ids.len(), h),
            matrix(py, tokens, n_tokens, d),
            counts.into_pyarray(py),
        ))
    }

    /// The token vectors of query texts as a search encodes them (tokens
    /// and counts) and their LEMUR query features (`[n, h]`).
    #[pyo3(signature = (queries, num_threads = -1))]
    fn query_vectors_and_features<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<String>,
        num_threads: i64,
    ) -> PyResult<QueryVectors<'py>> {
        let (vectors, features, h) = py.detach(|| {
            pool::run(num_threads, || {
                let index = self.read()?;
                let (vectors, features) = index
                    .query_vectors_and_features(&queries)
                    .map_err(text_index_error)?;
                let h = index.lemur_index().map_or(0, |lemur| lemur.feature_dim());
                Ok::<_, PyErr>((vectors, features, h))
            })
        })??;
        let (tokens, counts) = token_sets(py, &vectors);
        Ok((tokens, counts, matrix(py, features, queries.len(), h)))
    }

    /// Widths of the rows of `W` and of the tokens (`None` before the
    /// first document).
    fn widths(&self) -> PyResult<Option<(usize, usize)>> {
        Ok(self
            .read()?
            .lemur_index()
            .map(|lemur| (lemur.feature_dim(), lemur.dim())))
    }

    /// Removes a document; returns whether it was there.
    fn remove(&self, doc_id: &str) -> PyResult<bool> {
        Ok(self.write()?.remove(doc_id))
    }

    /// Saves the index to `path`, atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.read()?.save(&path).map_err(text_index_error))
    }

    /// Candidates per query reranked exactly (`k'`).
    fn set_n_candidates(&self, n_candidates: usize) -> PyResult<()> {
        self.write()?
            .set_n_candidates(n_candidates)
            .map_err(text_index_error)
    }

    /// Whether a document of this id is indexed.
    fn __contains__(&self, doc_id: &str) -> PyResult<bool> {
        Ok(self.read()?.contains(doc_id))
    }

    /// Documents indexed.
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.read()?.len())
    }
}

impl NativeTextIndex {
    fn wrap(index: TextIndex) -> Self {
        NativeTextIndex {
            index: RwLock::new(index),
        }
    }

    /// Shared access; a change that panicked half-way refuses every later
    /// call.
    fn read(&self) -> PyResult<RwLockReadGuard<'_, TextIndex>> {
        self.index.read().map_err(|_| poisoned("text index"))
    }

    /// Exclusive access, for changes.
    fn write(&self) -> PyResult<RwLockWriteGuard<'_, TextIndex>> {
        self.index.write().map_err(|_| poisoned("text index"))
    }
}

/// Token vectors and counts as NumPy arrays.
fn token_sets<'py>(py: Python<'py>, vectors: &MultiVectors) -> TokenSets<'py> {
    let counts: Vec<i64> = vectors.counts().map(|count| count as i64).collect();
    (
        matrix(
            py,
            vectors.tokens().to_vec(),
            vectors.n_tokens(),
            vectors.dim(),
        ),
        counts.into_pyarray(py),
    )
}
