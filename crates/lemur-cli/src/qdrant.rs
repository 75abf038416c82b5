//! `lemur qdrant ...`: an index exported into a Qdrant collection, and
//! searched there. A text index directory is exported with its string ids
//! and searched with query texts, as `lemur text search` searches it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::ProgressBar;
use lemur::TextIndex;
use lemur::io::write_atomically;
use lemur_qdrant::{
    CollectionSpec, ExportOptions, QdrantCollection, QdrantError, RetryPolicy, SearchSpec,
    TokenStorage,
};
use serde_json::json;

use crate::commands::{Output, load_queries, open_segmented, write_run};
use crate::progress::count_bar;
use crate::text::{TextQueries, open_text_index, write_hits};

/// Where the collection is.
#[derive(Debug, clap::Args)]
pub(crate) struct Server {
    /// The server's gRPC URL (port 6334 by default).
    #[arg(long)]
    url: String,
    /// The collection.
    #[arg(long)]
    collection: String,
    /// The environment variable holding the API key, if the server needs one.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Resends of a request that failed in passing (back-off from 0.5 s, doubling).
    #[arg(long, default_value_t = 5)]
    retries: usize,
}

impl Server {
    fn connect(&self) -> Result<QdrantCollection> {
        let api_key = match &self.api_key_env {
            Some(name) => Some(std::env::var(name).with_context(|| format!("{name} is not set"))?),
            None => None,
        };
        let collection = QdrantCollection::connect_with(
            &self.url,
            &self.collection,
            api_key,
            Duration::from_secs(60),
        )?;
        Ok(collection.with_retry(RetryPolicy {
            retries: self.retries,
            ..RetryPolicy::default()
        }))
    }
}

/// How the collection stores tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TokensArg {
    /// float16: half the bytes.
    F16,
    /// float32: exact.
    F32,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QdrantCommand {
    /// Export an index's live documents into a collection (created if
    /// missing, else checked); run again to resume, or to bring the
    /// collection up to date (only missing or changed points are sent).
    Export {
        /// The index directory (a text index too).
        index: PathBuf,
        /// A text index's model directory (default: the one it records).
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
        /// Shards of a new collection.
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// Copies of every shard.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// Copies that must acknowledge a write.
        #[arg(long, default_value_t = 1)]
        write_consistency: u32,
        /// Token storage in the collection.
        #[arg(long, value_enum, default_value_t = TokensArg::F16)]
        tokens: TokensArg,
        /// Keep W in f32 only (no int8 copy in RAM).
        #[arg(long)]
        no_quantize_w: bool,
        /// Points per request.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Export only these document ids (comma-separated; a text
        /// index's string ids).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
    },
    /// Search a collection: the same run file as `lemur search` (`lemur
    /// text search` for a text index).
    Search {
        /// The index directory (its feature map computes the query features).
        index: PathBuf,
        #[command(flatten)]
        server: Server,
        /// Query tokens, float32 `[N_tok, d]` `.npy`; for a text index,
        /// JSON lines of query texts, as `lemur text search` reads them.
        #[arg(long)]
        queries: PathBuf,
        /// Tokens per query `.npy` (not for a text index).
        #[arg(long)]
        query_counts: Option<PathBuf>,
        /// A text index's model directory (default: the one it records).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Results per query.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// Candidates each shard reranks exactly per query.
        #[arg(long, default_value_t = 200)]
        candidates: usize,
        /// HNSW beam width of the first stage.
        #[arg(long)]
        hnsw_ef: Option<u64>,
        /// Scan every row of W instead of the HNSW graph.
        #[arg(long)]
        exact: bool,
        /// Candidates taken from the int8 W per one kept, before the f32 rescore.
        #[arg(long)]
        oversampling: Option<f64>,
        /// Write the run file here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Delete documents from a collection.
    Delete {
        #[command(flatten)]
        server: Server,
        /// Document ids (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "doc_ids",
            conflicts_with = "doc_ids"
        )]
        ids: Vec<u32>,
        /// A text index's string ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        doc_ids: Vec<String>,
    },
}

pub(crate) fn dispatch(command: QdrantCommand, out: &Output) -> Result<()> {
    match command {
        QdrantCommand::Export {
            index,
            model,
            server,
            shards,
            replicas,
            write_consistency,
            tokens,
            no_quantize_w,
            batch,
            ids,
        } => {
            let spec = CollectionSpec {
                shards,
                replicas,
                write_consistency,
                tokens: match tokens {
                    TokensArg::F16 => TokenStorage::Float16,
                    TokensArg::F32 => TokenStorage::Float32,
                },
                quantize_w: !no_quantize_w,
                ..CollectionSpec::default()
            };
            let source = Source::open(&index, model.as_deref(), out)?;
            let ids = (!ids.is_empty()).then_some(ids.as_slice());
            export(&source, &server, &spec, batch, ids, out)
        }
        QdrantCommand::Search {
            index,
            server,
            queries,
            query_counts,
            model,
            k,
            candidates,
            hnsw_ef,
            exact,
            oversampling,
            out: run,
        } => {
            let spec = SearchSpec {
                k,
                n_candidates: candidates,
                hnsw_ef,
                exact,
                oversampling,
                ..SearchSpec::default()
            };
            let source = Source::open(&index, model.as_deref(), out)?;
            let queries = Queries {
                queries: &queries,
                counts: query_counts.as_deref(),
            };
            search(&source, &server, queries, &spec, run.as_deref(), out)
        }
        QdrantCommand::Delete {
            server,
            ids,
            doc_ids,
        } => {
            let collection = server.connect()?;
            if doc_ids.is_empty() {
                collection.delete(&ids)?;
            } else {
                let doc_ids: Vec<&str> = doc_ids.iter().map(String::as_str).collect();
                collection.delete_text(&doc_ids)?;
            }
            out.note(format!(
                "deleted {} ids from {}",
                ids.len() + doc_ids.len(),
                server.collection
            ));
            Ok(())
        }
    }
}

