//! `whittle optimize` end to end on real models: JSON fields, verification, and bad input.

mod support;

use support::{asset, json, scratch, whittle};

fn model(name: &str) -> String {
    asset(&format!("models/{name}"))
}

fn changes(report: &serde_json::Value, pass: &str) -> u64 {
    report["passes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pass)
        .and_then(|p| p["changes"].as_u64())
        .unwrap_or_else(|| panic!("pass {pass} missing from {report}"))
}

#[test]
fn ppocr_cls_is_optimized_and_verified() {
    let dir = scratch("cls");
    let out = dir.join("cls.onnx");
    let input = model("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx");
    let o = out.to_str().unwrap();
    let args = [
        "optimize",
        &input,
        "-o",
        o,
        "--verify",
        "--shape",
        "x=1,3,48,192",
        "--json",
    ];
    let report = json(&whittle(&args));
    assert_eq!(report["nodes_before"], 566);
    let after = report["nodes_after"].as_u64().unwrap();
    assert!(after < 566 / 2, "{report}");
    assert_eq!(changes(&report, "fold-batchnorm"), 35);
    assert!(report["max_relative_diff"].as_f64().unwrap() <= 1e-5);
    assert_eq!(
        report["bytes_after"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    assert!(report["params_after"].as_u64() < report["params_before"].as_u64());
    assert_eq!(report["passes"].as_array().unwrap().len(), 7);

    let again = whittle(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = [&args[..], &["--force"]].concat();
    assert!(whittle(&forced).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chosen_passes_run_alone() {
    let dir = scratch("chosen");
    let out = dir.join("lenet.onnx");
    let input = model("mnist_lenet5.onnx");
    let args = [
        "optimize",
        &input,
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "dead-code,eliminate-identity",
        "--json",
    ];
    let report = json(&whittle(&args));
    let names: Vec<&str> = report["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dead-code", "eliminate-identity"]);
    assert_eq!(report["nodes_before"], report["nodes_after"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_pass_is_a_clear_error_and_writes_nothing() {
    let dir = scratch("bad");
    let out = dir.join("x.onnx");
    let input = model("mnist_lenet5.onnx");
    let o = whittle(&[
        "optimize",
        &input,
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "fold-bn",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: unknown pass 'fold-bn'"), "{err}");
    assert!(
        err.contains("fold-batchnorm") && err.contains("constant-folding"),
        "{err}"
    );
    assert!(!out.exists());
    let same = whittle(&["optimize", &input, "-o", &input, "--force"]);
    assert_eq!(same.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}
