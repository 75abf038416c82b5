//! The out-of-core build: the same feature map and `W` as an in-memory
//! build, compressed forms and a graph grown a block at a time, and a
//! failed build that leaves the previous index in place.

use std::fs;
use std::ops::Range;
use std::path::PathBuf;

use lemur::maxsim::MultiVectorError;
use lemur::synthetic::{CorpusSpec, StreamedCorpus};
use lemur::{
    BuildConfig, BuildError, DocumentSource, FirstStageConfig, Index, IndexBuilder, MultiVectors,
    SearchParams, StorageConfig, TokenCodec, WeightCodec,
};

const PARAMS: SearchParams = SearchParams {
    k: 10,
    n_candidates: 40,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-streamed-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn corpus() -> StreamedCorpus {
    StreamedCorpus::new(&CorpusSpec {
        dim: 32,
        min_tokens: 4,
        max_tokens: 16,
        n_centroids: 64,
        ..CorpusSpec::colbert_scale(2500)
    })
}

fn config() -> BuildConfig {
    BuildConfig {
        epochs: 2,
        hidden_dims: vec![64],
        final_hidden_dim: 256,
        train_docs: 300,
        learn_rows: 2000,
        fit_sample: 1024,
        target_rank: 0,
        seed: 5,
        block_docs: 700,
        ..BuildConfig::default()
    }
}

#[test]
fn a_streamed_build_fits_what_an_in_memory_build_fits() {
    let source = corpus();
    let documents = source.chunk(0..source.len());
    let learn = source.queries(200, 8, 11);
    let (in_memory, _) = IndexBuilder::new(config())
        .build(documents.clone(), Some(learn.tokens()))
        .unwrap();
    let dir = scratch("same");
    let (streamed, report) = IndexBuilder::new(config())
        .build_into(&documents, Some(learn.tokens()), &dir)
        .unwrap();
    assert!(report.fit_time.as_nanos() > 0);
    assert_eq!(streamed.storage(), StorageConfig::F32);
    assert_eq!(streamed.len(), in_memory.len());
    assert_eq!(streamed.corpus().tokens(), in_memory.corpus().tokens());
    assert_eq!(streamed.weights(), in_memory.weights());
    let queries = source.queries(30, 8, 3);
    assert_eq!(
        streamed.search_batch(&queries, PARAMS).unwrap(),
        in_memory.search_batch(&queries, PARAMS).unwrap()
    );
    // The streamed index adds documents like a saved one.
    let mut loaded = Index::load(&dir).unwrap();
    let extra = source.queries(1, 8, 99);
    assert_eq!(
        loaded.add_documents(extra.tokens(), &[8]).unwrap(),
        2500..2501
    );
}

#[test]
fn a_streamed_build_compresses_and_grows_its_graph_a_block_at_a_time() {
    let source = corpus();
    let config = BuildConfig {
        epochs: 0,
        first_stage: FirstStageConfig {
            graph_min_docs: 0,
            projection_dim: 64,
            ..FirstStageConfig::default()
        },
        storage: StorageConfig {
            compress_min_docs: 0,
            ..StorageConfig::default()
        },
        ..config()
    };
    let dir = scratch("compressed");
    let (index, report) = IndexBuilder::new(config.clone())
        .build_into(&source, None, &dir)
        .unwrap();
    assert!(report.compress_time.as_nanos() > 0 && report.first_stage_time.as_nanos() > 0);
    assert_eq!(index.storage().tokens, TokenCodec::Int4);
    assert_eq!(index.storage().weights, WeightCodec::Int8);
    assert_eq!(index.first_stage_graph().map(|g| g.len()), Some(2500));
    // Against exact MaxSim over every document.
    let queries = source.queries(40, 8, 3);
    let exact = index.exhaustive_search(&queries, 10);
    let found = index.search_batch(&queries, PARAMS).unwrap();
    let kept: usize = found
        .iter()
        .zip(&exact)
        .map(|(a, b)| {
            a.iter()
                .filter(|x| b.iter().any(|y| y.doc == x.doc))
                .count()
        })
        .sum();
    let recall = kept as f64 / (10 * queries.len()) as f64;
    assert!(recall >= 0.8, "recall@10 {recall}");
    // The same build in memory compresses the same documents alike.
    let (in_memory, _) = IndexBuilder::new(config)
        .build(source.chunk(0..2500), None)
        .unwrap();
    assert_eq!(in_memory.compressed_bytes(), index.compressed_bytes());
}

/// A source whose document `bad` has a NaN.
struct Poisoned {
    documents: MultiVectors,
    bad: usize,
}

impl DocumentSource for Poisoned {
    fn len(&self) -> usize {
        self.documents.len()
    }

    fn dim(&self) -> usize {
        self.documents.dim()
    }

    fn documents(&self, range: Range<usize>) -> Result<MultiVectors, MultiVectorError> {
        let block = self.documents.documents(range.clone())?;
        if !range.contains(&self.bad) {
            return Ok(block);
        }
        let mut tokens = block.tokens().to_vec();
        let at = (block.offsets()[self.bad - range.start]) * block.dim();
        tokens[at] = f32::NAN;
        MultiVectors::new(tokens, block.dim(), &block.counts().collect::<Vec<_>>())
    }
}

#[test]
fn a_bad_document_fails_the_build_and_keeps_the_previous_index() {
    let source = corpus();
    let documents = source.chunk(0..source.len());
    let dir = scratch("bad");
    let config = BuildConfig {
        epochs: 0,
        ..config()
    };
    let (previous, _) = IndexBuilder::new(config.clone())
        .build_into(&documents, None, &dir)
        .unwrap();
    let poisoned = Poisoned {
        documents,
        bad: 1800,
    };
    match IndexBuilder::new(config).build_into(&poisoned, None, &dir) {
        Err(BuildError::Corpus { documents, .. }) => assert_eq!(documents, "documents 1400..2100"),
        other => panic!("expected a corpus error, got {:?}", other.map(|_| ())),
    }
    let opened = Index::open(&dir).unwrap();
    let queries = source.queries(10, 8, 3);
    assert_eq!(
        opened.search_batch(&queries, PARAMS).unwrap(),
        previous.search_batch(&queries, PARAMS).unwrap()
    );
}

#[test]
fn sources_gather_the_documents_they_hand_out() {
    let source = corpus();
    let all = source.chunk(0..source.len());
    let ids = [7usize, 3, 2400, 3];
    for gathered in [source.gather(&ids).unwrap(), all.gather(&ids).unwrap()] {
        assert_eq!(gathered.len(), ids.len());
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(gathered.get(i), all.get(id));
        }
    }
    assert_eq!(source.documents(10..13).unwrap().get(2), all.get(12));
}
