//! Segmented index directories: appended segments search like one index,
//! deletions hide documents, compaction keeps ids and results, every
//! change is atomic, and bad changes fail without losing anything.

mod common_crash;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common_crash::partial_copy;

use lemur::io::LoadErrorKind;
use lemur::synthetic::{CorpusSpec, StreamedCorpus};
use lemur::{
    BuildConfig, FirstStageConfig, Hit, Index, IndexBuilder, IndexError, MultiVectors,
    SearchParams, SegmentedIndex, StorageConfig, TokenCodec, WeightCodec, current_generation,
};

/// Documents in the base segment; the corpus has more to add.
const BASE: usize = 600;
const TOTAL: usize = 800;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lemur-segments-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn corpus() -> &'static StreamedCorpus {
    static CORPUS: OnceLock<StreamedCorpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        StreamedCorpus::new(&CorpusSpec {
            dim: 24,
            min_tokens: 3,
            max_tokens: 12,
            n_centroids: 48,
            ..CorpusSpec::colbert_scale(TOTAL)
        })
    })
}

fn config(storage: StorageConfig, first_stage: FirstStageConfig) -> BuildConfig {
    BuildConfig {
        epochs: 0,
        final_hidden_dim: 192,
        fit_sample: 512,
        seed: 3,
        storage,
        first_stage,
        block_docs: 64,
        ..BuildConfig::default()
    }
}

/// The exactly scanned f32 index over the base documents, in memory.
fn base_index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let config = config(StorageConfig::F32, FirstStageConfig::default());
        IndexBuilder::new(config)
            .build(corpus().chunk(0..BASE), None)
            .unwrap()
            .0
    })
}

/// A directory holding the base index.
fn saved(name: &str) -> PathBuf {
    let dir = scratch(name);
    base_index().save(&dir).unwrap();
    dir
}

fn queries() -> MultiVectors {
    corpus().queries(40, 8, 11)
}

fn search(index: &SegmentedIndex, n_candidates: usize) -> Vec<Vec<Hit>> {
    let queries = queries();
    index
        .search_batch(
            &queries,
            SearchParams {
                k: 10,
                n_candidates,
            },
        )
        .unwrap()
}

fn add(index: &mut SegmentedIndex, docs: std::ops::Range<usize>) -> std::ops::Range<u32> {
    let added = corpus().chunk(docs);
    let counts: Vec<usize> = added.counts().collect();
    index.add_documents(added.tokens(), &counts).unwrap()
}

fn ids(hits: &[Vec<Hit>]) -> Vec<Vec<u32>> {
    hits.iter()
        .map(|list| list.iter().map(|hit| hit.doc).collect())
        .collect()
}

/// Share of `truth`'s hits that `found` has.
fn recall(found: &[Vec<Hit>], truth: &[Vec<Hit>]) -> f64 {
    let (mut shared, mut all) = (0, 0);
    for (f, t) in found.iter().zip(truth) {
        shared += t
            .iter()
            .filter(|x| f.iter().any(|y| y.doc == x.doc))
            .count();
        all += t.len();
    }
    shared as f64 / all as f64
}