/// An index directory, opened as what it holds.
enum Source {
    Segmented(Box<lemur::SegmentedIndex>),
    Text(Box<TextIndex>),
}

impl Source {
    fn open(dir: &Path, model: Option<&Path>, out: &Output) -> Result<Self> {
        let quiet = out.quiet || out.json;
        let text = TextIndex::is_saved_in(dir)
            .with_context(|| format!("cannot open index {}", dir.display()))?;
        if text {
            return Ok(Source::Text(Box::new(open_text_index(dir, model, quiet)?)));
        }
        if model.is_some() {
            bail!("{} is not a text index: it takes no --model", dir.display());
        }
        Ok(Source::Segmented(Box::new(open_segmented(dir, quiet)?)))
    }
}

fn export(
    source: &Source,
    server: &Server,
    spec: &CollectionSpec,
    batch_size: usize,
    ids: Option<&[String]>,
    out: &Output,
) -> Result<()> {
    let collection = server.connect()?;
    let options = ExportOptions {
        batch_size,
        resume: true,
    };
    let started = Instant::now();
    let (created, total, written) = match source {
        Source::Segmented(index) => {
            let ids: Option<Vec<u32>> = ids
                .map(|ids| {
                    ids.iter()
                        .map(|id| {
                            id.parse()
                                .with_context(|| format!("--ids: {id:?} is not a document id"))
                        })
                        .collect::<Result<_>>()
                })
                .transpose()?;
            // Unknown ids fail before a collection is made for them.
            for &id in ids.iter().flatten() {
                index.document(id)?;
            }
            let created = collection.create(spec, index)?;
            let total = ids.as_ref().map_or(index.len(), Vec::len);
            let written = with_bar(out, total, |progress| {
                let no_payload = |_| Default::default();
                collection.export(index, ids.as_deref(), &options, &no_payload, progress)
            })?;
            (created, total, written)
        }
        Source::Text(index) => {
            let ids: Option<Vec<&str>> = ids.map(|ids| ids.iter().map(String::as_str).collect());
            if let Some(unknown) = ids.iter().flatten().find(|id| !index.contains(id)) {
                bail!("no searchable document {unknown:?} in the text index");
            }
            let created = collection.create_text(spec, index)?;
            let total = ids.as_ref().map_or(index.len(), Vec::len);
            let written = with_bar(out, total, |progress| {
                let no_payload = |_: &str| Default::default();
                collection.export_text(index, ids.as_deref(), &options, &no_payload, progress)
            })?;
            (created, total, written)
        }
    };
    if out.json {
        out.print_json(json!({
            "collection": server.collection,
            "created": created,
            "documents": total,
            "written": written,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    } else {
        out.note(format!(
            "{written} of {total} documents written to {} ({}) in {:.1?}",
            server.collection,
            if created { "created" } else { "existing" },
            started.elapsed()
        ));
    }
    Ok(())
}

/// Runs an export of `total` documents behind a progress bar.
fn with_bar(
    out: &Output,
    total: usize,
    export: impl FnOnce(&mut dyn FnMut(usize, usize)) -> Result<usize, QdrantError>,
) -> Result<usize> {
    let bar: ProgressBar = count_bar(out.quiet || out.json, total, "export");
    let written = export(&mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    Ok(written)
}

/// The query files of `lemur qdrant search`.
struct Queries<'a> {
    queries: &'a Path,
    counts: Option<&'a Path>,
}

fn search(
    source: &Source,
    server: &Server,
    queries: Queries<'_>,
    spec: &SearchSpec,
    run: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let collection = server.connect()?;
    let index = match source {
        Source::Text(index) => {
            if queries.counts.is_some() {
                bail!("a text index is searched with query texts: --query-counts does not apply");
            }
            let texts = TextQueries::read(queries.queries)?;
            let started = Instant::now();
            let results = collection.search_text(index, &texts.texts(), spec)?;
            return write_hits(&texts, &results, started.elapsed().as_secs_f64(), run, out);
        }
        Source::Segmented(index) => index,
    };
    let counts = queries
        .counts
        .context("--query-counts is needed with query tokens")?;
    let queries = load_queries(queries.queries, counts, index.dim(), out.quiet)?;
    let counts: Vec<usize> = queries.counts().collect();
    let started = Instant::now();
    let hits = collection.search(index, queries.tokens(), &counts, spec)?;
    let elapsed = started.elapsed();
    match run {
        Some(path) => write_atomically(path, |file| {
            let mut writer = std::io::BufWriter::new(file);
            write_run(&hits, &mut writer)?;
            writer.flush()
        })
        .with_context(|| format!("cannot write {}", path.display()))?,
        None => write_run(&hits, &mut std::io::stdout().lock())?,
    }
    out.note(format!("{} queries in {elapsed:.2?}", hits.len()));
    Ok(())
}
