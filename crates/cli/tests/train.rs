//! `whittle train` end to end on LeNet5 and MNIST: a short run with a YAML config that
//! flags override, the JSON report, the written model, and bad input failing cleanly.

mod support;

use support::{assert_clean_error, asset, mnist_spec, scratch, whittle, whittle_json};

fn lenet() -> String {
    asset("models/mnist_lenet5.onnx")
}

#[test]
fn trains_lenet5_from_a_yaml_config_with_flag_overrides() {
    let dir = scratch("yaml");
    let config = dir.join("train.yaml");
    let yaml = format!(
        "model: {}\ndata: {}\nlimit: 600\nepochs: 5\nbatch-size: 50\nlr: 100.0\noptimizer: adam\nfreeze: ['conv*']\nval-fraction: 0.25\nlr-schedule: warmup-cosine\nwarmup-steps: 2\n",
        lenet(),
        mnist_spec()
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
        &mnist_spec(),
        "--limit",
        "500",
        "--json",
    ]);
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(eval["accuracy"].as_f64().unwrap() > 0.9, "{eval}");
}

#[test]
fn bad_input_fails_with_one_line_and_no_output() {
    let dir = scratch("bad");
    let out_model = dir.join("out.onnx");
    let o = out_model.to_str().unwrap();
    let data = mnist_spec();
    assert_clean_error(
        &whittle(&["train", "--model", "zoo:nosuch", "--data", &data, "-o", o]),
        &["unknown model 'nosuch'"],
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
    assert_clean_error(&bad_schedule, &["pct_start"]);
    assert_clean_error(
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
        &["--optimizer lion"],
    );
    assert!(!out_model.exists(), "no partial output after an error");
    std::fs::write(&out_model, b"x").unwrap();
    assert_clean_error(
        &whittle(&["train", "--model", &lenet(), "--data", &data, "-o", o]),
        &["--force"],
    );
}

#[test]
fn augmentation_flags_change_what_the_model_sees() {
    let dir = scratch("augment");
    let train = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let data = mnist_spec();
        let mut args = vec![
            "train",
            "--model",
            "zoo:lenet",
            "--data",
            &data,
            "--limit",
            "128",
            "--batch-size",
            "32",
            "--seed",
            "3",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let json = whittle_json(&args);
        (
            json["epochs"][0]["loss"].as_f64().unwrap(),
            std::fs::read(&out).unwrap(),
        )
    };
    let (plain_loss, plain) = train("plain.onnx", &[]);
    let (again_loss, again) = train("again.onnx", &[]);
    assert_eq!(
        (plain_loss, &plain),
        (again_loss, &again),
        "same seed, same run"
    );
    for (name, flags) in [
        ("crop.onnx", ["--crop-padding", "3"]),
        ("flip.onnx", ["--horizontal-flip", "true"]),
    ] {
        let (loss, bytes) = train(name, &flags);
        assert_ne!(loss, plain_loss, "{flags:?} changes the training loss");
        assert_ne!(bytes, plain, "{flags:?} changes the weights");
    }
}
