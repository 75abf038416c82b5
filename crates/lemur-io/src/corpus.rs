//! Ragged token sets stored as `tokens.npy` `[N_tok, d]` + `counts.npy` `[m]`.

use std::io::{BufWriter, Write};
use std::path::Path;

use lemur_maxsim::MultiVectors;
use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;

use crate::array::{Source, check_rank};
use crate::error::{LoadError, LoadErrorKind};
use crate::npz::standard_vec;
use crate::store::{MappedF32, map_npy_f32};
use crate::write::write_atomically;

/// Loads a ragged set of token vectors (a corpus or a query batch).
///
/// `tokens` is a float32 `[N_tok, d]` `.npy`; `counts` is a 1-D `.npy` of
/// tokens per set in int32, int64, uint32 or uint64, adding up to `N_tok`.
/// Every set needs at least one token and every value must be finite.
pub fn load_multivectors(
    tokens: impl AsRef<Path>,
    counts: impl AsRef<Path>,
) -> Result<MultiVectors, LoadError> {
    let (tokens_path, counts_path) = (tokens.as_ref(), counts.as_ref());
    let tokens_key = file_key(tokens_path);
    let array = Source::Npy(tokens_path)
        .read_f32(&tokens_key, "[N_tok, d]", 2)
        .map_err(|kind| LoadError::new(tokens_path, kind))?;
    let dim = array.shape()[1];
    let values = standard_vec(array);

    let counts = read_counts(counts_path)?;
    // Shape and content errors are about the pair; report them on the
    // counts file, which is what usually disagrees.
    MultiVectors::new(values, dim, &counts)
        .map_err(|err| LoadError::new(counts_path, LoadErrorKind::Corpus(err)))
}

/// Reads a 1-D `.npy` of non-negative token counts (any integer dtype).
fn read_counts(counts_path: &Path) -> Result<Vec<usize>, LoadError> {
    let counts_key = file_key(counts_path);
    let raw = Source::Npy(counts_path)
        .read_int(&counts_key)
        .map_err(|kind| LoadError::new(counts_path, kind))?;
    check_rank(&counts_key, "[m]", raw.shape(), 1)
        .map_err(|kind| LoadError::new(counts_path, kind))?;
    let mut counts = Vec::with_capacity(raw.len());
    for (index, &count) in raw.iter().enumerate() {
        let count = usize::try_from(count).map_err(|_| {
            LoadError::new(
                counts_path,
                LoadErrorKind::OutOfRange {
                    key: counts_key.clone(),
                    index,
                    value: count,
                    valid: "0..=usize::MAX",
                },
            )
        })?;
        counts.push(count);
    }
    Ok(counts)
}

/// Memory-maps a ragged set of token vectors stored as [`load_multivectors`]
/// reads them, without reading the tokens: the header, size and alignment
/// of `tokens` are checked and `counts` is read and checked against the
/// rows, but the values are not scanned (a streamed build validates each
/// block of documents as it reads it). What a corpus larger than memory is
/// built from.
pub fn map_multivectors(
    tokens: impl AsRef<Path>,
    counts: impl AsRef<Path>,
) -> Result<MultiVectors<MappedF32>, LoadError> {
    let (tokens_path, counts_path) = (tokens.as_ref(), counts.as_ref());
    let (_, dim, values) = map_npy_f32(tokens_path, &file_key(tokens_path))?;
    let counts = read_counts(counts_path)?;
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    offsets.push(0usize);
    for &count in &counts {
        let end = offsets[offsets.len() - 1].checked_add(count);
        offsets.push(end.unwrap_or(usize::MAX));
    }
    MultiVectors::with_offsets(values, dim, offsets)
        .map_err(|err| LoadError::new(counts_path, LoadErrorKind::Corpus(err)))
}

/// Loads a float32 `[rows, cols]` matrix from a `.npy` file (e.g. a
/// sample of learn tokens), checked finite. Returns the values row-major
/// and the shape.
pub fn load_matrix(path: impl AsRef<Path>) -> Result<(Vec<f32>, usize, usize), LoadError> {
    let path = path.as_ref();
    let key = file_key(path);
    let array = Source::Npy(path)
        .read_f32(&key, "[rows, cols]", 2)
        .map_err(|kind| LoadError::new(path, kind))?;
    let (rows, cols) = (array.shape()[0], array.shape()[1]);
    Ok((standard_vec(array), rows, cols))
}

/// Writes a float32 `[rows, cols]` matrix (row-major `values`) as a `.npy`
/// file, atomically: the counterpart of [`load_matrix`].
///
/// # Panics
///
/// If `values` is not `rows * cols` long.
#[track_caller]
pub fn save_matrix(
    path: impl AsRef<Path>,
    values: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(), LoadError> {
    assert_eq!(values.len(), rows * cols, "values are not [rows, cols]");
    let matrix = Array2::from_shape_vec((rows, cols), values.to_vec()).expect("checked shape");
    write_npy(path.as_ref(), &matrix)
}

/// Writes a ragged set as `tokens.npy` (float32 `[N_tok, d]`) and
/// `counts.npy` (int64 `[m]`), each atomically.
pub fn save_multivectors<T: AsRef<[f32]>>(
    set: &MultiVectors<T>,
    tokens: impl AsRef<Path>,
    counts: impl AsRef<Path>,
) -> Result<(), LoadError> {
    let tokens = tokens.as_ref();
    let matrix = Array2::from_shape_vec((set.n_tokens(), set.dim()), set.tokens().to_vec())
        .expect("validated shape");
    write_npy(tokens, &matrix)?;
    let counts_array: Array1<i64> = set.counts().map(|c| c as i64).collect();
    write_npy(counts.as_ref(), &counts_array)
}

/// Writes one array as a `.npy` file, atomically.
pub fn write_npy<A: WriteNpyExt>(path: &Path, array: &A) -> Result<(), LoadError> {
    write_atomically(path, |file| {
        let mut writer = BufWriter::new(file);
        array
            .write_npy(&mut writer)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        writer.flush()
    })
    .map_err(|e| LoadError::new(path, e))
}

fn file_key(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
