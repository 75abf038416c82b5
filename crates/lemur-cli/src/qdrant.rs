//! `lemur qdrant ...`: an index exported into a Qdrant collection, and
//! searched there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::ProgressBar;
use lemur::io::write_atomically;
use lemur_qdrant::{
    CollectionSpec, ExportOptions, QdrantCollection, RetryPolicy, SearchSpec, TokenStorage,
};
use serde_json::json;

use crate::commands::{Output, load_queries, open_segmented, write_run};
use crate::progress::count_bar;

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
    /// missing, else checked); run again to resume.
    Export {
        /// The index directory.
        index: PathBuf,
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
        /// Export only these document ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u32>,
    },
    /// Search a collection: the same run file as `lemur search`.
    Search {
        /// The index directory (its feature map computes the query features).
        index: PathBuf,
        #[command(flatten)]
        server: Server,
        /// Query tokens, float32 `[N_tok, d]` `.npy`.
        #[arg(long)]
        queries: PathBuf,
        /// Tokens per query `.npy`.
        #[arg(long)]
        query_counts: PathBuf,
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
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
    },
}

pub(crate) fn dispatch(command: QdrantCommand, out: &Output) -> Result<()> {
    match command {
        QdrantCommand::Export {
            index,
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
            let ids = (!ids.is_empty()).then_some(ids);
            export(&index, &server, &spec, batch, ids.as_deref(), out)
        }
        QdrantCommand::Search {
            index,
            server,
            queries,
            query_counts,
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
            search(
                &index,
                &server,
                &queries,
                &query_counts,
                &spec,
                run.as_deref(),
                out,
            )
        }
        QdrantCommand::Delete { server, ids } => {
            server.connect()?.delete(&ids)?;
            out.note(format!(
                "deleted {} ids from {}",
                ids.len(),
                server.collection
            ));
            Ok(())
        }
    }
}

fn export(
    dir: &Path,
    server: &Server,
    spec: &CollectionSpec,
    batch_size: usize,
    ids: Option<&[u32]>,
    out: &Output,
) -> Result<()> {
    let index = open_segmented(dir, out.quiet)?;
    let collection = server.connect()?;
    let created = collection.create(spec, &index)?;
    let total = ids.map_or(index.len(), <[u32]>::len);
    let bar: ProgressBar = count_bar(out.quiet || out.json, total, "export");
    let started = Instant::now();
    let options = ExportOptions {
        batch_size,
        resume: true,
    };
    let written = collection.export(
        &index,
        ids,
        &options,
        &|_| Default::default(),
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
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

fn search(
    dir: &Path,
    server: &Server,
    queries: &Path,
    counts: &Path,
    spec: &SearchSpec,
    run: Option<&Path>,
    out: &Output,
) -> Result<()> {
    let index = open_segmented(dir, out.quiet)?;
    let queries = load_queries(queries, counts, index.dim(), out.quiet)?;
    let collection = server.connect()?;
    let counts: Vec<usize> = queries.counts().collect();
    let started = Instant::now();
    let hits = collection.search(&index, queries.tokens(), &counts, spec)?;
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
