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

/// A reference fixture: `texts.json` and the tensors of
/// `reference.safetensors` that its `make_reference.py` wrote.
pub struct Reference {
    texts: serde_json::Value,
    bytes: Vec<u8>,
}

impl Reference {
    /// The fixture in `dir`.
    pub fn load(dir: &std::path::Path) -> Reference {
        Reference {
            texts: serde_json::from_slice(&std::fs::read(dir.join("texts.json")).unwrap()).unwrap(),
            bytes: std::fs::read(dir.join("reference.safetensors")).unwrap(),
        }
    }

    /// The texts listed under `key` in `texts.json`.
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.texts[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }

    /// The f32 rows of tensor `name`: `(rows, values)`.
    pub fn vectors(&self, name: &str) -> (usize, Vec<f32>) {
        let tensors = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(name).unwrap();
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (view.shape()[0], values)
    }

    /// The int64 ids of tensor `{name}_ids`.
    pub fn ids(&self, name: &str) -> Vec<u32> {
        let tensors = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(&format!("{name}_ids")).unwrap();
        view.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    }
}

/// The largest difference between text `i`'s rows in `found` and `want`.
pub fn max_difference(found: &lemur_text::MultiVectors, i: usize, want: &[f32]) -> f32 {
    found
        .get(i)
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}
