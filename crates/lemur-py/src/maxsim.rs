//! Exact MaxSim reranking of given candidates: the engine of the original
//! LEMUR's `MaxSim.rerank_subset`, on lemur-rs's SIMD kernels.

use lemur::maxsim::Reranker;
use lemur::{Isa, MultiVectors};
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use rayon::prelude::*;

use crate::arrays::{IdsAndScores, counts, ids_and_scores, rows};
use crate::errors::value_error;
use crate::pool;

/// A corpus of documents (sets of token vectors), copied once, that
/// candidates are reranked against by exact MaxSim.
#[pyclass(frozen, module = "lemur_rs._lemur_rs", name = "MaxSim")]
pub(crate) struct NativeMaxSim {
    corpus: MultiVectors<Vec<f32>>,
    isa: Isa,
}

#[pymethods]
impl NativeMaxSim {
    /// Copies `tokens` (`[n_tokens, d]`) split into documents by `counts`.
    /// Every document needs at least one token and every value must be
    /// finite.
    #[new]
    fn new(
        py: Python<'_>,
        tokens: PyReadonlyArray2<'_, f32>,
        counts: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<Self> {
        let tokens = rows(&tokens, "train")?;
        let counts = self::counts(&counts, "train_counts")?;
        let (values, width) = (tokens.values, tokens.width);
        let corpus = py
            .detach(|| MultiVectors::new(values.to_vec(), width, &counts))
            .map_err(|error| value_error(format!("train: {error}")))?;
        Ok(NativeMaxSim {
            corpus,
            isa: Isa::detect(),
        })
    }

    /// Documents in the corpus.
    #[getter]
    fn n_docs(&self) -> usize {
        self.corpus.len()
    }

    /// Width of a token vector.
    #[getter]
    fn dim(&self) -> usize {
        self.corpus.dim()
    }

    /// The `k` best of each query's candidates by exact MaxSim, best first,
    /// ties to the lower id: `(ids, scores)`, both `[n_queries, k]`, with
    /// `-1` and `-inf` past the last candidate. Candidate ids of `-1` are
    /// skipped; a duplicated id is scored (and may be returned) twice, as
    /// the original does.
    #[pyo3(signature = (queries, query_counts, k, candidates, num_threads = -1))]
    fn rerank<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'_, f32>,
        query_counts: PyReadonlyArray1<'_, i64>,
        k: usize,
        candidates: PyReadonlyArray2<'_, i64>,
        num_threads: i64,
    ) -> PyResult<IdsAndScores<'py>> {
        let queries = rows(&queries, "queries")?;
        let query_counts = counts(&query_counts, "query_counts")?;
        if queries.width != self.corpus.dim() {
            return Err(value_error(format!(
                "queries are {} wide but the corpus's tokens are {}",
                queries.width,
                self.corpus.dim()
            )));
        }
        let queries = MultiVectors::new(queries.values, queries.width, &query_counts)
            .map_err(|error| value_error(format!("queries: {error}")))?;
        let candidates = self.candidate_lists(&candidates, queries.len())?;
        let n_queries = queries.len();
        let hits: Vec<_> = py.detach(|| {
            pool::run(num_threads, || {
                (0..n_queries)
                    .into_par_iter()
                    .map_init(
                        || Reranker::new(self.isa),
                        |reranker, q| {
                            reranker.rerank(queries.get(q), &self.corpus, &candidates[q], k)
                        },
                    )
                    .collect()
            })
        })?;
        Ok(ids_and_scores(py, &hits, k, |hit| (hit.id, hit.score)))
    }
}

impl NativeMaxSim {
    /// Each query's candidates as document ids, `-1` dropped, every other
    /// id checked against the corpus.
    fn candidate_lists(
        &self,
        candidates: &PyReadonlyArray2<'_, i64>,
        n_queries: usize,
    ) -> PyResult<Vec<Vec<u32>>> {
        let candidates = candidates.as_array();
        if candidates.nrows() != n_queries {
            return Err(value_error(format!(
                "candidates has {} rows but there are {n_queries} queries",
                candidates.nrows()
            )));
        }
        let n_docs = self.corpus.len();
        candidates
            .outer_iter()
            .enumerate()
            .map(|(q, row)| {
                row.iter()
                    .filter(|&&id| id != -1)
                    .map(|&id| match u32::try_from(id) {
                        Ok(doc) if (doc as usize) < n_docs => Ok(doc),
                        _ => Err(value_error(format!(
                            "candidate {id} of query {q} is not a document id (0..{n_docs}, or -1 for none)"
                        ))),
                    })
                    .collect()
            })
            .collect()
    }
}
