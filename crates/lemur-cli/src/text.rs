//! `lemur text encode | index | search`: from raw text (JSON lines) to
//! embeddings, a text index and run files, with the pure-Rust encoder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use lemur::io::{save_matrix, save_multivectors, write_atomically};
use lemur::text::{EncodeOptions, TextEncoder, TokenOptions};
use lemur::{TextIndex, TextIndexConfig};
use serde_json::{Value, json};

use crate::commands::Output;
use crate::progress::{StageBars, count_bar, spinner};

/// The text subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TextCommand {
    /// Encode texts to sentence embeddings `[N, dim]` (or per-token vectors) as `.npy`.
    Encode {
        /// The model directory (config.json, tokenizer.json, model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// JSON lines, each an object with "text" (or a JSON string).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the float32 `.npy`.
        #[arg(long)]
        out: PathBuf,
        /// Keep the first N dimensions, re-normalised (Matryoshka).
        #[arg(long)]
        output_dim: Option<usize>,
        /// Write per-token vectors `[N_tok, hidden]` instead, with --counts-out.
        #[arg(long, requires = "counts_out")]
        tokens: bool,
        /// Tokens per text (int64 `.npy`), with --tokens.
        #[arg(long)]
        counts_out: Option<PathBuf>,
        /// With --tokens: encode the texts as queries (a ColBERT model's
        /// query encoding; documents otherwise).
        #[arg(long, requires = "tokens")]
        query: bool,
        /// Texts encoded at once.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
    /// Build a text index: JSON lines with "id" and "text".
    Index {
        /// The model directory.
        #[arg(long)]
        model: PathBuf,
        /// JSON lines, each an object with "id" and "text".
        #[arg(long)]
        docs: PathBuf,
        /// Index configuration (TOML; any field of TextIndexConfig).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The index directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Search a text index: one line per hit, `query_line<TAB>doc_id<TAB>score`, best first.
    Search {
        /// The index directory.
        index: PathBuf,
        /// JSON lines, each an object with "text" (or a JSON string); the
        /// run file names queries by their 1-based line number.
        #[arg(long)]
        queries: PathBuf,
        /// The model directory (default: the one the index was built with).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Results per query.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// Candidates reranked exactly per query.
        #[arg(long, default_value_t = 200)]
        candidates: usize,
        /// Write the run file here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn dispatch(command: TextCommand, out: &Output) -> Result<()> {
    match command {
        TextCommand::Encode {
            model,
            input,
            out: path,
            output_dim,
            tokens,
            counts_out,
            query,
            batch_size,
        } => encode(
            &model,
            &input,
            &path,
            output_dim,
            tokens
                .then_some(counts_out)
                .flatten()
                .as_deref()
                .map(|counts| (counts, query)),
            batch_size,
            out,
        ),
        TextCommand::Index {
            model,
            docs,
            config,
            out: dir,
        } => index(&model, &docs, config.as_deref(), &dir, out),
        TextCommand::Search {
            index,
            queries,
            model,
            k,
            candidates,
            out: run,
        } => search(
            &index,
            &queries,
            model.as_deref(),
            k,
            candidates,
            run.as_deref(),
            out,
        ),
    }
}

/// One JSON line: its 1-based line number, `id` (if any) and `text`.
struct Line {
    number: usize,
    id: Option<String>,
    text: String,
}

fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        let number = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw)
            .with_context(|| format!("{}:{number}: not JSON", path.display()))?;
        let (id, text) = match &value {
            Value::String(text) => (None, text.clone()),
            Value::Object(map) => {
                let text = map
                    .get("text")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{}:{number}: no string \"text\"", path.display()))?;
                let id = match map.get("id") {
                    None => None,
                    Some(Value::String(id)) => Some(id.clone()),
                    Some(Value::Number(id)) => Some(id.to_string()),
                    Some(_) => bail!(
                        "{}:{number}: \"id\" is not a string or number",
                        path.display()
                    ),
                };
                (id, text.to_owned())
            }
            _ => bail!("{}:{number}: not an object or a string", path.display()),
        };
        lines.push(Line { number, id, text });
    }
    Ok(lines)
}

