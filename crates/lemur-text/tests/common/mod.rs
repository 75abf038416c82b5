//! The real model, shared by the text tests.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::OnceLock;

use lemur_text::TextEncoder;

/// `LEMUR_TEXT_MODEL`, else the folder `cargo xtask fetch-models` fills.
pub fn model_dir() -> PathBuf {
    match std::env::var_os("LEMUR_TEXT_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
    }
}

/// `LEMUR_PYLATE_MODEL`, else the PyLate reference model `cargo xtask
/// fetch-models` assembles.
pub fn pylate_dir() -> &'static std::path::Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("LEMUR_PYLATE_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/pylate-minilm"),
    })
}

/// The encoder, loaded once per test binary. A missing model is a failure,
/// not a skip: CI fetches it before the tests run.
pub fn encoder() -> &'static TextEncoder {
    static ENCODER: OnceLock<TextEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let dir = model_dir();
        TextEncoder::from_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot load the model from {}: {e}\nrun `cargo xtask fetch-models` first",
                dir.display()
            )
        })
    })
}

/// The tokenizer library itself, with padding and truncation removed, as
/// an independent count of tokens.
pub fn raw_tokenizer() -> tokenizers::Tokenizer {
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).unwrap();
    tokenizer
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Deterministic filler words, each a single word piece of the MiniLM
/// vocabulary, so that token positions are known in advance.
pub fn words(n: usize, seed: u64) -> Vec<&'static str> {
    const WORDS: [&str; 32] = [
        "river", "mountain", "house", "green", "quickly", "table", "music", "garden", "window",
        "market", "winter", "summer", "yellow", "doctor", "engine", "forest", "letter", "silver",
        "animal", "bridge", "camera", "dinner", "island", "kitchen", "little", "morning", "number",
        "orange", "people", "school", "travel", "village",
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            WORDS[(state % WORDS.len() as u64) as usize]
        })
        .collect()
}
