//! Borrowing the arrays the Python layer hands over, and building the ones
//! it gets back. The Python layer has already converted every input to
//! C-contiguous `float32` or `int64`; what is checked here is what a
//! direct caller of the native module could still get wrong.

use numpy::ndarray::Array2;
use numpy::prelude::*;
use numpy::{Element, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::errors::value_error;

/// A row-major `[rows, width]` matrix of `float32` borrowed from NumPy.
pub(crate) struct Rows<'a> {
    /// The values, row after row.
    pub(crate) values: &'a [f32],
    /// Values per row.
    pub(crate) width: usize,
}

/// Borrows `array` (named `name` in errors) as rows.
pub(crate) fn rows<'a>(array: &'a PyReadonlyArray2<'_, f32>, name: &str) -> PyResult<Rows<'a>> {
    let width = array.shape()[1];
    let values = array
        .as_slice()
        .map_err(|_| value_error(format!("{name} must be C-contiguous")))?;
    Ok(Rows { values, width })
}

/// Token counts as `usize`, refusing negative ones.
pub(crate) fn counts(array: &PyReadonlyArray1<'_, i64>, name: &str) -> PyResult<Vec<usize>> {
    let values = array.as_array();
    values
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            usize::try_from(count)
                .map_err(|_| value_error(format!("{name}[{i}] is {count}; counts are >= 0")))
        })
        .collect()
}

/// A new `[rows, cols]` NumPy array holding `values` (row-major).
pub(crate) fn matrix<'py, T: Element>(
    py: Python<'py>,
    values: Vec<T>,
    rows: usize,
    cols: usize,
) -> Bound<'py, PyArray2<T>> {
    Array2::from_shape_vec((rows, cols), values)
        .expect("values hold rows * cols elements")
        .into_pyarray(py)
}

/// Ids (`-1` past the last hit) and scores (`-inf` there) of a batch,
/// both `[n_queries, k]`.
pub(crate) type IdsAndScores<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// Each query's hits (`doc_and_score` reads one) as padded arrays.
pub(crate) fn ids_and_scores<'py, H>(
    py: Python<'py>,
    hits: &[Vec<H>],
    k: usize,
    doc_and_score: impl Fn(&H) -> (u32, f32),
) -> IdsAndScores<'py> {
    let mut ids = vec![-1i64; hits.len() * k];
    let mut scores = vec![f32::NEG_INFINITY; hits.len() * k];
    for (q, hits) in hits.iter().enumerate() {
        for (j, hit) in hits.iter().take(k).enumerate() {
            let (doc, score) = doc_and_score(hit);
            ids[q * k + j] = i64::from(doc);
            scores[q * k + j] = score;
        }
    }
    (
        matrix(py, ids, hits.len(), k),
        matrix(py, scores, hits.len(), k),
    )
}
