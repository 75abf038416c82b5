//! The real text model for the facade's text tests.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use lemur::text::TextEncoder;

/// `LEMUR_TEXT_MODEL`, else the folder `cargo xtask fetch-models` fills.
pub fn model_dir() -> PathBuf {
    match std::env::var_os("LEMUR_TEXT_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
    }
}

/// The encoder, loaded once per test binary. A missing model is a failure:
/// CI fetches it before the tests run.
pub fn encoder() -> Arc<TextEncoder> {
    static ENCODER: OnceLock<Arc<TextEncoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            let dir = model_dir();
            Arc::new(TextEncoder::from_dir(&dir).unwrap_or_else(|e| {
                panic!(
                    "cannot load the model from {}: {e}\nrun `cargo xtask fetch-models` first",
                    dir.display()
                )
            }))
        })
        .clone()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-text-index-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
