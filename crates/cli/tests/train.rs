//! `whittle train` end to end on LeNet5 and MNIST: a short run with a YAML config that
//! flags override, the JSON report, the written model, and bad input failing cleanly.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{assert_clean_error, asset, mnist_spec, scratch, whittle, whittle_json};
use whittle_ir::TensorData;

fn lenet() -> String {
    asset("models/mnist_lenet5.onnx")
}

#[test]
fn an_untrained_lenet_learns_from_a_yaml_config_with_flag_overrides() {
    let dir = scratch("yaml");
    let config = dir.join("train.yaml");
    let yaml = format!(
        "model: zoo:lenet\ndata: {}\nlimit: 1000\nepochs: 5\nbatch-size: 50\nlr: 100.0\noptimizer: adam\nfreeze: ['conv1.*']\nval-fraction: 0.2\nlr-schedule: warmup-cosine\nwarmup-steps: 2\n",
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
        "0.003",
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
    // 800 training samples in batches of 50: 16 steps per epoch.
    assert_eq!(json["steps"], 32);
    let trainable: Vec<&str> = json["trainable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(!trainable.is_empty() && trainable.iter().all(|n| !n.starts_with("conv1.")));
    // An untrained LeNet guesses (about 10%); only training reaches these.
    let acc = json["final_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "validation accuracy after training: {acc}");
    let eval = whittle_json(&[
        "eval",
        out_model.to_str().unwrap(),
        "--data",
        &mnist_spec(),
        "--limit",
        "500",
        "--json",
    ]);
    assert!(eval["accuracy"].as_f64().unwrap() > 0.5, "{eval}");
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
    let small = |extra: &[&str]| {
        let mut args = vec![
            "train", "--model", "zoo:mlp", "--data", &data, "--limit", "64",
        ];
        args.extend_from_slice(extra);
        whittle(&args)
    };
    assert_clean_error(
        &small(&["--accumulate", "0", "-o", o]),
        &["--accumulate must be at least 1"],
    );
    // Outputs are checked before the first epoch.
    let missing = dir.join("no/such/folder/out.onnx");
    assert_clean_error(
        &small(&["-o", missing.to_str().unwrap()]),
        &["output folder", "does not exist"],
    );
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert_clean_error(
        &small(&["--checkpoint-dir", file.to_str().unwrap(), "-o", o]),
        &["--checkpoint-dir", "is a file"],
    );
    let bad_yaml = dir.join("bad.yaml");
    std::fs::write(&bad_yaml, "epochs: 2\nlearning-rate: 0.1\n").unwrap();
    assert_clean_error(
        &small(&["--config", bad_yaml.to_str().unwrap(), "-o", o]),
        &["--config", "bad.yaml", "unknown field `learning-rate`"],
    );
    assert!(!out_model.exists(), "no partial output after an error");
    std::fs::write(&out_model, b"x").unwrap();
    assert_clean_error(
        &whittle(&["train", "--model", &lenet(), "--data", &data, "-o", o]),
        &["--force"],
    );
}

#[test]
fn non_finite_images_and_a_diverging_run_stop_with_the_last_finite_checkpoint_kept() {
    let dir = scratch("nan");
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    let mut pixels = vec![0.5f32; 8 * 4];
    pixels[3 * 4 + 2] = f32::NAN;
    let images = TensorData::from_slice(vec![8, 4], &pixels).unwrap();
    whittle_data::npy::write_npy(&x, &images).unwrap();
    let labels = TensorData::from_slice(vec![8], &[0i64, 1, 0, 1, 0, 1, 0, 1]).unwrap();
    whittle_data::npy::write_npy(&y, &labels).unwrap();
    let spec = format!("npy:{},{}", x.display(), y.display());
    let out = dir.join("out.onnx");
    let o = out.to_str().unwrap();
    assert_clean_error(
        &whittle(&[
            "train",
            "--model",
            "zoo:mlp:hidden=4,classes=2",
            "--data",
            &spec,
            "-o",
            o,
        ]),
        &[&format!("--data {spec}"), "NaN", "sample 3 (element 2)"],
    );

    let data = mnist_spec();
    let ck = dir.join("ck");
    let ck_arg = ck.to_str().unwrap();
    let base = [
        "train",
        "--data",
        &data,
        "--limit",
        "128",
        "--checkpoint-dir",
        ck_arg,
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        whittle(&args)
    };
    let first = run(&["--model", "zoo:mlp:hidden=16", "--epochs", "1", "-o", o]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let kept = std::fs::read(ck.join("epoch-1/model.onnx")).unwrap();
    let o2 = dir.join("diverged.onnx");
    let diverged = run(&[
        "--resume",
        ck_arg,
        "--epochs",
        "2",
        "--lr",
        "1e30",
        "-o",
        o2.to_str().unwrap(),
        "--json",
    ]);
    assert_clean_error(
        &diverged,
        &[
            "training diverged in epoch 2",
            "lower --lr (now 1e30)",
            &format!("the checkpoint in {ck_arg} keeps epoch 1"),
        ],
    );
    assert!(!o2.exists(), "no model of NaN weights is written");
    assert_eq!(std::fs::read(ck.join("epoch-1/model.onnx")).unwrap(), kept);
    assert!(!ck.join("epoch-2").exists());
    let model = whittle_ir::Model::load(ck.join("epoch-1/model.onnx")).unwrap();
    for t in &model.graph().initializer {
        let v = TensorData::from_proto(t, None)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{} holds non-finite values",
            t.name
        );
    }
}

#[test]
fn checkpoints_never_overwrite_the_input_model_or_an_earlier_checkpoint_without_force() {
    let dir = scratch("ckpt-dir");
    let p = dir.join("p");
    std::fs::create_dir(&p).unwrap();
    let input = p.join("model.onnx");
    std::fs::copy(lenet(), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let data = mnist_spec();
    let (i, p_arg) = (input.to_str().unwrap(), p.to_str().unwrap());
    let train = |model: &str, out: &str, extra: &[&str]| {
        let o = dir.join(out);
        let mut args = vec![
            "train",
            "--model",
            model,
            "--data",
            &data,
            "--limit",
            "64",
            "--checkpoint-dir",
            p_arg,
            "-o",
            o.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        whittle(&args)
    };
    let first = train(i, "a.onnx", &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "the input model is untouched"
    );
    assert!(p.join("state.json").is_file() && p.join("epoch-1/model.onnx").is_file());
    assert_clean_error(
        &train(i, "b.onnx", &[]),
        &["already holds a checkpoint", "--force", "--resume"],
    );
    let inside = p.join("epoch-1/model.onnx");
    assert_clean_error(
        &train(inside.to_str().unwrap(), "c.onnx", &["--force"]),
        &["would overwrite or remove the input model"],
    );
    let again = train(i, "d.onnx", &["--force"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&input).unwrap(), original);
}

#[test]
fn a_run_killed_mid_checkpoint_resumes_and_a_changed_run_is_refused() {
    let dir = scratch("kill");
    let ck = dir.join("ck");
    let data = mnist_spec();
    let ck_arg = ck.to_str().unwrap();
    // A wide MLP on one batch per epoch: most of each epoch is writing its checkpoint.
    let model = "zoo:mlp:hidden=2048";
    let common = [
        "--data",
        &data,
        "--limit",
        "64",
        "--batch-size",
        "64",
        "--checkpoint-dir",
        ck_arg,
    ];
    // Epochs committed in ck (0 before the first checkpoint).
    let epoch = || -> u64 {
        let read = std::fs::read(ck.join("state.json")).ok();
        read.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|s| s["epoch"].as_u64())
            .unwrap_or(0)
    };
    let mut caught_mid_write = 0;
    for (round, delay_ms) in [0u64, 1, 3].into_iter().enumerate() {
        let mut args = vec!["train", "--model", model, "--epochs", "500", "-o"];
        let o = dir.join(format!("never-{round}.onnx"));
        args.push(o.to_str().unwrap());
        args.extend_from_slice(&common);
        if round > 0 {
            args.extend_from_slice(&["--resume", ck_arg]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_whittle"))
            .args(&args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        // Wait for a new commit, then for the next epoch's folder: its files are being
        // written, and the kill lands in that write.
        let before = epoch();
        let waited = || {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no checkpoint written"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        while epoch() <= before {
            waited();
        }
        let next = ck.join(format!("epoch-{}", epoch() + 1));
        while !next.exists() {
            waited();
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: no handler runs.
        child.wait().unwrap();
        let done = epoch();
        caught_mid_write += usize::from(ck.join(format!("epoch-{}", done + 1)).exists());
        let model = whittle_ir::Model::load(ck.join(format!("epoch-{done}/model.onnx")));
        assert!(
            model.is_ok(),
            "round {round}: the committed checkpoint loads"
        );
    }
    assert!(
        caught_mid_write > 0,
        "no kill landed inside a checkpoint write"
    );
    let done = epoch();
    let out = dir.join("resumed.onnx");
    let epochs = (done + 1).to_string();
    let mut args = vec![
        "train",
        "--resume",
        ck_arg,
        "--epochs",
        &epochs,
        "-o",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(&common);
    let json = whittle_json(&args);
    assert_eq!(json["epochs"].as_array().unwrap().len() as u64, done + 1);
    let mut left: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["epoch-".to_string() + &epochs, "state.json".into()]);
    let folder: Vec<_> = std::fs::read_dir(ck.join(format!("epoch-{epochs}")))
        .unwrap()
        .collect();
    assert_eq!(
        folder.len(),
        2,
        "model and optimizer state, no temporary file"
    );

    // Resuming with another model, optimizer or data is refused, naming the option.
    let o = dir.join("changed.onnx");
    let fashion = format!("fashion-mnist:{}", support::asset("fashion-mnist"));
    let refused = |data: &str, limit: &str, extra: &[&str], needle: &str| {
        let mut args = vec![
            "train",
            "--resume",
            ck_arg,
            "--epochs",
            "50",
            "--data",
            data,
            "--limit",
            limit,
            "--checkpoint-dir",
            ck_arg,
            "-o",
            o.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        assert_clean_error(
            &whittle(&args),
            &["the checkpoint in", needle, "start a new run"],
        );
    };
    refused(
        &data,
        "64",
        &["--model", "zoo:lenet"],
        "--model zoo:mlp:hidden=2048",
    );
    refused(&data, "64", &["--optimizer", "sgd"], "--optimizer adamw");
    refused(&data, "32", &[], "--limit 64");
    refused(&fashion, "64", &[], &format!("--data {data}"));
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
