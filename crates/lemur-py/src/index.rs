//! A LEMUR index for Python: built in memory (and saved when asked), or
//! opened from an index directory whose changes (added and deleted
//! documents, merges) commit to disk atomically as they are made.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use lemur::{BuildConfig, FeatureMap, Index, IndexBuilder, SearchParams, SegmentedIndex, Stage};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::arrays::{IdsAndScores, counts, ids_and_scores, matrix, rows};
use crate::errors::{build_error, index_error, poisoned, search_error, value_error};
use crate::pool;

/// Where the index lives (boxed: both are large, and of different sizes).
enum Stored {
    /// In memory; `save` writes it out.
    Memory(Box<Index>),
    /// An index directory, mapped; every change commits there.
    Directory(Box<SegmentedIndex>),
}

/// A LEMUR index: the feature map, one row of `W` per document, and the
/// documents' tokens for the exact rerank.
#[pyclass(frozen, module = "lemur_rs._lemur_rs", name = "Index")]
pub(crate) struct NativeIndex {
    stored: RwLock<Stored>,
}

#[pymethods]
impl NativeIndex {
    /// Builds an index over `tokens` (`[n_tokens, d]`) split into
    /// documents by `counts`. `config` is a JSON object of `BuildConfig`
    /// fields (the rest keep their defaults); `learn` optionally holds
    /// tokens from the query distribution to train on.
    #[staticmethod]
    #[pyo3(signature = (tokens, counts, config = "{}", learn = None, verbose = false, num_threads = -1))]
    fn build(
        py: Python<'_>,
        tokens: PyReadonlyArray2<'_, f32>,
        counts: PyReadonlyArray1<'_, i64>,
        config: &str,
        learn: Option<PyReadonlyArray2<'_, f32>>,
        verbose: bool,
        num_threads: i64,
    ) -> PyResult<Self> {
        let config: BuildConfig = serde_json::from_str(config)
            .map_err(|error| value_error(format!("build config: {error}")))?;
        let tokens = rows(&tokens, "tokens")?;
        let counts = self::counts(&counts, "counts")?;
        let learn = match &learn {
            Some(learn) => Some(rows(learn, "learn")?.values),
            None => None,
        };
        let (values, width) = (tokens.values, tokens.width);
        let index = py.detach(|| {
            pool::run(num_threads, || {
                let corpus = lemur::MultiVectors::new(values.to_vec(), width, &counts)
                    .map_err(|error| value_error(format!("tokens: {error}")))?;
                let report = |stage: Stage, done: usize, total: usize| {
                    if verbose && done == total {
                        eprintln!("lemur_rs: {stage:?} done ({total})");
                    }
                };
                let (index, _) = IndexBuilder::new(config)
                    .progress(&report)
                    .build(corpus, learn)
                    .map_err(build_error)?;
                Ok::<_, PyErr>(index)
            })
        })??;
        Ok(Self::new(Stored::Memory(Box::new(index))))
    }

