//! `lemur`: build, import, search, evaluate and inspect LEMUR indexes from
//! a shell. Every long step draws a progress bar (unless `--quiet`);
//! `--json` prints machine-readable results; errors print one line saying
//! what and where, and exit with status 1.

mod commands;
mod eval;
mod progress;
#[cfg(feature = "qdrant")]
mod qdrant;
#[cfg(feature = "text")]
mod text;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Late-interaction retrieval with LEMUR, in pure Rust.
#[derive(Debug, Parser)]
#[command(name = "lemur", version, about)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// No progress bars or informational output.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an index in Rust from a ragged corpus (targets, training, W).
    Build {
        /// Corpus tokens, float32 `[N_tok, d]` `.npy`.
        #[arg(long)]
        tokens: PathBuf,
        /// Tokens per document, integer `[m]` `.npy`.
        #[arg(long)]
        counts: PathBuf,
        /// Learn tokens from the query distribution, float32 `[L, d]` (default: the corpus tokens).
        #[arg(long)]
        learn: Option<PathBuf>,
        /// Build configuration (TOML; any field of BuildConfig, the rest default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The index directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import an original LEMUR export (LEMUR-NumPy `.npz`) and its corpus.
    Import {
        /// The `.npz` export.
        #[arg(long)]
        npz: PathBuf,
        /// Corpus tokens `.npy`.
        #[arg(long)]
        tokens: PathBuf,
        /// Tokens per document `.npy`.
        #[arg(long)]
        counts: PathBuf,
        /// The index directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Delete documents by id (recorded as tombstones; `compact` frees them).
    Delete {
        /// The index directory.
        index: PathBuf,
        /// Ids to delete, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "ids_file")]
        ids: Vec<u32>,
        /// A text file of ids to delete, separated by white space.
        #[arg(long)]
        ids_file: Option<PathBuf>,
    },
    /// Merge every segment's live documents into one segment, dropping deleted ones.
    Compact {
        /// The index directory.
        index: PathBuf,
    },
    /// Build an index's first stage again (a graph over W per segment, or
    /// none), linking every other file; unset flags keep the index's settings.
    FirstStage {
        /// The index directory.
        index: PathBuf,
        /// Segments with at least this many documents get a graph.
        #[arg(long, conflicts_with = "exact")]
        graph_min_docs: Option<usize>,
        /// Principal axes of W the graph works in (W's width or more: full rows).
        #[arg(long)]
        projection_dim: Option<usize>,
        /// Links per graph node (M).
        #[arg(long)]
        max_degree: Option<usize>,
        /// Candidates a node gathers while the graph is built.
        #[arg(long)]
        ef_construction: Option<usize>,
        /// Documents the graph lists per candidate.
        #[arg(long)]
        refine_factor: Option<usize>,
        /// No graph: every search scans all of W.
        #[arg(long)]
        exact: bool,
    },
    /// Add documents to an index built in Rust as a new segment (no retraining).
    Add {
        /// The index directory.
        index: PathBuf,
        /// New documents' tokens `.npy`.
        #[arg(long)]
        tokens: PathBuf,
        /// New documents' token counts `.npy`.
        #[arg(long)]
        counts: PathBuf,
    },
    /// Search: one line per hit, `query_index<TAB>doc_id<TAB>score`, best first.
    Search {
        /// The index directory.
        index: PathBuf,
        /// Query tokens, float32 `[N_tok, d]` `.npy`.
        #[arg(long)]
        queries: PathBuf,
        /// Tokens per query `.npy`.
        #[arg(long)]
        query_counts: PathBuf,
        /// Results per query.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// Candidates reranked exactly per query.
        #[arg(long, default_value_t = 200)]
        candidates: usize,
        /// Write the run file here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// What the search runs on: f32, or reduced copies built on open
        /// (`bf16-filter-all` gives the f32 hits through bf16 filters).
        #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
        precision: PrecisionArg,
    },
    /// Recall@k against exact brute-force MaxSim, and nDCG@10 / recall@k against qrels.
    Eval {
        /// The index directory.
        index: PathBuf,
        /// Query tokens `.npy`.
        #[arg(long)]
        queries: PathBuf,
        /// Tokens per query `.npy`.
        #[arg(long)]
        query_counts: PathBuf,
        /// Results per query.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// Candidates reranked exactly per query.
        #[arg(long, default_value_t = 200)]
        candidates: usize,
        /// Relevance judgements: lines `query_index doc_index relevance` (0-based).
        #[arg(long)]
        qrels: Option<PathBuf>,
        /// What the search runs on: f32, or reduced copies built on open
        /// (`bf16-filter-all` gives the f32 hits through bf16 filters).
        #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
        precision: PrecisionArg,
    },
    /// Shapes, sizes on disk and in memory, and the build configuration.
    Info {
        /// The index directory.
        index: PathBuf,
    },
    /// Build a synthetic corpus and index in a temporary directory, search it, print timings.
    Demo {
        /// Documents in the synthetic corpus.
        #[arg(long, default_value_t = 2000)]
        docs: usize,
    },
    /// From raw text: encode, index and search with the pure-Rust encoder.
    #[cfg(feature = "text")]
    #[command(subcommand)]
    Text(text::TextCommand),
    /// Past one machine: export an index into a Qdrant collection, search it there.
    #[cfg(feature = "qdrant")]
    #[command(subcommand)]
    Qdrant(qdrant::QdrantCommand),
}

/// `--precision`: the `lemur::Precision` presets by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PrecisionArg {
    /// Everything in f32 (the default).
    F32,
    /// `W` and the corpus tokens as bf16 copies.
    Bf16,
    /// `W` shortlisted in bf16, decided in f32; f32 rerank.
    Bf16Filter,
    /// Both stages through bf16 filters: the f32 hits.
    Bf16FilterAll,
    /// `W` through a bf16 filter, the rerank through an int8 filter: the
    /// f32 hits (fastest with AVX512-VNNI).
    Bf16Int8Filter,
    /// Both stages through int8 filters: the f32 hits at the fewest bytes
    /// per query (fastest single queries with AVX512-VNNI).
    Int8Filters,
    /// `W` as int8 against f32 features; f32 rerank.
    Int8Weights,
    /// `W` and the features as int8 (integer dot products); f32 rerank.
    Int8Dot,
}

impl PrecisionArg {
    /// The preset this name stands for.
    fn precision(self) -> lemur::Precision {
        match self {
            PrecisionArg::F32 => lemur::Precision::F32,
            PrecisionArg::Bf16 => lemur::Precision::BF16,
            PrecisionArg::Bf16Filter => lemur::Precision::BF16_FILTER,
            PrecisionArg::Bf16FilterAll => lemur::Precision::BF16_FILTER_ALL,
            PrecisionArg::Bf16Int8Filter => lemur::Precision::BF16_INT8_FILTER,
            PrecisionArg::Int8Filters => lemur::Precision::INT8_FILTERS,
            PrecisionArg::Int8Weights => lemur::Precision::INT8_WEIGHTS,
            PrecisionArg::Int8Dot => lemur::Precision::INT8_DOT,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        // One line a person can act on: what failed and where.
        let message = format!("{err:#}");
        let one_line: Vec<&str> = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        eprintln!("error: {}", one_line.join(" "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = cli.threads {
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        pool = pool.num_threads(threads);
    }
    let pool = pool.build()?;
    let out = commands::Output {
        quiet: cli.quiet,
        json: cli.json,
    };
    pool.install(|| commands::dispatch(cli.command, &out))
}
