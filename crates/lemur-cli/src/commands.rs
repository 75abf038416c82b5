//! The subcommands.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lemur::io::{load_matrix, load_multivectors, map_multivectors, write_atomically};
use lemur::{
    BuildConfig, FirstStageConfig, Hit, Index, IndexBuilder, MappedIndex, MultiVectors, Precision,
    SearchParams, SegmentedIndex, synthetic,
};
use serde_json::json;

use crate::Command;
use crate::eval;
use crate::progress::{StageBars, spinner};

/// How to report.
pub(crate) struct Output {
    pub(crate) quiet: bool,
    pub(crate) json: bool,
}

impl Output {
    /// An informational line (suppressed by `--quiet` and `--json`).
    pub(crate) fn note(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.json {
            eprintln!("{}", line.as_ref());
        }
    }

    pub(crate) fn print_json(&self, value: serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON serialises")
        );
    }
}

pub(crate) fn dispatch(command: Command, out: &Output) -> Result<()> {
    match command {
        Command::Build {
            tokens,
            counts,
            learn,
            config,
            out: dir,
        } => build(
            &tokens,
            &counts,
            learn.as_deref(),
            config.as_deref(),
            &dir,
            out,
        ),
        Command::Import {
            npz,
            tokens,
            counts,
            out: dir,
        } => import(&npz, &tokens, &counts, &dir, out),
        Command::Add {
            index,
            tokens,
            counts,
        } => add(&index, &tokens, &counts, out),
        Command::Delete {
            index,
            ids,
            ids_file,
        } => delete(&index, ids, ids_file.as_deref(), out),
        Command::Compact { index } => compact(&index, out),
        Command::FirstStage {
            index,
            graph_min_docs,
            projection_dim,
            max_degree,
            ef_construction,
            refine_factor,
            exact,
        } => {
            let mut segmented = open_segmented(&index, out.quiet || out.json)?;
            let mut config = segmented
                .base()
                .build_config()
                .map_or_else(FirstStageConfig::default, |c| c.first_stage);
            let set = |value: Option<usize>, field: &mut usize| {
                if let Some(value) = value {
                    *field = value;
                }
            };
            set(graph_min_docs, &mut config.graph_min_docs);
            set(projection_dim, &mut config.projection_dim);
            set(max_degree, &mut config.max_degree);
            set(ef_construction, &mut config.ef_construction);
            set(refine_factor, &mut config.refine_factor);
            if exact {
                config.graph_min_docs = usize::MAX;
            }
            first_stage(&mut segmented, &config, out)
        }
        Command::Search {
            index,
            queries,
            query_counts,
            k,
            candidates,
            out: run,
            precision,
        } => search(
            &index,
            &queries,
            &query_counts,
            SearchParams {
                k,
                n_candidates: candidates,
            },
            precision.precision(),
            run.as_deref(),
            out,
        ),
        Command::Eval {
            index,
            queries,
            query_counts,
            k,
            candidates,
            qrels,
            precision,
        } => eval::eval(
            &index,
            &queries,
            &query_counts,
            SearchParams {
                k,
                n_candidates: candidates,
            },
            precision.precision(),
            qrels.as_deref(),
            out,
        ),
        Command::Info { index } => info(&index, out),
        Command::Demo { docs } => demo(docs, out),
        #[cfg(feature = "text")]
        Command::Text(command) => crate::text::dispatch(command, out),
        #[cfg(feature = "qdrant")]
        Command::Qdrant(command) => crate::qdrant::dispatch(command, out),
    }
}

pub(crate) fn load_corpus(tokens: &Path, counts: &Path, quiet: bool) -> Result<MultiVectors> {
    let bar = spinner(quiet, "loading token vectors");
    let set = load_multivectors(tokens, counts)?;
    bar.finish_and_clear();
    Ok(set)
}

