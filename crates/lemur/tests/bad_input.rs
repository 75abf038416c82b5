//! Every bad input gets a typed error: never a panic, never a wrong answer.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use lemur::io::{LoadErrorKind, load_multivectors, write_npy};
use lemur::maxsim::MultiVectorError;
use lemur::synthetic::{self, CorpusSpec};
use lemur::{Activation, DocWeights, Index, IndexError, MultiVectors, SearchError, SearchParams};
use ndarray::{ArrayD, IxDyn, arr0};
use ndarray_npy::NpzWriter;

const DIM: usize = 8;
const H: usize = 24;
const N_DOCS: usize = 20;

/// A scratch directory unique to one test.
fn scratch(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "lemur-bad-input-{}-{name}-{unique}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn corpus() -> MultiVectors {
    let spec = CorpusSpec {
        n_docs: N_DOCS,
        dim: DIM,
        min_tokens: 1,
        max_tokens: 6,
        n_centroids: 5,
        topics_per_doc: 2,
        noise: 0.2,
        seed: 9,
    };
    synthetic::corpus(&spec).corpus
}

/// A valid two-block export as named float32 arrays.
fn valid_arrays() -> BTreeMap<String, ArrayD<f32>> {
    let map = synthetic::random_mlp(&[DIM, 16, H], Activation::Gelu, 3);
    let mut arrays = BTreeMap::new();
    for (i, block) in map.blocks().unwrap().iter().enumerate() {
        let shape = IxDyn(&[block.out_dim(), block.in_dim()]);
        arrays.insert(
            format!("layer_{i}_weight"),
            ArrayD::from_shape_vec(shape, block.weight().to_vec()).unwrap(),
        );
        for (suffix, values) in [
            ("bias", block.bias()),
            ("ln_weight", block.ln_gain()),
            ("ln_bias", block.ln_bias()),
        ] {
            arrays.insert(
                format!("layer_{i}_{suffix}"),
                ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap(),
            );
        }
    }
    arrays.insert(
        "W".into(),
        ArrayD::from_shape_vec(IxDyn(&[N_DOCS, H]), vec![0.01; N_DOCS * H]).unwrap(),
    );
    arrays
}

fn write_npz(
    path: &Path,
    arrays: &BTreeMap<String, ArrayD<f32>>,
    extra: impl FnOnce(&mut NpzWriter<File>),
) {
    let mut npz = NpzWriter::new(File::create(path).unwrap());
    for (key, array) in arrays {
        npz.add_array(key.as_str(), array).unwrap();
    }
    extra(&mut npz);
    npz.finish().unwrap();
}

fn with_hidden_dim(npz: &mut NpzWriter<File>) {
    npz.add_array("final_hidden_dim", &arr0(H as i64)).unwrap();
}

/// Writes the corpus files and loads an index from `arrays`.
fn load(
    name: &str,
    arrays: &BTreeMap<String, ArrayD<f32>>,
    extra: impl FnOnce(&mut NpzWriter<File>),
) -> Result<Index, IndexError> {
    let dir = scratch(name);
    write_npz(&dir.join("model.npz"), arrays, extra);
    lemur::io::save_multivectors(&corpus(), dir.join("t.npy"), dir.join("c.npy")).unwrap();
    Index::from_files(dir.join("model.npz"), dir.join("t.npy"), dir.join("c.npy"))
}

fn load_kind(name: &str, arrays: &BTreeMap<String, ArrayD<f32>>) -> LoadErrorKind {
    match load(name, arrays, with_hidden_dim) {
        Err(IndexError::Load(err)) => err.kind,
        other => panic!("expected a load error, got {other:?}"),
    }
}

fn index() -> Index {
    load("valid", &valid_arrays(), with_hidden_dim).expect("the valid export loads")
}

#[test]
fn the_valid_export_loads_and_searches() {
    let index = index();
    let hits = index
        .search(
            &[0.1; 3 * DIM],
            &[3],
            SearchParams {
                k: 4,
                n_candidates: 10,
            },
        )
        .unwrap();
    assert_eq!(hits[0].len(), 4);
}

