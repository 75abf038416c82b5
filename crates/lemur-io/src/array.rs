//! Typed array reads with errors that name the key, the dtype and shape.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement};
use zip::result::ZipError;

use crate::error::LoadErrorKind;

/// Where arrays come from: a key in an open `.npz`, or a `.npy` file.
pub(crate) enum Source<'a> {
    Npz(&'a mut NpzReader<BufReader<File>>),
    Npy(&'a Path),
}

/// Why a typed read failed, before it becomes a [`LoadErrorKind`].
pub(crate) enum ReadFailure {
    WrongDtype(String),
    Other(LoadErrorKind),
}

impl Source<'_> {
    /// Reads `key` as an array of `T`, any rank.
    pub(crate) fn read<T: ReadableElement>(&mut self, key: &str) -> Result<ArrayD<T>, ReadFailure> {
        match self {
            Source::Npz(reader) => reader
                .by_name::<OwnedRepr<T>, IxDyn>(key)
                .map_err(|err| classify_npz(key, err)),
            Source::Npy(path) => {
                let file =
                    File::open(path).map_err(|e| ReadFailure::Other(LoadErrorKind::Io(e)))?;
                ArrayD::<T>::read_npy(BufReader::new(file)).map_err(|err| classify_npy(key, err))
            }
        }
    }

    /// Reads `key` as f32 (little- or big-endian `f4`) and checks the rank.
    pub(crate) fn read_f32(
        &mut self,
        key: &str,
        expected: &str,
        rank: usize,
    ) -> Result<ArrayD<f32>, LoadErrorKind> {
        let array = self
            .read::<f32>(key)
            .map_err(|failure| dtype_error(key, "float32", failure))?;
        check_rank(key, expected, array.shape(), rank)?;
        check_finite(key, array.iter().copied())?;
        Ok(array)
    }

    /// Reads `key` as any integer dtype numpy writes for counts and sizes
    /// (int32, int64, uint32, uint64), widened to i128.
    pub(crate) fn read_int(&mut self, key: &str) -> Result<ArrayD<i128>, LoadErrorKind> {
        const EXPECTED: &str = "int32, int64, uint32 or uint64";
        macro_rules! attempt {
            ($ty:ty) => {
                match self.read::<$ty>(key) {
                    Ok(a) => return Ok(a.mapv(|v| v as i128)),
                    Err(ReadFailure::Other(kind)) => return Err(kind),
                    Err(ReadFailure::WrongDtype(found)) => found,
                }
            };
        }
        attempt!(i64);
        attempt!(i32);
        attempt!(u64);
        let found = attempt!(u32);
        Err(LoadErrorKind::Dtype {
            key: key.to_owned(),
            expected: EXPECTED,
            found,
        })
    }

    /// Reads a scalar (0-d or one-element) float of any float width.
    pub(crate) fn read_scalar_f64(&mut self, key: &str) -> Result<f64, LoadErrorKind> {
        let values: ArrayD<f64> = match self.read::<f64>(key) {
            Ok(a) => a,
            Err(ReadFailure::Other(kind)) => return Err(kind),
            Err(ReadFailure::WrongDtype(_)) => match self.read::<f32>(key) {
                Ok(a) => a.mapv(f64::from),
                Err(failure) => return Err(dtype_error(key, "float32 or float64", failure)),
            },
        };
        let value = scalar(key, values.shape(), values.iter().copied())?;
        check_finite(key, std::iter::once(value as f32))?;
        Ok(value)
    }
}

/// The single value of a 0-d or `[1]` array.
pub(crate) fn scalar<T: Copy>(
    key: &str,
    shape: &[usize],
    mut values: impl Iterator<Item = T>,
) -> Result<T, LoadErrorKind> {
    if shape.iter().product::<usize>() != 1 || shape.len() > 1 {
        return Err(LoadErrorKind::Shape {
            key: key.to_owned(),
            expected: "[] (a scalar)".to_owned(),
            found: shape.to_vec(),
        });
    }
    Ok(values.next().expect("one element"))
}

pub(crate) fn check_rank(
    key: &str,
    expected: &str,
    shape: &[usize],
    rank: usize,
) -> Result<(), LoadErrorKind> {
    if shape.len() != rank {
        return Err(shape_error(key, expected, shape));
    }
    Ok(())
}

pub(crate) fn shape_error(key: &str, expected: &str, shape: &[usize]) -> LoadErrorKind {
    LoadErrorKind::Shape {
        key: key.to_owned(),
        expected: expected.to_owned(),
        found: shape.to_vec(),
    }
}

pub(crate) fn check_finite(
    key: &str,
    values: impl Iterator<Item = f32>,
) -> Result<(), LoadErrorKind> {
    for (index, value) in values.enumerate() {
        if !value.is_finite() {
            return Err(LoadErrorKind::NonFinite {
                key: key.to_owned(),
                index,
                value: value as f64,
            });
        }
    }
    Ok(())
}

fn dtype_error(key: &str, expected: &'static str, failure: ReadFailure) -> LoadErrorKind {
    match failure {
        ReadFailure::WrongDtype(found) => LoadErrorKind::Dtype {
            key: key.to_owned(),
            expected,
            found,
        },
        ReadFailure::Other(kind) => kind,
    }
}

fn classify_npz(key: &str, err: ReadNpzError) -> ReadFailure {
    match err {
        ReadNpzError::Zip(ZipError::FileNotFound) => {
            ReadFailure::Other(LoadErrorKind::MissingArray {
                key: key.to_owned(),
            })
        }
        ReadNpzError::Zip(ZipError::Io(io)) => ReadFailure::Other(LoadErrorKind::Io(io)),
        ReadNpzError::Zip(other) => ReadFailure::Other(corrupt(key, other)),
        ReadNpzError::Npy(npy) => classify_npy(key, npy),
    }
}

fn classify_npy(key: &str, err: ReadNpyError) -> ReadFailure {
    match err {
        ReadNpyError::WrongDescriptor(descr) => ReadFailure::WrongDtype(descr.to_string()),
        ReadNpyError::Io(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
            ReadFailure::Other(LoadErrorKind::Io(io))
        }
        ReadNpyError::MissingData => ReadFailure::Other(corrupt(
            key,
            "truncated: the data is shorter than its header says",
        )),
        other => ReadFailure::Other(corrupt(key, other)),
    }
}

fn corrupt(key: &str, reason: impl std::fmt::Display) -> LoadErrorKind {
    LoadErrorKind::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}
