//! The scale benchmark behind `cargo xtask bench-scale`: build an index at
//! the default settings over a seeded streamed corpus, out of core (a
//! block of documents at a time, straight into its directory), open it
//! from disk, and measure memory, latency, throughput and recall against
//! exact f32 MaxSim over every document.
//!
//! `cargo run --release -p lemur-bench --bin scale -- --docs N [--threads T]
//! [--queries Q] [--epochs E] [--graph-min-docs G] [--compress-min-docs C]
//! [--projection-dim P] [--ef-construction E] [--refine-factor F]
//! [--tokens f32|int8|int4]
//! [--weights f32|int8] [--rescore-depth R] [--from DIR | --reuse]
//! [--dir DIR] [--json OUT] [--export-queries DIR]`
//!
//! The corpus is `CorpusSpec::colbert_scale(N)` (d = 128, 16..=120 tokens,
//! 68 on average; 32-token queries); every document is generated from
//! (seed, id), so the exact ground truth is computed chunk by chunk (and
//! kept beside `--dir` for the next run with the same documents and
//! queries). The other flags override the defaults (the table and the
//! JSON say what was used). `--from DIR` takes an index built earlier over
//! the same documents instead of building one: its first stage and storage
//! are made again with this run's settings, and no build time is
//! reported. `--reuse` takes the index already in `--dir` as it is on
//! disk (memory-mapped, never loaded) and, when `--graph-min-docs`,
//! `--projection-dim` or `--ef-construction` is given, builds its first
//! stage again with them
//! (`SegmentedIndex::rebuild_first_stage`, one commit that links every
//! other file). `--refine-factor` is set on the opened index, so
//! different factors need no new graph. `--export-queries DIR` writes the
//! run's queries (`queries.npy`, `query_counts.npy`) for other tools and
//! exits.

use std::path::PathBuf;
use std::time::Instant;

