//! Running the real `lemur` binary, shared by the CLI tests.

#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output};

/// Runs `lemur` with `args`.
pub fn lemur(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lemur"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs a command that must succeed; returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let output = lemur(args);
    assert!(
        output.status.success(),
        "lemur {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail; returns its one-line error.
pub fn fails(args: &[&str]) -> String {
    let output = lemur(args);
    assert_eq!(output.status.code(), Some(1), "lemur {args:?} should fail");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Runs a `--json` command that must succeed; returns what it printed.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("the command prints JSON")
}
