//! The scale benchmark behind `cargo xtask bench-scale`: build an index at
//! the default settings over a seeded streamed corpus, open it from disk,
//! and measure memory, latency, throughput and recall against exact f32
//! MaxSim over every document.
//!
//! `cargo run --release -p lemur-bench --bin scale -- --docs N [--threads T]
//! [--queries Q] [--epochs E] [--graph-min-docs G] [--dir DIR] [--json OUT]`
//!
//! The corpus is `CorpusSpec::colbert_scale(N)` (d = 128, 16..=120 tokens,
//! 68 on average; 32-token queries); every document is generated from
//! (seed, id), so the exact ground truth is computed chunk by chunk.
//! `--epochs` and `--graph-min-docs` override the defaults (the table's
//! and the JSON's `epochs` and `first_stage` say which were used).

use std::path::PathBuf;
use std::time::Instant;

use lemur::maxsim::{Isa, PackedQuery, maxsim_packed};
use lemur::synthetic::{CorpusSpec, StreamedCorpus};
use lemur::topk::TopK;
use lemur::{BuildConfig, Index, IndexBuilder, MultiVectors, SearchParams, Stage};
use lemur_bench::{pool, proc_status_bytes};
use rayon::prelude::*;

/// Documents generated at a time for the ground truth.
const TRUTH_CHUNK: usize = 50_000;
/// Tokens per query.
const QUERY_TOKENS: usize = 32;
/// Queries run once before the resident memory is read.
const WARM_UP_QUERIES: usize = 1000;

struct Args {
    docs: usize,
    threads: usize,
    queries: usize,
    epochs: Option<usize>,
    graph_min_docs: Option<usize>,
    dir: PathBuf,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        docs: 0,
        threads: 2,
        queries: 200,
        epochs: None,
        graph_min_docs: None,
        dir: std::env::temp_dir().join("lemur-bench-scale"),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--docs" => args.docs = number(value()?)?,
            "--threads" => args.threads = number(value()?)?,
            "--queries" => args.queries = number(value()?)?,
            "--epochs" => args.epochs = Some(number(value()?)?),
            "--graph-min-docs" => args.graph_min_docs = Some(number(value()?)?),
            "--dir" => args.dir = PathBuf::from(value()?),
            "--json" => args.json = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.docs == 0 || args.threads == 0 || args.queries < 100 {
        return Err("--docs N (N >= 1) is required; --threads >= 1; --queries >= 100".into());
    }
    Ok(args)
}

