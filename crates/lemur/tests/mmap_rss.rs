//! Opening a saved index does not copy the corpus: resident memory grows
//! by far less than the token matrix (which `load` does copy). Its own test
//! binary, so no other test allocates while it measures.

use lemur::synthetic::{self, CorpusSpec};
use lemur::{DocWeights, Index, SearchParams};

/// Resident memory of this process (Linux `VmRSS`), in bytes.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

#[test]
fn open_maps_the_corpus_and_load_copies_it() {
    let dir = std::env::temp_dir().join(format!("lemur-mmap-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let token_bytes;
    {
        let spec = CorpusSpec {
            n_docs: 1000,
            dim: 128,
            min_tokens: 90,
            max_tokens: 110,
            ..CorpusSpec::colbert_10k()
        };
        let corpus = synthetic::corpus(&spec).corpus;
        token_bytes = corpus.tokens().len() * 4;
        let map = synthetic::random_features(128, 64, 1);
        let weights = DocWeights::new(vec![0.01; 1000 * 64], 1000, 64).unwrap();
        Index::new(map, weights, corpus)
            .unwrap()
            .save(&dir)
            .unwrap();
    }
    assert!(
        token_bytes > 40 << 20,
        "the corpus must dwarf the noise: {token_bytes}"
    );

    let before = resident_bytes();
    let mapped = Index::open(&dir).unwrap();
    let after_open = resident_bytes();
    // Searching touches only the candidates' pages.
    let hits = mapped
        .search_one(
            &vec![0.1; 32 * 128],
            SearchParams {
                k: 3,
                n_candidates: 5,
            },
        )
        .unwrap();
    assert_eq!(hits.len(), 3);
    let opened = after_open.saturating_sub(before);
    assert!(
        opened < token_bytes / 8,
        "open grew resident memory by {opened} bytes for a {token_bytes}-byte corpus"
    );

    let loaded = Index::load(&dir).unwrap();
    let copied = resident_bytes().saturating_sub(after_open);
    assert!(
        copied > token_bytes / 2,
        "load should copy the corpus: grew by {copied} bytes"
    );
    assert_eq!(loaded.corpus().tokens(), mapped.corpus().tokens());
    let _ = std::fs::remove_dir_all(&dir);
}
