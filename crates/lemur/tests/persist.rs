//! Index directories: round trips, crash safety, corruption.

mod common_crash;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common_crash::partial_copy;

use lemur::io::LoadErrorKind;
use lemur::synthetic::{self, CorpusSpec, SyntheticCorpus};
use lemur::{
    BuildConfig, Hit, Index, IndexBuilder, IndexError, MultiVectors, SearchParams,
    current_generation,
};
use proptest::prelude::*;

const PARAMS: SearchParams = SearchParams {
    k: 5,
    n_candidates: 20,
};

fn scratch(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "lemur-persist-{}-{name}-{unique}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn data() -> &'static SyntheticCorpus {
    static DATA: OnceLock<SyntheticCorpus> = OnceLock::new();
    DATA.get_or_init(|| {
        synthetic::corpus(&CorpusSpec {
            n_docs: 120,
            dim: 16,
            min_tokens: 2,
            max_tokens: 10,
            n_centroids: 12,
            topics_per_doc: 2,
            noise: 0.2,
            seed: 4,
        })
    })
}

fn config(epochs: usize) -> BuildConfig {
    BuildConfig {
        epochs,
        final_hidden_dim: 48,
        train_docs: 64,
        learn_rows: 400,
        fit_sample: 256,
        batch_size: 64,
        seed: 3,
        ..BuildConfig::default()
    }
}

fn built(epochs: usize) -> Index {
    IndexBuilder::new(config(epochs))
        .build(data().corpus.clone(), None)
        .unwrap()
        .0
}

fn queries() -> MultiVectors {
    data().queries(6, 4, 8)
}

fn results<T: AsRef<[f32]> + Sync>(index: &Index<T>) -> Vec<Vec<Hit>> {
    index.search_batch(&queries(), PARAMS).unwrap()
}

#[test]
fn save_then_open_or_load_searches_identically() {
    for epochs in [0, 1] {
        let index = built(epochs);
        let dir = scratch("round-trip");
        index.save(&dir).unwrap();
        let mapped = Index::open(&dir).unwrap();
        assert_eq!(results(&mapped), results(&index));
        assert_eq!(mapped.weights(), index.weights());
        assert_eq!(mapped.feature_map(), index.feature_map());
        assert_eq!(mapped.corpus().tokens(), index.corpus().tokens());
        assert_eq!(mapped.build_config(), index.build_config());
        assert_eq!(mapped.target_norm(), index.target_norm());
        let verified = Index::open_verified(&dir).unwrap();
        assert_eq!(results(&verified), results(&index));
        let loaded = Index::load(&dir).unwrap();
        assert_eq!(results(&loaded), results(&index));
    }
}

#[test]
fn an_exported_model_round_trips_too() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let index = Index::from_files(
        fixtures.join("model.npz"),
        fixtures.join("corpus_tokens.npy"),
        fixtures.join("corpus_counts.npy"),
    )
    .unwrap();
    let dir = scratch("export");
    index.save(&dir).unwrap();
    let opened = Index::open(&dir).unwrap();
    let q = MultiVectors::new(vec![0.25f32; 3 * 16], 16, &[3]).unwrap();
    assert_eq!(
        opened.search_batch(&q, PARAMS).unwrap(),
        index.search_batch(&q, PARAMS).unwrap()
    );
    assert!(matches!(
        Index::load(&dir).unwrap().add_documents(&[0.5; 16], &[1]),
        Err(IndexError::NoSolver)
    ));
}

#[test]
fn documents_added_to_a_saved_index_persist() {
    let dir = scratch("add");
    built(1).save(&dir).unwrap();
    let mut index = Index::load(&dir).unwrap();
    let extra = data().queries(3, 5, 77);
    let ids = index.add_documents(extra.tokens(), &[5, 5, 5]).unwrap();
    assert_eq!(ids, 120..123);
    index.save(&dir).unwrap();
    let reopened = Index::open(&dir).unwrap();
    assert_eq!(reopened.len(), 123);
    assert_eq!(reopened.weights(), index.weights());
    let hit = reopened
        .search_one(
            extra.get(1),
            SearchParams {
                k: 1,
                n_candidates: 10,
            },
        )
        .unwrap();
    assert_eq!(hit[0].doc, 121);
    // Only the live generation is left behind.
    let generations = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("gen-")
        })
        .count();
    assert_eq!(generations, 1);
}