fn load_encoder(model: &Path, quiet: bool) -> Result<TextEncoder> {
    let bar = spinner(quiet, "loading model");
    let encoder = TextEncoder::from_dir(model)
        .with_context(|| format!("cannot load model {}", model.display()))?;
    bar.finish_and_clear();
    Ok(encoder)
}

fn encode(
    model: &Path,
    input: &Path,
    path: &Path,
    output_dim: Option<usize>,
    // With token vectors: the counts file, and whether the texts are queries.
    counts_out: Option<(&Path, bool)>,
    batch_size: usize,
    out: &Output,
) -> Result<()> {
    let encoder = load_encoder(model, out.quiet || out.json)?;
    let lines = read_lines(input)?;
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let started = Instant::now();
    let bar = count_bar(out.quiet || out.json, texts.len(), "Encoding");
    let summary = match counts_out {
        Some((counts_path, query)) => {
            let options = TokenOptions {
                batch_size,
                ..TokenOptions::default()
            };
            // A ColBERT model encodes queries and documents its own ways.
            let vectors = match (query, encoder.colbert().is_some()) {
                (true, _) => encoder.encode_queries(&texts)?,
                (false, true) => encoder.encode_documents(&texts)?,
                (false, false) => encoder.encode_tokens(&texts, &options)?,
            };
            bar.finish_and_clear();
            save_multivectors(&vectors, path, counts_path)?;
            json!({ "texts": vectors.len(), "tokens": vectors.n_tokens(), "dim": vectors.dim() })
        }
        None => {
            let options = EncodeOptions {
                output_dim,
                batch_size,
                ..EncodeOptions::default()
            };
            // Encode batch by batch so the bar moves.
            let mut values = Vec::new();
            let mut dim = encoder.hidden_size();
            for chunk in texts.chunks(batch_size.max(1)) {
                let embeddings = encoder.encode(chunk, &options)?;
                dim = embeddings.dim();
                values.extend_from_slice(embeddings.as_slice());
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            save_matrix(path, &values, texts.len(), dim)?;
            json!({ "texts": texts.len(), "dim": dim })
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        let mut summary = summary;
        summary["seconds"] = json!(seconds);
        out.print_json(summary);
    } else {
        out.note(format!(
            "encoded {} texts in {seconds:.2} s -> {}",
            texts.len(),
            path.display()
        ));
    }
    Ok(())
}

fn index(model: &Path, docs: &Path, config: Option<&Path>, dir: &Path, out: &Output) -> Result<()> {
    let config: TextIndexConfig = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?
        }
        None => TextIndexConfig::default(),
    };
    let quiet = out.quiet || out.json;
    let bar = spinner(quiet, "loading model");
    let mut text_index = TextIndex::from_model_dir(model, config)
        .with_context(|| format!("cannot load model {}", model.display()))?;
    bar.finish_and_clear();
    let lines = read_lines(docs)?;
    let mut pairs = Vec::with_capacity(lines.len());
    for line in &lines {
        let id = line
            .id
            .clone()
            .with_context(|| format!("{}:{}: no \"id\"", docs.display(), line.number))?;
        pairs.push((id, line.text.as_str()));
    }
    let started = Instant::now();
    let encode_bar = count_bar(quiet, pairs.len(), "Encoding");
    let stages = StageBars::new(quiet);
    let on_encoded = |done: usize, _total: usize| encode_bar.set_position(done as u64);
    let on_stage = |stage, done, total| stages.update(stage, done, total);
    text_index
        .index_batch_with_build_progress(&pairs, Some(&on_encoded), Some(&on_stage))
        .with_context(|| format!("cannot index {}", docs.display()))?;
    encode_bar.finish_and_clear();
    stages.finish();
    let bar = spinner(quiet, "saving");
    text_index
        .save(dir)
        .with_context(|| format!("cannot save {}", dir.display()))?;
    bar.finish_and_clear();
    let stats = text_index.stats();
    let seconds = started.elapsed().as_secs_f64();
    // Documents without text are indexed as their special tokens only.
    let empty = pairs
        .iter()
        .filter(|(_, text)| text.trim().is_empty())
        .count();
    if out.json {
        out.print_json(
            json!({ "stats": stats, "seconds": seconds, "index": dir, "empty_documents": empty }),
        );
    } else {
        out.note(format!(
            "indexed {} documents ({} tokens) in {seconds:.1} s -> {}",
            stats.documents,
            stats.tokens,
            dir.display()
        ));
        if empty > 0 {
            out.note(format!(
                "{empty} documents had no text and were indexed as their special tokens only"
            ));
        }
    }
    Ok(())
}

