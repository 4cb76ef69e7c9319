//! The ONNX backend node tests: every test whose operators whittle supports must pass, and
//! at least 600 of the suite's tests pass in all.

mod common;

use whittle_exec::conformance::{run_suite, Outcome, KNOWN_FAILURES};

#[test]
fn onnx_node_tests_pass() {
    let dir = common::assets().join("onnx-node-tests");
    let summary = run_suite(&dir, "").unwrap();
    let unexpected: Vec<String> = summary
        .cases
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Failed(m) if !KNOWN_FAILURES.iter().any(|(n, _)| *n == c.name) => {
                Some(format!("{}: {m}", c.name))
            }
            _ => None,
        })
        .collect();
    println!(
        "{} passed, {} failed, {} unsupported",
        summary.passed(),
        summary.failed(),
        summary.unsupported()
    );
    assert!(
        unexpected.is_empty(),
        "failing tests:\n{}",
        unexpected.join("\n")
    );
    assert!(
        summary.passed() >= 600,
        "only {} tests pass",
        summary.passed()
    );
}
