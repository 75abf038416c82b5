//! Quickstart: build a synthetic ColBERT-shaped corpus, build a LEMUR index
//! on it in Rust (training targets, a trained feature map, least-squares
//! `W`), search it, and
//! print hits, timings and recall against exact brute-force MaxSim.
//!
//! `cargo run --release -p lemur --example quickstart [n_docs] [threads]`

use std::time::Instant;

use lemur::{BuildConfig, IndexBuilder, Isa, SearchParams, Stage, synthetic};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n_docs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3000);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    println!(
        "lemur quickstart: {n_docs} documents, {threads} threads, SIMD level {}",
        Isa::detect().level()
    );

    let started = Instant::now();
    let spec = synthetic::CorpusSpec {
        n_docs,
        ..synthetic::CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let queries = data.queries(200, 32, 7);
    println!(
        "corpus: {} docs, {} tokens of d = {} ({:.0} MB) in {:.2?}",
        data.corpus.len(),
        data.corpus.n_tokens(),
        data.corpus.dim(),
        data.corpus.tokens().len() as f64 * 4.0 / 1e6,
        started.elapsed()
    );

    // Train a LEMUR index in Rust: targets, a 128 -> 1024 feature map,
    // least-squares W. (Smaller than the defaults so the demo is quick.)
    let config = BuildConfig {
        epochs: 3,
        final_hidden_dim: 1024,
        train_docs: 1024.min(n_docs),
        learn_rows: 16_384,
        fit_sample: 4096,
        ..BuildConfig::default()
    };
    let progress = |stage: Stage, done: usize, total: usize| {
        if done == total {
            println!("  {stage:?}: {done}/{total}");
        }
    };
    let started = Instant::now();
    let (index, report) = pool.install(|| {
        IndexBuilder::new(config)
            .progress(&progress)
            .build(data.corpus.clone(), None)
    })?;
    println!(
        "index built in {:.2?}: targets {:.2?}, training {:.2?} (best epoch {:?}), pseudo-inverse {:.2?}, W {:.2?}",
        started.elapsed(),
        report.targets_time,
        report.training_time,
        report.training.as_ref().and_then(|t| t.best_epoch),
        report.solver_time,
        report.fit_time
    );

    let params = SearchParams {
        k: 10,
        n_candidates: 200,
    };
    let started = Instant::now();
    let results = pool.install(|| index.search_batch(&queries, params))?;
    let batch_time = started.elapsed();
    println!(
        "search: {} queries of 32 tokens in {batch_time:.2?} ({:.0} queries/s), k = {}, k' = {}",
        queries.len(),
        queries.len() as f64 / batch_time.as_secs_f64(),
        params.k,
        params.n_candidates
    );

    let mut latencies: Vec<f64> = (0..queries.len().min(50))
        .map(|q| {
            let started = Instant::now();
            let hits = pool.install(|| index.search_one(queries.get(q), params));
            assert!(hits.is_ok());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "one query at a time: p50 {:.2} ms, p90 {:.2} ms",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 9 / 10]
    );

    // Ground truth: exact MaxSim against every document (the SIMD kernel
    // over the whole corpus, which is what LEMUR avoids).
    let started = Instant::now();
    let truth = pool.install(|| index.exhaustive_search(&queries, 10));
    let brute_time = started.elapsed();
    let found: usize = results
        .iter()
        .zip(&truth)
        .map(|(hits, exact)| {
            hits.iter()
                .filter(|h| exact.iter().any(|e| e.doc == h.doc))
                .count()
        })
        .sum();
    println!(
        "recall@10 against exact brute force: {:.3} (brute force took {brute_time:.2?}, {:.1}x slower than LEMUR)",
        found as f64 / (10 * queries.len()) as f64,
        brute_time.as_secs_f64() / batch_time.as_secs_f64()
    );
    println!("query 0 top hits:");
    for hit in results[0].iter().take(5) {
        println!("  doc {:>6}  score {:.4}", hit.doc, hit.score);
    }
    Ok(())
}
