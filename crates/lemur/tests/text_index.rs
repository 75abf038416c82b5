//! `TextIndex`: indexing, replacing, removing, searching, persistence and
//! bad input, on the real MiniLM encoder.

mod common_text;

use common_text::{encoder, model_dir, scratch};
use lemur::text::TokenOptions;
use lemur::{Index, TextIndex, TextIndexConfig, TextIndexError};

const DOCS: [(&str, &str); 8] = [
    (
        "cats",
        "Cats are small domesticated carnivores that like to sleep in the sun.",
    ),
    (
        "rust",
        "Rust is a systems programming language focused on memory safety without garbage collection.",
    ),
    (
        "bread",
        "To bake bread, mix flour, water, yeast and salt, let the dough rise, then bake it.",
    ),
    (
        "mars",
        "Mars is the fourth planet from the Sun and has two small moons, Phobos and Deimos.",
    ),
    (
        "tea",
        "Green tea is brewed from unoxidised leaves and is popular in Japan and China.",
    ),
    (
        "chess",
        "In chess, the knight moves in an L shape and can jump over other pieces.",
    ),
    (
        "volcano",
        "A volcano erupts when molten rock, ash and gases escape from the magma chamber.",
    ),
    (
        "piano",
        "The piano has eighty-eight keys and produces sound when hammers strike strings.",
    ),
];

fn filled(config: TextIndexConfig) -> TextIndex {
    let mut index = TextIndex::new(encoder(), config).unwrap();
    index.index_batch(&DOCS, None).unwrap();
    index
}

/// Exact MaxSim of a query against a document, from the encoder directly.
fn maxsim(query: &str, doc: &str) -> f32 {
    let vectors = encoder()
        .encode_tokens(&[query, doc], &TokenOptions::default())
        .unwrap();
    let dim = vectors.dim();
    vectors
        .get(0)
        .chunks_exact(dim)
        .map(|q| {
            vectors
                .get(1)
                .chunks_exact(dim)
                .map(|d| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum()
}

#[test]
fn finds_the_relevant_document_with_exact_maxsim_scores() {
    let index = filled(TextIndexConfig::default());
    let queries = [
        ("How many moons does Mars have?", "mars"),
        ("how does a knight move", "chess"),
        ("baking with yeast and flour", "bread"),
        ("memory-safe programming language", "rust"),
    ];
    for (query, expected) in queries {
        let hits = index.search(query, 3).unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].0, expected, "{query}: {hits:?}");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        // Candidates cover the whole small collection, so the scores are
        // exact MaxSim.
        let text = DOCS.iter().find(|(id, _)| *id == hits[0].0).unwrap().1;
        assert!((hits[0].1 - maxsim(query, text)).abs() < 1e-3);
    }
    // Batch search equals one at a time.
    let batch = index
        .search_batch(&["chess knight", "green tea"], 2)
        .unwrap();
    assert_eq!(batch[0], index.search("chess knight", 2).unwrap());
    assert_eq!(batch[1], index.search("green tea", 2).unwrap());
    // More results than documents: all of them.
    assert_eq!(index.search("anything", 50).unwrap().len(), DOCS.len());
}

#[test]
fn few_candidates_still_find_the_document_through_the_lemur_stage() {
    let config = TextIndexConfig {
        n_candidates: 2,
        ..TextIndexConfig::default()
    };
    let index = filled(config);
    assert_eq!(
        index.search("volcanic eruption and magma", 1).unwrap()[0].0,
        "volcano"
    );
    assert_eq!(
        index.search("a musical instrument with keys", 1).unwrap()[0].0,
        "piano"
    );
}

#[test]
fn replace_remove_clear_and_stats() {
    let mut index = filled(TextIndexConfig::default());
    let stats = index.stats();
    assert_eq!((stats.documents, stats.removed, stats.dim), (8, 0, 384));
    assert!(stats.tokens > 8 * 10);

    // Replacing a document hides the old text at once.
    index
        .index("mars", "Jupiter is the largest planet, a gas giant.")
        .unwrap();
    assert_eq!(index.len(), 8);
    assert_eq!(index.stats().removed, 1);
    assert_eq!(
        index.search("largest gas giant planet", 1).unwrap()[0].0,
        "mars"
    );
    let hits = index.search("Phobos and Deimos moons", 8).unwrap();
    assert_eq!(hits.len(), 8, "no duplicate or stale ids");
    let mut ids: Vec<&str> = hits.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);

    assert!(index.remove("tea"));
    assert!(!index.remove("tea"));
    assert!(!index.contains("tea"));
    assert!(
        index
            .search("green tea leaves", 8)
            .unwrap()
            .iter()
            .all(|(id, _)| id != "tea")
    );

    // A rebuild frees removed documents and keeps the results.
    let before = index.search("knight", 3).unwrap();
    index.rebuild(None).unwrap();
    assert_eq!(index.stats().removed, 0);
    assert_eq!(index.stats().built_documents, 7);
    let after = index.search("knight", 3).unwrap();
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-4);
    }

    index.clear();
    assert!(index.is_empty());
    assert!(index.search("knight", 3).unwrap().is_empty());
    index
        .index("again", "A fresh start after clearing.")
        .unwrap();
    assert_eq!(index.search("fresh start", 1).unwrap()[0].0, "again");
}

#[test]
fn grows_geometrically_between_rebuilds() {
    let mut index = TextIndex::new(encoder(), TextIndexConfig::default()).unwrap();
    let mut built = Vec::new();
    for (id, text) in DOCS {
        index.index(id, text).unwrap();
        built.push(index.stats().built_documents);
    }
    // Rebuilt when the collection outgrows twice the last build.
    assert_eq!(built, vec![1, 1, 3, 3, 3, 3, 7, 7]);
    assert_eq!(index.search("knight moves", 1).unwrap()[0].0, "chess");
}

