//! The real `lemur` binary, every subcommand, including its error paths.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok, ok_json};
use lemur::io::save_multivectors;
use lemur::synthetic::{self, CorpusSpec};

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("lemur-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = synthetic::corpus(&CorpusSpec {
            n_docs: 80,
            dim: 16,
            min_tokens: 3,
            max_tokens: 9,
            n_centroids: 10,
            topics_per_doc: 2,
            noise: 0.2,
            seed: 1,
        });
        save_multivectors(&data.corpus, dir.join("tokens.npy"), dir.join("counts.npy")).unwrap();
        save_multivectors(
            &data.queries(4, 5, 2),
            dir.join("q.npy"),
            dir.join("qc.npy"),
        )
        .unwrap();
        save_multivectors(
            &data.queries(3, 6, 3),
            dir.join("new.npy"),
            dir.join("newc.npy"),
        )
        .unwrap();
        let other = synthetic::corpus(&CorpusSpec {
            n_docs: 2,
            dim: 8,
            ..CorpusSpec::colbert_10k()
        });
        save_multivectors(&other.corpus, dir.join("wide8.npy"), dir.join("wide8c.npy")).unwrap();
        std::fs::write(
            dir.join("build.toml"),
            "epochs = 1\nfinal_hidden_dim = 32\ntrain_docs = 32\nlearn_rows = 300\nfit_sample = 128\nbatch_size = 64\n",
        )
        .unwrap();
        std::fs::write(dir.join("qrels.tsv"), "0 5 1\n0 7 2\n1 3 1\n").unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

fn build(files: &Files) -> String {
    let index = files.path("idx");
    ok(&[
        "--quiet",
        "build",
        "--tokens",
        &files.path("tokens.npy"),
        "--counts",
        &files.path("counts.npy"),
        "--config",
        &files.path("build.toml"),
        "--out",
        &index,
    ]);
    index
}

#[test]
fn build_info_search_eval_add() {
    let files = Files::new("flow");
    let index = build(&files);
    let info: serde_json::Value = ok_json(&["--json", "info", &index]);
    assert_eq!(info["documents"], 80);
    assert_eq!(info["feature_dim"], 32);
    assert_eq!(info["can_add_documents"], true);
    assert!(ok(&["info", &index]).contains("documents    80"));

    let search = [
        "--threads",
        "2",
        "--quiet",
        "search",
        &index,
        "--queries",
        &files.path("q.npy"),
        "--query-counts",
        &files.path("qc.npy"),
        "-k",
        "3",
        "--candidates",
        "10",
    ];
    let stdout = ok(&search);
    let rows: Vec<(usize, u32, f32)> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 12, "3 hits for each of 4 queries");
    for (q, chunk) in rows.chunks(3).enumerate() {
        assert!(chunk.iter().all(|r| r.0 == q));
        assert!(chunk.windows(2).all(|w| w[0].2 >= w[1].2), "best first");
    }
    let run = files.path("run.tsv");
    let mut with_out = search.to_vec();
    with_out.extend(["--out", &run]);
    ok(&with_out);
    assert_eq!(std::fs::read_to_string(&run).unwrap(), stdout);
    // Through the bf16 and int8 filters the hits are the f32 ones, scores
    // included; plain bf16 runs too, and an unknown precision is refused.
    for preset in ["bf16-filter-all", "bf16-int8-filter", "int8-filters"] {
        let mut filtered = search.to_vec();
        filtered.extend(["--precision", preset]);
        assert_eq!(ok(&filtered), stdout, "{preset}");
    }
    let mut bf16 = search.to_vec();
    bf16.extend(["--precision", "bf16"]);
    assert_eq!(ok(&bf16).lines().count(), 12);
    let mut unknown = search.to_vec();
    unknown.extend(["--precision", "fp8"]);
    let refused = common::lemur(&unknown);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("fp8"));

    let eval = ok(&[
        "eval",
        &index,
        "--queries",
        &files.path("q.npy"),
        "--query-counts",
        &files.path("qc.npy"),
        "--qrels",
        &files.path("qrels.tsv"),
    ]);
    assert!(eval.contains("recall@10 vs exact MaxSim"), "{eval}");
    assert!(eval.contains("nDCG@10 (qrels, 2 judged queries)"), "{eval}");
    let (queries, query_counts) = (files.path("q.npy"), files.path("qc.npy"));
    let eval_recall = || {
        let json = ok_json(&[
            "--json",
            "eval",
            &index,
            "--queries",
            &queries,
            "--query-counts",
            &query_counts,
        ]);
        json["recall_vs_exact"].as_f64().unwrap()
    };
    assert!(eval_recall() > 0.5);

    let added: serde_json::Value = ok_json(&[
        "--json",
        "add",
        &index,
        "--tokens",
        &files.path("new.npy"),
        "--counts",
        &files.path("newc.npy"),
    ]);
    assert_eq!(added["first_id"], 80);
    assert_eq!(added["documents"], 83);
    let info: serde_json::Value = ok_json(&["--json", "info", &index]);
    assert_eq!(info["documents"], 83);
    assert_eq!(info["segments"].as_array().unwrap().len(), 2);

    // Deleting documents of both segments: they are never hits again.
    let deleted: serde_json::Value = ok_json(&["--json", "delete", &index, "--ids", "0,81"]);
    assert_eq!(deleted["deleted"], 2);
    assert_eq!(deleted["documents"], 81);
    let ids_file = files.path("ids.txt");
    std::fs::write(&ids_file, "5\n6 7\n").unwrap();
    ok(&["--quiet", "delete", &index, "--ids-file", &ids_file]);
    let mut wide = search.to_vec();
    wide[12] = "20";
    let after = ok(&wide);
    let hit_ids: Vec<u32> = after
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(hit_ids.iter().all(|id| ![0, 81, 5, 6, 7].contains(id)));
    assert!(
        fails(&["delete", &index, "--ids", "81"]).contains("document id 81 is not in the index")
    );
    let refused = common::lemur(&["delete", &index, "--ids", "x"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid"));
    // Compaction merges the two segments; ids and hits stay.
    let compacted: serde_json::Value = ok_json(&["--json", "compact", &index]);
    assert_eq!(compacted["merged"], true);
    assert_eq!(compacted["deleted_dropped"], 5);
    assert_eq!(ok(&wide), after);
    let info: serde_json::Value = ok_json(&["--json", "info", &index]);
    assert_eq!(info["documents"], 78);
    assert_eq!(info["segments"].as_array().unwrap().len(), 1);
    assert_eq!(info["next_id"], 83);
    assert!(ok(&["compact", &index]).contains("nothing to compact"));
    // A graph over full rows that lists every document gives the same hits.
    let graph: serde_json::Value = ok_json(&[
        "--json",
        "first-stage",
        &index,
        "--graph-min-docs",
        "10",
        "--projection-dim",
        "100000",
        "--refine-factor",
        "50",
    ]);
    assert_eq!(graph["segments_with_graph"], 1);
    let info: serde_json::Value = ok_json(&["--json", "info", &index]);
    assert_eq!(info["segments"][0]["graph"], true);
    assert_eq!(ok(&wide), after);
    assert!(fails(&["first-stage", &index, "--max-degree", "1"]).contains("max_degree"));
    assert!(ok(&["first-stage", &index, "--exact"]).contains("0 of 1 segments have a graph"));
    assert_eq!(ok(&wide), after);
    // Evaluation works on the compacted directory, whose ids have gaps.
    assert!(eval_recall() > 0.5);
}

#[test]
fn import_an_original_export() {
    let files = Files::new("import");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lemur/tests/data");
    let f = |name: &str| fixtures.join(name).to_string_lossy().into_owned();
    let index = files.path("imported");
    ok(&[
        "--quiet",
        "import",
        "--npz",
        &f("model.npz"),
        "--tokens",
        &f("corpus_tokens.npy"),
        "--counts",
        &f("corpus_counts.npy"),
        "--out",
        &index,
    ]);
    let stdout = ok(&[
        "--quiet",
        "search",
        &index,
        "--queries",
        &f("query_tokens.npy"),
        "--query-counts",
        &f("query_counts.npy"),
        "-k",
        "5",
        "--candidates",
        "12",
    ]);
    // The committed fixtures' expected ids, through the binary.
    let first_query: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("0\t"))
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(first_query.len(), 5);
    let error = fails(&[
        "add",
        &index,
        "--tokens",
        &f("query_tokens.npy"),
        "--counts",
        &f("query_counts.npy"),
    ]);
    assert!(error.contains("no weight solver"), "{error}");
}

