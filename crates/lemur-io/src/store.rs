//! A crash-safe directory of named `.npy` arrays with a JSON manifest: the
//! container of the on-disk index format (see `docs/FORMAT.md`).
//!
//! ```text
//! IDX/CURRENT              the name of the live generation, e.g. "gen-000002"
//! IDX/gen-000002/manifest.json
//! IDX/gen-000002/<array>.npy
//! ```
//!
//! A commit writes a whole new generation directory, syncs it, then
//! replaces `CURRENT` atomically (temporary file + rename), and only then
//! removes older generations. A crash at any point leaves `CURRENT` naming
//! a complete generation: the old one or the new one.

// Memory-mapping a file is the one `unsafe` operation here (see `map_f32`).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{LoadError, LoadErrorKind};
use crate::write::{sync_dir, write_atomically};

/// The index format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";

/// One array as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayEntry {
    /// File name inside the generation directory.
    pub file: String,
    /// Element type: `"f32"`, `"u64"`, `"u32"`, `"u8"` or `"i8"`
    /// (little-endian).
    pub dtype: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Size of the whole `.npy` file in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole `.npy` file.
    pub crc32: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format_version: u32,
    arrays: BTreeMap<String, ArrayEntry>,
    metadata: serde_json::Value,
}

/// The `.npy` v1 header for a little-endian C-order array, padded so the
/// data starts on a 64-byte boundary (as numpy writes it).
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    npy_header_of_length(descr, shape, 0)
}

/// The header's dictionary, unpadded.
fn npy_dict(descr: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}")
}

/// [`npy_header`] padded to at least `length` bytes (a multiple of 64):
/// a streamed array reserves the header of the longest shape it could
/// have and writes its real one into that space at the end.
fn npy_header_of_length(descr: &str, shape: &[usize], length: usize) -> Vec<u8> {
    let mut dict = npy_dict(descr, shape);
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.next_multiple_of(64).max(length);
    dict.push_str(&" ".repeat(total - unpadded));
    dict.push('\n');
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header
}

/// The header `bytes` start with when it describes `descr` and `shape`
/// (with any padding); otherwise the unpadded header, which then does not
/// match.
fn stored_header(bytes: &[u8], descr: &str, shape: &[usize]) -> Vec<u8> {
    let natural = npy_header(descr, shape);
    let Some(length) = bytes
        .get(8..10)
        .map(|b| 10 + usize::from(u16::from_le_bytes([b[0], b[1]])))
    else {
        return natural;
    };
    if length > natural.len() && length.is_multiple_of(64) && length <= bytes.len() {
        let padded = npy_header_of_length(descr, shape, length);
        if bytes.starts_with(&padded) {
            return padded;
        }
    }
    natural
}

fn descr(dtype: &str) -> Option<(&'static str, usize)> {
    match dtype {
        "f32" => Some(("<f4", 4)),
        "u64" => Some(("<u8", 8)),
        "u32" => Some(("<u4", 4)),
        "u8" => Some(("|u1", 1)),
        "i8" => Some(("|i1", 1)),
        _ => None,
    }
}

fn store_error(path: &Path, kind: LoadErrorKind) -> LoadError {
    LoadError::new(path, kind)
}

/// Writes a new generation of an array directory.
#[derive(Debug)]
pub struct StoreWriter {
    root: PathBuf,
    generation: String,
    arrays: BTreeMap<String, ArrayEntry>,
}

impl StoreWriter {
    /// Starts a new generation under `root` (created if missing). Fails if
    /// `root` exists, is not empty, and is not an array directory, so user
    /// files are never overwritten.
    pub fn new(root: impl AsRef<Path>) -> Result<StoreWriter, LoadError> {
        let root = root.as_ref().to_path_buf();
        let io = |e| store_error(&root, LoadErrorKind::Io(e));
        fs::create_dir_all(&root).map_err(io)?;
        let mut highest = 0u64;
        let mut foreign = false;
        for entry in fs::read_dir(&root).map_err(io)? {
            let name = entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            match name
                .strip_prefix("gen-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(n) => highest = highest.max(n),
                None if name == CURRENT || name.starts_with(".CURRENT.tmp") => {}
                None => foreign = true,
            }
        }
        if foreign && !root.join(CURRENT).is_file() {
            return Err(store_error(
                &root,
                LoadErrorKind::Manifest(
                    "the directory exists and is not an index; refusing to overwrite it".into(),
                ),
            ));
        }
        let generation = format!("gen-{:06}", highest + 1);
        fs::create_dir(root.join(&generation)).map_err(io)?;
        Ok(StoreWriter {
            root,
            generation,
            arrays: BTreeMap::new(),
        })
    }