#[test]
fn saves_and_opens_with_identical_results() {
    let dir = scratch("roundtrip");
    let mut index = TextIndex::from_model_dir(model_dir(), TextIndexConfig::default()).unwrap();
    index.index_batch(&DOCS, None).unwrap();
    index.remove("piano");
    index.save(&dir).unwrap();
    assert_eq!(
        TextIndex::saved_model_dir(&dir).unwrap().unwrap(),
        std::path::absolute(model_dir()).unwrap()
    );
    let opened = TextIndex::open(&dir, encoder()).unwrap();
    assert_eq!(opened.stats(), index.stats());
    for query in ["moons of Mars", "piano keys", "tea"] {
        assert_eq!(
            opened.search(query, 5).unwrap(),
            index.search(query, 5).unwrap()
        );
    }
    // Adding after opening works and is saved again.
    let mut opened = opened;
    opened
        .index("violin", "The violin is a bowed string instrument.")
        .unwrap();
    opened.save(&dir).unwrap();
    let reopened = TextIndex::open(&dir, encoder()).unwrap();
    assert_eq!(reopened.search("bowed strings", 1).unwrap()[0].0, "violin");

    // A plain LEMUR index is not a text index.
    let plain = scratch("plain");
    index.lemur_index().unwrap().save(&plain).unwrap();
    assert!(Index::open(&plain).is_ok());
    assert!(matches!(
        TextIndex::open(&plain, encoder()),
        Err(TextIndexError::Format { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&plain);
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut index = filled(TextIndexConfig::default());
    assert!(matches!(
        index.index("", "text"),
        Err(TextIndexError::EmptyId)
    ));
    // A document without text is indexed as its special tokens, as PyLate
    // and sentence-transformers encode it.
    index.index("empty", "").unwrap();
    index.index("blank", " \n\t").unwrap();
    assert!(index.contains("empty") && index.contains("blank"));
    assert!(matches!(
        index.search("", 3),
        Err(TextIndexError::EmptyQuery { index: 0 })
    ));
    assert!(matches!(
        index.search("   ", 3),
        Err(TextIndexError::EmptyQuery { .. })
    ));
    assert!(matches!(
        index.search("cats", 0),
        Err(TextIndexError::ZeroK)
    ));
    assert!(matches!(
        index.set_n_candidates(0),
        Err(TextIndexError::Config(_))
    ));
    // The two empty documents joined; nothing else changed.
    assert_eq!(index.len(), DOCS.len() + 2, "failed calls change nothing");
    let bad = TextIndexConfig {
        rebuild_growth: 0.5,
        ..TextIndexConfig::default()
    };
    assert!(matches!(
        TextIndex::new(encoder(), bad),
        Err(TextIndexError::Config(_))
    ));
    let empty = TextIndex::new(encoder(), TextIndexConfig::default()).unwrap();
    assert!(matches!(
        empty.save(scratch("empty")),
        Err(TextIndexError::NothingToSave)
    ));
    assert!(matches!(
        TextIndex::open(scratch("missing"), encoder()),
        Err(TextIndexError::Index(_))
    ));
}

#[test]
fn stored_documents_and_query_features_are_what_the_search_uses() {
    let mut index = filled(TextIndexConfig::default());
    assert!(index.remove("tea"));
    let stored: Vec<&str> = index.documents().map(|document| document.doc_id).collect();
    let expected: Vec<&str> = DOCS
        .iter()
        .map(|(id, _)| *id)
        .filter(|&id| id != "tea")
        .collect();
    assert_eq!(stored, expected, "live documents, in storage order");
    assert!(index.document("tea").is_none());

    let lemur = index.lemur_index().unwrap();
    let mars = index.document("mars").unwrap();
    assert_eq!(mars.weights.len(), lemur.feature_dim());
    assert_eq!(mars.tokens.len() % lemur.dim(), 0);
    // The stored tokens are the document's encoding.
    let encoded = encoder()
        .encode_tokens(&[DOCS[3].1], &index.document_options())
        .unwrap();
    assert_eq!(encoded.get(0).len(), mars.tokens.len());
    assert!(
        encoded
            .get(0)
            .iter()
            .zip(mars.tokens)
            .all(|(a, b)| (a - b).abs() < 1e-5)
    );
    // The query vectors are the search's: their MaxSim against the stored
    // tokens is the search's score, and the features are one row of `h`.
    let query = "two small moons of Mars";
    let (queries, features) = index.query_vectors_and_features(&[query]).unwrap();
    assert_eq!((queries.len(), features.len()), (1, lemur.feature_dim()));
    let d = lemur.dim();
    let score: f32 = queries
        .get(0)
        .chunks_exact(d)
        .map(|q| {
            mars.tokens
                .chunks_exact(d)
                .map(|t| q.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum();
    let top = index.search(query, 1).unwrap();
    assert_eq!(top[0].0, "mars");
    assert!((top[0].1 - score).abs() < 1e-4, "{} vs {score}", top[0].1);
    assert!(features.iter().all(|f| f.is_finite()));

    assert!(matches!(
        index.query_vectors_and_features(&["ok", " "]),
        Err(TextIndexError::EmptyQuery { index: 1 })
    ));
    let empty = TextIndex::new(encoder(), TextIndexConfig::default()).unwrap();
    assert!(matches!(
        empty.query_vectors_and_features(&["moons"]),
        Err(TextIndexError::NoDocuments)
    ));
    assert_eq!(empty.documents().count(), 0);
}
