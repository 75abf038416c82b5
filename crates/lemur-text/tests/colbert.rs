//! ColBERT models encoded exactly as PyLate encodes them: the PyLate
//! reference model (`tests/data/pylate-minilm`, made by its
//! `make_reference.py` with pylate 1.6.0, assembled into
//! `models/pylate-minilm` by `cargo xtask fetch-models` with PyLate's
//! backbone file verified by checksum) against PyLate's own ids and
//! vectors, a Stanford checkpoint made from the same weights, and bad
//! model directories.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{Reference, max_difference, pylate_dir};
use lemur_text::{TextEncoder, TextError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pylate-minilm")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-colbert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(name, shape, data)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Every tensor of a safetensors file: name, shape, bytes.
fn read_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect()
}

/// A copy of PyLate's model directory in `dir`, its weights hard-linked.
fn copy_pylate(dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Dense")).unwrap();
    for file in [
        "config.json",
        "config_sentence_transformers.json",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "1_Dense/config.json",
        "1_Dense/model.safetensors",
    ] {
        std::fs::copy(pylate_dir().join(file), dir.join(file)).unwrap();
    }
    let weights = dir.join("model.safetensors");
    if std::fs::hard_link(pylate_dir().join("model.safetensors"), &weights).is_err() {
        std::fs::copy(pylate_dir().join("model.safetensors"), &weights).unwrap();
    }
}

fn pylate() -> &'static TextEncoder {
    static ENCODER: OnceLock<TextEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        TextEncoder::from_dir(pylate_dir()).unwrap_or_else(|e| {
            panic!(
                "cannot load {}: {e}\nrun `cargo xtask fetch-models` first",
                pylate_dir().display()
            )
        })
    })
}

/// The ids the backbone sees for each text, as the encoder frames them.
fn framed_ids(encoder: &TextEncoder, texts: &[String], is_query: bool) -> Vec<Vec<u32>> {
    encoder.colbert_ids(texts, is_query).unwrap()
}

#[test]
fn pylate_settings_and_prefix_ids_load() {
    let settings = pylate()
        .colbert()
        .expect("a PyLate model is a ColBERT model");
    assert_eq!((settings.query_length, settings.document_length), (32, 180));
    assert_eq!(settings.query_prefix, "[Q] ");
    assert!(settings.do_query_expansion && !settings.attend_to_expansion_tokens);
    assert_eq!(pylate().token_dim(), 128);
    assert_eq!(pylate().tokenizer().token_to_id("[Q] "), Some(30522));
    // A plain sentence-transformers model is not a ColBERT model.
    assert!(common::encoder().colbert().is_none());
}

#[test]
fn queries_and_documents_match_pylate_at_any_batch_and_thread_count() {
    let reference = Reference::load(&fixture());
    let encoder = pylate();
    for (texts, is_query, tag) in [
        (reference.strings("queries").as_slice(), true, "q"),
        (reference.strings("documents").as_slice(), false, "d"),
    ] {
        // Ids: a query's are exactly PyLate's 32; a document's are
        // PyLate's before its batch padding.
        for (i, ids) in framed_ids(encoder, texts, is_query).iter().enumerate() {
            let want = reference.ids(&format!("{tag}{i}"));
            assert_eq!(ids[..], want[..ids.len()], "{tag}{i} ids");
            assert!(
                want[ids.len()..].iter().all(|&id| id == 103),
                "{tag}{i}: only [MASK] padding follows"
            );
        }
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // The whole batch at once, and one text at a time.
            let whole = pool.install(|| match is_query {
                true => encoder.encode_queries(texts).unwrap(),
                false => encoder.encode_documents(texts).unwrap(),
            });
            for (i, text) in texts.iter().enumerate() {
                let (rows, want) = reference.vectors(&format!("{tag}{i}"));
                let single = pool.install(|| match is_query {
                    true => encoder.encode_queries(&[text]).unwrap(),
                    false => encoder.encode_documents(&[text]).unwrap(),
                });
                for (found, index, how) in [(&whole, i, "batch"), (&single, 0, "alone")] {
                    assert_eq!(found.token_count(index), rows, "{tag}{i} rows ({how})");
                    let difference = max_difference(found, index, &want);
                    assert!(
                        difference < 1e-5,
                        "{tag}{i} ({how}, {threads} threads): max difference {difference}"
                    );
                }
            }
        }
    }
}