#[test]
fn a_crash_at_any_point_of_a_save_leaves_the_previous_index() {
    let old = built(0);
    let new = built(1);
    let staging = scratch("staging");
    new.save(&staging).unwrap();
    let new_generation = current_generation(&staging).unwrap();
    let n_files = fs::read_dir(&new_generation).unwrap().count();
    for steps in 0..=n_files {
        let dir = scratch("crash");
        old.save(&dir).unwrap();
        let want = results(&old);
        // The crashed save's generation directory, complete or not...
        partial_copy(&new_generation, &dir.join("gen-000002"), steps);
        // ...and, for the last steps, the new CURRENT written but not yet
        // renamed over the old one.
        if steps == n_files {
            fs::write(dir.join(".CURRENT.tmp-1-0"), "gen-000002\n").unwrap();
        }
        assert_eq!(
            results(&Index::open(&dir).unwrap()),
            want,
            "crash after {steps} files"
        );
        assert_eq!(
            results(&Index::load(&dir).unwrap()),
            want,
            "crash after {steps} files"
        );
        // The next save succeeds and cleans up.
        new.save(&dir).unwrap();
        assert_eq!(results(&Index::open(&dir).unwrap()), results(&new));
    }
}

fn error_kind(result: Result<impl std::fmt::Debug, IndexError>) -> LoadErrorKind {
    match result {
        Err(IndexError::Load(e)) => e.kind,
        other => panic!("expected a load error, got {other:?}"),
    }
}

#[test]
fn corrupt_directories_get_typed_errors() {
    let index = built(0);
    let fresh = || {
        let dir = scratch("corrupt");
        index.save(&dir).unwrap();
        let generation = current_generation(&dir).unwrap();
        (dir, generation)
    };

    // A flipped byte in W: found by its checksum.
    let (dir, generation) = fresh();
    let mut bytes = fs::read(generation.join("W.npy")).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    fs::write(generation.join("W.npy"), &bytes).unwrap();
    assert!(
        matches!(error_kind(Index::open(&dir)), LoadErrorKind::Checksum { key, .. } if key == "W")
    );

    // A flipped byte in the mapped tokens: open stays O(1); verification finds it.
    let (dir, generation) = fresh();
    let mut bytes = fs::read(generation.join("tokens.npy")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(generation.join("tokens.npy"), &bytes).unwrap();
    assert!(Index::open(&dir).is_ok());
    assert!(
        matches!(error_kind(Index::open_verified(&dir)), LoadErrorKind::Checksum { key, .. } if key == "tokens")
    );
    assert!(matches!(
        error_kind(Index::load(&dir)),
        LoadErrorKind::Checksum { .. }
    ));

    // Truncated tokens.
    let (dir, generation) = fresh();
    let bytes = fs::read(generation.join("tokens.npy")).unwrap();
    fs::write(generation.join("tokens.npy"), &bytes[..bytes.len() - 4]).unwrap();
    assert!(
        matches!(error_kind(Index::open(&dir)), LoadErrorKind::Corrupt { key, .. } if key == "tokens")
    );

    // A missing and an extra file.
    let (dir, generation) = fresh();
    fs::remove_file(generation.join("offsets.npy")).unwrap();
    assert!(
        matches!(error_kind(Index::open(&dir)), LoadErrorKind::MissingArray { key } if key == "offsets")
    );
    let (dir, generation) = fresh();
    fs::write(generation.join("stray.npy"), b"x").unwrap();
    assert!(
        matches!(error_kind(Index::open(&dir)), LoadErrorKind::UnexpectedFile { name } if name == "stray.npy")
    );

    // An unknown format version, a garbled manifest, a bad CURRENT.
    let (dir, generation) = fresh();
    let manifest = fs::read_to_string(generation.join("manifest.json")).unwrap();
    fs::write(
        generation.join("manifest.json"),
        manifest.replace("\"format_version\": 1", "\"format_version\": 9"),
    )
    .unwrap();
    assert!(matches!(
        error_kind(Index::open(&dir)),
        LoadErrorKind::UnsupportedVersion { found: 9, .. }
    ));
    fs::write(
        generation.join("manifest.json"),
        &manifest[..manifest.len() / 2],
    )
    .unwrap();
    assert!(matches!(
        error_kind(Index::open(&dir)),
        LoadErrorKind::Manifest(_)
    ));
    fs::write(dir.join("CURRENT"), "../../etc\n").unwrap();
    assert!(matches!(
        error_kind(Index::open(&dir)),
        LoadErrorKind::Manifest(_)
    ));
    assert!(matches!(
        error_kind(Index::open(scratch("absent"))),
        LoadErrorKind::Io(_)
    ));

    // Manifest shapes that disagree with the metadata are caught before use.
    let (dir, generation) = fresh();
    let manifest = fs::read_to_string(generation.join("manifest.json")).unwrap();
    let n_docs = index.len();
    fs::write(
        generation.join("manifest.json"),
        manifest.replace(
            &format!("\"n_docs\": {n_docs}"),
            &format!("\"n_docs\": {}", n_docs + 1),
        ),
    )
    .unwrap();
    assert!(matches!(Index::open(&dir), Err(IndexError::Format { .. })));

    // Saving never clobbers a directory that is not an index.
    let dir = scratch("foreign");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("notes.txt"), "mine").unwrap();
    assert!(matches!(
        error_kind(index.save(&dir).map(|_| ())),
        LoadErrorKind::Manifest(_)
    ));
    assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
}

