//! [`TextIndex`]: raw text in, ranked document ids out, on a LEMUR index
//! of the documents' token vectors (facade feature `text`).

mod persist;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lemur_maxsim::MultiVectors;
use lemur_text::{TextEncoder, TextError, TokenOptions};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::build::{BuildConfig, BuildError, IndexBuilder, Stage};
use crate::error::{IndexError, SearchError};
use crate::index::Index;

/// How a [`TextIndex`] builds and searches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextIndexConfig {
    /// Candidates per query reranked with exact MaxSim (`k'`).
    pub n_candidates: usize,
    /// The LEMUR index is rebuilt from scratch (new feature map, new
    /// least-squares sample) when the collection has grown by this factor
    /// since the last build; in between, documents are added with
    /// [`Index::add_documents`]. Geometric growth keeps the total rebuild
    /// cost linear in the number of documents.
    pub rebuild_growth: f64,
    /// Texts encoded at once.
    pub batch_size: usize,
    /// Tokens per model window when encoding documents with a model that
    /// is not a ColBERT model (special tokens included; `None`: the
    /// model's `max_seq_length`). Short windows give each token vector a
    /// local context, which finds a fact inside a long document; long ones
    /// give it more of the document's meaning. Measured (docs/QUALITY.md):
    /// 64-token windows find every needle of the needle-in-a-haystack
    /// test (128 miss 1 in 110, the model's 256 miss 5), at 0.008-0.010
    /// lower nDCG@10 than 128 or 256 on CACM's short abstracts.
    pub document_window: Option<usize>,
    /// The LEMUR build. The default uses the random-feature map
    /// (`epochs = 0`): no training, so indexing costs little beyond
    /// encoding the text; set `epochs` to train the feature map.
    pub build: BuildConfig,
}

impl Default for TextIndexConfig {
    fn default() -> Self {
        TextIndexConfig {
            n_candidates: 200,
            rebuild_growth: 2.0,
            batch_size: 32,
            document_window: Some(64),
            build: BuildConfig {
                epochs: 0,
                ..BuildConfig::default()
            },
        }
    }
}

/// Why a text-index operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TextIndexError {
    /// Encoding text failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The LEMUR index rejected its parts or could not be saved or loaded.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Building the LEMUR index failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Searching failed.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// A document id is the empty string.
    #[error("document ids must not be empty")]
    EmptyId,
    /// A query has no text (empty or only whitespace).
    #[error("query {index} has no text")]
    EmptyQuery {
        /// Position of the query in the batch.
        index: usize,
    },
    /// `top_k` was 0.
    #[error("top_k must be at least 1")]
    ZeroK,
    /// Pre-computed token vectors do not fit the index.
    #[error("token vectors: {0}")]
    Vectors(String),
    /// The configuration is unusable.
    #[error("invalid text index config: {0}")]
    Config(String),
    /// A saved text index is inconsistent or was built with another model.
    #[error("{path}: {reason}")]
    Format {
        /// The index directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// There is nothing to save: the index holds no documents.
    #[error("the text index holds no documents; there is nothing to save")]
    NothingToSave,
    /// The index holds no documents yet, so it has no feature map.
    #[error("the text index holds no documents yet")]
    NoDocuments,
}

/// Counts describing a [`TextIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TextIndexStats {
    /// Searchable documents.
    pub documents: usize,
    /// Token vectors of the searchable documents.
    pub tokens: usize,
    /// Removed or replaced documents still stored until the next rebuild.
    pub removed: usize,
    /// Documents in the last full LEMUR build.
    pub built_documents: usize,
    /// Width of the token vectors.
    pub dim: usize,
}

/// A searchable document as a [`TextIndex`] stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextDocument<'a> {
    /// Its id.
    pub doc_id: &'a str,
    /// Its row of `W`, as wide as the query features.
    pub weights: &'a [f32],
    /// Its token vectors, `[n_tokens, d]` row-major.
    pub tokens: &'a [f32],
}

