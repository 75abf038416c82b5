//! Recall versus candidates, build time per stage and peak memory, on the
//! W10k synthetic corpus, for a random-feature index and a trained one.
//!
//! `cargo run --release -p lemur-bench --bin recall -- [threads] [learn_rows] [train_docs] [epochs] [target_rank] [variants]`
//!
//! `variants`: 3 = both (default), 1 = random features only, 2 = trained only.
//! `LEMUR_RECALL_NOISE` (default 0.06) sets the corpus's token noise: 0.15
//! gives a harder corpus whose random-feature recall is well below 1.
//!
//! The exact top 10 (minutes of brute force) is cached in
//! `target/recall-truth-<noise>.txt` and reused by later runs.
//!
//! Ground truth is exact brute-force MaxSim top-10 over every document
//! (the SIMD kernel over the whole corpus). Prints a markdown table.

use std::time::Instant;

use lemur::synthetic::{self, CorpusSpec};
use lemur::{BuildConfig, Index, IndexBuilder, MultiVectors, Precision, SearchParams};

const CANDIDATES: [usize; 5] = [50, 100, 200, 400, 1000];

/// The process's peak resident memory so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    lemur_bench::proc_status_bytes("VmHWM").map(|bytes| bytes as f64 / (1 << 20) as f64)
}

fn recall_row(index: &Index, queries: &MultiVectors, truth: &[Vec<u32>]) -> Vec<f64> {
    CANDIDATES
        .iter()
        .map(|&n_candidates| {
            let results = index
                .search_batch(
                    queries,
                    SearchParams {
                        k: 10,
                        n_candidates,
                    },
                )
                .expect("valid queries");
            let found: usize = results
                .iter()
                .zip(truth)
                .map(|(hits, exact)| hits.iter().filter(|h| exact.contains(&h.doc)).count())
                .sum();
            found as f64 / (10 * truth.len()) as f64
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let threads = args.first().copied().unwrap_or(2);
    let learn_rows = args.get(1).copied().unwrap_or(100_000);
    let train_docs = args.get(2).copied().unwrap_or(8192);
    let epochs = args.get(3).copied().unwrap_or(10);
    let target_rank = args
        .get(4)
        .copied()
        .unwrap_or(BuildConfig::default().target_rank);
    let which = args.get(5).copied().unwrap_or(3);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;

    let noise: f32 = match std::env::var("LEMUR_RECALL_NOISE") {
        Ok(value) => value.parse()?,
        Err(_) => CorpusSpec::colbert_10k().noise,
    };
    let data = synthetic::corpus(&CorpusSpec {
        noise,
        ..CorpusSpec::colbert_10k()
    });
    let queries = data.queries(1000, 32, 1);
    let before_build = peak_rss_mib().unwrap_or(0.0);
    println!(
        "W10k: {} docs, {} tokens; peak RSS with the corpus loaded: {before_build:.0} MiB",
        data.corpus.len(),
        data.corpus.n_tokens()
    );

    let started = Instant::now();
    let cache = std::path::PathBuf::from(format!("target/recall-truth-{noise}.txt"));
    let cached: Option<Vec<Vec<u32>>> = std::fs::read_to_string(&cache).ok().and_then(|text| {
        text.lines()
            .map(|line| line.split(' ').map(|id| id.parse().ok()).collect())
            .collect()
    });
    let truth = match cached.filter(|t| t.len() == queries.len()) {
        Some(truth) => truth,
        None => {
            // Exhaustive exact search over the corpus; any index over it
            // will do.
            let exhaustive = Index::new(
                synthetic::random_features(data.corpus.dim(), 1, 0),
                lemur::DocWeights::new(vec![0.0; data.corpus.len()], data.corpus.len(), 1)?,
                data.corpus.clone(),
            )?;
            let truth: Vec<Vec<u32>> = pool
                .install(|| exhaustive.exhaustive_search(&queries, 10))
                .into_iter()
                .map(|hits| hits.iter().map(|h| h.doc).collect())
                .collect();
            let lines: Vec<String> = truth
                .iter()
                .map(|ids| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))
                .collect();
            std::fs::write(&cache, lines.join("\n"))?;
            truth
        }
    };
    println!(
        "exact brute-force top-10 for {} queries (noise {noise}): {:.1?}",
        queries.len(),
        started.elapsed()
    );

    let variants = [
        (
            "random features (epochs = 0)",
            BuildConfig {
                epochs: 0,
                ..BuildConfig::default()
            },
        ),
        (
            "trained",
            BuildConfig {
                epochs,
                learn_rows,
                train_docs,
                target_rank,
                ..BuildConfig::default()
            },
        ),
    ];
    let variants = variants
        .into_iter()
        .enumerate()
        .filter(|(i, _)| which & (1 << i) != 0)
        .map(|(_, v)| v);
    println!();
    println!(
        "| variant | k'=50 | k'=100 | k'=200 | k'=400 | k'=1000 | targets | training | pinv | W | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, config) in variants {
        let started = Instant::now();
        let (index, report) =
            pool.install(|| IndexBuilder::new(config.clone()).build(data.corpus.clone(), None))?;
        let build_time = started.elapsed();
        let peak = peak_rss_mib().unwrap_or(0.0);
        let recalls = pool.install(|| recall_row(&index, &queries, &truth));
        let cells: Vec<String> = recalls.iter().map(|r| format!("{r:.3}")).collect();
        let training = match &report.training {
            Some(t) => format!(
                "{:.1?} ({} epochs, {:.1?}/epoch, best {:?})",
                report.training_time,
                t.train_losses.len(),
                report.training_time / t.train_losses.len().max(1) as u32,
                t.best_epoch
            ),
            None => "none".to_owned(),
        };
        println!(
            "| {name} ({} learn rows x {} docs, {} outputs trained, h = {}) | {} | {:.1?} | {training} | {:.1?} | {:.1?} ({:.2?}/1k docs) | {peak:.0} MiB |",
            report.learn_rows,
            report.train_docs,
            report.trained_outputs,
            config.final_hidden_dim,
            cells.join(" | "),
            report.targets_time,
            report.solver_time,
            report.fit_time,
            report.fit_time / 10,
        );
        // The same index searched on its reduced copies.
        for (suffix, precision) in [
            ("bf16 (W and tokens)", Precision::BF16),
            ("int8 W", Precision::INT8_WEIGHTS),
            ("int8 W and features", Precision::INT8_DOT),
        ] {
            let reduced = index.clone().with_precision(precision);
            let cells: Vec<String> = pool
                .install(|| recall_row(&reduced, &queries, &truth))
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect();
            println!(
                "| {name}, searched with {suffix} | {} | | | | | |",
                cells.join(" | ")
            );
        }
        eprintln!("{name}: built in {build_time:.1?}");
    }
    Ok(())
}