fn search(
    dir: &Path,
    queries: &Path,
    model: Option<&Path>,
    k: usize,
    candidates: usize,
    run: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let mut text_index = open_text_index(dir, model, out.quiet || out.json)?;
    text_index.set_n_candidates(candidates)?;
    let queries = TextQueries::read(queries)?;
    let started = Instant::now();
    let results = text_index
        .search_batch(&queries.texts(), k)
        .with_context(|| format!("cannot search with {}", queries.path.display()))?;
    write_hits(
        &queries,
        &results,
        started.elapsed().as_secs_f64(),
        run,
        out,
    )
}

/// Opens the text index in `dir` with `model`, or with the model
/// directory the index records.
pub(crate) fn open_text_index(dir: &Path, model: Option<&Path>, quiet: bool) -> Result<TextIndex> {
    let model_dir = match model {
        Some(model) => model.to_path_buf(),
        None => TextIndex::saved_model_dir(dir)
            .with_context(|| format!("cannot open index {}", dir.display()))?
            .context("the index does not record its model directory; pass --model")?,
    };
    let encoder = Arc::new(load_encoder(&model_dir, quiet)?);
    let bar = spinner(quiet, "opening index");
    let text_index = TextIndex::open(dir, encoder)
        .with_context(|| format!("cannot open index {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(text_index)
}

/// The queries of a JSON-lines file. A query without text has nothing to
/// match: it gets no hits and is reported, and the rest of the batch runs.
pub(crate) struct TextQueries {
    path: PathBuf,
    /// The queries with text.
    lines: Vec<Line>,
    /// Line numbers of the queries without.
    empty_lines: Vec<usize>,
}

impl TextQueries {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let (lines, empty): (Vec<_>, Vec<_>) = read_lines(path)?
            .into_iter()
            .partition(|line| !line.text.trim().is_empty());
        Ok(TextQueries {
            path: path.to_path_buf(),
            lines,
            empty_lines: empty.iter().map(|line| line.number).collect(),
        })
    }

    /// The texts of the queries that have one.
    pub(crate) fn texts(&self) -> Vec<&str> {
        self.lines.iter().map(|line| line.text.as_str()).collect()
    }
}

/// Writes the hits of `queries` as the run file of `lemur text search`
/// (`query_line<TAB>doc_id<TAB>score` lines) to `run` or standard output,
/// or as JSON.
pub(crate) fn write_hits(
    queries: &TextQueries,
    results: &[Vec<(String, f32)>],
    seconds: f64,
    run: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let mut text = String::new();
    for (line, hits) in queries.lines.iter().zip(results) {
        for (doc_id, score) in hits {
            text.push_str(&format!("{}\t{doc_id}\t{score}\n", line.number));
        }
    }
    match run {
        Some(path) => write_atomically(path, |file| file.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?,
        None if !out.json => print!("{text}"),
        None => {}
    }
    let empty_lines = &queries.empty_lines;
    if out.json {
        let hits: Vec<Value> = queries
            .lines
            .iter()
            .zip(results)
            .map(|(line, hits)| {
                json!({ "query_line": line.number, "hits": hits.iter().map(|(id, s)| json!({"id": id, "score": s})).collect::<Vec<_>>() })
            })
            .collect();
        out.print_json(json!({ "queries": queries.lines.len(), "seconds": seconds, "results": hits, "empty_query_lines": empty_lines }));
    } else {
        out.note(format!(
            "searched {} queries in {seconds:.3} s",
            queries.lines.len()
        ));
        if !empty_lines.is_empty() {
            out.note(format!(
                "{} queries had no text and got no hits (lines {empty_lines:?})",
                empty_lines.len()
            ));
        }
    }
    Ok(())
}
