//! `cargo xtask test-isa`: the MaxSim properties at every SIMD level.

use std::collections::BTreeSet;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use lemur_maxsim::{Isa, Level};

use crate::cargo;

/// The levels this CPU advertises in `/proc/cpuinfo`, independently of
/// pulp's detection, so a build that silently lost a level is caught.
fn cpuinfo_levels() -> Vec<Level> {
    let mut levels = vec![Level::Scalar];
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return levels;
    };
    let flags: BTreeSet<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |names: &[&str]| names.iter().all(|n| flags.contains(n));
    if has(&["avx2", "fma"]) {
        levels.push(Level::Avx2);
    }
    if has(&["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]) {
        levels.push(Level::Avx512);
    }
    if has(&["asimd"]) {
        levels.push(Level::Neon);
    }
    levels
}

/// The levels that must run: `LEMUR_REQUIRE_ISA` if set, else what the CPU
/// advertises.
fn required_levels() -> Result<Vec<Level>> {
    match std::env::var("LEMUR_REQUIRE_ISA") {
        Ok(names) => names
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                Level::from_name(n)
                    .with_context(|| format!("unknown level {n:?} in LEMUR_REQUIRE_ISA"))
            })
            .collect(),
        Err(_) => Ok(cpuinfo_levels()),
    }
}

/// Runs the `isa` test file once for `level` (with or without the avx512
/// feature) and returns the levels it reported running.
fn run_level(level: Level, avx512_feature: bool) -> Result<BTreeSet<String>> {
    let mut command = cargo();
    command.args(["test", "-p", "lemur-maxsim", "--test", "isa"]);
    if !avx512_feature {
        command.arg("--no-default-features");
    }
    command.args(["--", "--nocapture", "--test-threads", "2"]);
    command.env("LEMUR_ISA", level.name());
    command.stdout(Stdio::piped());
    eprintln!(
        "$ LEMUR_ISA={} cargo test -p lemur-maxsim --test isa{}",
        level.name(),
        if avx512_feature {
            ""
        } else {
            " --no-default-features"
        }
    );
    let output = command.output().context("could not run cargo test")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!("the {level} property tests failed");
    }
    Ok(stdout
        .lines()
        .filter_map(|l| l.strip_prefix("lemur-isa-ran: "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

pub(crate) fn test_isa() -> Result<()> {
    let required = required_levels()?;
    let available: Vec<Level> = Isa::available().iter().map(|isa| isa.level()).collect();
    let mut ran = BTreeSet::new();
    for &level in &available {
        ran.extend(run_level(level, true)?);
    }
    // The build without the avx512 feature must still pass at its levels.
    for &level in available.iter().filter(|l| **l != Level::Avx512) {
        run_level(level, false)?;
    }
    let required_names: Vec<&str> = required.iter().map(|l| l.name()).collect();
    println!(
        "test-isa: levels available: {}",
        available
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "test-isa: levels that ran: {}",
        ran.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    println!("test-isa: levels required: {}", required_names.join(", "));
    let missing: Vec<&str> = required_names
        .iter()
        .copied()
        .filter(|n| !ran.contains(*n))
        .collect();
    if !missing.is_empty() {
        bail!("required SIMD levels did not run: {}", missing.join(", "));
    }
    println!("{} passed, 0 failed", ran.len());
    Ok(())
}
