//! `whittle compare` on LeNet5 against its float16 version, and on mismatched models.
//! Local helpers only (the shared CLI test support belongs to the data helper).

use std::path::{Path, PathBuf};
use std::process::Command;

use whittle_ir::{ExternalData, Model};
use whittle_passes::fp16;
use whittle_testkit::scratch;

fn assets() -> PathBuf {
    whittle_data::assets_dir()
}

fn compare(a: &Path, b: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .arg("compare")
        .args([a, b])
        .args(extra)
        .output()
        .unwrap()
}

fn lenet() -> PathBuf {
    assets().join("models/mnist_lenet5.onnx")
}

#[test]
fn lenet5_against_its_fp16_version() {
    let dir = scratch("compare-fp16");
    let half = dir.join("lenet5_fp16.onnx");
    let (model, _) = fp16::convert(&Model::load(lenet()).unwrap(), &Default::default()).unwrap();
    model.save(&half, &ExternalData::Never).unwrap();
    let data = format!("mnist:{}", assets().join("mnist").display());
    let out = compare(
        &lenet(),
        &half,
        &["--data", &data, "--samples", "2000", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["top1_agreement"].as_f64().unwrap() > 0.99, "{j}");
    let o = &j["outputs"][0];
    assert_eq!(o["name"], "logits");
    assert!(o["cosine"].as_f64().unwrap() > 0.999, "{j}");
    assert!(o["sqnr_db"].as_f64().unwrap() > 30.0, "{j}");
    let ratio = j["size_ratio"].as_f64().unwrap();
    assert!((0.45..0.52).contains(&ratio), "{j}");
    assert_eq!(j["a"]["params"], j["b"]["params"]);
    let (acc_a, acc_b) = (
        j["a"]["accuracy"].as_f64().unwrap(),
        j["b"]["accuracy"].as_f64().unwrap(),
    );
    assert!(acc_a > 0.98 && (acc_a - acc_b).abs() < 0.002, "{j}");
    assert_eq!(j["samples"], 2000);
}

#[test]
fn random_inputs_of_a_model_against_itself_are_identical() {
    let out = compare(&lenet(), &lenet(), &["--samples", "4", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["outputs"][0]["mse"], 0.0);
    // Identical outputs: no noise, an infinite SQNR, never NaN.
    let text = compare(&lenet(), &lenet(), &["--samples", "2"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("SQNR inf dB"), "{text}");
    assert_eq!(j["top1_agreement"], 1.0);
    assert_eq!(j["size_ratio"], 1.0);
    assert!(j["a"].get("accuracy").is_none());
}

#[test]
fn models_with_different_inputs_are_refused() {
    let minilm = assets().join("models/paraphrase-MiniLM-L3-v2.onnx");
    let out = compare(&lenet(), &minilm, &["--samples", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: the models take different inputs"),
        "{err}"
    );
    assert!(err.contains("input_ids"), "{err}");
}

#[test]
fn inputs_with_different_shapes_are_refused() {
    let dir = scratch("compare-shape");
    let mut model = Model::load(lenet()).unwrap();
    let input = &mut model.graph_mut().input[0];
    if let Some(whittle_ir::proto::type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        let dims = &mut t.shape.as_mut().unwrap().dim;
        dims[0].value = Some(whittle_ir::proto::tensor_shape_proto::dimension::Value::DimValue(1));
    }
    let path = dir.join("batch1.onnx");
    model.save(&path, &ExternalData::Never).unwrap();
    let out = compare(&lenet(), &path, &["--samples", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input 'input' differs"), "{err}");
}

#[test]
fn zero_and_oversized_sample_counts_are_refused() {
    let out = compare(&lenet(), &lenet(), &["--samples", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --samples 0"), "{err}");
    // 10^8 samples of 10 logits kept for both models: 24 GB, refused after the first run.
    let out = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .arg("compare")
        .args([lenet(), lenet()])
        .args(["--samples", "100000000"])
        .env("WHITTLE_MEMORY_LIMIT", "100000000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("100000000 feeds needs") && err.contains("lower --samples"),
        "{err}"
    );
}