#[test]
fn appended_segments_search_like_one_index_of_all_documents() {
    let dir = saved("appended");
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    assert_eq!(add(&mut segmented, BASE..700), 600..700);
    assert_eq!(add(&mut segmented, 700..TOTAL), 700..800);
    assert_eq!((segmented.len(), segmented.n_segments()), (TOTAL, 3));
    // Only the new segment's files were written: the base's are links.
    let generation = current_generation(&dir).unwrap();
    assert!(generation.join("seg-000002.W.npy").is_file());

    // One index of all documents, the added ones fitted the same way.
    let mut whole = base_index().clone();
    let rest = corpus().chunk(BASE..TOTAL);
    let counts: Vec<usize> = rest.counts().collect();
    whole.add_documents(rest.tokens(), &counts).unwrap();
    let queries = queries();
    for n_candidates in [30, 120] {
        let params = SearchParams {
            k: 10,
            n_candidates,
        };
        let want = whole.search_batch(&queries, params).unwrap();
        let found = search(&segmented, n_candidates);
        assert!(recall(&found, &want) > 0.99, "k' = {n_candidates}");
        for (f, w) in found.iter().zip(&want) {
            for (a, b) in f.iter().zip(w) {
                assert!((a.score - b.score).abs() < 1e-4);
            }
        }
    }
    // With every document a candidate, the hits are the exact top 10.
    let truth = segmented.exhaustive_search(&queries, 10).unwrap();
    assert_eq!(ids(&search(&segmented, TOTAL)), ids(&truth));
    // And they survive reopening.
    let reopened = SegmentedIndex::open_verified(&dir).unwrap();
    assert_eq!(search(&reopened, 30), search(&segmented, 30));
    // A plain index cannot stand for several segments.
    assert!(matches!(
        Index::open(&dir),
        Err(IndexError::Segmented { segments: 3, .. })
    ));
}

#[test]
fn deleted_documents_are_never_hits_and_stay_deleted() {
    let dir = saved("deletes");
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    add(&mut segmented, BASE..TOTAL);
    // Delete every document that is a top-3 hit of some query, in both
    // segments.
    let before = search(&segmented, 50);
    let mut doomed: Vec<u32> = before
        .iter()
        .flat_map(|list| list.iter().take(3).map(|hit| hit.doc))
        .collect();
    doomed.extend([5, 650, 799]);
    doomed.sort_unstable();
    doomed.dedup();
    assert_eq!(segmented.delete_documents(&doomed).unwrap(), doomed.len());
    assert_eq!(segmented.len(), TOTAL - doomed.len());
    assert_eq!(segmented.n_deleted(), doomed.len());
    let after = search(&segmented, 50);
    assert!(after.iter().flatten().all(|hit| !doomed.contains(&hit.doc)));
    assert!(after.iter().all(|list| list.len() == 10));
    let queries = queries();
    let truth = segmented.exhaustive_search(&queries, 10).unwrap();
    assert_eq!(ids(&search(&segmented, TOTAL)), ids(&truth));
    assert!(recall(&after, &truth) > 0.9);

    let mut reopened = SegmentedIndex::open(&dir).unwrap();
    assert_eq!(search(&reopened, 50), after);
    assert!(!reopened.contains(doomed[0]) && reopened.contains(1));

    // Deleting a deleted or never-added id fails and changes nothing.
    let generation = current_generation(&dir).unwrap();
    for bad in [doomed[0], 800, u32::MAX] {
        assert!(matches!(
            reopened.delete_documents(&[1, bad]),
            Err(IndexError::UnknownDocument { id }) if id == bad
        ));
    }
    assert!(reopened.contains(1));
    assert_eq!(current_generation(&dir).unwrap(), generation);
    // Neither can every document go.
    let every: Vec<u32> = (0..TOTAL as u32)
        .filter(|id| reopened.contains(*id))
        .collect();
    assert!(matches!(
        reopened.delete_documents(&every),
        Err(IndexError::NoDocumentsLeft)
    ));
    // An appended segment whose documents are all deleted is dropped.
    let second: Vec<u32> = (BASE as u32..TOTAL as u32)
        .filter(|id| reopened.contains(*id))
        .collect();
    reopened.delete_documents(&second).unwrap();
    assert_eq!(reopened.n_segments(), 1);
    let generation = current_generation(&dir).unwrap();
    assert!(!generation.join("seg-000001.W.npy").exists());
    assert_eq!(SegmentedIndex::open(&dir).unwrap().n_segments(), 1);
}