/// A text-level late-interaction index: `index(doc_id, text)`,
/// `search(query, top_k)`, `remove`, `clear`, `stats`, `save`, `open`.
///
/// Documents are encoded to per-token vectors by a [`TextEncoder`] and
/// stored in a LEMUR [`Index`]; a search encodes the query, takes the
/// `n_candidates` best documents by the LEMUR approximation and ranks
/// them by exact MaxSim. Removing (or re-indexing) a document hides it at
/// once and frees its storage at the next rebuild.
#[derive(Debug, Clone)]
pub struct TextIndex {
    encoder: Arc<TextEncoder>,
    model_dir: Option<PathBuf>,
    config: TextIndexConfig,
    /// Id of every stored document, in index order (removed ones too).
    doc_ids: Vec<String>,
    /// Position of every live document.
    positions: HashMap<String, u32>,
    /// `removed[p]`: position `p` was removed or replaced.
    removed: Vec<bool>,
    n_removed: usize,
    index: Option<Index>,
    built_docs: usize,
}

impl TextIndex {
    /// An empty index that encodes with `encoder`. The directory the
    /// encoder was loaded from, if any, is saved with the index, so tools
    /// can reopen it without being told the model again.
    pub fn new(encoder: Arc<TextEncoder>, config: TextIndexConfig) -> Result<Self, TextIndexError> {
        check_config(&config)?;
        Ok(TextIndex {
            model_dir: encoder.model_dir().map(Path::to_path_buf),
            encoder,
            config,
            doc_ids: Vec::new(),
            positions: HashMap::new(),
            removed: Vec::new(),
            n_removed: 0,
            index: None,
            built_docs: 0,
        })
    }

    /// An empty index with the encoder in the model directory `model_dir`.
    pub fn from_model_dir(
        model_dir: impl AsRef<Path>,
        config: TextIndexConfig,
    ) -> Result<Self, TextIndexError> {
        Self::new(Arc::new(TextEncoder::from_dir(model_dir)?), config)
    }

    /// The encoder.
    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// The configuration.
    pub fn config(&self) -> &TextIndexConfig {
        &self.config
    }

    /// Changes the number of candidates reranked per query.
    pub fn set_n_candidates(&mut self, n_candidates: usize) -> Result<(), TextIndexError> {
        let config = TextIndexConfig {
            n_candidates,
            ..self.config.clone()
        };
        check_config(&config)?;
        self.config = config;
        Ok(())
    }

    /// The LEMUR index underneath, once a document has been indexed.
    pub fn lemur_index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// Searchable documents.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether no document is searchable.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Whether `doc_id` is searchable.
    pub fn contains(&self, doc_id: &str) -> bool {
        self.positions.contains_key(doc_id)
    }