#[test]
fn maxsim_of_the_vectors_is_pylates() {
    let reference = Reference::load(&fixture());
    let queries = pylate()
        .encode_queries(reference.strings("queries").as_slice())
        .unwrap();
    let documents = pylate()
        .encode_documents(reference.strings("documents").as_slice())
        .unwrap();
    let maxsim = |q: &[f32], d: &[f32]| -> f32 {
        q.chunks_exact(128)
            .map(|x| {
                d.chunks_exact(128)
                    .map(|y| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum()
    };
    for q in 0..reference.strings("queries").len() {
        let (_, pylate_query) = reference.vectors(&format!("q{q}"));
        for d in 0..reference.strings("documents").len() {
            let (_, pylate_document) = reference.vectors(&format!("d{d}"));
            let ours = maxsim(queries.get(q), documents.get(d));
            let theirs = maxsim(&pylate_query, &pylate_document);
            assert!(
                (ours - theirs).abs() < 1e-4,
                "q{q} d{d}: {ours} vs {theirs}"
            );
        }
    }
}

/// A Stanford ColBERT checkpoint of the same model: `bert.`-prefixed
/// backbone and `linear.weight` in one file, `[unused0]`/`[unused1]`
/// markers, settings in `artifact.metadata`.
#[test]
fn a_stanford_checkpoint_encodes_as_pylate_loads_it() {
    let dir = scratch("stanford");
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture().join(file), dir.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["HF_ColBERT"]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("artifact.metadata"),
        r#"{"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 24,
            "doc_maxlen": 40, "attend_to_mask_tokens": false, "mask_punctuation": true, "dim": 128}"#,
    )
    .unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        read_tensors(&pylate_dir().join("model.safetensors"))
            .into_iter()
            .map(|(name, shape, data)| (format!("bert.{name}"), shape, data))
            .collect();
    tensors.extend(read_tensors(
        &pylate_dir().join("1_Dense/model.safetensors"),
    ));
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let stanford = TextEncoder::from_dir(&dir).unwrap();
    let settings = stanford.colbert().expect("a Stanford checkpoint");
    assert_eq!((settings.query_length, settings.document_length), (24, 40));

    let texts = Reference::load(&fixture()).strings("documents");
    let queries = stanford.colbert_ids(texts.as_slice(), true).unwrap();
    let documents = stanford.colbert_ids(texts.as_slice(), false).unwrap();
    let (unused0, unused1) = (1, 2);
    for (query, document) in queries.iter().zip(&documents) {
        assert_eq!(query.len(), 24);
        assert_eq!((query[0], query[1]), (101, unused0));
        assert_eq!((document[0], document[1]), (101, unused1));
        assert!(document.len() <= 40 && document.last() == Some(&102));
    }
    // The same backbone and projection as the PyLate model: with the same
    // ids the rows are the same, so a document that fits both lengths
    // differs from PyLate's encoding only by its marker. Checked through
    // the norms and widths here, and the rows' count.
    let vectors = stanford.encode_documents(texts.as_slice()).unwrap();
    assert_eq!(vectors.dim(), 128);
    // d2 is cut at 40 ids; 101, [unused1], 37 tokens, 102, minus the
    // punctuation among those 37.
    let punctuation = documents[2]
        .iter()
        .filter(|&&id| {
            [999..=1013, 1024..=1036, 1063..=1066]
                .iter()
                .any(|r| r.contains(&id))
        })
        .count();
    assert_eq!(vectors.token_count(2), documents[2].len() - punctuation);
    for row in vectors.tokens().chunks_exact(128) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

/// A copy of PyLate's model directory with one file replaced by `edit`'s
/// result.
fn broken(name: &str, file: &str, edit: impl Fn(&str) -> String) -> TextError {
    let dir = scratch(name);
    copy_pylate(&dir);
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    TextEncoder::from_dir(&dir).unwrap_err()
}

#[test]
fn bad_colbert_directories_name_the_file_and_field() {
    // (case, file, text replaced, replacement, what the error names)
    let cases = [
        (
            "in-features",
            "1_Dense/config.json",
            "\"in_features\": 384",
            "\"in_features\": 300",
            "in_features 300",
        ),
        (
            "activation",
            "1_Dense/config.json",
            "linear.Identity",
            "activation.Softmax2d",
            "activation_function",
        ),
        (
            "query-length",
            "config_sentence_transformers.json",
            "\"query_length\": 32",
            "\"query_length\": 0",
            "query_length 0",
        ),
        (
            "query-length-specials",
            "config_sentence_transformers.json",
            "\"query_length\": 32",
            "\"query_length\": 3",
            "query_length 3",
        ),
        (
            "prefix",
            "config_sentence_transformers.json",
            "\"[Q] \"",
            "\"[QUERY] \"",
            "query_prefix",
        ),
        (
            "negative",
            "config_sentence_transformers.json",
            "\"document_length\": 180",
            "\"document_length\": -5",
            "document_length -5",
        ),
    ];
    for (name, file, old, new, needle) in cases {
        let error = broken(name, file, |text| text.replace(old, new));
        let message = error.to_string();
        assert!(
            matches!(error, TextError::Config { .. }),
            "{name}: {error:?}"
        );
        assert!(message.contains(needle), "{name}: {message}");
        assert!(
            message.contains(file.rsplit('/').next().unwrap()),
            "{name}: {message}"
        );
    }
    // A Dense module without its weight.
    let dir = scratch("no-weight");
    copy_pylate(&dir);
    write_safetensors(&dir.join("1_Dense/model.safetensors"), &[]);
    let message = TextEncoder::from_dir(&dir).unwrap_err().to_string();
    assert!(
        message.contains("linear.weight") && message.contains("1_Dense"),
        "{message}"
    );
}