    /// Assembles an index from a model trained elsewhere (the original
    /// LEMUR's `mlp.pt` / `w.pt`): either learned blocks (`layers`: per
    /// block the Linear weight `[out, in]`, its bias, the LayerNorm weight
    /// and bias) with `activation`, or the random-feature map's
    /// `projection` `[d, h]` (GELU); the training targets' `target_mean`
    /// and `target_std`; the learn tokens `fit_sample` (`[s, d]`) that rows
    /// of `W` for new documents are fitted with; and `W` itself, or `None`
    /// to fit it for the corpus as the original does.
    #[staticmethod]
    #[pyo3(signature = (tokens, counts, layers, projection, activation, target_mean, target_std, fit_sample, weights = None, num_threads = -1))]
    #[allow(clippy::too_many_arguments)]
    fn from_model(
        py: Python<'_>,
        tokens: PyReadonlyArray2<'_, f32>,
        counts: PyReadonlyArray1<'_, i64>,
        layers: Vec<ModelLayer<'_>>,
        projection: Option<PyReadonlyArray2<'_, f32>>,
        activation: &str,
        target_mean: f32,
        target_std: f32,
        fit_sample: PyReadonlyArray2<'_, f32>,
        weights: Option<PyReadonlyArray2<'_, f32>>,
        num_threads: i64,
    ) -> PyResult<Self> {
        let feature_map = feature_map_of(&layers, projection.as_ref(), activation)?;
        let tokens = rows(&tokens, "tokens")?;
        let counts = self::counts(&counts, "counts")?;
        let sample = rows(&fit_sample, "fit_sample")?.values;
        let weights = match &weights {
            Some(weights) => Some(rows(weights, "W")?),
            None => None,
        };
        let norm = lemur::TargetNorm {
            mean: target_mean,
            std: target_std,
        };
        let (values, width) = (tokens.values, tokens.width);
        let index = py.detach(|| {
            pool::run(num_threads, || {
                let corpus = lemur::MultiVectors::new(values.to_vec(), width, &counts)
                    .map_err(|error| value_error(format!("tokens: {error}")))?;
                let solver = lemur::WeightSolver::new(&feature_map, sample, norm)
                    .map_err(|error| index_error(error.into()))?;
                let h = feature_map.output_dim();
                let rows = match weights {
                    Some(weights) if weights.width == h => weights.values.to_vec(),
                    Some(weights) => {
                        return Err(value_error(format!(
                            "W is {} wide but the feature map gives {h} features",
                            weights.width
                        )));
                    }
                    None => solver.fit(&corpus),
                };
                let n_docs = corpus.len();
                let weights = lemur::DocWeights::new(rows, n_docs, h).map_err(index_error)?;
                let mut index = Index::new(feature_map, weights, corpus).map_err(index_error)?;
                index.set_solver(solver).map_err(index_error)?;
                Ok::<_, PyErr>(index)
            })
        })??;
        Ok(Self::new(Stored::Memory(Box::new(index))))
    }