#[test]
fn compaction_keeps_ids_and_results_and_frees_deleted_documents() {
    let dir = saved("compact");
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    add(&mut segmented, BASE..700);
    add(&mut segmented, 700..TOTAL);
    let doomed: Vec<u32> = (0..TOTAL as u32).filter(|id| id % 7 == 3).collect();
    segmented.delete_documents(&doomed).unwrap();
    let before = search(&segmented, TOTAL);
    let live = segmented.len();
    let live_ids: Vec<u32> = (0..TOTAL as u32).filter(|id| id % 7 != 3).collect();
    assert_eq!(segmented.ids(), live_ids);
    let stored = |index: &SegmentedIndex| -> Vec<(Vec<f32>, Vec<f32>)> {
        live_ids
            .iter()
            .map(|&id| {
                let document = index.document(id).unwrap();
                assert_eq!(document.id, id);
                (document.weights.to_vec(), document.tokens.to_vec())
            })
            .collect()
    };
    let documents = stored(&segmented);
    // Every stored document is the corpus document of its id, whichever
    // segment holds it.
    for (&id, (weights, tokens)) in live_ids.iter().zip(&documents) {
        assert_eq!(weights.len(), segmented.feature_dim());
        assert_eq!(
            tokens,
            corpus().chunk(id as usize..id as usize + 1).tokens()
        );
    }
    assert!(matches!(
        segmented.document(3),
        Err(IndexError::UnknownDocument { id: 3 })
    ));

    assert!(segmented.compact().unwrap());
    assert_eq!(segmented.ids(), live_ids);
    assert_eq!(stored(&segmented), documents);
    assert_eq!((segmented.n_segments(), segmented.n_deleted()), (1, 0));
    assert_eq!(segmented.len(), live);
    assert_eq!(search(&segmented, TOTAL), before);
    assert_eq!(segmented.base().len(), live);
    // Nothing left to merge.
    assert!(!segmented.compact().unwrap());
    // Ids are not reused after a compaction.
    assert_eq!(add(&mut segmented, 0..5), 800..805);
    let reopened = SegmentedIndex::open_verified(&dir).unwrap();
    assert_eq!(search(&reopened, 100), search(&segmented, 100));
    assert!(!reopened.contains(3) && reopened.contains(4) && reopened.contains(804));
}

#[test]
fn compressed_segments_with_graphs_search_and_merge() {
    let storage = StorageConfig {
        compress_min_docs: 0,
        tokens: TokenCodec::Int4,
        weights: WeightCodec::Int8,
        rescore_depth: 16,
    };
    let graph = FirstStageConfig {
        graph_min_docs: 150,
        projection_dim: 32,
        ..FirstStageConfig::default()
    };
    let dir = scratch("compressed");
    let (index, _) = IndexBuilder::new(config(storage, graph))
        .build_into(&corpus().chunk(0..BASE), None, &dir)
        .unwrap();
    drop(index);
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    add(&mut segmented, BASE..700);
    add(&mut segmented, 700..720);
    let infos = segmented.segments();
    assert!(infos.iter().all(|info| info.compressed));
    assert_eq!(
        infos.iter().map(|info| info.graph).collect::<Vec<_>>(),
        [true, false, false]
    );
    segmented.delete_documents(&[1, 2, 650, 710]).unwrap();
    let queries = queries();
    let truth = segmented.exhaustive_search(&queries, 10).unwrap();
    let found = search(&segmented, 60);
    assert!(recall(&found, &truth) > 0.9, "{}", recall(&found, &truth));
    // The hits' scores are exact f32 MaxSim.
    for (f, t) in found.iter().zip(&truth) {
        assert!((f[0].score - t[0].score).abs() < 1e-4 || f[0].doc != t[0].doc);
    }
    assert!(segmented.compact().unwrap());
    let infos = segmented.segments();
    assert!(infos[0].compressed && infos[0].graph && infos.len() == 1);
    assert!(recall(&search(&segmented, 60), &truth) > 0.9);
}

