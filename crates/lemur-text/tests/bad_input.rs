//! Bad inputs get defined results or typed errors, never a panic: odd
//! texts, bad options, and every way a model directory can be broken. A
//! tiny random BERT (any BERT-shaped config must load) stands in for the
//! broken models.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{encoder, model_dir, norm};
use lemur_text::{EncodeOptions, TextEncoder, TextError, TokenOptions};
use safetensors::{Dtype, tensor::TensorView};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-text-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn empty_whitespace_and_huge_texts_have_defined_results() {
    let huge = "x".repeat(1_000_000);
    let texts = ["", "   \n\t  ", huge.as_str()];
    let embeddings = encoder().encode(&texts, &EncodeOptions::default()).unwrap();
    for i in 0..texts.len() {
        assert!((norm(embeddings.row(i)) - 1.0).abs() < 1e-5);
    }
    // Both are [CLS] [SEP] to the model.
    assert_eq!(embeddings.row(0), embeddings.row(1));
    let vectors = encoder()
        .encode_tokens(&texts, &TokenOptions::default())
        .unwrap();
    assert_eq!(vectors.token_count(0), 2);
    assert_eq!(vectors.token_count(1), 2);
    // One word longer than the word-piece limit is one [UNK].
    assert_eq!(vectors.token_count(2), 3);
    assert!(
        encoder()
            .encode::<&str>(&[], &EncodeOptions::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn out_of_range_options_are_typed_errors() {
    for output_dim in [0, 385] {
        let options = EncodeOptions {
            output_dim: Some(output_dim),
            ..EncodeOptions::default()
        };
        let error = encoder().encode(&["a"], &options).unwrap_err();
        assert!(matches!(error, TextError::InvalidOption(_)), "{error}");
    }
    let zero_batch = EncodeOptions {
        batch_size: 0,
        ..EncodeOptions::default()
    };
    assert!(matches!(
        encoder().encode(&["a"], &zero_batch),
        Err(TextError::InvalidOption(_))
    ));
    for query_length in [1, 100_000] {
        let options = TokenOptions {
            query_length: Some(query_length),
            ..TokenOptions::default()
        };
        assert!(matches!(
            encoder().encode_tokens(&["a"], &options),
            Err(TextError::InvalidOption(_))
        ));
    }
}

/// A random BERT with 2 layers, width 8 and 2 heads over the real
/// vocabulary, as named tensors.
fn tiny_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (vocab, h, ffn) = (30522, 8, 16);
    let mut state = 0x1234_5678u64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    let mut tensors = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![vocab, h],
        ),
        ("embeddings.position_embeddings.weight".into(), vec![64, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for layer in 0..2 {
        for (name, shape) in [
            ("attention.self.query", vec![h, h]),
            ("attention.self.key", vec![h, h]),
            ("attention.self.value", vec![h, h]),
            ("attention.output.dense", vec![h, h]),
            ("intermediate.dense", vec![ffn, h]),
            ("output.dense", vec![h, ffn]),
        ] {
            let out = shape[0];
            tensors.push((format!("encoder.layer.{layer}.{name}.weight"), shape));
            tensors.push((format!("encoder.layer.{layer}.{name}.bias"), vec![out]));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            tensors.push((format!("encoder.layer.{layer}.{name}.weight"), vec![h]));
            tensors.push((format!("encoder.layer.{layer}.{name}.bias"), vec![h]));
        }
    }
    tensors
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, shape, random(n))
        })
        .collect()
}

const TINY_CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 8,
    "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16,
    "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    "hidden_act": "gelu"}"#;

fn write_model(dir: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype) {
    std::fs::write(dir.join("config.json"), TINY_CONFIG).unwrap();
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            let (dtype, shape) = if dtype == Dtype::F32 {
                (Dtype::F32, shape.clone())
            } else {
                // The same bytes as twice as many 16-bit values.
                let mut shape = shape.clone();
                *shape.last_mut().unwrap() *= 2;
                (dtype, shape)
            };
            (name.clone(), TensorView::new(dtype, shape, data).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn any_bert_shaped_config_loads_and_runs() {
    let dir = scratch("tiny");
    write_model(&dir, &tiny_tensors(), Dtype::F32);
    let tiny = TextEncoder::from_dir(&dir).unwrap();
    assert_eq!((tiny.hidden_size(), tiny.max_seq_len()), (8, 64));
    // A text of ~200 tokens needs several 64-token windows.
    let text = common::words(200, 5).join(" ");
    let vectors = tiny
        .encode_tokens(&[&text], &TokenOptions::default())
        .unwrap();
    assert_eq!(vectors.token_count(0), 202);
    let embeddings = tiny
        .encode(&[text.as_str(), "short"], &EncodeOptions::default())
        .unwrap();
    assert_eq!(embeddings.dim(), 8);
    assert!((norm(embeddings.row(0)) - 1.0).abs() < 1e-5);
}

#[test]
fn broken_model_directories_are_typed_errors() {
    let missing = TextEncoder::from_dir("/nonexistent/lemur-model").unwrap_err();
    assert!(matches!(missing, TextError::Io { .. }), "{missing}");

    let dir = scratch("broken");
    write_model(&dir, &tiny_tensors(), Dtype::F32);
    let expect = |check: fn(&TextError) -> bool, what: &str| {
        let error = TextEncoder::from_dir(&dir).unwrap_err();
        assert!(check(&error), "{what}: got {error}");
    };

    // A wrong tensor shape.
    let mut tensors = tiny_tensors();
    tensors[5].1 = vec![4, 16];
    write_model(&dir, &tensors, Dtype::F32);
    expect(|e| matches!(e, TextError::TensorShape { .. }), "shape");

    // A missing tensor.
    let mut tensors = tiny_tensors();
    tensors.retain(|(name, _, _)| !name.contains("layer.1.output.dense.bias"));
    write_model(&dir, &tensors, Dtype::F32);
    expect(
        |e| matches!(e, TextError::MissingTensor { .. }),
        "missing tensor",
    );

    // A dtype the encoder cannot read (the same bytes as 16-bit integers).
    write_model(&dir, &tiny_tensors(), Dtype::I16);
    expect(
        |e| {
            matches!(
                e,
                TextError::TensorShape { .. } | TextError::TensorDtype { .. }
            )
        },
        "dtype",
    );

    // NaN weights.
    let mut tensors = tiny_tensors();
    tensors[3].2[0] = f32::NAN;
    write_model(&dir, &tensors, Dtype::F32);
    expect(|e| matches!(e, TextError::NonFiniteTensor { .. }), "nan");

    // A truncated weights file.
    write_model(&dir, &tiny_tensors(), Dtype::F32);
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    expect(|e| matches!(e, TextError::Safetensors { .. }), "truncated");

    // A config that does not parse, and one that is not BERT-shaped.
    write_model(&dir, &tiny_tensors(), Dtype::F32);
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 8").unwrap();
    expect(|e| matches!(e, TextError::Config { .. }), "garbled config");
    std::fs::write(
        dir.join("config.json"),
        TINY_CONFIG.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"),
    )
    .unwrap();
    expect(|e| matches!(e, TextError::Config { .. }), "heads");

    // A garbled tokenizer, and a missing one.
    write_model(&dir, &tiny_tensors(), Dtype::F32);
    std::fs::write(dir.join("tokenizer.json"), "not json").unwrap();
    expect(|e| matches!(e, TextError::Tokenizer { .. }), "tokenizer");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    expect(|e| matches!(e, TextError::Io { .. }), "no tokenizer");
    let _ = std::fs::remove_dir_all(&dir);
}