    /// Opens an index directory mapped, for searching and for changes that
    /// commit in place (`add`, `delete`, `compact`).
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let index = py
            .detach(|| SegmentedIndex::open(&path))
            .map_err(index_error)?;
        Ok(Self::new(Stored::Directory(Box::new(index))))
    }

    /// Loads a saved index (one segment, no deletions) fully into memory,
    /// verifying its checksums: its `W` can be read and new documents'
    /// rows fitted without adding them.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let index = py.detach(|| Index::load(&path)).map_err(index_error)?;
        Ok(Self::new(Stored::Memory(Box::new(index))))
    }

    /// Saves an index built in memory to `path`, atomically. An opened
    /// directory is already saved: its changes committed as they were
    /// made, and saving it to another path is refused.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| match &*self.read()? {
            Stored::Memory(index) => index.save(&path).map_err(index_error),
            Stored::Directory(index) if same_dir(index.dir(), &path) => Ok(()),
            Stored::Directory(index) => Err(value_error(format!(
                "this index lives in {} and commits there; copy that directory instead of saving it to {}",
                index.dir().display(),
                path.display()
            ))),
        })
    }

    /// The `k` best documents per query: `(ids, scores)`, both
    /// `[n_queries, k]`, best first, ties to the lower id, with `-1` and
    /// `-inf` past the last hit when the index holds fewer than `k`
    /// documents. `n_candidates` (`k'`) documents per query are reranked
    /// exactly.
    #[pyo3(signature = (query_tokens, query_counts, k = 10, n_candidates = 200, num_threads = -1))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        query_tokens: PyReadonlyArray2<'_, f32>,
        query_counts: PyReadonlyArray1<'_, i64>,
        k: usize,
        n_candidates: usize,
        num_threads: i64,
    ) -> PyResult<IdsAndScores<'py>> {
        let (values, query_counts) = self.token_sets(&query_tokens, &query_counts, "query_")?;
        let params = SearchParams { k, n_candidates };
        let hits = py.detach(|| {
            pool::run(num_threads, || {
                match &*self.read()? {
                    Stored::Memory(index) => index.search(values, &query_counts, params),
                    Stored::Directory(index) => index.search(values, &query_counts, params),
                }
                .map_err(search_error)
            })
        })??;
        Ok(ids_and_scores(py, &hits, k, |hit| (hit.doc, hit.score)))
    }

    /// Adds documents without retraining; returns their ids. In a directory
    /// they become a new segment, committed atomically.
    #[pyo3(signature = (tokens, counts, num_threads = -1))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        tokens: PyReadonlyArray2<'_, f32>,
        counts: PyReadonlyArray1<'_, i64>,
        num_threads: i64,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let (values, counts) = self.token_sets(&tokens, &counts, "")?;
        let added = py.detach(|| {
            pool::run(num_threads, || {
                match &mut *self.write()? {
                    Stored::Memory(index) => index.add_documents(values, &counts),
                    Stored::Directory(index) => index.add_documents(values, &counts),
                }
                .map_err(index_error)
            })
        })??;
        let ids: Vec<i64> = added.map(i64::from).collect();
        Ok(ids.into_pyarray(py))
    }

    /// Deletes documents by id from an opened index directory (a tombstone
    /// file, committed atomically); returns how many were deleted. Unknown
    /// or already deleted ids are an error and nothing is deleted.
    fn delete(&self, py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<usize> {
        let ids = document_ids(&ids)?;
        py.detach(|| match &mut *self.write()? {
            Stored::Directory(index) => index.delete_documents(&ids).map_err(index_error),
            Stored::Memory(_) => Err(value_error(
                "documents are deleted from an index directory: save this index and open it with Index.open",
            )),
        })
    }

    /// The ids of every live document, increasing: positions for an index
    /// in memory, stable ids for a directory.
    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids: Vec<i64> = match &*self.read()? {
            Stored::Memory(index) => (0..index.len() as i64).collect(),
            Stored::Directory(index) => index.ids().into_iter().map(i64::from).collect(),
        };
        Ok(ids.into_pyarray(py))
    }

    /// Documents as stored, by id: their rows of `W` (`[n, h]`), their f32
    /// tokens (`[n_tokens, d]`) and tokens per document, for exporting the
    /// index to another engine. An unknown or deleted id is an error.
    fn documents<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<StoredDocuments<'py>> {
        let ids = document_ids(&ids)?;
        let guard = self.read()?;
        let map = feature_map(&guard);
        let (h, d) = (map.output_dim(), map.input_dim());
        let (mut weights, mut tokens) = (Vec::with_capacity(ids.len() * h), Vec::new());
        let mut counts = Vec::with_capacity(ids.len());
        for &id in &ids {
            let (row, document) = match &*guard {
                Stored::Memory(index) if (id as usize) < index.len() => (
                    index.weights().row(id as usize),
                    index.corpus().get(id as usize),
                ),
                Stored::Memory(_) => {
                    return Err(index_error(lemur::IndexError::UnknownDocument { id }));
                }
                Stored::Directory(index) => {
                    let document = index.document(id).map_err(index_error)?;
                    (document.weights, document.tokens)
                }
            };
            weights.extend_from_slice(row);
            tokens.extend_from_slice(document);
            counts.push((document.len() / d) as i64);
        }
        let n_tokens = tokens.len() / d;
        Ok((
            matrix(py, weights, ids.len(), h),
            matrix(py, tokens, n_tokens, d),
            counts.into_pyarray(py),
        ))
    }

    /// Merges an opened directory's segments and drops deleted documents;
    /// returns whether anything changed. An index in memory has nothing
    /// to merge.
    #[pyo3(signature = (num_threads = -1))]
    fn compact(&self, py: Python<'_>, num_threads: i64) -> PyResult<bool> {
        py.detach(|| {
            pool::run(num_threads, || match &mut *self.write()? {
                Stored::Directory(index) => index.compact().map_err(index_error),
                Stored::Memory(_) => Ok(false),
            })
        })?
    }

    /// Query features `[n_queries, h]`: the sum of each query's token
    /// features divided by 32, as the original computes them. A query of
    /// no tokens gets zeros.
    #[pyo3(signature = (tokens, counts, num_threads = -1))]
    fn query_features<'py>(
        &self,
        py: Python<'py>,
        tokens: PyReadonlyArray2<'_, f32>,
        counts: PyReadonlyArray1<'_, i64>,
        num_threads: i64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (values, counts) = self.token_sets(&tokens, &counts, "")?;
        // The feature map takes any numbers; a query's NaN must not become
        // its features.
        if let Some(position) = values.iter().position(|v| !v.is_finite()) {
            return Err(value_error(format!(
                "tokens: value {position} is {} (not finite)",
                values[position]
            )));
        }
        let guard = self.read()?;
        let feature_map = feature_map(&guard);
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        offsets.push(0usize);
        for &count in &counts {
            offsets.push(offsets[offsets.len() - 1] + count);
        }
        let h = feature_map.output_dim();
        let features = py.detach(|| {
            pool::run(num_threads, || {
                let mut features = vec![0.0f32; counts.len() * h];
                feature_map.query_features(values, &offsets, &mut features, true);
                features
            })
        })?;
        Ok(matrix(py, features, counts.len(), h))
    }

    /// A copy of `W`, `[n_docs, h]`, row `i` for document `i`: an index in
    /// memory, or a directory of one segment without deletions.
    fn weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let guard = self.read()?;
        let weights = match &*guard {
            Stored::Memory(index) => index.weights(),
            Stored::Directory(index) if index.n_segments() == 1 && index.n_deleted() == 0 => {
                index.base().weights()
            }
            Stored::Directory(_) => {
                return Err(value_error(
                    "W of an index of several segments or with deletions: compact it first",
                ));
            }
        };
        let values = py.detach(|| weights.values().to_vec());
        Ok(matrix(py, values, weights.n_docs(), weights.width()))
    }

    /// Rows of `W` for documents without adding them (`[n, h]`), fitted as
    /// `add` would fit them. Needs an index in memory built in Rust (or
    /// loaded with `Index.load`).
    #[pyo3(signature = (tokens, counts, num_threads = -1))]
    fn fit_weights<'py>(
        &self,
        py: Python<'py>,
        tokens: PyReadonlyArray2<'_, f32>,
        counts: PyReadonlyArray1<'_, i64>,
        num_threads: i64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (values, counts) = self.token_sets(&tokens, &counts, "")?;
        let fitted = py.detach(|| {
            pool::run(num_threads, || match &mut *self.write()? {
                Stored::Memory(index) => index.fit_weights(values, &counts).map_err(index_error),
                Stored::Directory(_) => Err(value_error(
                    "fit_weights needs the index in memory: open it with Index.load",
                )),
            })
        })??;
        let (n, h) = (fitted.n_docs(), fitted.width());
        Ok(matrix(py, fitted.values().to_vec(), n, h))
    }

    /// Live documents.
    fn __len__(&self) -> PyResult<usize> {
        Ok(match &*self.read()? {
            Stored::Memory(index) => index.len(),
            Stored::Directory(index) => index.len(),
        })
    }

    /// Width of a token vector (`d`).
    #[getter]
    fn dim(&self) -> PyResult<usize> {
        Ok(feature_map(&*self.read()?).input_dim())
    }

    /// Width of the features and of `W`'s rows (`h`).
    #[getter]
    fn feature_dim(&self) -> PyResult<usize> {
        Ok(feature_map(&*self.read()?).output_dim())
    }

    /// The index directory an opened index commits to, or `None`.
    #[getter]
    fn path(&self) -> PyResult<Option<PathBuf>> {
        Ok(match &*self.read()? {
            Stored::Memory(_) => None,
            Stored::Directory(index) => Some(index.dir().to_path_buf()),
        })
    }

    /// Segments of an opened directory (1 for an index in memory).
    #[getter]
    fn n_segments(&self) -> PyResult<usize> {
        Ok(match &*self.read()? {
            Stored::Memory(_) => 1,
            Stored::Directory(index) => index.n_segments(),
        })
    }

    /// The build configuration as JSON (`None` for an imported index).
    fn build_config(&self) -> PyResult<Option<String>> {
        let guard = self.read()?;
        let config = match &*guard {
            Stored::Memory(index) => index.build_config().cloned(),
            Stored::Directory(index) => index.base().build_config().cloned(),
        };
        Ok(config.map(|config| serde_json::to_string(&config).expect("a build config serialises")))
    }
}