    fn write(
        &mut self,
        name: &str,
        dtype: &str,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<(), LoadError> {
        let file = format!("{name}.npy");
        let path = self.root.join(&self.generation).join(&file);
        let (descr, _) = descr(dtype).expect("known dtype");
        let header = npy_header(descr, shape);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(bytes);
        let write = || -> std::io::Result<()> {
            let mut out = BufWriter::new(File::create(&path)?);
            out.write_all(&header)?;
            out.write_all(bytes)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write().map_err(|e| store_error(&path, LoadErrorKind::Io(e)))?;
        self.arrays.insert(
            name.to_owned(),
            ArrayEntry {
                file,
                dtype: dtype.to_owned(),
                shape: shape.to_vec(),
                bytes: (header.len() + bytes.len()) as u64,
                crc32: crc.finalize(),
            },
        );
        Ok(())
    }

    /// Adds an f32 array.
    ///
    /// # Panics
    ///
    /// If `values` does not have `shape`'s number of elements.
    #[track_caller]
    pub fn f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<(), LoadError> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{name}: values do not match the shape"
        );
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(name, "f32", shape, &bytes)
    }

    /// Adds a u64 array.
    ///
    /// # Panics
    ///
    /// If `values` does not have `shape`'s number of elements.
    #[track_caller]
    pub fn u64(&mut self, name: &str, shape: &[usize], values: &[u64]) -> Result<(), LoadError> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{name}: values do not match the shape"
        );
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(name, "u64", shape, &bytes)
    }

    /// Adds a u32 array.
    ///
    /// # Panics
    ///
    /// If `values` does not have `shape`'s number of elements.
    #[track_caller]
    pub fn u32(&mut self, name: &str, shape: &[usize], values: &[u32]) -> Result<(), LoadError> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{name}: values do not match the shape"
        );
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(name, "u32", shape, &bytes)
    }

    /// Adds a u8 array.
    ///
    /// # Panics
    ///
    /// If `values` does not have `shape`'s number of elements.
    #[track_caller]
    pub fn u8(&mut self, name: &str, shape: &[usize], values: &[u8]) -> Result<(), LoadError> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{name}: values do not match the shape"
        );
        self.write(name, "u8", shape, values)
    }

    /// Adds an i8 array.
    ///
    /// # Panics
    ///
    /// If `values` does not have `shape`'s number of elements.
    #[track_caller]
    pub fn i8(&mut self, name: &str, shape: &[usize], values: &[i8]) -> Result<(), LoadError> {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "{name}: values do not match the shape"
        );
        let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        self.write(name, "i8", shape, &bytes)
    }

    /// Carries array `name` of `store` (an earlier generation of the same
    /// directory) into this generation unchanged, as a hard link where the
    /// file system allows one and as a synced copy otherwise: a commit that
    /// changes a few arrays of a large index never rewrites the others.
    /// The committed files of a generation are never written again, so
    /// both generations may share them.
    pub fn carry(&mut self, store: &Store, name: &str) -> Result<(), LoadError> {
        let entry = store.entry(name)?.clone();
        let from = store.dir().join(&entry.file);
        let to = self.root.join(&self.generation).join(&entry.file);
        let link_or_copy = || -> std::io::Result<()> {
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to)?;
                File::open(&to)?.sync_all()?;
            }
            Ok(())
        };
        link_or_copy().map_err(|e| store_error(&to, LoadErrorKind::Io(e)))?;
        self.arrays.insert(name.to_owned(), entry);
        Ok(())
    }

    /// Starts an f32 array of rows shaped `row_shape`, written a block of
    /// rows at a time ([`ArrayStream::append_f32`]) for arrays too large to
    /// hold in memory, and recorded by [`StoreWriter::finish`]. Several
    /// streams may be open at once.
    pub fn stream_f32(
        &mut self,
        name: &str,
        row_shape: &[usize],
    ) -> Result<ArrayStream, LoadError> {
        let file = format!("{name}.npy");
        let path = self.root.join(&self.generation).join(&file);
        let (descr, _) = descr("f32").expect("known dtype");
        let longest: Vec<usize> = std::iter::once(usize::MAX)
            .chain(row_shape.iter().copied())
            .collect();
        let reserved = npy_header(descr, &longest);
        let out = File::create(&path)
            .map(|file| BufWriter::with_capacity(1 << 20, file))
            .and_then(|mut out| out.write_all(&reserved).map(|()| out))
            .map_err(|e| store_error(&path, LoadErrorKind::Io(e)))?;
        Ok(ArrayStream {
            name: name.to_owned(),
            file,
            path,
            row_shape: row_shape.to_vec(),
            row_len: row_shape.iter().product(),
            header_len: reserved.len(),
            out,
            crc: crc32fast::Hasher::new(),
            n_values: 0,
        })
    }

    /// Writes a stream's header, syncs it and records it as an array.
    pub fn finish(&mut self, stream: ArrayStream) -> Result<(), LoadError> {
        let ArrayStream {
            name,
            file,
            path,
            row_shape,
            row_len,
            header_len,
            out,
            crc,
            n_values,
        } = stream;
        let rows = n_values.checked_div(row_len).unwrap_or(0);
        let shape: Vec<usize> = std::iter::once(rows).chain(row_shape).collect();
        let (descr, width) = descr("f32").expect("known dtype");
        let header = npy_header_of_length(descr, &shape, header_len);
        debug_assert_eq!(header.len(), header_len);
        let mut whole = crc32fast::Hasher::new();
        whole.update(&header);
        whole.combine(&crc);
        let finish = || -> std::io::Result<()> {
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.sync_all()
        };
        finish().map_err(|e| store_error(&path, LoadErrorKind::Io(e)))?;
        self.arrays.insert(
            name,
            ArrayEntry {
                file,
                dtype: "f32".to_owned(),
                shape,
                bytes: (header_len + n_values * width) as u64,
                crc32: whole.finalize(),
            },
        );
        Ok(())
    }

    /// Writes the manifest, syncs the generation, makes it current and
    /// removes older generations.
    pub fn commit(self, metadata: serde_json::Value) -> Result<(), LoadError> {
        let dir = self.root.join(&self.generation);
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            arrays: self.arrays,
            metadata,
        };
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        let manifest_path = dir.join(MANIFEST);
        write_atomically(&manifest_path, |file| file.write_all(&text))
            .map_err(|e| store_error(&manifest_path, LoadErrorKind::Io(e)))?;
        sync_dir(&dir).map_err(|e| store_error(&dir, LoadErrorKind::Io(e)))?;
        let current = self.root.join(CURRENT);
        let generation = self.generation.clone();
        write_atomically(&current, |file| {
            file.write_all(format!("{generation}\n").as_bytes())
        })
        .map_err(|e| store_error(&current, LoadErrorKind::Io(e)))?;
        // Older generations are garbage now; failing to remove one loses
        // nothing, so errors are ignored.
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("gen-") && name != self.generation {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// Memory-maps a standalone float32 `[rows, cols]` `.npy` file (any
/// header version; little-endian, C order), checking its header, size and
/// alignment before use but not its values: the corpus of a streamed build,
/// whose blocks are validated as they are read. `key` names the array in
/// errors.
pub(crate) fn map_npy_f32(path: &Path, key: &str) -> Result<(usize, usize, MappedF32), LoadError> {
    let fail = |kind| store_error(path, kind);
    let corrupt = |reason: &str| {
        fail(LoadErrorKind::Corrupt {
            key: key.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let file = File::open(path).map_err(|e| fail(LoadErrorKind::Io(e)))?;
    // SAFETY: as in `Store::map_f32`: the map is read-only and private to
    // this process, and every access is checked against the size found
    // here. A file another process truncates while it is mapped would
    // break that; the caller's corpus file is assumed to stay as it is
    // for the build.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| fail(LoadErrorKind::Io(e)))?;
    let header = parse_npy_header(&map).map_err(|reason| corrupt(&reason))?;
    if header.descr != "<f4" && !(cfg!(target_endian = "little") && header.descr == "=f4") {
        return Err(fail(LoadErrorKind::Dtype {
            key: key.to_owned(),
            expected: "float32 (little-endian)",
            found: header.descr,
        }));
    }
    if header.fortran_order {
        return Err(corrupt("Fortran-ordered arrays are not supported"));
    }
    let [rows, cols] = header.shape[..] else {
        return Err(fail(LoadErrorKind::Shape {
            key: key.to_owned(),
            expected: "[rows, cols]".into(),
            found: header.shape,
        }));
    };
    let len = rows
        .checked_mul(cols)
        .filter(|n| {
            n.checked_mul(4)
                .is_some_and(|bytes| header.offset + bytes == map.len())
        })
        .ok_or_else(|| corrupt("the file size does not match the header's shape"))?;
    if !(map.as_ptr() as usize + header.offset).is_multiple_of(std::mem::align_of::<f32>()) {
        return Err(corrupt("misaligned data"));
    }
    Ok((
        rows,
        cols,
        MappedF32 {
            map,
            file,
            offset: header.offset,
            len,
        },
    ))
}

/// What a `.npy` header says.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    /// Where the data starts.
    offset: usize,
}

/// Parses the magic, version and dictionary of a `.npy` header.
fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err("not a .npy file".into());
    }
    let (length, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        version => return Err(format!("unsupported .npy version {version}")),
    };
    let dict = bytes
        .get(start..start + length)
        .and_then(|d| std::str::from_utf8(d).ok())
        .ok_or("truncated or non-text header")?;
    let value_after = |key: &str| -> Result<&str, String> {
        let at = dict
            .find(&format!("'{key}'"))
            .ok_or(format!("the header has no {key}"))?;
        let rest = &dict[at + key.len() + 2..];
        Ok(rest
            .trim_start()
            .strip_prefix(':')
            .unwrap_or(rest)
            .trim_start())
    };
    let descr = value_after("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("descr is not a string")?
        .to_owned();
    let fortran_order = value_after("fortran_order")?.starts_with("True");
    let shape = value_after("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("shape is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("shape: {e}"))?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        offset: start + length,
    })
}