pub(crate) fn open_index(dir: &Path, quiet: bool) -> Result<MappedIndex> {
    let bar = spinner(quiet, "opening index");
    let index = Index::open(dir).with_context(|| format!("cannot open index {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(index)
}

/// The index with the reduced copies `precision` asks for, built now
/// (they are never saved).
pub(crate) fn with_precision(index: MappedIndex, precision: Precision, quiet: bool) -> MappedIndex {
    if precision == Precision::F32 {
        return index;
    }
    let bar = spinner(quiet, "building reduced-precision copies");
    let index = index.with_precision(precision);
    bar.finish_and_clear();
    index
}

/// Opens an index and loads a query batch of the same token width.
pub(crate) fn open_with_queries(
    dir: &Path,
    queries: &Path,
    counts: &Path,
    quiet: bool,
) -> Result<(MappedIndex, MultiVectors)> {
    let index = open_index(dir, quiet)?;
    let queries_set = load_queries(queries, counts, index.dim(), quiet)?;
    Ok((index, queries_set))
}

/// Loads a query batch, refusing one whose tokens are not `dim` wide.
pub(crate) fn load_queries(
    queries: &Path,
    counts: &Path,
    dim: usize,
    quiet: bool,
) -> Result<MultiVectors> {
    let queries_set = load_corpus(queries, counts, quiet)?;
    if queries_set.dim() != dim {
        bail!(
            "{}: query tokens are {} wide but the index's are {}",
            queries.display(),
            queries_set.dim(),
            dim
        );
    }
    Ok(queries_set)
}

fn save(index: &Index, dir: &Path, out: &Output) -> Result<()> {
    let bar = spinner(out.quiet || out.json, "saving index");
    index
        .save(dir)
        .with_context(|| format!("cannot save index {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(())
}

fn read_config(path: Option<&Path>) -> Result<BuildConfig> {
    let Some(path) = path else {
        return Ok(BuildConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        anyhow::anyhow!(
            "{}: invalid build config{at}: {}",
            path.display(),
            e.message().trim()
        )
    })
}

fn build(
    tokens: &Path,
    counts: &Path,
    learn: Option<&Path>,
    config: Option<&Path>,
    dir: &Path,
    out: &Output,
) -> Result<()> {
    let config = read_config(config)?;
    // Mapped, not read: the build takes a block of documents at a time, so
    // a corpus larger than memory builds too.
    let corpus = map_multivectors(tokens, counts)?;
    let learn = match learn {
        Some(path) => {
            let (values, _, cols) = load_matrix(path)?;
            if cols != corpus.dim() {
                bail!(
                    "{}: learn tokens are {cols} wide but the corpus tokens are {} wide",
                    path.display(),
                    corpus.dim()
                );
            }
            Some(values)
        }
        None => None,
    };
    let bars = StageBars::new(out.quiet || out.json);
    let started = Instant::now();
    let progress = |stage, done, total| bars.update(stage, done, total);
    let (index, report) =
        IndexBuilder::new(config)
            .progress(&progress)
            .build_into(&corpus, learn.as_deref(), dir)?;
    bars.finish();
    let summary = json!({
        "index": dir,
        "documents": index.len(),
        "feature_dim": index.feature_dim(),
        "learn_rows": report.learn_rows,
        "train_docs": report.train_docs,
        "best_epoch": report.training.as_ref().and_then(|t| t.best_epoch),
        "seconds": {
            "targets": report.targets_time.as_secs_f64(),
            "training": report.training_time.as_secs_f64(),
            "pseudo_inverse": report.solver_time.as_secs_f64(),
            "fit_weights": report.fit_time.as_secs_f64(),
            "first_stage": report.first_stage_time.as_secs_f64(),
            "compress": report.compress_time.as_secs_f64(),
            "total": started.elapsed().as_secs_f64(),
        },
    });
    if out.json {
        out.print_json(summary);
    } else if !out.quiet {
        println!(
            "built {} ({} documents, h = {}) in {:.1?}",
            dir.display(),
            index.len(),
            index.feature_dim(),
            started.elapsed()
        );
    }
    Ok(())
}

fn import(npz: &Path, tokens: &Path, counts: &Path, dir: &Path, out: &Output) -> Result<()> {
    let bar = spinner(out.quiet || out.json, "importing");
    let index = Index::from_files(npz, tokens, counts)?;
    bar.finish_and_clear();
    save(&index, dir, out)?;
    if out.json {
        out.print_json(
            json!({ "index": dir, "documents": index.len(), "feature_dim": index.feature_dim() }),
        );
    } else if !out.quiet {
        println!("imported {} documents into {}", index.len(), dir.display());
    }
    Ok(())
}

pub(crate) fn open_segmented(dir: &Path, quiet: bool) -> Result<SegmentedIndex> {
    let bar = spinner(quiet, "opening index");
    let index = SegmentedIndex::open(dir)
        .with_context(|| format!("cannot open index {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(index)
}

fn add(dir: &Path, tokens: &Path, counts: &Path, out: &Output) -> Result<()> {
    let added = load_corpus(tokens, counts, out.quiet || out.json)?;
    let mut index = open_segmented(dir, out.quiet || out.json)?;
    if added.dim() != index.dim() {
        bail!(
            "{}: tokens are {} wide but the index's are {}",
            tokens.display(),
            added.dim(),
            index.dim()
        );
    }
    let bar = spinner(out.quiet || out.json, "fitting and writing the new segment");
    let counts: Vec<usize> = added.counts().collect();
    let ids = index
        .add_documents(added.tokens(), &counts)
        .with_context(|| format!("cannot add documents to {}", dir.display()))?;
    bar.finish_and_clear();
    if out.json {
        out.print_json(json!({
            "index": dir,
            "added": ids.len(),
            "first_id": ids.start,
            "documents": index.len(),
            "segments": index.n_segments(),
        }));
    } else if !out.quiet {
        println!(
            "added documents {}..{} to {} as a new segment ({} documents in {} segments)",
            ids.start,
            ids.end,
            dir.display(),
            index.len(),
            index.n_segments()
        );
    }
    Ok(())
}

fn delete(dir: &Path, mut ids: Vec<u32>, ids_file: Option<&Path>, out: &Output) -> Result<()> {
    if let Some(path) = ids_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for word in text.split_whitespace() {
            ids.push(
                word.parse().with_context(|| {
                    format!("{}: {word:?} is not a document id", path.display())
                })?,
            );
        }
    }
    let mut index = open_segmented(dir, out.quiet || out.json)?;
    let deleted = index
        .delete_documents(&ids)
        .with_context(|| format!("cannot delete from {}", dir.display()))?;
    if out.json {
        out.print_json(json!({
            "index": dir,
            "deleted": deleted,
            "documents": index.len(),
            "deleted_pending_compaction": index.n_deleted(),
        }));
    } else if !out.quiet {
        println!(
            "deleted {deleted} documents from {} ({} left; {} deleted await `lemur compact`)",
            dir.display(),
            index.len(),
            index.n_deleted()
        );
    }
    Ok(())
}

fn compact(dir: &Path, out: &Output) -> Result<()> {
    let mut index = open_segmented(dir, out.quiet || out.json)?;
    let (segments, deleted) = (index.n_segments(), index.n_deleted());
    let bar = spinner(out.quiet || out.json, "merging segments");
    let merged = index
        .compact()
        .with_context(|| format!("cannot compact {}", dir.display()))?;
    bar.finish_and_clear();
    if out.json {
        out.print_json(json!({
            "index": dir,
            "merged": merged,
            "segments_before": segments,
            "deleted_dropped": if merged { deleted } else { 0 },
            "documents": index.len(),
        }));
    } else if !out.quiet {
        match merged {
            true => println!(
                "merged {segments} segments into one, dropping {deleted} deleted documents ({} documents)",
                index.len()
            ),
            false => println!("nothing to compact: one segment, no deletions"),
        }
    }
    Ok(())
}

fn first_stage(index: &mut SegmentedIndex, config: &FirstStageConfig, out: &Output) -> Result<()> {
    let bar = spinner(out.quiet || out.json, "building the first stage");
    let started = std::time::Instant::now();
    let with_graph = index
        .rebuild_first_stage(config)
        .with_context(|| format!("cannot build the first stage of {}", index.dir().display()))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        out.print_json(json!({
            "index": index.dir(),
            "segments_with_graph": with_graph,
            "segments": index.n_segments(),
            "config": config,
            "seconds": seconds,
        }));
    } else if !out.quiet {
        println!(
            "{with_graph} of {} segments have a graph ({seconds:.1} s)",
            index.n_segments()
        );
    }
    Ok(())
}

pub(crate) fn write_run(hits: &[Vec<Hit>], writer: &mut dyn Write) -> std::io::Result<()> {
    for (query, hits) in hits.iter().enumerate() {
        for hit in hits {
            writeln!(writer, "{query}\t{}\t{}", hit.doc, hit.score)?;
        }
    }
    Ok(())
}

fn search(
    dir: &Path,
    queries: &Path,
    counts: &Path,
    params: SearchParams,
    precision: Precision,
    run: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let (hits, elapsed) = if precision == Precision::F32 {
        // Every layout, segmented or not, through its segments.
        let index = open_segmented(dir, out.quiet)?;
        let queries_set = load_queries(queries, counts, index.dim(), out.quiet)?;
        let bar = spinner(out.quiet, "searching");
        let started = Instant::now();
        let hits = index.search_batch(&queries_set, params)?;
        bar.finish_and_clear();
        (hits, started.elapsed())
    } else {
        let (index, queries_set) = open_with_queries(dir, queries, counts, out.quiet)?;
        let index = with_precision(index, precision, out.quiet);
        let bar = spinner(out.quiet, "searching");
        let started = Instant::now();
        let hits = index.search_batch(&queries_set, params)?;
        bar.finish_and_clear();
        (hits, started.elapsed())
    };
    match run {
        Some(path) => {
            write_atomically(path, |file| {
                let mut writer = std::io::BufWriter::new(file);
                write_run(&hits, &mut writer)?;
                writer.flush()
            })
            .with_context(|| format!("cannot write {}", path.display()))?;
            out.note(format!(
                "{} queries in {elapsed:.2?}; run written to {}",
                hits.len(),
                path.display()
            ));
        }
        None if out.json => out.print_json(json!(
            hits.iter()
                .map(|q| q
                    .iter()
                    .map(|h| json!({ "doc": h.doc, "score": h.score }))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        )),
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write_run(&hits, &mut lock)?;
            out.note(format!("{} queries in {elapsed:.2?}", hits.len()));
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn info(dir: &Path, out: &Output) -> Result<()> {
    let segmented = open_segmented(dir, true)?;
    let segments = segmented.segments();
    let index = segmented.base();
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let n_tokens: usize = segments.iter().map(|s| s.n_tokens).sum();
    let n_stored: usize = segments.iter().map(|s| s.n_docs).sum();
    let token_bytes = (n_tokens * index.dim() * 4) as u64;
    let weight_bytes = (n_stored * index.feature_dim() * 4) as u64;
    let compressed_bytes: usize = segments.iter().map(|s| s.compressed_bytes).sum();
    let storage = index.storage();
    let compressed = storage != lemur::StorageConfig::F32;
    let kind = if index.feature_map().blocks().is_some() {
        "mlp"
    } else {
        "random features"
    };
    let value = json!({
        "index": dir,
        "documents": segmented.len(),
        "deleted_pending_compaction": segmented.n_deleted(),
        "next_id": segmented.next_id(),
        "segments": segments.iter().map(|s| json!({
            "name": s.name,
            "documents": s.n_docs,
            "deleted": s.n_deleted,
            "tokens": s.n_tokens,
            "compressed": s.compressed,
            "graph": s.graph,
        })).collect::<Vec<_>>(),
        "tokens": n_tokens,
        "dim": index.dim(),
        "feature_dim": index.feature_dim(),
        "feature_map": kind,
        "activation": index.feature_map().activation().name(),
        "disk_bytes": dir_size(dir),
        "memory_bytes": if compressed {
            json!({
                "compressed_in_memory": compressed_bytes,
                "weights_memory_mapped": weight_bytes,
                "tokens_memory_mapped": token_bytes,
            })
        } else {
            json!({ "weights_in_memory": weight_bytes, "tokens_memory_mapped": token_bytes })
        },
        "storage": storage,
        "first_stage": index.first_stage_graph().map_or_else(
            || json!({ "kind": "exact scan" }),
            |graph| json!({ "kind": "graph", "nodes": graph.len(), "bytes": graph.bytes() }),
        ),
        "can_add_documents": index.build_config().is_some(),
        "build_config": index.build_config(),
    });
    if out.json {
        out.print_json(value);
        return Ok(());
    }
    println!("index        {}", dir.display());
    println!(
        "documents    {} ({} tokens of d = {}); next id {}",
        segmented.len(),
        n_tokens,
        index.dim(),
        segmented.next_id()
    );
    for segment in &segments {
        println!(
            "segment      {}: {} documents, {} deleted{}{}",
            segment.name,
            segment.n_docs,
            segment.n_deleted,
            if segment.compressed {
                ", compressed"
            } else {
                ""
            },
            if segment.graph { ", graph" } else { "" },
        );
    }
    println!(
        "features     h = {} ({kind}, {})",
        index.feature_dim(),
        index.feature_map().activation().name()
    );
    println!("on disk      {:.1} MiB", mib(dir_size(dir)));
    match index.first_stage_graph() {
        Some(graph) => println!(
            "first stage  graph over W ({} nodes, {:.1} MiB in memory)",
            graph.len(),
            mib(graph.bytes() as u64)
        ),
        None => println!("first stage  exact scan of W"),
    }
    if compressed {
        println!(
            "in memory    {:.1} MiB compressed ({:?} tokens, {:?} W, {} leaders per query scored in f32); f32 W ({:.1} MiB) and tokens ({:.1} MiB) memory-mapped",
            mib(compressed_bytes as u64),
            storage.tokens,
            storage.weights,
            storage.rescore_depth,
            mib(weight_bytes),
            mib(token_bytes)
        );
    } else {
        println!(
            "in memory    {:.1} MiB of weights; {:.1} MiB of tokens memory-mapped",
            mib(weight_bytes),
            mib(token_bytes)
        );
    }
    match index.build_config() {
        Some(config) => println!("built with   {}", serde_json::to_string(config)?),
        None => println!("built with   (imported; documents cannot be added)"),
    }
    Ok(())
}

fn demo(n_docs: usize, out: &Output) -> Result<()> {
    anyhow::ensure!(n_docs >= 10, "--docs must be at least 10");
    let dir = std::env::temp_dir().join(format!("lemur-demo-{}", std::process::id()));
    let started = Instant::now();
    let data = synthetic::corpus(&synthetic::CorpusSpec {
        n_docs,
        ..synthetic::CorpusSpec::colbert_10k()
    });
    let queries = data.queries(100, 32, 5);
    out.note(format!(
        "synthetic corpus: {n_docs} documents, {} tokens, in {:.2?}",
        data.corpus.n_tokens(),
        started.elapsed()
    ));
    let config = BuildConfig {
        epochs: 2,
        final_hidden_dim: 512,
        train_docs: 512.min(n_docs),
        learn_rows: 8192,
        fit_sample: 2048,
        ..BuildConfig::default()
    };
    let bars = StageBars::new(out.quiet || out.json);
    let progress = |stage, done, total| bars.update(stage, done, total);
    let started = Instant::now();
    let (index, _) = IndexBuilder::new(config)
        .progress(&progress)
        .build(data.corpus.clone(), None)?;
    bars.finish();
    let build_time = started.elapsed();
    index.save(&dir)?;
    let opened = Index::open(&dir)?;
    let params = SearchParams::default();
    let started = Instant::now();
    let hits = opened.search_batch(&queries, params)?;
    let search_time = started.elapsed();
    let exact = opened.exhaustive_search(&queries, params.k);
    let recall = eval::recall(&hits, &exact, params.k);
    let _ = std::fs::remove_dir_all(&dir);
    let value = json!({
        "documents": n_docs,
        "build_seconds": build_time.as_secs_f64(),
        "queries": queries.len(),
        "search_seconds": search_time.as_secs_f64(),
        "queries_per_second": queries.len() as f64 / search_time.as_secs_f64(),
        "recall_at_10": recall,
        "top_hits_query_0": hits[0].iter().take(3).map(|h| json!({ "doc": h.doc, "score": h.score })).collect::<Vec<_>>(),
    });
    if out.json {
        out.print_json(value);
        return Ok(());
    }
    println!("built and saved an index of {n_docs} documents in {build_time:.2?}");
    println!(
        "searched {} queries in {search_time:.2?} ({:.0} queries/s); recall@10 against brute force {recall:.3}",
        queries.len(),
        queries.len() as f64 / search_time.as_secs_f64()
    );
    for hit in hits[0].iter().take(3) {
        println!("  query 0: doc {:>6} score {:.4}", hit.doc, hit.score);
    }
    Ok(())
}