/// A graph for every segment of 50 documents or more, over full rows.
fn full_width_graph() -> FirstStageConfig {
    FirstStageConfig {
        graph_min_docs: 50,
        projection_dim: usize::MAX,
        refine_factor: 8,
        ..FirstStageConfig::default()
    }
}

#[test]
fn the_first_stage_is_built_again_in_place_and_dropped_again() {
    let dir = saved("first-stage");
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    add(&mut segmented, BASE..700);
    segmented.delete_documents(&[5, 650]).unwrap();
    let scanned = search(&segmented, 100);
    let truth = segmented.exhaustive_search(&queries(), 10).unwrap();

    let bad = FirstStageConfig {
        projection_dim: 0,
        ..full_width_graph()
    };
    let generation = current_generation(&dir).unwrap();
    assert!(matches!(
        segmented.rebuild_first_stage(&bad),
        Err(IndexError::FirstStage(_))
    ));
    assert_eq!(current_generation(&dir).unwrap(), generation);

    assert_eq!(
        segmented.rebuild_first_stage(&full_width_graph()).unwrap(),
        2
    );
    assert!(segmented.segments().iter().all(|info| info.graph));
    let graph = segmented.base().first_stage_graph().unwrap();
    assert!(graph.projection().is_identity());
    assert_eq!(graph.graph().dim(), segmented.feature_dim());
    let found = search(&segmented, 60);
    assert!(recall(&found, &truth) > 0.9, "{}", recall(&found, &truth));
    assert_eq!(
        search(&SegmentedIndex::open_verified(&dir).unwrap(), 60),
        found
    );
    // Only the graphs were written; everything else is linked.
    let generation = current_generation(&dir).unwrap();
    assert!(generation.join("seg-000001.ann_codes.npy").is_file());
    // Adding keeps the configuration: a segment of 50 gets its graph.
    add(&mut segmented, 700..750);
    assert!(segmented.segments()[2].graph);

    assert_eq!(
        segmented
            .rebuild_first_stage(&FirstStageConfig::default())
            .unwrap(),
        0
    );
    let generation = current_generation(&dir).unwrap();
    assert!(fs::read_dir(&generation).unwrap().all(|entry| {
        !entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("ann_")
    }));
    let mut without_added = SegmentedIndex::open(&dir).unwrap();
    let added: Vec<u32> = (700..750).collect();
    without_added.delete_documents(&added).unwrap();
    assert_eq!(search(&without_added, 100), scanned);

    // An index saved whole stays one that `Index::open` takes.
    let plain = saved("first-stage-plain");
    SegmentedIndex::open(&plain)
        .unwrap()
        .rebuild_first_stage(&full_width_graph())
        .unwrap();
    let opened = Index::open(&plain).unwrap();
    assert!(opened.first_stage_graph().is_some());
    assert_eq!(opened.first_stage_refine_factor(), Some(8));
}

/// Copies a directory tree (hard links become copies).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_change_leaves_the_previous_state() {
    type Change = fn(&mut SegmentedIndex);
    let changes: [(&str, Change); 4] = [
        ("add", |index| {
            add(index, 700..TOTAL);
        }),
        ("first-stage", |index| {
            index.rebuild_first_stage(&full_width_graph()).unwrap();
        }),
        ("delete", |index| {
            index.delete_documents(&[0, 3, 650]).unwrap();
        }),
        ("compact", |index| {
            index.compact().unwrap();
        }),
    ];
    // The state every change starts from: two segments, a deletion.
    let start = saved("crash-start");
    let mut index = SegmentedIndex::open(&start).unwrap();
    add(&mut index, BASE..700);
    index.delete_documents(&[10]).unwrap();
    let want = search(&index, 50);
    drop(index);
    for (name, change) in changes {
        let staging = scratch(&format!("crash-staging-{name}"));
        copy_dir(&start, &staging);
        change(&mut SegmentedIndex::open(&staging).unwrap());
        let new_generation = current_generation(&staging).unwrap();
        let generation_name = new_generation.file_name().unwrap().to_owned();
        let n_files = fs::read_dir(&new_generation).unwrap().count();
        for steps in 0..=n_files {
            let dir = scratch(&format!("crash-{name}"));
            copy_dir(&start, &dir);
            partial_copy(&new_generation, &dir.join(&generation_name), steps);
            let mut index = SegmentedIndex::open(&dir).unwrap();
            assert_eq!(
                search(&index, 50),
                want,
                "{name}: crash after {steps} files"
            );
            // The change then succeeds over the debris.
            change(&mut index);
            let fresh = SegmentedIndex::open(&dir).unwrap();
            assert_eq!(search(&fresh, 50), search(&index, 50));
        }
    }
}