/// An f32 array being written a block of rows at a time
/// ([`StoreWriter::stream_f32`]).
#[derive(Debug)]
pub struct ArrayStream {
    name: String,
    file: String,
    path: PathBuf,
    row_shape: Vec<usize>,
    row_len: usize,
    header_len: usize,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    n_values: usize,
}

impl ArrayStream {
    /// Appends whole rows.
    ///
    /// # Panics
    ///
    /// If `values` is not whole rows.
    #[track_caller]
    pub fn append_f32(&mut self, values: &[f32]) -> Result<(), LoadError> {
        assert!(
            self.row_len == 0 || values.len().is_multiple_of(self.row_len),
            "{}: values are not whole rows",
            self.name
        );
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.crc.update(&bytes);
        self.n_values += values.len();
        self.out
            .write_all(&bytes)
            .map_err(|e| store_error(&self.path, LoadErrorKind::Io(e)))
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.n_values.checked_div(self.row_len).unwrap_or(0)
    }
}

/// An f32 array memory-mapped from an index directory, validated before
/// use (header, size, alignment).
#[derive(Debug)]
pub struct MappedF32 {
    map: Mmap,
    /// The mapped file, for positional reads ([`MappedF32::read_into`]).
    file: File,
    offset: usize,
    len: usize,
}

