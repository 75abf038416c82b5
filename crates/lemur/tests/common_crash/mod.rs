//! What a crash part-way through a commit leaves on disk, for the crash
//! tests of saves and of segmented changes.

use std::fs;
use std::path::{Path, PathBuf};

/// Copies `from`'s files (a committed generation) into `to` in name
/// order, stopping after `steps` files and truncating the last one
/// half-way: what a crash part-way through writing that generation leaves.
pub(crate) fn partial_copy(from: &Path, to: &Path, steps: usize) {
    fs::create_dir_all(to).unwrap();
    let mut files: Vec<PathBuf> = fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (i, file) in files.iter().enumerate().take(steps) {
        let bytes = fs::read(file).unwrap();
        let keep = if i + 1 == steps {
            bytes.len() / 2
        } else {
            bytes.len()
        };
        fs::write(to.join(file.file_name().unwrap()), &bytes[..keep]).unwrap();
    }
}
