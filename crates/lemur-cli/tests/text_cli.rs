//! `lemur text encode | index | search` with the real binary and the real
//! MiniLM model (fetched by `cargo xtask fetch-models`).

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok};
use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;

fn model_dir() -> PathBuf {
    match std::env::var_os("LEMUR_TEXT_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-text-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

const DOCS: &str = r#"{"id": "mars", "text": "Mars is the fourth planet from the Sun and has two moons."}
{"id": "bread", "text": "To bake bread, mix flour, water, yeast and salt."}

{"id": 7, "text": "In chess, the knight moves in an L shape."}
{"id": "tea", "text": "Green tea is brewed from unoxidised leaves."}
"#;

#[test]
fn encode_writes_embeddings_and_token_vectors() {
    let dir = scratch("encode");
    let input = dir.join("texts.jsonl");
    std::fs::write(
        &input,
        "\"This is an example sentence\"\n{\"text\": \"Each sentence is converted\"}\n",
    )
    .unwrap();
    let model = model_dir();
    let emb = dir.join("emb.npy");
    ok(&[
        "text",
        "encode",
        "--quiet",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--out",
        s(&emb),
    ]);
    let matrix: Array2<f32> = read_npy(&emb).unwrap();
    assert_eq!(matrix.dim(), (2, 384));
    // The published all-MiniLM-L6-v2 values.
    assert!((matrix[[0, 0]] - 0.067657).abs() < 1e-5);
    let cosine: f32 = matrix.row(0).dot(&matrix.row(1));
    assert!((cosine - 0.4046).abs() < 1e-4);

    let short = dir.join("short.npy");
    ok(&[
        "text",
        "encode",
        "-q",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--out",
        s(&short),
        "--output-dim",
        "64",
    ]);
    let matrix: Array2<f32> = read_npy(&short).unwrap();
    assert_eq!(matrix.dim(), (2, 64));

    let tokens = dir.join("tokens.npy");
    let counts = dir.join("counts.npy");
    ok(&[
        "text",
        "encode",
        "-q",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--out",
        s(&tokens),
        "--tokens",
        "--counts-out",
        s(&counts),
    ]);
    let counts: Array1<i64> = read_npy(&counts).unwrap();
    assert_eq!(counts.to_vec(), vec![7, 6]);
    let tokens: Array2<f32> = read_npy(&tokens).unwrap();
    assert_eq!(tokens.dim(), (13, 384));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn index_then_search_writes_a_run_file() {
    let dir = scratch("index");
    let docs = dir.join("docs.jsonl");
    std::fs::write(&docs, DOCS).unwrap();
    let queries = dir.join("queries.jsonl");
    std::fs::write(
        &queries,
        "{\"text\": \"how does the knight move\"}\n\"moons of Mars\"\n",
    )
    .unwrap();
    let index = dir.join("idx");
    let model = model_dir();
    let summary = ok(&[
        "text",
        "index",
        "--json",
        "--model",
        s(&model),
        "--docs",
        s(&docs),
        "--out",
        s(&index),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["stats"]["documents"], 4);

    // The model directory is recorded in the index, so --model is optional.
    let run = dir.join("run.tsv");
    ok(&[
        "text",
        "search",
        s(&index),
        "-q",
        "--queries",
        s(&queries),
        "-k",
        "2",
        "--out",
        s(&run),
    ]);
    let lines: Vec<Vec<String>> = std::fs::read_to_string(&run)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!((lines[0][0].as_str(), lines[0][1].as_str()), ("1", "7"));
    assert_eq!((lines[2][0].as_str(), lines[2][1].as_str()), ("2", "mars"));
    assert!(lines[0][2].parse::<f32>().unwrap() >= lines[1][2].parse::<f32>().unwrap());

    let stdout = ok(&[
        "text",
        "search",
        s(&index),
        "-q",
        "--model",
        s(&model),
        "--queries",
        s(&queries),
        "-k",
        "1",
    ]);
    assert_eq!(stdout.lines().count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_text_inputs_fail_with_one_line() {
    let dir = scratch("bad");
    let model = model_dir();
    let docs = dir.join("docs.jsonl");
    std::fs::write(&docs, DOCS).unwrap();
    let out = dir.join("idx");
    let error = fails(&[
        "text",
        "index",
        "--model",
        s(&dir),
        "--docs",
        s(&docs),
        "--out",
        s(&out),
    ]);
    assert!(error.contains("cannot load model"), "{error}");
    let no_id = dir.join("no_id.jsonl");
    std::fs::write(&no_id, "{\"text\": \"no id here\"}\n").unwrap();
    let error = fails(&[
        "text",
        "index",
        "-q",
        "--model",
        s(&model),
        "--docs",
        s(&no_id),
        "--out",
        s(&out),
    ]);
    assert!(error.contains("no_id.jsonl:1"), "{error}");
    let garbled = dir.join("garbled.jsonl");
    std::fs::write(&garbled, "{\"id\": \"a\", \"text\": \"fine\"}\n{not json\n").unwrap();
    let error = fails(&[
        "text",
        "index",
        "-q",
        "--model",
        s(&model),
        "--docs",
        s(&garbled),
        "--out",
        s(&out),
    ]);
    assert!(error.contains("garbled.jsonl:2"), "{error}");
    let empty = dir.join("empty.jsonl");
    // A document without text does not stop the batch: it is indexed as
    // its special tokens, and counted.
    std::fs::write(
        &empty,
        "{\"id\": \"a\", \"text\": \"  \"}\n{\"id\": \"b\", \"text\": \"words\"}\n",
    )
    .unwrap();
    let indexed = ok(&[
        "--json",
        "text",
        "index",
        "--model",
        s(&model),
        "--docs",
        s(&empty),
        "--out",
        s(&out),
    ]);
    let indexed: serde_json::Value = serde_json::from_str(&indexed).unwrap();
    assert_eq!(indexed["empty_documents"], 1);
    assert_eq!(indexed["stats"]["documents"], 2);
    // Nor does a query without text: it gets no hits and is named.
    let queries = dir.join("queries.jsonl");
    std::fs::write(
        &queries,
        "{\"text\": \"words\"}\n{\"text\": \"\"}\n\"more words\"\n",
    )
    .unwrap();
    let searched = ok(&[
        "--json",
        "text",
        "search",
        s(&out),
        "--queries",
        s(&queries),
        "-k",
        "1",
    ]);
    let searched: serde_json::Value = serde_json::from_str(&searched).unwrap();
    assert_eq!(searched["queries"], 2);
    assert_eq!(searched["empty_query_lines"], serde_json::json!([2]));
    let lines: Vec<u64> = searched["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["query_line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 3]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// PyLate's reference model and outputs (`cargo xtask fetch-models`
/// assembles the model; the outputs are committed beside its fixture).
fn pylate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/pylate-minilm")
}

fn pylate_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lemur-text/tests/data/pylate-minilm")
}

/// PyLate's vectors of reference text `name` (`q0`, `d3`, ...), `[rows, 128]`.
fn pylate_vectors(name: &str) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(pylate_fixture().join("reference.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values.chunks_exact(128).map(<[f32]>::to_vec).collect()
}

fn maxsim(query: &[Vec<f32>], document: &[Vec<f32>]) -> f32 {
    query
        .iter()
        .map(|x| {
            document
                .iter()
                .map(|y| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum()
}

#[test]
fn a_colbert_model_indexes_and_searches_end_to_end_as_pylate_scores() {
    let dir = scratch("colbert");
    let texts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pylate_fixture().join("texts.json")).unwrap())
            .unwrap();
    let lines = |key: &str, with_ids: bool| -> String {
        texts[key]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, text)| match with_ids {
                true => format!(
                    "{}\n",
                    serde_json::json!({ "id": format!("d{i}"), "text": text })
                ),
                false => format!("{}\n", serde_json::json!({ "text": text })),
            })
            .collect()
    };
    let docs = dir.join("docs.jsonl");
    std::fs::write(&docs, lines("documents", true)).unwrap();
    let queries = dir.join("queries.jsonl");
    std::fs::write(&queries, lines("queries", false)).unwrap();
    let model = pylate_dir();
    let index = dir.join("idx");
    let summary = ok(&[
        "text",
        "index",
        "--json",
        "--model",
        s(&model),
        "--docs",
        s(&docs),
        "--out",
        s(&index),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["stats"]["documents"], 6);
    assert_eq!(summary["stats"]["dim"], 128);

    // Every document a candidate: the run's scores are exact MaxSim, which
    // must be the MaxSim of PyLate's own vectors.
    let run = dir.join("run.tsv");
    ok(&[
        "text",
        "search",
        s(&index),
        "-q",
        "--queries",
        s(&queries),
        "-k",
        "6",
        "--candidates",
        "6",
        "--out",
        s(&run),
    ]);
    let run = std::fs::read_to_string(&run).unwrap();
    assert_eq!(run.lines().count(), 36);
    for line in run.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let query: usize = fields[0].parse().unwrap();
        let score: f32 = fields[2].parse().unwrap();
        let want = maxsim(
            &pylate_vectors(&format!("q{}", query - 1)),
            &pylate_vectors(fields[1]),
        );
        assert!(
            (score - want).abs() < 1e-4,
            "{line}: PyLate's MaxSim is {want}"
        );
    }

    // `text encode --tokens --query` writes PyLate's query vectors.
    let (vectors, counts) = (dir.join("q.npy"), dir.join("qc.npy"));
    ok(&[
        "text",
        "encode",
        "-q",
        "--model",
        s(&model),
        "--input",
        s(&queries),
        "--out",
        s(&vectors),
        "--tokens",
        "--counts-out",
        s(&counts),
        "--query",
    ]);
    let counts: Array1<i64> = read_npy(&counts).unwrap();
    assert!(counts.iter().all(|&c| c == 32));
    let vectors: Array2<f32> = read_npy(&vectors).unwrap();
    for (q, rows) in vectors
        .outer_iter()
        .collect::<Vec<_>>()
        .chunks(32)
        .enumerate()
    {
        for (row, want) in rows.iter().zip(pylate_vectors(&format!("q{q}"))) {
            let difference = row
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(difference < 1e-5, "q{q}: {difference}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
