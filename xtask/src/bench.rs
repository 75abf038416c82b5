//! `cargo xtask bench`: run the criterion benches and summarise them, then
//! time index builds per stage (without a filter).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{cargo, root, run};

/// `cargo xtask bench-scale ARGS`: builds and runs the scale benchmark in
/// the release profile with `ARGS` (see `benches/src/bin/scale.rs`).
pub(crate) fn bench_scale(args: &[String]) -> Result<()> {
    let mut command = bench_binary("scale");
    command.args(args);
    run(command)
}

/// `cargo run --release -p lemur-bench --bin NAME --`, for its arguments
/// to follow.
fn bench_binary(name: &str) -> std::process::Command {
    let mut command = cargo();
    command.args(["run", "--release", "-p", "lemur-bench", "--bin", name, "--"]);
    command
}

/// One benchmark's measurements, per iteration.
struct Row {
    name: String,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    elements: Option<f64>,
    /// Bytes per iteration, for rows that measure a bandwidth.
    bytes: Option<f64>,
    written: std::time::SystemTime,
}

pub(crate) fn bench(filter: Option<&str>) -> Result<()> {
    // The text benchmarks need the model files.
    crate::models::fetch_models()?;
    let mut command = cargo();
    command.args(["bench", "-p", "lemur-bench", "--benches", "--"]);
    if let Some(filter) = filter {
        command.arg(filter);
    }
    let started = std::time::SystemTime::now();
    run(command)?;
    let mut rows = Vec::new();
    collect(&root().join("target/criterion"), &mut rows)?;
    // Only what this run measured: criterion keeps older results too.
    rows.retain(|row| row.written >= started);
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    println!();
    println!("| benchmark | median | min | max | throughput (median) |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        let throughput = if let Some(bytes) = row.bytes {
            format!("{:.1} GB/s", bytes / row.median_s / 1e9)
        } else {
            match row.elements {
                Some(n)
                    if row.name.starts_with("rerank/")
                        || row.name.starts_with("peak/")
                        || row.name.starts_with("cliff") =>
                {
                    format!("{:.1} GFLOP/s", n / row.median_s / 1e9)
                }
                Some(n) if row.name.starts_with("text_encode/") => {
                    format!("{:.0} sentences/s", n / row.median_s)
                }
                Some(n) if row.name.starts_with("text_long/") => {
                    format!("{:.0} tokens/s", n / row.median_s)
                }
                Some(n) => format!("{:.0} queries/s", n / row.median_s),
                None => String::new(),
            }
        };
        println!(
            "| {} | {} | {} | {} | {throughput} |",
            row.name,
            human(row.median_s),
            human(row.min_s),
            human(row.max_s)
        );
    }
    if filter.is_none() {
        build_stages()?;
    }
    Ok(())
}

/// Index builds are minutes long, too long for criterion's repeated
/// samples: one build per thread count, timed per stage by the builder
/// itself (W10k, random features and a 10-epoch trained map on 20,000
/// learn rows x 2,048 training documents), with recall beside it.
fn build_stages() -> Result<()> {
    for threads in ["1", "2"] {
        println!();
        println!("Build stages on W10k, {threads} thread(s):");
        let mut command = bench_binary("recall");
        command.args([threads, "20000", "2048", "10"]);
        run(command)?;
    }
    Ok(())
}

fn human(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{:.1} us", seconds * 1e6)
    }
}

/// Finds every `new/` measurement directory criterion wrote.
fn collect(dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let new = dir.join("new");
    if new.join("estimates.json").is_file() && new.join("benchmark.json").is_file() {
        rows.push(read_row(&new)?);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir()
            && path
                .file_name()
                .is_some_and(|n| n != "new" && n != "base" && n != "report")
        {
            collect(&path, rows)?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_row(new: &Path) -> Result<Row> {
    let benchmark = read_json(&new.join("benchmark.json"))?;
    let estimates = read_json(&new.join("estimates.json"))?;
    let sample = read_json(&new.join("sample.json"))?;
    let name = benchmark["full_id"].as_str().unwrap_or("?").to_owned();
    let median_ns = estimates["median"]["point_estimate"]
        .as_f64()
        .context("median")?;
    let iters = sample["iters"].as_array().context("iters")?;
    let times = sample["times"].as_array().context("times")?;
    let per_iter: Vec<f64> = iters
        .iter()
        .zip(times)
        .filter_map(|(n, t)| Some(t.as_f64()? / n.as_f64()?))
        .collect();
    let min_ns = per_iter.iter().copied().fold(f64::INFINITY, f64::min);
    let max_ns = per_iter.iter().copied().fold(0.0, f64::max);
    let elements = benchmark["throughput"]["Elements"].as_f64();
    let bytes = benchmark["throughput"]["Bytes"].as_f64();
    let written = std::fs::metadata(new.join("estimates.json"))?.modified()?;
    Ok(Row {
        name,
        median_s: median_ns / 1e9,
        min_s: min_ns / 1e9,
        max_s: max_ns / 1e9,
        elements,
        bytes,
        written,
    })
}