    /// Every searchable document, in storage order.
    pub fn documents(&self) -> impl Iterator<Item = TextDocument<'_>> {
        (0..self.doc_ids.len())
            .filter(|&p| !self.removed[p])
            .filter_map(|p| self.stored(p))
    }

    /// The searchable document `doc_id`, if there is one.
    pub fn document(&self, doc_id: &str) -> Option<TextDocument<'_>> {
        self.stored(*self.positions.get(doc_id)? as usize)
    }

    /// The document stored at position `p`.
    fn stored(&self, p: usize) -> Option<TextDocument<'_>> {
        let index = self.index.as_ref()?;
        Some(TextDocument {
            doc_id: &self.doc_ids[p],
            weights: index.weights().row(p),
            tokens: index.corpus().get(p),
        })
    }

    /// The token vectors of `queries` as [`TextIndex::search_batch`]
    /// encodes them, and their LEMUR query features (`[queries, h]`
    /// row-major), for a search that runs elsewhere (a Qdrant collection,
    /// say).
    pub fn query_vectors_and_features<S: AsRef<str> + Sync>(
        &self,
        queries: &[S],
    ) -> Result<(MultiVectors, Vec<f32>), TextIndexError> {
        check_queries(queries)?;
        let index = self.index.as_ref().ok_or(TextIndexError::NoDocuments)?;
        let query_vectors = self.encoder.encode_queries(queries)?;
        let features = index.query_features(&query_vectors);
        Ok((query_vectors, features))
    }

    /// Counts of documents and tokens.
    pub fn stats(&self) -> TextIndexStats {
        let tokens = match &self.index {
            Some(index) => self
                .positions
                .values()
                .map(|&p| index.corpus().token_count(p as usize))
                .sum(),
            None => 0,
        };
        TextIndexStats {
            documents: self.len(),
            tokens,
            removed: self.n_removed,
            built_documents: self.built_docs,
            dim: self.encoder.token_dim(),
        }
    }

    /// Indexes one document; an existing document with the same id is
    /// replaced.
    pub fn index(&mut self, doc_id: &str, text: &str) -> Result<(), TextIndexError> {
        self.index_batch(&[(doc_id, text)], None)
    }

    /// Indexes many documents, encoding them in parallel batches;
    /// `progress(done, total)` is called after each batch is encoded and
    /// `build_progress` during a LEMUR (re)build. Later entries replace
    /// earlier ones with the same id.
    pub fn index_batch<I: AsRef<str> + Sync, T: AsRef<str> + Sync>(
        &mut self,
        docs: &[(I, T)],
        progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> Result<(), TextIndexError> {
        self.index_batch_with_build_progress(docs, progress, None)
    }

    /// [`TextIndex::index_batch`] that also reports the LEMUR build stages.
    pub fn index_batch_with_build_progress<I: AsRef<str> + Sync, T: AsRef<str> + Sync>(
        &mut self,
        docs: &[(I, T)],
        progress: Option<&(dyn Fn(usize, usize) + Sync)>,
        build_progress: Option<&(dyn Fn(Stage, usize, usize) + Sync)>,
    ) -> Result<(), TextIndexError> {
        // A document without text is indexed as the encoder encodes it, as
        // PyLate and sentence-transformers do: its special tokens only.
        for (doc_id, _) in docs {
            check_id(doc_id.as_ref())?;
        }
        let options = self.document_options();
        let mut vectors: Option<MultiVectors> = None;
        for (done, chunk) in docs.chunks(self.config.batch_size).enumerate() {
            let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_ref()).collect();
            let encoded = self.encode_documents(&texts, &options)?;
            match &mut vectors {
                None => vectors = Some(encoded),
                Some(all) => all
                    .append(&encoded)
                    .map_err(|e| TextIndexError::Vectors(e.to_string()))?,
            }
            if let Some(progress) = progress {
                progress(
                    (done * self.config.batch_size + chunk.len()).min(docs.len()),
                    docs.len(),
                );
            }
        }
        let Some(vectors) = vectors else {
            return Ok(());
        };
        let ids: Vec<&str> = docs.iter().map(|(id, _)| id.as_ref()).collect();
        self.insert(&ids, vectors, build_progress)
    }

    /// Documents' token vectors: a ColBERT model's as PyLate encodes
    /// documents ([`TextEncoder::encode_documents`]), any other model's
    /// with [`TextIndex::document_options`].
    fn encode_documents(
        &self,
        texts: &[&str],
        options: &TokenOptions,
    ) -> Result<MultiVectors, TextError> {
        match self.encoder.colbert() {
            Some(_) => self.encoder.encode_documents(texts),
            None => self.encoder.encode_tokens(texts, options),
        }
    }

    /// How documents are encoded by a model that is not a ColBERT model:
    /// [`TextEncoder::encode_tokens`] with these options gives the vectors
    /// [`TextIndex::index_encoded`] expects (a ColBERT model's are
    /// [`TextEncoder::encode_documents`]'s).
    pub fn document_options(&self) -> TokenOptions {
        TokenOptions {
            window: self.config.document_window,
            batch_size: self.config.batch_size,
            ..TokenOptions::default()
        }
    }

    /// Indexes documents whose token vectors were already computed with
    /// this index's encoder and [`TextIndex::document_options`], one set
    /// per id.
    pub fn index_encoded<I: AsRef<str>>(
        &mut self,
        doc_ids: &[I],
        token_vectors: MultiVectors,
        build_progress: Option<&(dyn Fn(Stage, usize, usize) + Sync)>,
    ) -> Result<(), TextIndexError> {
        if token_vectors.len() != doc_ids.len() {
            return Err(TextIndexError::Vectors(format!(
                "{} sets of vectors for {} ids",
                token_vectors.len(),
                doc_ids.len()
            )));
        }
        if token_vectors.dim() != self.encoder.token_dim() {
            return Err(TextIndexError::Vectors(format!(
                "vectors are {} wide, the encoder's {}",
                token_vectors.dim(),
                self.encoder.token_dim()
            )));
        }
        let ids: Vec<&str> = doc_ids.iter().map(AsRef::as_ref).collect();
        for id in &ids {
            check_id(id)?;
        }
        self.insert(&ids, token_vectors, build_progress)
    }

    fn insert(
        &mut self,
        ids: &[&str],
        vectors: MultiVectors,
        build_progress: Option<&(dyn Fn(Stage, usize, usize) + Sync)>,
    ) -> Result<(), TextIndexError> {
        match &mut self.index {
            Some(index) => {
                let counts: Vec<usize> = vectors.counts().collect();
                index.add_documents(vectors.tokens(), &counts)?;
            }
            None => {
                self.index = Some(self.build(vectors.clone(), build_progress)?);
                self.built_docs = ids.len();
            }
        }
        for id in ids {
            self.hide(id);
            let position = self.doc_ids.len() as u32;
            self.doc_ids.push((*id).to_owned());
            self.removed.push(false);
            self.positions.insert((*id).to_owned(), position);
        }
        let grown = self.len() as f64 > self.config.rebuild_growth * self.built_docs as f64;
        let mostly_removed = self.n_removed * 2 > self.doc_ids.len();
        if grown || mostly_removed {
            self.rebuild(build_progress)?;
        }
        Ok(())
    }

    /// Removes a document; `false` if no searchable document has that id.
    pub fn remove(&mut self, doc_id: &str) -> bool {
        self.hide(doc_id)
    }

    fn hide(&mut self, doc_id: &str) -> bool {
        match self.positions.remove(doc_id) {
            Some(position) => {
                self.removed[position as usize] = true;
                self.n_removed += 1;
                true
            }
            None => false,
        }
    }

    /// Removes every document.
    pub fn clear(&mut self) {
        self.doc_ids.clear();
        self.positions.clear();
        self.removed.clear();
        self.n_removed = 0;
        self.index = None;
        self.built_docs = 0;
    }

    /// Rebuilds the LEMUR index from the live documents only: a fresh
    /// feature map and least-squares fit, and removed documents' storage
    /// freed. Indexing calls this itself when the collection has grown by
    /// `rebuild_growth` or is mostly removed documents.
    pub fn rebuild(
        &mut self,
        build_progress: Option<&(dyn Fn(Stage, usize, usize) + Sync)>,
    ) -> Result<(), TextIndexError> {
        let Some(index) = &self.index else {
            return Ok(());
        };
        if self.positions.is_empty() {
            self.clear();
            return Ok(());
        }
        let corpus = index.corpus();
        let live: Vec<usize> = (0..self.doc_ids.len())
            .filter(|&p| !self.removed[p])
            .collect();
        let counts: Vec<usize> = live.iter().map(|&p| corpus.token_count(p)).collect();
        let mut tokens = Vec::with_capacity(counts.iter().sum::<usize>() * corpus.dim());
        for &p in &live {
            tokens.extend_from_slice(corpus.get(p));
        }
        let vectors = MultiVectors::new(tokens, corpus.dim(), &counts)
            .map_err(|e| TextIndexError::Vectors(e.to_string()))?;
        let rebuilt = self.build(vectors, build_progress)?;
        let doc_ids: Vec<String> = live.iter().map(|&p| self.doc_ids[p].clone()).collect();
        self.positions = doc_ids
            .iter()
            .enumerate()
            .map(|(p, id)| (id.clone(), p as u32))
            .collect();
        self.removed = vec![false; doc_ids.len()];
        self.n_removed = 0;
        self.built_docs = doc_ids.len();
        self.doc_ids = doc_ids;
        self.index = Some(rebuilt);
        Ok(())
    }

    fn build(
        &self,
        vectors: MultiVectors,
        build_progress: Option<&(dyn Fn(Stage, usize, usize) + Sync)>,
    ) -> Result<Index, TextIndexError> {
        let mut builder = IndexBuilder::new(self.config.build.clone());
        if let Some(progress) = build_progress {
            builder = builder.progress(progress);
        }
        Ok(builder.build(vectors, None)?.0)
    }

    /// The `top_k` best documents for `query`, best first, as
    /// `(doc_id, MaxSim score)`. Fewer when fewer documents are indexed.
    pub fn search(&self, query: &str, top_k: usize) -> Result<Vec<(String, f32)>, TextIndexError> {
        Ok(self
            .search_batch(&[query], top_k)?
            .pop()
            .expect("one result list per query"))
    }

    /// [`TextIndex::search`] for many queries at once (encoded together,
    /// searched in parallel on the current rayon pool).
    pub fn search_batch<S: AsRef<str> + Sync>(
        &self,
        queries: &[S],
        top_k: usize,
    ) -> Result<Vec<Vec<(String, f32)>>, TextIndexError> {
        if top_k == 0 {
            return Err(TextIndexError::ZeroK);
        }
        check_queries(queries)?;
        let Some(index) = &self.index else {
            return Ok(vec![Vec::new(); queries.len()]);
        };
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        // A ColBERT model encodes queries as PyLate does; any other model
        // as its documents, with the default windows.
        let query_vectors = self.encoder.encode_queries(queries)?;
        let features = index.query_features(&query_vectors);
        // Removed documents can take candidate slots; ask for that many
        // more so `n_candidates` live ones remain.
        let wanted = (self.config.n_candidates.max(top_k) + self.n_removed).min(index.len());
        let mut candidates = index.candidates(&features, wanted);
        for list in &mut candidates {
            list.retain(|&doc| !self.removed[doc as usize]);
        }
        let hits = index.rerank(&query_vectors, &candidates, top_k);
        Ok(hits
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|hit| (self.doc_ids[hit.doc as usize].clone(), hit.score))
                    .collect()
            })
            .collect())
    }
}

fn check_queries<S: AsRef<str>>(queries: &[S]) -> Result<(), TextIndexError> {
    match queries.iter().position(|q| q.as_ref().trim().is_empty()) {
        Some(index) => Err(TextIndexError::EmptyQuery { index }),
        None => Ok(()),
    }
}

fn check_id(doc_id: &str) -> Result<(), TextIndexError> {
    if doc_id.is_empty() {
        return Err(TextIndexError::EmptyId);
    }
    Ok(())
}

fn check_config(config: &TextIndexConfig) -> Result<(), TextIndexError> {
    let bad = |what: &str| Err(TextIndexError::Config(what.to_owned()));
    if config.n_candidates == 0 {
        return bad("n_candidates must be at least 1");
    }
    if !(config.rebuild_growth >= 1.0 && config.rebuild_growth.is_finite()) {
        return bad("rebuild_growth must be a finite number >= 1");
    }
    if config.batch_size == 0 {
        return bad("batch_size must be at least 1");
    }
    Ok(())
}