/// A saved index's files (name, bytes) and the index's search results.
type Saved = (Vec<(String, Vec<u8>)>, Vec<Vec<Hit>>);

fn saved_files() -> &'static Saved {
    static SAVED: OnceLock<Saved> = OnceLock::new();
    SAVED.get_or_init(|| {
        let index = built(0);
        let dir = scratch("fuzz-source");
        index.save(&dir).unwrap();
        let generation = current_generation(&dir).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&generation)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        (files, results(&index))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Byte mutations anywhere in an index directory: opening and loading
    /// return an error or an index, never panic; a fully verified load that
    /// succeeds searches exactly as the original.
    #[test]
    fn mutated_directories_never_panic(
        file_index in 0usize..16,
        position in any::<prop::sample::Index>(),
        mutation in 0u8..4,
        value in any::<u8>(),
    ) {
        let (files, want) = saved_files();
        let (name, original) = &files[file_index % files.len()];
        let mut bytes = original.clone();
        let at = position.index(bytes.len().max(1));
        match mutation {
            0 => { if let Some(b) = bytes.get_mut(at) { *b ^= value.max(1); } }
            1 => bytes.truncate(at),
            2 => bytes.insert(at.min(bytes.len()), value),
            _ => { if let Some(b) = bytes.get_mut(at) { *b = value; } }
        }
        let dir = scratch("fuzz");
        let generation = dir.join("gen-000001");
        fs::create_dir_all(&generation).unwrap();
        for (other, content) in files {
            fs::write(generation.join(other), if other == name { &bytes } else { content }).unwrap();
        }
        fs::write(dir.join("CURRENT"), "gen-000001\n").unwrap();
        if let Ok(index) = Index::open(&dir) {
            // The mapped tokens may be mutated (unverified): results may
            // differ, but searching must not panic.
            let _ = index.search_batch(&queries(), PARAMS);
        }
        if let Ok(index) = Index::load(&dir) {
            let unchanged_json = name == "manifest.json" && bytes != *original;
            if !unchanged_json {
                prop_assert_eq!(&results(&index), want);
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