#[test]
fn bad_changes_fail_with_the_cause_and_lose_nothing() {
    let dir = saved("bad");
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    let want = search(&segmented, 50);
    let generation = current_generation(&dir).unwrap();
    let document = corpus().chunk(BASE..BASE + 1);
    // Tokens of the wrong width, NaN, no tokens.
    let wrong_width = &document.tokens()[..document.tokens().len() - 1];
    assert!(matches!(
        segmented.add_documents(wrong_width, &[document.n_tokens()]),
        Err(IndexError::Corpus(_))
    ));
    let mut nan = document.tokens().to_vec();
    nan[3] = f32::NAN;
    assert!(matches!(
        segmented.add_documents(&nan, &[document.n_tokens()]),
        Err(IndexError::Corpus(_))
    ));
    assert!(segmented.add_documents(&[], &[0]).is_err());
    assert_eq!(current_generation(&dir).unwrap(), generation);
    assert_eq!(search(&segmented, 50), want);

    // A second handle that missed a commit refuses to commit over it.
    let mut stale = SegmentedIndex::open(&dir).unwrap();
    add(&mut segmented, BASE..650);
    let err = stale.delete_documents(&[1]).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was opened"),
        "{err}"
    );
    // ...while it still searches what it opened, files unlinked or not.
    segmented.compact().unwrap();
    assert_eq!(search(&stale, 50), want);

    // A corrupt or truncated segment file is named when opening.
    add(&mut segmented, 650..700);
    let generation = current_generation(&dir).unwrap();
    let tokens = generation.join("seg-000001.tokens.npy");
    let mut bytes = fs::read(&tokens).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    // Replace the file, not its inode (an older generation may share it).
    fs::remove_file(&tokens).unwrap();
    fs::write(&tokens, &bytes).unwrap();
    match SegmentedIndex::open_verified(&dir) {
        Err(IndexError::Load(e)) => {
            assert!(matches!(e.kind, LoadErrorKind::Checksum { .. }), "{e}")
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    fs::remove_file(&tokens).unwrap();
    fs::write(&tokens, &bytes[..bytes.len() / 2]).unwrap();
    match SegmentedIndex::open(&dir) {
        Err(IndexError::Load(e)) => assert!(matches!(e.kind, LoadErrorKind::Corrupt { .. }), "{e}"),
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

#[test]
fn an_imported_index_can_delete_and_compact_but_not_add() {
    let base = base_index();
    let imported = Index::new(
        base.feature_map().clone(),
        base.weights().clone(),
        base.corpus().clone(),
    )
    .unwrap();
    let dir = scratch("imported");
    imported.save(&dir).unwrap();
    let mut segmented = SegmentedIndex::open(&dir).unwrap();
    let document = corpus().chunk(BASE..BASE + 1);
    assert!(matches!(
        segmented.add_documents(document.tokens(), &[document.n_tokens()]),
        Err(IndexError::NoSolver)
    ));
    segmented.delete_documents(&[0, 1]).unwrap();
    assert!(segmented.compact().unwrap());
    assert_eq!(segmented.len(), BASE - 2);
    let hits = search(&segmented, 40);
    assert!(hits.iter().flatten().all(|hit| hit.doc > 1));
}
