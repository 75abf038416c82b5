//! The encoder against the independent f32 reference of all-MiniLM-L6-v2
//! (`tests/data/minilm-reference.json`, copied from the project's shared
//! reference data): token ids exactly, every embedding dimension within
//! 1e-4, and the published values.

mod common;

use common::{dot, encoder, norm};
use lemur_text::EncodeOptions;
use serde_json::Value;

fn reference() -> Value {
    let text = include_str!("data/minilm-reference.json");
    serde_json::from_str(text).unwrap()
}

fn sentences() -> Vec<String> {
    reference()["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn token_ids_match_exactly() {
    let reference = reference();
    for sentence in reference["sentences"].as_array().unwrap() {
        let text = sentence["text"].as_str().unwrap();
        let expected: Vec<u32> = sentence["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = encoder().tokenizer().ids_with_special_tokens(text).unwrap();
        assert_eq!(ids, expected, "{text}");
    }
}

#[test]
fn embeddings_match_within_1e4() {
    let reference = reference();
    let embeddings = encoder()
        .encode(&sentences(), &EncodeOptions::default())
        .unwrap();
    assert_eq!(embeddings.dim(), 384);
    let mut worst = 0.0f32;
    for (i, sentence) in reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let expected = floats(&sentence["embedding"]);
        assert_eq!(expected.len(), 384);
        for (a, b) in embeddings.row(i).iter().zip(&expected) {
            worst = worst.max((a - b).abs());
        }
    }
    println!("largest embedding difference: {worst:e}");
    assert!(worst <= 1e-4, "largest difference {worst}");

    // The cosine matrix, and the published numbers.
    let cosine = reference["cosine"].as_array().unwrap();
    for (i, row) in cosine.iter().enumerate() {
        for (j, expected) in floats(row).iter().enumerate() {
            let got = dot(embeddings.row(i), embeddings.row(j));
            assert!(
                (got - expected).abs() <= 1e-4,
                "cosine[{i}][{j}] {got} vs {expected}"
            );
        }
    }
    let published = [0.067657, 0.063496, 0.048713, 0.079305];
    for (got, want) in embeddings.row(0).iter().zip(published) {
        assert!((got - want).abs() <= 1e-5, "{got} vs {want}");
    }
    assert!((dot(embeddings.row(0), embeddings.row(1)) - 0.4046).abs() < 1e-4);
}

#[test]
fn batching_and_threads_do_not_change_results() {
    let texts = sentences();
    let together = encoder().encode(&texts, &EncodeOptions::default()).unwrap();
    let one_at_a_time = EncodeOptions {
        batch_size: 1,
        ..EncodeOptions::default()
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let alone = pool.install(|| encoder().encode(&texts, &one_at_a_time).unwrap());
        for (a, b) in together.as_slice().iter().zip(alone.as_slice()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b} on {threads} threads");
        }
    }
}

#[test]
fn matryoshka_prefixes_are_renormalised() {
    let texts = sentences();
    let full = encoder().encode(&texts, &EncodeOptions::default()).unwrap();
    for dim in [64, 128, 256, 384] {
        let options = EncodeOptions {
            output_dim: Some(dim),
            ..EncodeOptions::default()
        };
        let short = encoder().encode(&texts, &options).unwrap();
        assert_eq!((short.len(), short.dim()), (texts.len(), dim));
        for i in 0..texts.len() {
            assert!((norm(short.row(i)) - 1.0).abs() < 1e-5);
            let prefix = &full.row(i)[..dim];
            let scale = norm(prefix);
            for (a, b) in short.row(i).iter().zip(prefix) {
                assert!((a - b / scale).abs() < 1e-6);
            }
        }
    }
}