use lemur::maxsim::{Isa, PackedQuery, maxsim_packed};
use lemur::synthetic::{CorpusSpec, StreamedCorpus};
use lemur::topk::TopK;
use lemur::{
    BuildConfig, Index, IndexBuilder, MultiVectors, SearchParams, SegmentedIndex, Stage,
    TokenCodec, WeightCodec,
};
use lemur_bench::{drop_from_page_cache, pool, proc_status_bytes};
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
    compress_min_docs: Option<usize>,
    tokens: Option<TokenCodec>,
    weights: Option<WeightCodec>,
    rescore_depth: Option<usize>,
    projection_dim: Option<usize>,
    ef_construction: Option<usize>,
    refine_factor: Option<usize>,
    from: Option<PathBuf>,
    reuse: bool,
    dir: PathBuf,
    json: Option<PathBuf>,
    export_queries: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        docs: 0,
        threads: 2,
        queries: 200,
        epochs: None,
        graph_min_docs: None,
        compress_min_docs: None,
        tokens: None,
        weights: None,
        rescore_depth: None,
        projection_dim: None,
        ef_construction: None,
        refine_factor: None,
        from: None,
        reuse: false,
        dir: std::env::temp_dir().join("lemur-bench-scale"),
        json: None,
        export_queries: None,
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
            "--compress-min-docs" => args.compress_min_docs = Some(number(value()?)?),
            "--tokens" => {
                args.tokens = Some(match value()?.as_str() {
                    "f32" => TokenCodec::F32,
                    "int8" => TokenCodec::Int8,
                    "int4" => TokenCodec::Int4,
                    other => return Err(format!("--tokens: unknown codec {other:?}")),
                })
            }
            "--weights" => {
                args.weights = Some(match value()?.as_str() {
                    "f32" => WeightCodec::F32,
                    "int8" => WeightCodec::Int8,
                    other => return Err(format!("--weights: unknown codec {other:?}")),
                })
            }
            "--rescore-depth" => args.rescore_depth = Some(number(value()?)?),
            "--projection-dim" => args.projection_dim = Some(number(value()?)?),
            "--ef-construction" => args.ef_construction = Some(number(value()?)?),
            "--refine-factor" => args.refine_factor = Some(number(value()?)?),
            "--from" => args.from = Some(PathBuf::from(value()?)),
            "--reuse" => args.reuse = true,
            "--dir" => args.dir = PathBuf::from(value()?),
            "--json" => args.json = Some(PathBuf::from(value()?)),
            "--export-queries" => args.export_queries = Some(PathBuf::from(value()?)),
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
    if let Some(dir) = &args.export_queries {
        std::fs::create_dir_all(dir).expect("the export directory is made");
        lemur::io::save_multivectors(
            &queries,
            dir.join("queries.npy"),
            dir.join("query_counts.npy"),
        )
        .expect("the queries are written");
        return;
    }
    let warm_up = corpus.queries(WARM_UP_QUERIES, QUERY_TOKENS, 8);
    let threads = pool(args.threads);

    let mut config = BuildConfig::default();
    if let Some(epochs) = args.epochs {
        config.epochs = epochs;
    }
    if let Some(min_docs) = args.graph_min_docs {
        config.first_stage.graph_min_docs = min_docs;
    }
    if let Some(min_docs) = args.compress_min_docs {
        config.storage.compress_min_docs = min_docs;
    }
    if let Some(tokens) = args.tokens {
        config.storage.tokens = tokens;
    }
    if let Some(weights) = args.weights {
        config.storage.weights = weights;
    }
    if let Some(depth) = args.rescore_depth {
        config.storage.rescore_depth = depth;
    }
    if let Some(projection_dim) = args.projection_dim {
        config.first_stage.projection_dim = projection_dim;
    }
    if let Some(ef_construction) = args.ef_construction {
        config.first_stage.ef_construction = ef_construction;
    }
    let (build_s, build_peak) = match &args.from {
        None if args.reuse => {
            let mut index = SegmentedIndex::open(&args.dir).expect("the --dir index opens");
            assert_eq!(
                index.len(),
                args.docs,
                "--dir holds another number of documents"
            );
            let built = index
                .base()
                .build_config()
                .expect("a built index keeps its configuration");
            config.epochs = built.epochs;
            if args.graph_min_docs.is_some()
                || args.projection_dim.is_some()
                || args.ef_construction.is_some()
            {
                eprintln!("building the first stage again");
                let started = Instant::now();
                threads.install(|| {
                    index
                        .rebuild_first_stage(&config.first_stage)
                        .expect("the first stage builds")
                });
                eprintln!(
                    "first stage built in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                config.first_stage = built.first_stage;
            }
            (None, None)
        }
        Some(from) => {
            eprintln!("loading {}", from.display());
            let mut index = Index::load(from).expect("the --from index loads");
            assert_eq!(
                index.len(),
                args.docs,
                "--from holds another number of documents"
            );
            // The table names the epochs the reused index was trained for.
            config.epochs = index.build_config().map_or(config.epochs, |c| c.epochs);
            threads.install(|| {
                index
                    .build_first_stage(&config.first_stage)
                    .expect("the graph builds");
                index.compress(&config.storage);
            });
            // A save into an existing index commits a new generation and
            // removes the old one; a directory that is not an index is
            // refused, never emptied.
            index.save(&args.dir).expect("the index saves");
            (None, None)
        }
        None => {
            let build_s = build(&args, &corpus, &config, &threads);
            (Some(build_s), proc_status_bytes("VmHWM"))
        }
    };
    let disk = dir_bytes(&args.dir);

    eprintln!("exact ground truth over {} queries", queries.len());
    let truth_file = args
        .dir
        .with_extension(format!("truth-{}-{}.json", args.docs, args.queries));
    let truth: Vec<Vec<u32>> = match std::fs::read(&truth_file) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("the saved ground truth parses"),
        Err(_) => {
            let truth = threads.install(|| exact_top10(&corpus, &queries));
            std::fs::write(&truth_file, serde_json::to_vec(&truth).expect("json"))
                .expect("the ground truth saves");
            truth
        }
    };

    // As after a restart: the index's files come from the disk, not from
    // the page cache the build or the save left them in.
    drop_from_page_cache(&args.dir);
    let rss_before = proc_status_bytes("VmRSS").unwrap_or(0);
    let file_before = proc_status_bytes("RssFile").unwrap_or(0);
    let mut index = Index::open(&args.dir).expect("the index opens");
    if let Some(refine_factor) = args.refine_factor {
        index.set_refine_factor(refine_factor);
    }
    let refine_factor = index.first_stage_refine_factor();
    threads.install(|| {
        index
            .search_batch(&warm_up, SearchParams::default())
            .expect("warm-up queries")
    });
    let rss_after = proc_status_bytes("VmRSS").unwrap_or(0);
    let resident_per_doc = rss_after.saturating_sub(rss_before) as f64 / args.docs as f64;
    // The part of it that is pages of the index's memory-mapped files
    // (the f32 tokens and `W` a query touched), reclaimable by the kernel.
    let mapped_per_doc = proc_status_bytes("RssFile")
        .unwrap_or(0)
        .saturating_sub(file_before) as f64
        / args.docs as f64;

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

    let first_stage = match (index.first_stage_graph(), refine_factor) {
        (Some(graph), Some(refine_factor)) => format!(
            "graph ({} dims, refine {refine_factor})",
            graph.graph().dim()
        ),
        _ => "exact scan".into(),
    };
    let storage = index.storage();
    let storage_name = format!(
        "{} tokens, {} W, depth {}",
        codec_name(storage.tokens),
        match storage.weights {
            WeightCodec::F32 => "f32",
            WeightCodec::Int8 => "int8",
        },
        storage.rescore_depth
    );
    let row = serde_json::json!({
        "docs": args.docs,
        "build_s": build_s,
        "build_peak_rss_bytes": build_peak,
        "storage": storage_name,
        "resident_bytes_per_doc": resident_per_doc,
        "resident_mapped_bytes_per_doc": mapped_per_doc,
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
        "projection_dim": index.first_stage_graph().map(|g| g.graph().dim()),
        "ef_construction": index.first_stage_graph().map(|g| g.graph().config().ef_construction),
        "refine_factor": refine_factor,
        "threads": args.threads,
        "queries": args.queries,
    });
    println!(
        "| docs | epochs | first stage | storage | build | build peak | resident/doc (mapped) | disk/doc | p50 1t | p99 1t | p50 2t | q/s 2t | cand. recall | recall@10 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.0} B ({:.0} B) | {:.0} B | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.4} | {:.4} |",
        args.docs,
        config.epochs,
        first_stage,
        storage_name,
        build_s.map_or("reused".into(), |s| format!("{s:.0} s")),
        build_peak.map_or("-".into(), |b| format!(
            "{:.2} GiB",
            b as f64 / (1u64 << 30) as f64
        )),
        resident_per_doc,
        mapped_per_doc,
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

/// Builds the index into `args.dir` a block of documents at a time
/// (`IndexBuilder::build_into`), with progress on stderr; returns the
/// seconds the build took.
fn build(
    args: &Args,
    corpus: &StreamedCorpus,
    config: &BuildConfig,
    threads: &rayon::ThreadPool,
) -> f64 {
    eprintln!("building over {} documents", args.docs);
    let started = Instant::now();
    /// What the progress callback remembers between calls.
    struct Report {
        stage: Stage,
        /// When the stage began: the previous stage's last call.
        stage_started: Instant,
        last_call: Instant,
        last_printed: Instant,
    }
    let report = std::sync::Mutex::new(Report {
        stage: Stage::Targets,
        stage_started: started,
        last_call: started,
        last_printed: started,
    });
    let progress = |stage: Stage, done: usize, total: usize| {
        let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let changed = report.stage != stage;
        if changed {
            report.stage = stage;
            report.stage_started = report.last_call;
        }
        report.last_call = now;
        if changed || done == total || (now - report.last_printed).as_secs_f64() > 30.0 {
            // The ETA extrapolates this stage's own pace, not the build's.
            let in_stage = (now - report.stage_started).as_secs_f64();
            let eta = if done > 0 && done < total {
                format!(
                    ", ETA {:.0} s",
                    in_stage * (total - done) as f64 / done as f64
                )
            } else {
                String::new()
            };
            let elapsed = (now - started).as_secs_f64();
            eprintln!("  {stage:?} {done}/{total} ({elapsed:.0} s in{eta})");
            report.last_printed = now;
        }
    };
    threads.install(|| {
        IndexBuilder::new(config.clone())
            .progress(&progress)
            .build_into(corpus, None, &args.dir)
            .expect("the scale corpus builds")
    });
    started.elapsed().as_secs_f64()
}

fn codec_name(codec: TokenCodec) -> &'static str {
    match codec {
        TokenCodec::F32 => "f32",
        TokenCodec::Int8 => "int8",
        TokenCodec::Int4 => "int4",
    }
}
