//! The graph first stage: what it finds against the exact scan, the size
//! switch, saving, adding documents and corrupt files.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use lemur::io::LoadErrorKind;
use lemur::synthetic::{CorpusSpec, StreamedCorpus};
use lemur::{
    BuildConfig, FirstStageConfig, Hit, Index, IndexBuilder, IndexError, MultiVectors,
    SearchParams, current_generation,
};

const PARAMS: SearchParams = SearchParams {
    k: 10,
    n_candidates: 40,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-first-stage-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn corpus() -> &'static StreamedCorpus {
    static CORPUS: OnceLock<StreamedCorpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        StreamedCorpus::new(&CorpusSpec {
            dim: 32,
            min_tokens: 4,
            max_tokens: 16,
            n_centroids: 64,
            ..CorpusSpec::colbert_scale(3000)
        })
    })
}

fn config(graph_min_docs: usize) -> BuildConfig {
    BuildConfig {
        epochs: 0,
        final_hidden_dim: 256,
        fit_sample: 1024,
        seed: 5,
        first_stage: FirstStageConfig {
            graph_min_docs,
            projection_dim: 64,
            ..FirstStageConfig::default()
        },
        ..BuildConfig::default()
    }
}

/// The index over the first 2,500 documents, with a graph.
fn with_graph() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        IndexBuilder::new(config(0))
            .build(corpus().chunk(0..2500), None)
            .unwrap()
            .0
    })
}

fn queries() -> MultiVectors {
    corpus().queries(60, 8, 3)
}

fn shared(a: &[Hit], b: &[Hit]) -> usize {
    a.iter()
        .filter(|x| b.iter().any(|y| y.doc == x.doc))
        .count()
}

#[test]
fn the_graph_finds_the_exact_scans_candidates_and_hits() {
    let index = with_graph();
    assert_eq!(index.first_stage_graph().map(|g| g.len()), Some(2500));
    let exact = index.clone().with_exact_first_stage();
    assert!(exact.first_stage_graph().is_none());

    let queries = queries();
    let features = index.query_features(&queries);
    let from_graph = index.candidates(&features, PARAMS.n_candidates);
    let from_scan = exact.candidates(&features, PARAMS.n_candidates);
    let found: usize = from_graph
        .iter()
        .zip(&from_scan)
        .map(|(g, s)| g.iter().filter(|id| s.contains(id)).count())
        .sum();
    let candidate_recall = found as f64 / (queries.len() * PARAMS.n_candidates) as f64;
    assert!(
        candidate_recall >= 0.95,
        "candidate recall {candidate_recall}"
    );

    let graph_hits = index.search_batch(&queries, PARAMS).unwrap();
    let scan_hits = exact.search_batch(&queries, PARAMS).unwrap();
    let same: usize = graph_hits
        .iter()
        .zip(&scan_hits)
        .map(|(g, s)| shared(g, s))
        .sum();
    let recall = same as f64 / (queries.len() * PARAMS.k) as f64;
    assert!(recall >= 0.97, "recall@10 against the exact scan {recall}");
    // Hits the two share carry the same exact MaxSim.
    for (g, s) in graph_hits.iter().zip(&scan_hits) {
        for hit in g {
            if let Some(other) = s.iter().find(|x| x.doc == hit.doc) {
                assert_eq!(hit.score, other.score);
            }
        }
    }
}

#[test]
fn small_indexes_keep_the_exact_scan_and_a_bad_refine_factor_is_an_error() {
    let small = config(10_000);
    let (mut index, report) = IndexBuilder::new(small)
        .build(corpus().chunk(0..300), None)
        .unwrap();
    assert!(index.first_stage_graph().is_none());
    assert!(report.first_stage_time.as_secs_f64() < 1e-3);
    let bad = FirstStageConfig {
        graph_min_docs: 0,
        refine_factor: 0,
        ..FirstStageConfig::default()
    };
    assert!(matches!(
        index.build_first_stage(&bad),
        Err(IndexError::FirstStage(_))
    ));
    let good = FirstStageConfig {
        graph_min_docs: 0,
        projection_dim: 16,
        ..FirstStageConfig::default()
    };
    assert!(index.build_first_stage(&good).unwrap());
    assert_eq!(index.first_stage_graph().map(|g| g.len()), Some(300));
}

#[test]
fn a_saved_graph_opens_searches_alike_and_grows_with_added_documents() {
    let index = with_graph();
    let dir = scratch("round-trip");
    index.save(&dir).unwrap();
    let queries = queries();
    let before = index.search_batch(&queries, PARAMS).unwrap();
    let opened = Index::open(&dir).unwrap();
    assert_eq!(opened.first_stage_graph(), index.first_stage_graph());
    assert_eq!(opened.search_batch(&queries, PARAMS).unwrap(), before);

    // The last 500 documents go in through `add_documents`: the graph
    // grows with `W`, and a query made of an added document's own tokens
    // finds it first.
    let mut loaded = Index::load(&dir).unwrap();
    let added = corpus().chunk(2500..3000);
    let counts: Vec<usize> = added.counts().collect();
    let ids = loaded.add_documents(added.tokens(), &counts).unwrap();
    assert_eq!(ids, 2500..3000);
    assert_eq!(loaded.first_stage_graph().map(|g| g.len()), Some(3000));
    for doc in [2500usize, 2777, 2999] {
        let own = added.get(doc - 2500);
        let hits = loaded.search_one(own, PARAMS).unwrap();
        assert_eq!(hits[0].doc as usize, doc, "document {doc} finds itself");
    }
    loaded.save(&dir).unwrap();
    let reopened = Index::open(&dir).unwrap();
    assert_eq!(reopened.first_stage_graph().map(|g| g.len()), Some(3000));
    assert_eq!(
        reopened.search_batch(&queries, PARAMS).unwrap(),
        loaded.search_batch(&queries, PARAMS).unwrap()
    );
}

#[test]
fn a_corrupt_or_inconsistent_graph_is_a_typed_error() {
    let dir = scratch("corrupt");
    with_graph().save(&dir).unwrap();
    let generation = current_generation(&dir).unwrap();
    let path = generation.join("ann_base.npy");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    match Index::open(&dir) {
        Err(IndexError::Load(e)) => {
            assert!(matches!(e.kind, LoadErrorKind::Checksum { ref key, .. } if key == "ann_base"))
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn the_graphs_axes_hold_the_query_features() {
    // Built in Rust, the graph's axes are fitted to the features of the
    // solver's token sample, the directions queries are sums of, so the
    // queries' features keep their energy in the subspace; `W`'s own
    // leading axes keep less of it.
    let index = with_graph();
    let projection = index.first_stage_graph().unwrap().projection();
    let features = index.query_features(&queries());
    let h = index.feature_dim();
    let kept = |projection: &lemur::ann::Projection| -> f64 {
        let projected = projection.project_queries(&features);
        let energy = |v: &[f32]| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        energy(&projected) / energy(&features)
    };
    let of_rows = lemur::ann::Projection::fit(index.weights().values(), h, 64).unwrap();
    let (fitted, rows) = (kept(projection), kept(&of_rows));
    assert!(
        fitted > 0.9 && fitted > rows,
        "queries keep {fitted} of their energy ({rows} on W's axes)"
    );
}