#[test]
fn missing_npz_key() {
    let mut arrays = valid_arrays();
    arrays.remove("layer_1_ln_bias");
    assert!(
        matches!(load_kind("missing", &arrays), LoadErrorKind::MissingArray { key } if key == "layer_1_ln_bias")
    );
    let err = load("missing-dim", &valid_arrays(), |_| {}).unwrap_err();
    assert!(
        matches!(err, IndexError::Load(e) if matches!(&e.kind, LoadErrorKind::MissingArray { key } if key == "final_hidden_dim"))
    );
}

#[test]
fn wrong_rank_or_shape() {
    let mut arrays = valid_arrays();
    arrays.insert(
        "W".into(),
        ArrayD::from_shape_vec(IxDyn(&[N_DOCS * H]), vec![0.0; N_DOCS * H]).unwrap(),
    );
    assert!(
        matches!(load_kind("rank", &arrays), LoadErrorKind::Shape { key, found, .. } if key == "W" && found == vec![N_DOCS * H])
    );
    let mut arrays = valid_arrays();
    arrays.insert(
        "layer_0_bias".into(),
        ArrayD::from_shape_vec(IxDyn(&[15]), vec![0.0; 15]).unwrap(),
    );
    assert!(
        matches!(load_kind("shape", &arrays), LoadErrorKind::Shape { key, found, .. } if key == "layer_0_bias" && found == vec![15])
    );
}

