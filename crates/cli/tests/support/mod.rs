//! Helpers for the `whittle` binary's integration tests: assets, scratch folders, running
//! the binary and checking its errors. Include with `mod support;`.
#![allow(dead_code)] // Each test file uses its own subset.

pub mod mnist_npz;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use whittle_testkit::scratch;

/// The assets folder; panics with the fetch command when it is missing.
pub fn assets() -> PathBuf {
    let dir = whittle_data::assets_dir();
    assert!(
        dir.join("models").is_dir() && dir.join("mnist").is_dir(),
        "assets not found in {}: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

/// The path of an asset, as a string for the command line.
pub fn asset(relative: &str) -> String {
    assets().join(relative).display().to_string()
}

/// The `mnist:DIR` spec of the MNIST assets.
pub fn mnist_spec() -> String {
    format!("mnist:{}", asset("mnist"))
}

/// Runs the `whittle` binary with `args`.
pub fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
}

/// Runs `whittle` with `args`; returns (exit code, stdout, stderr) as text.
pub fn whittle_text(args: &[&str]) -> (i32, String, String) {
    let out = whittle(args);
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Runs `whittle` with `args`, checks success, and parses its standard output as JSON.
pub fn whittle_json(args: &[&str]) -> serde_json::Value {
    json(&whittle(args))
}

/// Checks that a run succeeded and parses its standard output as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "whittle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Runs `python3` (or `$WHITTLE_PYTHON`) with `args` in folder `dir`, checks that it
/// succeeded and returns its standard output.
pub fn python<S: AsRef<OsStr>>(dir: &Path, args: impl IntoIterator<Item = S>) -> String {
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Asserts failure with exit code 1 and a one-line error containing every `needle`.
pub fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "no 'error: ' prefix: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
}
