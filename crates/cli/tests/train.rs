//! `whittle train` end to end on LeNet5 and MNIST: a short run with a YAML config that
//! flags override, the JSON report, the written model, and bad input failing cleanly.
//! (Local helpers: the shared CLI test support belongs to the data helper.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn assets() -> PathBuf {
    let dir = whittle_data::assets_dir();
    assert!(
        dir.join("models").is_dir(),
        "assets not found in {}: run scripts/fetch-assets.sh",
        dir.display()
    );
    dir
}

fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("whittle-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lenet() -> String {
    assets()
        .join("models/mnist_lenet5.onnx")
        .display()
        .to_string()
}

fn mnist() -> String {
    format!("mnist:{}", assets().join("mnist").display())
}

#[test]
fn trains_lenet5_from_a_yaml_config_with_flag_overrides() {
    let dir = scratch("yaml");
    let config = dir.join("train.yaml");
    let yaml = format!(
        "model: {}\ndata: {}\nlimit: 600\nepochs: 5\nbatch-size: 50\nlr: 100.0\noptimizer: adam\nfreeze: ['conv*']\nval-fraction: 0.25\nlr-schedule: warmup-cosine\nwarmup-steps: 2\n",
        lenet(),
        mnist()
    );
    std::fs::write(&config, yaml).unwrap();
    let out_model = dir.join("out.onnx");
    let out = whittle(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "2",
        "--lr",
        "0.0005",
        "-o",
        out_model.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["epochs"].as_array().unwrap().len(),
        2,
        "--epochs overrides the file"
    );
    // 450 training samples in batches of 50: 9 steps per epoch.
    assert_eq!(json["steps"], 18);
    assert!(json["trainable"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n.as_str().unwrap().starts_with("linear")));
    let acc = json["final_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "a small lr keeps LeNet5 accurate: {acc}");
    assert!(json["memory"]["peak"].as_u64().unwrap() > 0);
    let eval = whittle(&[
        "eval",
        out_model.to_str().unwrap(),
        "--data",
        &mnist(),
        "--limit",
        "500",
        "--json",
    ]);
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(eval["accuracy"].as_f64().unwrap() > 0.9, "{eval}");
}

fn assert_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "expected '{needle}': {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn bad_input_fails_with_one_line_and_no_output() {
    let dir = scratch("bad");
    let out_model = dir.join("out.onnx");
    let o = out_model.to_str().unwrap();
    let data = mnist();
    assert_error(
        &whittle(&["train", "--model", "zoo:nosuch", "--data", &data, "-o", o]),
        "unknown model 'nosuch'",
    );
    let bad_schedule = whittle(&[
        "train",
        "--model",
        &lenet(),
        "--data",
        &data,
        "--limit",
        "64",
        "--lr-schedule",
        "one-cycle",
        "--pct-start",
        "1.5",
        "-o",
        o,
    ]);
    assert_error(&bad_schedule, "pct_start");
    assert_error(
        &whittle(&[
            "train",
            "--model",
            &lenet(),
            "--data",
            &data,
            "--limit",
            "64",
            "--optimizer",
            "lion",
            "-o",
            o,
        ]),
        "--optimizer lion",
    );
    assert!(!out_model.exists(), "no partial output after an error");
    std::fs::write(&out_model, b"x").unwrap();
    assert_error(
        &whittle(&["train", "--model", &lenet(), "--data", &data, "-o", o]),
        "--force",
    );
}