/// The exact f32 MaxSim top 10 of every query over every document,
/// generated and scored a chunk at a time.
fn exact_top10(corpus: &StreamedCorpus, queries: &MultiVectors) -> Vec<Vec<u32>> {
    let isa = Isa::detect();
    let dim = queries.dim();
    let packed: Vec<PackedQuery> = (0..queries.len())
        .map(|q| PackedQuery::new(queries.get(q), dim))
        .collect();
    let mut tops: Vec<TopK> = (0..queries.len()).map(|_| TopK::new(10)).collect();
    let mut first = 0;
    while first < corpus.len() {
        let end = (first + TRUTH_CHUNK).min(corpus.len());
        let chunk = corpus.chunk(first..end);
        tops.par_iter_mut().zip(&packed).for_each(|(top, query)| {
            for doc in 0..chunk.len() {
                top.push(
                    (first + doc) as u32,
                    maxsim_packed(isa, query, chunk.get(doc)),
                );
            }
        });
        first = end;
    }
    tops.into_iter()
        .map(|top| top.into_sorted_vec().into_iter().map(|h| h.id).collect())
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds per query, one query at a time, on `threads` threads.
fn one_at_a_time<T: AsRef<[f32]> + Sync>(
    index: &Index<T>,
    queries: &MultiVectors,
    threads: usize,
) -> Vec<f64> {
    let pool = pool(threads);
    let mut times: Vec<f64> = (0..queries.len())
        .map(|q| {
            let started = Instant::now();
            let hits = pool.install(|| index.search_one(queries.get(q), SearchParams::default()));
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            assert!(hits.is_ok_and(|h| !h.is_empty()));
            elapsed
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let spec = CorpusSpec::colbert_scale(args.docs);
    let corpus = StreamedCorpus::new(&spec);
    let queries = corpus.queries(args.queries, QUERY_TOKENS, 7);
    let warm_up = corpus.queries(WARM_UP_QUERIES, QUERY_TOKENS, 8);
    let threads = pool(args.threads);

    // The in-memory build holds the f32 corpus: refuse sizes that cannot
    // fit rather than swap the machine to a halt.
    let corpus_bytes = args.docs as u64 * 68 * 128 * 4;
    let total_ram = proc_meminfo_total().unwrap_or(u64::MAX);
    if corpus_bytes > total_ram / 2 {
        eprintln!(
            "error: {} documents are ~{:.1} GB of f32 tokens, more than half of this machine's {:.1} GB; the in-memory build cannot hold them (an out-of-core build is not there yet)",
            args.docs,
            corpus_bytes as f64 / 1e9,
            total_ram as f64 / 1e9
        );
        std::process::exit(1);
    }

    let mut config = BuildConfig::default();
    if let Some(epochs) = args.epochs {
        config.epochs = epochs;
    }
    if let Some(min_docs) = args.graph_min_docs {
        config.first_stage.graph_min_docs = min_docs;
    }
    eprintln!("generating {} documents", args.docs);
    let started = Instant::now();
    let progress_start = Instant::now();
    let last_report = std::sync::Mutex::new((Stage::Targets, Instant::now()));
    let progress = |stage: Stage, done: usize, total: usize| {
        let mut last = last_report.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 != stage || last.1.elapsed().as_secs_f64() > 10.0 || done == total {
            let elapsed = progress_start.elapsed().as_secs_f64();
            eprintln!("  {stage:?} {done}/{total} ({elapsed:.0} s in)");
            *last = (stage, Instant::now());
        }
    };
    let index = threads.install(|| {
        let docs = corpus.chunk(0..args.docs);
        IndexBuilder::new(config.clone())
            .progress(&progress)
            .build(docs, None)
            .expect("the scale corpus builds")
            .0
    });
    let build_s = started.elapsed().as_secs_f64();
    let build_peak = proc_status_bytes("VmHWM").unwrap_or(0);
    // A save into an existing index commits a new generation and removes
    // the old one; a directory that is not an index is refused, never
    // emptied.
    index.save(&args.dir).expect("the index saves");
    drop(index);
    let disk = dir_bytes(&args.dir);

    eprintln!("exact ground truth over {} queries", queries.len());
    let truth = threads.install(|| exact_top10(&corpus, &queries));

    let rss_before = proc_status_bytes("VmRSS").unwrap_or(0);
    let index = Index::open(&args.dir).expect("the index opens");
    threads.install(|| {
        index
            .search_batch(&warm_up, SearchParams::default())
            .expect("warm-up queries")
    });
    let rss_after = proc_status_bytes("VmRSS").unwrap_or(0);
    let resident_per_doc = rss_after.saturating_sub(rss_before) as f64 / args.docs as f64;

    let one_thread = one_at_a_time(&index, &queries, 1);
    let two_threads = one_at_a_time(&index, &queries, 2);
    let batch_pool = pool(2);
    let started = Instant::now();
    let batch = batch_pool.install(|| {
        index
            .search_batch(&warm_up, SearchParams::default())
            .expect("batch")
    });
    let qps = warm_up.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(batch.len(), warm_up.len());

    let results = threads.install(|| {
        index
            .search_batch(&queries, SearchParams::default())
            .expect("search")
    });
    let found: usize = results
        .iter()
        .zip(&truth)
        .map(|(hits, exact)| hits.iter().filter(|h| exact.contains(&h.doc)).count())
        .sum();
    let recall = found as f64 / (10 * truth.len()) as f64;
    let features = index.query_features(&queries);
    let n_candidates = SearchParams::default().n_candidates;
    let candidates = threads.install(|| index.candidates(&features, n_candidates));
    // The exact scan's candidates: the full `f W^T`, whatever the index's
    // first stage is.
    let scores = threads.install(|| index.approximate_scores(&features));
    let scanned: Vec<Vec<u32>> = lemur::topk::top_k_rows(&scores, index.len(), n_candidates)
        .into_iter()
        .map(|hits| hits.into_iter().map(|h| h.id).collect())
        .collect();
    drop(scores);
    let shared: usize = candidates
        .iter()
        .zip(&scanned)
        .map(|(c, s)| c.iter().filter(|id| s.contains(id)).count())
        .sum();
    let candidate_recall = shared as f64 / scanned.iter().map(Vec::len).sum::<usize>() as f64;

    let first_stage = if index.first_stage_graph().is_some() {
        "graph"
    } else {
        "exact scan"
    };
    let row = serde_json::json!({
        "docs": args.docs,
        "build_s": build_s,
        "build_peak_rss_bytes": build_peak,
        "resident_bytes_per_doc": resident_per_doc,
        "disk_bytes_per_doc": disk as f64 / args.docs as f64,
        "p50_ms_1t": percentile(&one_thread, 0.5),
        "p99_ms_1t": percentile(&one_thread, 0.99),
        "p50_ms_2t": percentile(&two_threads, 0.5),
        "qps_2t": qps,
        "candidate_recall": candidate_recall,
        "recall_at_10": recall,
        "epochs": config.epochs,
        "first_stage": first_stage,
        "graph_min_docs": config.first_stage.graph_min_docs,
        "threads": args.threads,
        "queries": args.queries,
    });
    println!(
        "| docs | epochs | first stage | build | build peak | resident/doc | disk/doc | p50 1t | p99 1t | p50 2t | q/s 2t | cand. recall | recall@10 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.0} s | {:.2} GiB | {:.0} B | {:.0} B | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.4} | {:.4} |",
        args.docs,
        config.epochs,
        first_stage,
        build_s,
        build_peak as f64 / (1u64 << 30) as f64,
        resident_per_doc,
        disk as f64 / args.docs as f64,
        percentile(&one_thread, 0.5),
        percentile(&one_thread, 0.99),
        percentile(&two_threads, 0.5),
        qps,
        candidate_recall,
        recall,
    );
    println!("{row}");
    if let Some(path) = args.json {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&row).expect("json") + "\n",
        )
        .expect("the JSON file is writable");
    }
}

/// `MemTotal` of `/proc/meminfo` in bytes.
fn proc_meminfo_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