impl NativeIndex {
    /// Token sets for this index (`{prefix}tokens` `[n_tokens, d]` split by
    /// `{prefix}counts`): as wide as its tokens, the counts adding up to
    /// the rows. (The engine checks the values of what it keeps.)
    fn token_sets<'a>(
        &self,
        tokens: &'a PyReadonlyArray2<'_, f32>,
        counts: &PyReadonlyArray1<'_, i64>,
        prefix: &str,
    ) -> PyResult<(&'a [f32], Vec<usize>)> {
        let tokens = rows(tokens, &format!("{prefix}tokens"))?;
        let counts = self::counts(counts, &format!("{prefix}counts"))?;
        let dim = self.dim()?;
        if tokens.width != dim {
            return Err(value_error(format!(
                "{prefix}tokens are {} wide but the index's are {dim}",
                tokens.width
            )));
        }
        let n_rows = tokens.values.len() / dim;
        let total = counts
            .iter()
            .try_fold(0usize, |sum, &count| sum.checked_add(count));
        if total != Some(n_rows) {
            return Err(value_error(format!(
                "{prefix}counts do not add up to the {n_rows} rows of {prefix}tokens"
            )));
        }
        Ok((tokens.values, counts))
    }

    fn new(stored: Stored) -> Self {
        NativeIndex {
            stored: RwLock::new(stored),
        }
    }

    /// Shared access. A change that panicked half-way may have left the
    /// index inconsistent, so a poisoned index refuses every later call.
    fn read(&self) -> PyResult<RwLockReadGuard<'_, Stored>> {
        self.stored.read().map_err(|_| poisoned("index"))
    }

    /// Exclusive access, for changes.
    fn write(&self) -> PyResult<RwLockWriteGuard<'_, Stored>> {
        self.stored.write().map_err(|_| poisoned("index"))
    }
}

