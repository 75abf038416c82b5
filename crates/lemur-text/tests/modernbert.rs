//! The ModernBERT backbone against transformers, and a PyLate ColBERT
//! model on it against PyLate: the fixture `tests/data/pylate-modernbert`
//! (made by its `make_reference.py` with transformers 5.3.0, pylate 1.6.0
//! and torch 2.11.0) is a small random ModernBERT with a byte-level BPE
//! tokenizer, global and sliding-window layers and a window shorter than
//! its longer texts, so every part of the architecture shows in the
//! outputs.

mod common;

use std::path::PathBuf;

use common::{Reference, max_difference};
use lemur_text::{Architecture, TextEncoder, TokenOptions};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pylate-modernbert")
}

/// Each row scaled to unit length.
fn normalized(values: &[f32], dim: usize) -> Vec<f32> {
    values
        .chunks_exact(dim)
        .flat_map(|row| {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter().map(move |v| v / norm)
        })
        .collect()
}

#[test]
fn the_config_reads_as_modern_bert_with_its_layer_types() {
    let encoder = TextEncoder::from_dir(fixture().join("base")).unwrap();
    let Architecture::ModernBert(settings) = &encoder.config().architecture else {
        panic!("not ModernBERT: {:?}", encoder.config());
    };
    assert_eq!(settings.global_layers, [true, false, false, true]);
    assert_eq!(settings.window, 8);
    assert!(encoder.colbert().is_none());
}

#[test]
fn backbone_states_match_transformers() {
    let reference = Reference::load(&fixture());
    let encoder = TextEncoder::from_dir(fixture().join("base")).unwrap();
    let texts = reference.strings("backbone");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let found = pool.install(|| {
            encoder
                .encode_tokens(&texts, &TokenOptions::default())
                .unwrap()
        });
        for (i, text) in texts.iter().enumerate() {
            let ids = encoder.tokenizer().ids_with_special_tokens(text).unwrap();
            assert_eq!(ids, reference.ids(&format!("h{i}")), "h{i} ids");
            let (rows, states) = reference.vectors(&format!("h{i}"));
            assert_eq!(found.token_count(i), rows, "h{i} rows");
            // `encode_tokens` gives unit rows: transformers' states
            // normalised. The longest text runs past the window, so its
            // sliding layers differ from global ones.
            let want = normalized(&states, 64);
            let difference = max_difference(&found, i, &want);
            assert!(difference < 2e-5, "h{i}: {difference} ({threads} threads)");
        }
    }
}

#[test]
fn colbert_queries_and_documents_match_pylate() {
    let reference = Reference::load(&fixture());
    let encoder = TextEncoder::from_dir(fixture().join("model")).unwrap();
    let settings = encoder.colbert().expect("a PyLate model");
    assert_eq!((settings.query_length, settings.document_length), (24, 96));
    assert_eq!(encoder.token_dim(), 32);
    let mask = encoder.tokenizer().token_to_id("[MASK]").unwrap();
    for (key, is_query, tag) in [("queries", true, "q"), ("documents", false, "d")] {
        let texts = reference.strings(key);
        for (i, ids) in encoder
            .colbert_ids(&texts, is_query)
            .unwrap()
            .iter()
            .enumerate()
        {
            let want = reference.ids(&format!("{tag}{i}"));
            assert_eq!(ids[..], want[..ids.len()], "{tag}{i} ids");
            assert!(want[ids.len()..].iter().all(|&id| id == mask));
        }
        let found = match is_query {
            true => encoder.encode_queries(&texts).unwrap(),
            false => encoder.encode_documents(&texts).unwrap(),
        };
        for i in 0..texts.len() {
            let (rows, want) = reference.vectors(&format!("{tag}{i}"));
            assert_eq!(found.token_count(i), rows, "{tag}{i} rows");
            let difference = max_difference(&found, i, &want);
            assert!(difference < 2e-5, "{tag}{i}: {difference}");
        }
    }
}