#[test]
fn non_f32_weights() {
    let mut arrays = valid_arrays();
    let weight = arrays.remove("layer_0_weight").unwrap().mapv(f64::from);
    let err = load("dtype", &arrays, |npz| {
        with_hidden_dim(npz);
        npz.add_array("layer_0_weight", &weight).unwrap();
    })
    .unwrap_err();
    match err {
        IndexError::Load(e) => assert!(
            matches!(&e.kind, LoadErrorKind::Dtype { key, found, .. } if key == "layer_0_weight" && found.contains("f8")),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_finite_weights() {
    let mut arrays = valid_arrays();
    arrays.get_mut("W").unwrap()[[3, 5]] = f32::NAN;
    assert!(
        matches!(load_kind("nan", &arrays), LoadErrorKind::NonFinite { key, index, .. } if key == "W" && index == 3 * H + 5)
    );
    let mut arrays = valid_arrays();
    arrays.get_mut("layer_1_ln_weight").unwrap()[[2]] = f32::INFINITY;
    assert!(
        matches!(load_kind("inf", &arrays), LoadErrorKind::NonFinite { key, .. } if key == "layer_1_ln_weight")
    );
    // In memory, too.
    let mut values = vec![0.0; N_DOCS * H];
    values[7] = f32::NEG_INFINITY;
    assert!(matches!(
        DocWeights::new(values, N_DOCS, H),
        Err(IndexError::NonFiniteWeight { row: 0, col: 7, .. })
    ));
}

#[test]
fn non_finite_corpus_and_queries() {
    let dir = scratch("nan-corpus");
    let mut tokens = corpus().tokens().to_vec();
    tokens[17] = f32::NAN;
    let array = ndarray::Array2::from_shape_vec((tokens.len() / DIM, DIM), tokens).unwrap();
    write_npy(&dir.join("t.npy"), &array).unwrap();
    let counts: ndarray::Array1<i32> = corpus().counts().map(|c| c as i32).collect();
    write_npy(&dir.join("c.npy"), &counts).unwrap();
    let err = load_multivectors(dir.join("t.npy"), dir.join("c.npy")).unwrap_err();
    assert!(
        matches!(err.kind, LoadErrorKind::NonFinite { index: 17, .. }),
        "{err}"
    );

    let mut query = vec![0.1; 2 * DIM];
    query[DIM + 1] = f32::INFINITY;
    let err = index()
        .search(&query, &[2], SearchParams::default())
        .unwrap_err();
    assert_eq!(
        err,
        SearchError::Queries(MultiVectorError::NonFinite {
            row: 1,
            col: 1,
            value: f32::INFINITY
        })
    );
}

#[test]
fn layer_widths_that_do_not_connect() {
    let mut arrays = valid_arrays();
    arrays.insert(
        "layer_1_weight".into(),
        ArrayD::from_shape_vec(IxDyn(&[H, 15]), vec![0.0; H * 15]).unwrap(),
    );
    assert!(matches!(
        load_kind("chain", &arrays),
        LoadErrorKind::LayerChain { key, expected_in: 16, found_in: 15 } if key == "layer_1_weight"
    ));
}

#[test]
fn weight_rows_differ_from_corpus_documents() {
    let mut arrays = valid_arrays();
    arrays.insert(
        "W".into(),
        ArrayD::from_shape_vec(IxDyn(&[N_DOCS - 1, H]), vec![0.0; (N_DOCS - 1) * H]).unwrap(),
    );
    let err = load("rows", &arrays, with_hidden_dim).unwrap_err();
    assert!(
        matches!(
            err,
            IndexError::WeightRows {
                weight_rows: 19,
                n_docs: 20
            }
        ),
        "{err}"
    );
}

#[test]
fn weight_width_differs_from_feature_width() {
    let mut arrays = valid_arrays();
    arrays.insert(
        "W".into(),
        ArrayD::from_shape_vec(IxDyn(&[N_DOCS, H + 1]), vec![0.0; N_DOCS * (H + 1)]).unwrap(),
    );
    assert!(
        matches!(load_kind("width-npz", &arrays), LoadErrorKind::Shape { key, .. } if key == "W")
    );
    let map = synthetic::random_mlp(&[DIM, H], Activation::Gelu, 1);
    let weights = DocWeights::new(vec![0.0; N_DOCS * 10], N_DOCS, 10).unwrap();
    let err = Index::new(map, weights, corpus()).unwrap_err();
    assert!(matches!(
        err,
        IndexError::WeightWidth {
            weight_width: 10,
            feature_dim: H
        }
    ));
}

#[test]
fn model_dim_differs_from_query_and_corpus_dim() {
    let index = index();
    let queries = MultiVectors::new(vec![0.5; 2 * (DIM + 1)], DIM + 1, &[2]).unwrap();
    let err = index
        .search_batch(&queries, SearchParams::default())
        .unwrap_err();
    assert_eq!(
        err,
        SearchError::DimMismatch {
            expected: DIM,
            found: DIM + 1
        }
    );
    // A flat buffer that is not whole rows of the index's width.
    let err = index
        .search(&[0.5; 3 * DIM + 1], &[3], SearchParams::default())
        .unwrap_err();
    assert_eq!(
        err,
        SearchError::Queries(MultiVectorError::RaggedRows {
            len: 3 * DIM + 1,
            dim: DIM
        })
    );
    // And a model for other tokens cannot be paired with this corpus.
    let map = synthetic::random_mlp(&[DIM + 1, H], Activation::Gelu, 1);
    let weights = DocWeights::new(vec![0.0; N_DOCS * H], N_DOCS, H).unwrap();
    assert!(matches!(
        Index::new(map, weights, corpus()),
        Err(IndexError::DimMismatch {
            model_dim: 9,
            corpus_dim: 8
        })
    ));
}

#[test]
fn document_with_zero_tokens() {
    let dir = scratch("empty-doc");
    let array = ndarray::Array2::from_shape_vec((3, DIM), vec![0.5f32; 3 * DIM]).unwrap();
    write_npy(&dir.join("t.npy"), &array).unwrap();
    write_npy(&dir.join("c.npy"), &ndarray::Array1::from(vec![2u64, 0, 1])).unwrap();
    let err = load_multivectors(dir.join("t.npy"), dir.join("c.npy")).unwrap_err();
    assert!(
        matches!(
            err.kind,
            LoadErrorKind::Corpus(MultiVectorError::EmptySet { index: 1 })
        ),
        "{err}"
    );
    write_npy(
        &dir.join("c.npy"),
        &ndarray::Array1::from(vec![2i64, -1, 2]),
    )
    .unwrap();
    let err = load_multivectors(dir.join("t.npy"), dir.join("c.npy")).unwrap_err();
    assert!(
        matches!(
            err.kind,
            LoadErrorKind::OutOfRange {
                index: 1,
                value: -1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn query_with_zero_tokens() {
    let err = index()
        .search(&[0.5; 2 * DIM], &[2, 0], SearchParams::default())
        .unwrap_err();
    assert_eq!(
        err,
        SearchError::Queries(MultiVectorError::EmptySet { index: 1 })
    );
    let err = index().search(&[], &[], SearchParams::default());
    assert_eq!(err, Ok(vec![]), "an empty batch is a batch of no queries");
}

#[test]
fn counts_that_do_not_sum_to_the_token_rows() {
    let err = index()
        .search(&[0.5; 5 * DIM], &[2, 2], SearchParams::default())
        .unwrap_err();
    assert_eq!(
        err,
        SearchError::Queries(MultiVectorError::CountsMismatch { sum: 4, rows: 5 })
    );
    let dir = scratch("counts");
    let array = ndarray::Array2::from_shape_vec((3, DIM), vec![0.5f32; 3 * DIM]).unwrap();
    write_npy(&dir.join("t.npy"), &array).unwrap();
    write_npy(&dir.join("c.npy"), &ndarray::Array1::from(vec![2u32, 2])).unwrap();
    let err = load_multivectors(dir.join("t.npy"), dir.join("c.npy")).unwrap_err();
    assert!(matches!(
        err.kind,
        LoadErrorKind::Corpus(MultiVectorError::CountsMismatch { sum: 4, rows: 3 })
    ));
}

#[test]
fn k_zero_gives_empty_results() {
    let hits = index()
        .search(
            &[0.5; 4 * DIM],
            &[2, 2],
            SearchParams {
                k: 0,
                n_candidates: 0,
            },
        )
        .unwrap();
    assert_eq!(hits, vec![vec![], vec![]]);
}

#[test]
fn fewer_candidates_than_results() {
    let err = index()
        .search(
            &[0.5; 2 * DIM],
            &[2],
            SearchParams {
                k: 10,
                n_candidates: 5,
            },
        )
        .unwrap_err();
    assert_eq!(
        err,
        SearchError::CandidatesBelowK {
            k: 10,
            n_candidates: 5
        }
    );
}

#[test]
fn more_candidates_than_documents_are_clamped() {
    let index = index();
    let query = vec![0.3; 3 * DIM];
    let clamped = index
        .search_one(
            &query,
            SearchParams {
                k: 50,
                n_candidates: 1000,
            },
        )
        .unwrap();
    assert_eq!(clamped.len(), N_DOCS, "k > m returns every document");
    let exact = index
        .search_one(
            &query,
            SearchParams {
                k: N_DOCS,
                n_candidates: N_DOCS,
            },
        )
        .unwrap();
    assert_eq!(clamped, exact);
}

#[test]
fn truncated_and_corrupt_files() {
    let dir = scratch("corrupt");
    lemur::io::save_multivectors(&corpus(), dir.join("t.npy"), dir.join("c.npy")).unwrap();
    let bytes = std::fs::read(dir.join("t.npy")).unwrap();
    std::fs::write(dir.join("t.npy"), &bytes[..bytes.len() - 7]).unwrap();
    let err = load_multivectors(dir.join("t.npy"), dir.join("c.npy")).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::Corrupt { .. }), "{err}");
    std::fs::write(dir.join("model.npz"), b"PK\x03\x04 definitely not a zip").unwrap();
    let err =
        Index::from_files(dir.join("model.npz"), dir.join("t.npy"), dir.join("c.npy")).unwrap_err();
    assert!(
        matches!(err, IndexError::Load(ref e) if matches!(e.kind, LoadErrorKind::Corrupt { .. })),
        "{err}"
    );
    let err = Index::from_files(dir.join("absent.npz"), dir.join("t.npy"), dir.join("c.npy"))
        .unwrap_err();
    assert!(
        matches!(err, IndexError::Load(ref e) if matches!(e.kind, LoadErrorKind::Io(_))),
        "{err}"
    );
}