impl MappedF32 {
    /// Asks the kernel to start reading values `first..first + len` into
    /// the page cache in the background (`MADV_WILLNEED`), so a later
    /// [`MappedF32::read_into`] of them finds them there: a query asks for
    /// all the rows it will read at once, and the disk serves them side by
    /// side. Only advice: out-of-range values and errors are ignored, and
    /// elsewhere than on Unix it does nothing.
    pub fn will_need(&self, first: usize, len: usize) {
        #[cfg(unix)]
        if first.checked_add(len).is_some_and(|end| end <= self.len) {
            let _ =
                self.map
                    .advise_range(memmap2::Advice::WillNeed, self.offset + 4 * first, 4 * len);
        }
    }

    /// Copies values `first..first + out.len()` into `out` with one
    /// positional read of the file rather than through the map: one I/O
    /// request however many pages the range spans when it is not cached,
    /// where the map would fault page by page, and the pages are not
    /// mapped into the process (a few scattered rows read per query stay
    /// in the page cache, which the kernel can reclaim). Elsewhere than on
    /// Unix this copies from the map.
    pub fn read_into(&self, first: usize, out: &mut [f32]) -> std::io::Result<()> {
        if first
            .checked_add(out.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "values outside the array",
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            // The store is little-endian, as `as_ref` assumes too.
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
            self.file
                .read_exact_at(bytes, (self.offset + 4 * first) as u64)
        }
        #[cfg(not(unix))]
        {
            out.copy_from_slice(&self.as_ref()[first..first + out.len()]);
            Ok(())
        }
    }
}