#[test]
fn demo_runs() {
    let stdout = ok(&["demo", "--docs", "150"]);
    assert!(stdout.contains("recall@10 against brute force"), "{stdout}");
}

#[test]
fn errors_are_one_line_and_name_the_problem() {
    let files = Files::new("errors");
    let index = build(&files);
    let missing = files.path("absent.npy");
    let error = fails(&[
        "build",
        "--tokens",
        &missing,
        "--counts",
        &files.path("counts.npy"),
        "--out",
        &files.path("x"),
    ]);
    assert!(error.contains("absent.npy"), "{error}");
    let error = fails(&[
        "search",
        &index,
        "--queries",
        &files.path("wide8.npy"),
        "--query-counts",
        &files.path("wide8c.npy"),
    ]);
    assert!(error.contains("8 wide") && error.contains("16"), "{error}");
    let error = fails(&[
        "search",
        &files.path("no-such-index"),
        "--queries",
        &files.path("q.npy"),
        "--query-counts",
        &files.path("qc.npy"),
    ]);
    assert!(error.contains("cannot open index"), "{error}");
    let error = fails(&[
        "search",
        &index,
        "--queries",
        &files.path("q.npy"),
        "--query-counts",
        &files.path("qc.npy"),
        "-k",
        "20",
        "--candidates",
        "10",
    ]);
    assert!(error.contains("n_candidates"), "{error}");
    std::fs::write(files.dir.join("bad.toml"), "epoch = 3\n").unwrap();
    let error = fails(&[
        "build",
        "--tokens",
        &files.path("tokens.npy"),
        "--counts",
        &files.path("counts.npy"),
        "--config",
        &files.path("bad.toml"),
        "--out",
        &files.path("y"),
    ]);
    assert!(error.contains("invalid build config"), "{error}");

    // A corrupted index: a flipped byte in W.
    let generation = lemur::current_generation(&index).unwrap();
    let mut bytes = std::fs::read(generation.join("W.npy")).unwrap();
    let at = bytes.len() - 1;
    bytes[at] ^= 0x10;
    std::fs::write(generation.join("W.npy"), bytes).unwrap();
    let error = fails(&["info", &index]);
    assert!(
        error.contains("checksum") && error.contains("W.npy"),
        "{error}"
    );
}
