//! The Rust side of the Python package's comparison with the original
//! LEMUR (`benches/peers/lemur_python.py`).
//!
//! `cargo run --release -p lemur-bench --bin python_peer -- export DIR`
//! writes W10k (the benchmarks' seeded corpus, 10,000 documents, d = 128)
//! and 1000 queries of 32 tokens as `.npy` files into `DIR`, so that every
//! implementation measures the same data.
//!
//! `cargo run --release -p lemur-bench --bin python_peer -- latency INDEX DIR`
//! opens the index directory `INDEX` (the one the Python script saved) and
//! times `Index::search` on one query at a time on one thread, as the
//! Python package's single-query row does: the median over the first 200
//! queries, in microseconds.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lemur::synthetic::{self, CorpusSpec};
use lemur::{Index, SearchParams};

/// Queries timed one at a time (the Python script's `SINGLE`).
const SINGLE_QUERIES: usize = 200;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["export", dir] => export(Path::new(dir)),
        ["latency", index, dir] => latency(Path::new(index), Path::new(dir)),
        _ => bail!("usage: python_peer export DIR | python_peer latency INDEX DIR"),
    }
}

fn export(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let data = synthetic::corpus(&CorpusSpec::colbert_10k());
    let queries = data.queries(1000, lemur_bench::QUERY_TOKENS, 1);
    lemur::io::save_multivectors(&data.corpus, dir.join("tokens.npy"), dir.join("counts.npy"))?;
    lemur::io::save_multivectors(
        &queries,
        dir.join("queries.npy"),
        dir.join("query_counts.npy"),
    )?;
    println!(
        "{}: {} documents, {} queries",
        dir.display(),
        data.corpus.len(),
        queries.len()
    );
    Ok(())
}

fn latency(index_dir: &Path, dir: &Path) -> Result<()> {
    let index =
        Index::open(index_dir).with_context(|| format!("opening {}", index_dir.display()))?;
    let queries =
        lemur::io::load_multivectors(dir.join("queries.npy"), dir.join("query_counts.npy"))?;
    let params = SearchParams::default();
    let pool = lemur_bench::pool(1);
    let mut micros: Vec<f64> = pool.install(|| {
        (0..SINGLE_QUERIES.min(queries.len()))
            .map(|q| {
                let query = queries.get(q);
                let start = Instant::now();
                let hits = index.search_one(query, params).expect("valid query");
                std::hint::black_box(hits);
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    });
    micros.sort_by(f64::total_cmp);
    println!(
        "rust one query, 1 thread: median {:.1} us over {} queries",
        micros[micros.len() / 2],
        micros.len()
    );
    Ok(())
}