/// Rows of `W`, tokens and tokens per document, as NumPy arrays.
pub(crate) type StoredDocuments<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<i64>>,
);

/// Document ids as `u32`, refusing any that cannot be one.
fn document_ids(ids: &PyReadonlyArray1<'_, i64>) -> PyResult<Vec<u32>> {
    ids.as_array()
        .iter()
        .map(|&id| u32::try_from(id).map_err(|_| value_error(format!("{id} is not a document id"))))
        .collect()
}

/// One learned block as Python hands it over: the Linear weight
/// `[out, in]` and bias, the LayerNorm weight and bias.
type ModelLayer<'py> = (
    PyReadonlyArray2<'py, f32>,
    PyReadonlyArray1<'py, f32>,
    PyReadonlyArray1<'py, f32>,
    PyReadonlyArray1<'py, f32>,
);

/// The feature map of learned `layers` with `activation`, or of a random
/// `projection`.
fn feature_map_of(
    layers: &[ModelLayer<'_>],
    projection: Option<&PyReadonlyArray2<'_, f32>>,
    activation: &str,
) -> PyResult<FeatureMap> {
    let invalid = |error: lemur::mlp::MlpError| value_error(format!("feature map: {error}"));
    match (layers, projection) {
        ([], Some(projection)) => {
            let shape = projection.shape();
            let values = rows(projection, "projection")?.values.to_vec();
            FeatureMap::random(values, shape[0], shape[1]).map_err(invalid)
        }
        (layers, None) if !layers.is_empty() => {
            let activation = lemur::Activation::from_name(activation)
                .ok_or_else(|| value_error(format!("unknown activation {activation:?}")))?;
            let blocks = layers
                .iter()
                .enumerate()
                .map(|(i, (weight, bias, ln_weight, ln_bias))| {
                    let shape = weight.shape();
                    let vector = |array: &PyReadonlyArray1<'_, f32>| array.as_array().to_vec();
                    lemur::mlp::Block::new(
                        i,
                        rows(weight, "layer weight")?.values.to_vec(),
                        shape[1],
                        shape[0],
                        vector(bias),
                        vector(ln_weight),
                        vector(ln_bias),
                    )
                    .map_err(invalid)
                })
                .collect::<PyResult<Vec<_>>>()?;
            FeatureMap::mlp(blocks, activation).map_err(invalid)
        }
        _ => Err(value_error(
            "a model has either learned layers or a random projection",
        )),
    }
}

/// The feature map every segment shares.
fn feature_map(stored: &Stored) -> &FeatureMap {
    match stored {
        Stored::Memory(index) => index.feature_map(),
        Stored::Directory(index) => index.base().feature_map(),
    }
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
