//! `cargo xtask wheel` and `cargo xtask test-python`: the Python package
//! (`crates/lemur-py`) built with maturin, and its pytest suite run in a
//! fresh virtual environment. Every Python package comes from PyPI at a
//! pinned version with its sha256 checked (`crates/lemur-py/requirements`),
//! into git-ignored virtual environments under `target/python`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run};

/// The binding crate, relative to the workspace root.
const CRATE: &str = "crates/lemur-py";

/// The tools' environment: maturin, and zig for manylinux wheels.
const TOOLS_VENV: &str = "target/python/tools";

/// The test environment: NumPy, pytest, Qdrant's client and in-process
/// engine, and the package under test.
const TEST_VENV: &str = "target/python/test";

/// Builds the release wheel (abi3, CPython >= 3.10, manylinux_2_28 through
/// zig) into `target/wheels` and prints its path.
pub(crate) fn wheel() -> Result<()> {
    let tools = venv(TOOLS_VENV, &["build.txt", "zig.txt"])?;
    let out = root().join("target/wheels");
    let before = wheels_in(&out);
    let mut maturin = maturin(&tools, &out);
    maturin.args(["--release", "--zig", "--compatibility", "manylinux_2_28"]);
    // cargo-zigbuild finds zig through this interpreter's `ziglang`.
    maturin.env("CARGO_ZIGBUILD_PYTHON_PATH", python_in(&tools));
    run(maturin)?;
    let built = newest_new_wheel(&out, &before)?;
    println!("{}", built.display());
    Ok(())
}

/// Builds a development wheel, installs it into a fresh test environment
/// and runs the pytest suite, with the `lemur` binary the tests compare
/// against.
pub(crate) fn test_python() -> Result<()> {
    let tools = venv(TOOLS_VENV, &["build.txt"])?;
    let out = root().join("target/python/dist");
    let _ = fs::remove_dir_all(&out);
    // A wheel for this machine only (no manylinux audit): the tests need
    // the package, not a distributable file, and the dev profile shares
    // the workspace's test build.
    let mut maturin = maturin(&tools, &out);
    maturin.args(["--profile", "dev", "--compatibility", "linux"]);
    run(maturin)?;
    let built = newest_new_wheel(&out, &[])?;

    // The binary the workspace tests build (their features unified across
    // the workspace): after `cargo test --workspace`, as in `ci`, nothing is
    // compiled again, where `build -p lemur-cli` would build its
    // dependencies a second time with that package's features alone.
    let mut cli = cargo();
    cli.args(["test", "--workspace", "--no-run"]);
    run(cli)?;
    let lemur_cli = target_dir().join("debug/lemur");

    let test_env = root().join(TEST_VENV);
    let _ = fs::remove_dir_all(&test_env);
    let python = venv(TEST_VENV, &["test.txt", "qdrant.txt"])?;
    let mut install = Command::new(python_in(&python));
    install.args(["-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]);
    install.arg(&built);
    run(install)?;
    let mut pytest = Command::new(python_in(&python));
    pytest
        .current_dir(root().join(CRATE))
        .args([
            "-m",
            "pytest",
            "tests",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ])
        .env("LEMUR_CLI", &lemur_cli);
    run(pytest)
}

/// maturin building the binding crate into `out`.
fn maturin(tools: &Path, out: &Path) -> Command {
    let mut command = Command::new(tools.join("bin/maturin"));
    command
        .current_dir(root())
        .args(["build", "--interpreter"])
        .arg(host_python())
        .args([
            "--manifest-path",
            &format!("{CRATE}/Cargo.toml"),
            "--locked",
            "--out",
        ])
        .arg(out);
    command
}

/// A virtual environment at `dir` (relative to the root) holding the
/// hash-pinned `requirements` files; made and filled once, then reused
/// while its requirements stay the same.
fn venv(dir: &str, requirements: &[&str]) -> Result<PathBuf> {
    let dir = root().join(dir);
    let mut wanted = String::new();
    for file in requirements {
        let path = root().join(CRATE).join("requirements").join(file);
        wanted +=
            &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    }
    let stamp = dir.join(".requirements");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&dir);
    let mut make = Command::new(host_python());
    make.args(["-m", "venv"]).arg(&dir);
    run(make)?;
    let mut install = Command::new(python_in(&dir));
    install.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--require-hashes",
        "--only-binary=:all:",
    ]);
    for file in requirements {
        install
            .arg("-r")
            .arg(root().join(CRATE).join("requirements").join(file));
    }
    run(install)?;
    fs::write(&stamp, wanted)?;
    Ok(dir)
}

/// The interpreter the environments are made from (`PYTHON`, else
/// `python3`).
fn host_python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_in(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn wheels_in(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "whl"))
        .filter_map(|entry| Some((entry.path(), entry.metadata().ok()?.modified().ok()?)))
        .collect()
}

/// The wheel maturin just wrote to `dir`: the newest one that is not in
/// `before` as it was.
fn newest_new_wheel(dir: &Path, before: &[(PathBuf, std::time::SystemTime)]) -> Result<PathBuf> {
    let mut wheels: Vec<_> = wheels_in(dir)
        .into_iter()
        .filter(|wheel| !before.contains(wheel))
        .collect();
    wheels.sort_by_key(|(_, modified)| *modified);
    match wheels.pop() {
        Some((path, _)) => Ok(path),
        None => bail!("maturin wrote no wheel to {}", dir.display()),
    }
}
