//! `whittle factorize` end to end on the pretrained LeNet5: JSON fields, accuracy on MNIST
//! before and after, and bad input.

mod support;

use support::{assert_clean_error, asset, mnist_spec, scratch, whittle, whittle_json};

fn lenet5() -> String {
    asset("models/mnist_lenet5.onnx")
}

#[test]
fn factorizes_the_first_gemm_and_reports_accuracy() {
    let dir = scratch("factorize");
    let out = dir.join("f.onnx").display().to_string();
    let data = mnist_spec();
    let args = [
        "factorize",
        &lenet5(),
        "-o",
        &out,
        "--rank-ratio",
        "0.25",
        "--layers",
        "g1",
        "--data",
        &data,
        "--limit",
        "500",
        "--json",
    ];
    let r = whittle_json(&args);
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let l = &layers[0];
    assert_eq!(
        (l["name"].as_str(), l["in"].as_u64(), l["out"].as_u64()),
        (Some("g1"), Some(3136), Some(200))
    );
    assert_eq!(l["rank"], 50);
    assert_eq!(l["params_before"], 3136 * 200);
    assert_eq!(l["params_after"], 50 * (3136 + 200));
    assert!(l["skipped_reason"].is_null());
    let saved = 3136 * 200 - 50 * (3136 + 200);
    assert_eq!(
        r["params_before"].as_u64().unwrap() - r["params_after"].as_u64().unwrap(),
        saved
    );
    assert!(r["size_after"].as_u64() < r["size_before"].as_u64());
    let (before, after) = (
        r["accuracy_before"].as_f64().unwrap(),
        r["accuracy_after"].as_f64().unwrap(),
    );
    println!("accuracy {before} -> {after}");
    assert!(
        before > 0.97 && after > before - 0.01,
        "{before} -> {after}"
    );
    // Without --force the output is not overwritten.
    let again = whittle(&["factorize", &lenet5(), "-o", &out, "--energy", "0.9"]);
    assert_clean_error(&again, &["exists", "--force"]);
    let forced = whittle_json(&[
        "factorize",
        &lenet5(),
        "-o",
        &out,
        "--energy",
        "0.9",
        "--force",
        "--json",
    ]);
    assert!(forced["accuracy_before"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unprofitable_layers_are_skipped_with_a_reason() {
    let dir = scratch("factorize-skip");
    let out = dir.join("f.onnx").display().to_string();
    let r = whittle_json(&[
        "factorize",
        &lenet5(),
        "-o",
        &out,
        "--rank-ratio",
        "1",
        "--json",
    ]);
    for l in r["layers"].as_array().unwrap() {
        assert!(
            l["skipped_reason"].as_str().unwrap().contains("not fewer"),
            "{l}"
        );
    }
    assert_eq!(r["params_before"], r["params_after"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused() {
    let dir = scratch("factorize-bad");
    let out = dir.join("f.onnx").display().to_string();
    let model = lenet5();
    let both = whittle(&[
        "factorize",
        &model,
        "-o",
        &out,
        "--rank-ratio",
        "0.5",
        "--energy",
        "0.9",
    ]);
    assert_eq!(both.status.code(), Some(2));
    let neither = whittle(&["factorize", &model, "-o", &out]);
    assert_eq!(neither.status.code(), Some(2));
    let range = whittle(&["factorize", &model, "-o", &out, "--rank-ratio", "0"]);
    assert_clean_error(&range, &["(0, 1]"]);
    let energy = whittle(&["factorize", &model, "-o", &out, "--energy", "1.5"]);
    assert_clean_error(&energy, &["(0, 1]"]);
    let unknown = whittle(&[
        "factorize",
        &model,
        "-o",
        &out,
        "--rank-ratio",
        "0.5",
        "--layers",
        "nope",
    ]);
    assert_clean_error(&unknown, &["'nope'"]);
    let same = whittle(&[
        "factorize",
        &model,
        "-o",
        &model,
        "--rank-ratio",
        "0.5",
        "--force",
    ]);
    assert_clean_error(&same, &["input model"]);
    assert!(
        !std::path::Path::new(&out).exists(),
        "no output after errors"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
