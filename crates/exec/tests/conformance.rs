//! The ONNX backend node tests against the checked-in list of tests that pass
//! (`conformance_passing.txt`): every listed test passes, no other test passes unlisted, a
//! known failure fails for its documented reason (and is flagged once it passes), every other
//! test is unsupported because of an operator or element type whittle does not implement.

mod common;

use std::collections::BTreeSet;

use whittle_exec::conformance::{known_failure, run_suite, Outcome, KNOWN_FAILURES};

/// Tests that pass, one name a line.
const PASSING: &str = include_str!("conformance_passing.txt");

#[test]
fn onnx_node_tests_match_the_passing_list() {
    let dir = common::assets().join("onnx-node-tests");
    let summary = run_suite(&dir, "").unwrap();
    let listed: BTreeSet<&str> = PASSING
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut problems = Vec::new();
    for case in &summary.cases {
        let name = case.name.as_str();
        match (&case.outcome, known_failure(name)) {
            (Outcome::Passed, Some(_)) => problems.push(format!(
                "{name} passes now: remove it from KNOWN_FAILURES and add it to the list"
            )),
            (Outcome::Passed, None) if !listed.contains(name) => {
                problems.push(format!("{name} passes: add it to conformance_passing.txt"))
            }
            (Outcome::Passed, None) => {}
            (Outcome::Failed(m), Some(k)) if m.contains(k.message) => {}
            (Outcome::Failed(m), Some(k)) => problems.push(format!(
                "{name} fails, but not with its known message '{}': {m}",
                k.message
            )),
            (Outcome::Failed(m), None) => problems.push(format!("{name} fails: {m}")),
            (Outcome::Unsupported(m), _) if listed.contains(name) => problems.push(format!(
                "{name} is listed as passing but is unsupported: {m}"
            )),
            (Outcome::Unsupported(_), _) => {}
        }
    }
    let ran: BTreeSet<&str> = summary.cases.iter().map(|c| c.name.as_str()).collect();
    for name in listed.difference(&ran) {
        problems.push(format!("{name} is listed but is not in {}", dir.display()));
    }
    for k in KNOWN_FAILURES.iter().filter(|k| !ran.contains(k.test)) {
        problems.push(format!("known failure {} is not in the suite", k.test));
    }
    println!(
        "{} passed, {} failed, {} unsupported",
        summary.passed(),
        summary.failed(),
        summary.unsupported()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(summary.passed(), listed.len());
    assert_eq!(summary.failed(), KNOWN_FAILURES.len());
}

#[test]
fn a_corrupt_model_or_data_file_fails_and_an_unknown_operator_is_unsupported() {
    use whittle_exec::conformance::run_case;
    let relu = common::assets().join("onnx-node-tests/test_relu");
    let dir = common::scratch("conformance-corrupt");
    let case = |name: &str, model: &[u8], input: Option<&[u8]>| {
        let test = dir.join(name);
        std::fs::create_dir_all(test.join("test_data_set_0")).unwrap();
        std::fs::write(test.join("model.onnx"), model).unwrap();
        for file in ["input_0.pb", "output_0.pb"] {
            let original = std::fs::read(relu.join("test_data_set_0").join(file)).unwrap();
            let bytes = input.filter(|_| file == "input_0.pb").unwrap_or(&original);
            std::fs::write(test.join("test_data_set_0").join(file), bytes).unwrap();
        }
        run_case(&test).outcome
    };
    let model = std::fs::read(relu.join("model.onnx")).unwrap();
    assert_eq!(case("test_intact", &model, None), Outcome::Passed);
    let truncated = &model[..model.len() / 2];
    assert!(
        matches!(case("test_truncated", truncated, None), Outcome::Failed(m) if m.contains("loading the model")),
    );
    let bad_input = case("test_bad_input", &model, Some(&[0x0a, 0xff, 0xff]));
    assert!(matches!(bad_input, Outcome::Failed(_)), "{bad_input:?}");
    let mut unknown = model.clone();
    let at = unknown.windows(4).position(|w| w == b"Relu").unwrap();
    unknown[at + 1] = b'x';
    let outcome = case("test_unknown_op", &unknown, None);
    assert!(
        matches!(&outcome, Outcome::Unsupported(m) if m.contains("operator 'Rxlu'")),
        "{outcome:?}"
    );
}