impl AsRef<[f32]> for MappedF32 {
    fn as_ref(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[self.offset..self.offset + 4 * self.len])
    }
}

/// An opened, validated array directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
}

impl Store {
    /// Opens the current generation of `root`: reads `CURRENT` and the
    /// manifest, checks the format version, and checks that the directory
    /// holds exactly the manifest's files with the recorded sizes. Array
    /// contents are checked when read.
    pub fn open(root: impl AsRef<Path>) -> Result<Store, LoadError> {
        let root = root.as_ref();
        let current_path = root.join(CURRENT);
        let current = fs::read_to_string(&current_path)
            .map_err(|e| store_error(&current_path, LoadErrorKind::Io(e)))?;
        let generation = current.trim();
        if !generation.starts_with("gen-")
            || generation.contains(['/', '\\'])
            || generation.contains("..")
        {
            return Err(store_error(
                &current_path,
                LoadErrorKind::Manifest(format!("CURRENT names {generation:?}, not a generation")),
            ));
        }
        let dir = root.join(generation);
        let manifest_path = dir.join(MANIFEST);
        let text = fs::read(&manifest_path)
            .map_err(|e| store_error(&manifest_path, LoadErrorKind::Io(e)))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| store_error(&manifest_path, LoadErrorKind::Manifest(e.to_string())))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(store_error(
                &manifest_path,
                LoadErrorKind::UnsupportedVersion {
                    found: manifest.format_version,
                    supported: FORMAT_VERSION,
                },
            ));
        }
        let mut expected: BTreeMap<&str, (&str, &ArrayEntry)> = BTreeMap::new();
        for (name, entry) in &manifest.arrays {
            if entry.file.contains(['/', '\\'])
                || entry.file == MANIFEST
                || descr(&entry.dtype).is_none()
            {
                return Err(store_error(
                    &manifest_path,
                    LoadErrorKind::Manifest(format!("bad entry for array {name:?}")),
                ));
            }
            expected.insert(entry.file.as_str(), (name.as_str(), entry));
        }
        let io = |e| store_error(&dir, LoadErrorKind::Io(e));
        let mut seen = 0;
        for entry in fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MANIFEST {
                continue;
            }
            let Some((key, array)) = expected.get(name.as_str()) else {
                return Err(store_error(
                    &entry.path(),
                    LoadErrorKind::UnexpectedFile { name },
                ));
            };
            let size = entry.metadata().map_err(io)?.len();
            if size != array.bytes {
                return Err(store_error(
                    &entry.path(),
                    LoadErrorKind::Corrupt {
                        key: (*key).to_owned(),
                        reason: format!(
                            "{size} bytes on disk, {} recorded (truncated or overwritten)",
                            array.bytes
                        ),
                    },
                ));
            }
            seen += 1;
        }
        if seen != expected.len() {
            let missing = expected
                .iter()
                .find(|(file, _)| !dir.join(file).is_file())
                .map(|(_, (key, _))| (*key).to_owned());
            return Err(store_error(
                &dir,
                LoadErrorKind::MissingArray {
                    key: missing.unwrap_or_default(),
                },
            ));
        }
        Ok(Store { dir, manifest })
    }

    /// The generation directory being read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata the writer committed.
    pub fn metadata(&self) -> &serde_json::Value {
        &self.manifest.metadata
    }

    /// Names of every array.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.manifest.arrays.keys().map(String::as_str)
    }

    /// The manifest entry of `name`.
    pub fn entry(&self, name: &str) -> Result<&ArrayEntry, LoadError> {
        self.manifest.arrays.get(name).ok_or_else(|| {
            store_error(
                &self.dir,
                LoadErrorKind::MissingArray {
                    key: name.to_owned(),
                },
            )
        })
    }

    /// The entry, its path, and the byte offset of its data after checking
    /// the header against the manifest.
    fn check(
        &self,
        name: &str,
        dtype: &str,
        bytes: &[u8],
    ) -> Result<(&ArrayEntry, usize), LoadError> {
        let entry = self.entry(name)?;
        let path = self.dir.join(&entry.file);
        if entry.dtype != dtype {
            return Err(store_error(
                &path,
                LoadErrorKind::Dtype {
                    key: name.to_owned(),
                    expected: match dtype {
                        "f32" => "f32",
                        "u32" => "u32",
                        "u8" => "u8",
                        "i8" => "i8",
                        _ => "u64",
                    },
                    found: entry.dtype.clone(),
                },
            ));
        }
        let (descr, width) = descr(dtype).expect("known dtype");
        let header = stored_header(bytes, descr, &entry.shape);
        let data_bytes = entry
            .shape
            .iter()
            .try_fold(width, |acc, &d| acc.checked_mul(d));
        let corrupt = |reason: &str| {
            store_error(
                &path,
                LoadErrorKind::Corrupt {
                    key: name.to_owned(),
                    reason: reason.to_owned(),
                },
            )
        };
        match data_bytes {
            Some(n) if bytes.len() == header.len() + n && bytes.starts_with(&header) => {
                Ok((entry, header.len()))
            }
            Some(_) if !bytes.starts_with(&header) => {
                Err(corrupt("the .npy header does not match the manifest"))
            }
            _ => Err(corrupt("the file size does not match the manifest's shape")),
        }
    }

    fn verify_crc(&self, name: &str, entry: &ArrayEntry, bytes: &[u8]) -> Result<(), LoadError> {
        let found = crc32fast::hash(bytes);
        if found != entry.crc32 {
            return Err(store_error(
                &self.dir.join(&entry.file),
                LoadErrorKind::Checksum {
                    key: name.to_owned(),
                    expected: entry.crc32,
                    found,
                },
            ));
        }
        Ok(())
    }

    fn read_bytes(&self, name: &str) -> Result<Vec<u8>, LoadError> {
        let entry = self.entry(name)?;
        let path = self.dir.join(&entry.file);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| store_error(&path, LoadErrorKind::Io(e)))?;
        Ok(bytes)
    }

    /// Reads an f32 array into memory, verifying its checksum.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        let bytes = self.read_bytes(name)?;
        let (entry, offset) = self.check(name, "f32", &bytes)?;
        self.verify_crc(name, entry, &bytes)?;
        let values = bytes[offset..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((entry.shape.clone(), values))
    }

    /// Reads a u64 array into memory, verifying its checksum.
    pub fn read_u64(&self, name: &str) -> Result<(Vec<usize>, Vec<u64>), LoadError> {
        let bytes = self.read_bytes(name)?;
        let (entry, offset) = self.check(name, "u64", &bytes)?;
        self.verify_crc(name, entry, &bytes)?;
        let values = bytes[offset..]
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        Ok((entry.shape.clone(), values))
    }

    /// Reads a u32 array into memory, verifying its checksum.
    pub fn read_u32(&self, name: &str) -> Result<(Vec<usize>, Vec<u32>), LoadError> {
        let bytes = self.read_bytes(name)?;
        let (entry, offset) = self.check(name, "u32", &bytes)?;
        self.verify_crc(name, entry, &bytes)?;
        let values = bytes[offset..]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((entry.shape.clone(), values))
    }

    /// Reads a u8 array into memory, verifying its checksum.
    pub fn read_u8(&self, name: &str) -> Result<(Vec<usize>, Vec<u8>), LoadError> {
        let bytes = self.read_bytes(name)?;
        let (entry, offset) = self.check(name, "u8", &bytes)?;
        self.verify_crc(name, entry, &bytes)?;
        Ok((entry.shape.clone(), bytes[offset..].to_vec()))
    }

    /// Reads an i8 array into memory, verifying its checksum.
    pub fn read_i8(&self, name: &str) -> Result<(Vec<usize>, Vec<i8>), LoadError> {
        let bytes = self.read_bytes(name)?;
        let (entry, offset) = self.check(name, "i8", &bytes)?;
        self.verify_crc(name, entry, &bytes)?;
        Ok((
            entry.shape.clone(),
            bytes[offset..].iter().map(|&b| b as i8).collect(),
        ))
    }

    /// Memory-maps an f32 array without copying it. The header, size and
    /// alignment are checked before use, so a corrupt file is an error and
    /// never undefined behaviour; the checksum, which needs every byte, is
    /// checked only with `verify` (opening stays O(1) in the array size).
    pub fn map_f32(&self, name: &str, verify: bool) -> Result<(Vec<usize>, MappedF32), LoadError> {
        let entry = self.entry(name)?;
        let path = self.dir.join(&entry.file);
        let file = File::open(&path).map_err(|e| store_error(&path, LoadErrorKind::Io(e)))?;
        // SAFETY: the map is read-only and private to this process. Another
        // process truncating or rewriting the file while it is mapped would
        // break that; index generations are never modified after commit
        // (a new generation is written instead), which is the contract of
        // this format.
        let map =
            unsafe { Mmap::map(&file) }.map_err(|e| store_error(&path, LoadErrorKind::Io(e)))?;
        let (entry, offset) = self.check(name, "f32", &map)?;
        if verify {
            self.verify_crc(name, entry, &map)?;
        }
        if !(map.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<f32>()) {
            return Err(store_error(
                &path,
                LoadErrorKind::Corrupt {
                    key: name.to_owned(),
                    reason: "misaligned data".into(),
                },
            ));
        }
        let len = entry.shape.iter().product();
        Ok((
            entry.shape.clone(),
            MappedF32 {
                map,
                file,
                offset,
                len,
            },
        ))
    }

    /// Verifies the checksum of every array.
    pub fn verify(&self) -> Result<(), LoadError> {
        for (name, entry) in &self.manifest.arrays {
            let bytes = self.read_bytes(name)?;
            self.verify_crc(name, entry, &bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lemur-io-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A streamed array reads, maps and checksums like one written whole,
    /// and is a valid `.npy` for other readers.
    #[test]
    fn a_streamed_array_reads_back_like_a_whole_one() {
        let dir = scratch("stream");
        let values: Vec<f32> = (0..3 * 7 * 5).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut writer = StoreWriter::new(&dir).unwrap();
        let mut stream = writer.stream_f32("streamed", &[5]).unwrap();
        let mut other = writer.stream_f32("empty", &[4]).unwrap();
        for block in values.chunks(7 * 5) {
            stream.append_f32(block).unwrap();
        }
        other.append_f32(&[]).unwrap();
        assert_eq!(stream.rows(), 21);
        writer.finish(stream).unwrap();
        writer.finish(other).unwrap();
        writer.f32("whole", &[21, 5], &values).unwrap();
        writer.commit(serde_json::json!({})).unwrap();

        let store = Store::open(&dir).unwrap();
        store.verify().unwrap();
        let (shape, read) = store.read_f32("streamed").unwrap();
        assert_eq!((shape, read), (vec![21, 5], values.clone()));
        let (_, mapped) = store.map_f32("streamed", true).unwrap();
        assert_eq!(mapped.as_ref(), values.as_slice());
        let mut part = vec![0.0; 7];
        mapped.read_into(40, &mut part).unwrap();
        assert_eq!(part, values[40..47]);
        assert!(mapped.read_into(values.len() - 3, &mut part).is_err());
        assert_eq!(store.read_f32("empty").unwrap(), (vec![0, 4], vec![]));
        let file = store.dir().join("streamed.npy");
        let (matrix, rows, cols) = crate::load_matrix(&file).unwrap();
        assert_eq!((matrix, rows, cols), (values, 21, 5));

        // A flipped bit in the data fails the checksum.
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(matches!(
            store.read_f32("streamed").unwrap_err().kind,
            LoadErrorKind::Checksum { .. }
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
