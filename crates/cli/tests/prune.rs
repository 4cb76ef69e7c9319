//! `whittle prune` end to end on the pretrained MNIST LeNet5: JSON fields, exact sparsity,
//! schedules, masked fine-tuning with accuracy before/after, and every bad input.

mod support;

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;
use support::{assert_clean_error, asset, mnist_spec, python, scratch, whittle, whittle_json};
use whittle_ir::{Model, TensorData};

fn lenet() -> String {
    asset("models/mnist_lenet5.onnx")
}

/// `whittle prune LeNet5 -o DIR/NAME --json ARGS...`.
fn prune_json(dir: &Path, name: &str, args: &[&str]) -> Value {
    let (model, out) = (lenet(), dir.join(name).display().to_string());
    let mut all = vec!["prune", &model, "-o", &out, "--json"];
    all.extend_from_slice(args);
    let report = whittle_json(&all);
    assert!(dir.join(name).is_file());
    report
}

/// (name, params, zeros) of every layer of a report, after checking that they match
/// the weights of the model written to `path`.
fn layers(report: &Value, path: &Path) -> Vec<(String, u64, u64)> {
    let reported = reported_layers(report);
    let counted: Vec<(String, u64, u64)> = reported
        .iter()
        .map(|(name, _, _)| written_zeros(path, name))
        .collect();
    assert_eq!(
        reported,
        counted,
        "the report disagrees with {}",
        path.display()
    );
    counted
}

/// (weight, elements, exact zeros) of initializer `weight` in the model file at `path`.
fn written_zeros(path: &Path, weight: &str) -> (String, u64, u64) {
    let model = Model::load(path).unwrap();
    let init = (model.graph().initializer.iter())
        .find(|t| t.name == weight)
        .unwrap_or_else(|| panic!("{weight} not in {}", path.display()));
    let values = TensorData::from_proto(init, None)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let zeros = values.iter().filter(|&&v| v == 0.0).count() as u64;
    (weight.to_string(), values.len() as u64, zeros)
}

/// (name, params, zeros) of every layer as the report gives them.
fn reported_layers(report: &Value) -> Vec<(String, u64, u64)> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let n = l["name"].as_str().unwrap().to_string();
            (
                n,
                l["params"].as_u64().unwrap(),
                l["zeros"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn magnitude_reports_exact_sparsity_and_sizes() {
    let dir = scratch("prune-magnitude");
    let r = prune_json(
        &dir,
        "m.onnx",
        &["--method", "magnitude", "--sparsity", "0.5"],
    );
    assert_eq!(r["method"], "magnitude");
    assert_eq!(r["schedule"]["name"], "oneshot");
    assert_eq!(r["sparsity"], 0.5);
    let layers = layers(&r, &dir.join("m.onnx"));
    assert_eq!(layers.len(), 4);
    let mut zeros = 0;
    for (name, params, z) in &layers {
        assert_eq!(z * 2, *params, "{name}");
        zeros += z;
    }
    // Biases are dense: every other parameter stays non-zero.
    assert_eq!(
        r["nonzero_params"].as_u64().unwrap(),
        r["params"].as_u64().unwrap() - zeros
    );
    assert_eq!(
        r["size_bytes"].as_u64(),
        Some(std::fs::metadata(dir.join("m.onnx")).unwrap().len())
    );
    let (dense, sparse) = (
        r["input_gzip_bytes"].as_f64().unwrap(),
        r["gzip_bytes"].as_f64().unwrap(),
    );
    assert!(sparse < 0.8 * dense, "gzip {dense} -> {sparse}");
    assert_eq!(r["compression"], "gzip -6");
    assert!(r["accuracy_before"].is_null() && r["accuracy_after"].is_null());
}

#[test]
fn global_with_finetune_reports_accuracy_before_and_after() {
    let dir = scratch("prune-global");
    let data = mnist_spec();
    let r = prune_json(
        &dir,
        "g.onnx",
        &[
            "--method",
            "global",
            "--sparsity",
            "0.9",
            "--data",
            &data,
            "--finetune-epochs",
            "1",
            "--limit",
            "1000",
            "--eval-limit",
            "500",
            "--criterion",
            "magnitude",
        ],
    );
    let before = r["accuracy_before"].as_f64().unwrap();
    let after = r["accuracy_after"].as_f64().unwrap();
    assert!(before > 0.97, "{before}");
    assert!(after > 0.9, "{after}");
    assert_eq!(r["eval_samples"], 500);
    assert_eq!(r["finetune_epochs"], 1);
    assert!(
        (r["sparsity"].as_f64().unwrap() - 0.9).abs() < 1e-3,
        "{}",
        r["sparsity"]
    );
}

#[test]
fn two_of_four_leaves_the_single_channel_conv_dense_with_a_note() {
    let dir = scratch("prune-nm");
    let r = prune_json(&dir, "nm.onnx", &["--method", "nm", "--n", "2", "--m", "4"]);
    let notes = r["notes"].as_array().unwrap();
    assert!(
        notes.len() == 1
            && notes[0]
                .as_str()
                .unwrap()
                .contains("conv1.weight (1 elements)"),
        "{notes:?}"
    );
    for (name, params, zeros) in layers(&r, &dir.join("nm.onnx")) {
        let expected = if name == "conv1.weight" {
            0
        } else {
            params / 2
        };
        assert_eq!(zeros, expected, "{name}");
    }
}

#[test]
fn iterative_and_gradual_schedules_reach_the_target() {
    let dir = scratch("prune-schedules");
    let r = prune_json(
        &dir,
        "it.onnx",
        &[
            "--method",
            "random",
            "--seed",
            "5",
            "--schedule",
            "iterative",
            "--steps",
            "2",
            "--sparsity",
            "0.6",
        ],
    );
    assert_eq!(r["schedule"]["name"], "iterative");
    assert_eq!(r["schedule"]["curve"], "linear");
    assert_eq!(r["schedule"]["targets"], serde_json::json!([0.3, 0.6]));
    let data = mnist_spec();
    // 320 samples / 32 = 10 steps; masks at steps 2, 4, 6 (cubic to 60%).
    let g = prune_json(
        &dir,
        "gr.onnx",
        &[
            "--method",
            "magnitude",
            "--schedule",
            "gradual",
            "--sparsity",
            "0.6",
            "--data",
            &data,
            "--limit",
            "320",
            "--eval-limit",
            "100",
            "--end-step",
            "6",
            "--frequency",
            "2",
        ],
    );
    assert_eq!(g["schedule"]["name"], "gradual");
    assert_eq!(g["schedule"]["curve"], "cubic");
    assert_eq!(g["schedule"]["end"], 6);
    for (report, file) in [(&r, "it.onnx"), (&g, "gr.onnx")] {
        for (name, params, zeros) in layers(report, &dir.join(file)) {
            assert_eq!(zeros, (0.6 * params as f64).round() as u64, "{name}");
        }
    }
}

#[test]
fn bad_input_fails_cleanly_without_output() {
    let dir = scratch("prune-bad");
    let out = dir.join("out.onnx");
    let o = out.to_str().unwrap();
    let data = mnist_spec();
    let m = lenet();
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["--method", "magnitude", "--sparsity", "1"],
            &["--sparsity 1", "[0, 1)"],
        ),
        (vec!["--method", "global", "--sparsity=-0.2"], &["[0, 1)"]),
        (
            vec!["--method", "nm", "--n", "4", "--m", "4"],
            &["N=4, M=4"],
        ),
        (vec!["--method", "nm", "--n", "0"], &["1 <= N < M"]),
        (
            vec!["--method", "magnitude", "--finetune-epochs", "1"],
            &["--finetune-epochs", "--data"],
        ),
        (
            vec!["--method", "magnitude", "--schedule", "gradual"],
            &["gradual", "--data"],
        ),
        (
            vec!["--method", "magnitude", "--criterion", "taylor"],
            &["--criterion taylor", "magnitude"],
        ),
        (
            vec!["--method", "magnitude", "--exclude", "nope"],
            &["--exclude nope", "conv1.weight"],
        ),
        (vec!["--method", "nm", "--sparsity", "0.5"], &["--sparsity"]),
        // Options the method or schedule would ignore.
        (
            vec!["--method", "magnitude", "--round-to", "4"],
            &["--round-to", "--method channel"],
        ),
        (
            vec!["--method", "global", "--latency-runs", "5"],
            &["--latency-runs", "--method channel"],
        ),
        (
            vec!["--method", "magnitude", "--steps", "3"],
            &["--steps", "--schedule iterative or gradual"],
        ),
        (
            vec!["--method", "magnitude", "--curve", "cubic"],
            &["--curve", "--schedule iterative or gradual"],
        ),
        (
            vec!["--method", "random", "--temperature", "2"],
            &["--temperature", "--distill"],
        ),
        (
            vec!["--method", "random", "--alpha", "0.5"],
            &["--alpha", "--distill"],
        ),
        (
            vec!["--method", "magnitude", "--lr", "0.1"],
            &["--lr", "--finetune-epochs"],
        ),
        (
            vec![
                "--method",
                "magnitude",
                "--schedule",
                "iterative",
                "--end-step",
                "9",
            ],
            &["--end-step", "--schedule gradual"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = vec!["prune", &m, "-o", o, "--data", &data, "--eval-limit", "10"];
        if args.contains(&"--finetune-epochs") || args.contains(&"gradual") {
            all.truncate(4);
        }
        all.extend(args);
        assert_clean_error(&whittle(&all), needles);
        assert!(!out.exists(), "{all:?} left {o}");
    }
    // The input as output, without --force.
    let copy = dir.join("copy.onnx");
    std::fs::copy(&m, &copy).unwrap();
    let c = copy.to_str().unwrap();
    let same = whittle(&["prune", c, "-o", c, "--method", "magnitude"]);
    assert_clean_error(&same, &["is the input model", "--force"]);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&m).unwrap());
}

#[test]
fn a_model_without_prunable_layers_is_refused() {
    let dir = scratch("prune-none");
    let relu = dir.join("relu.onnx");
    let code = "import onnx, sys; from onnx import helper as h, TensorProto as T; \
        g = h.make_graph([h.make_node('Relu', ['x'], ['y'])], 'g', \
        [h.make_tensor_value_info('x', T.FLOAT, [1, 4])], [h.make_tensor_value_info('y', T.FLOAT, [1, 4])]); \
        onnx.save(h.make_model(g, opset_imports=[h.make_opsetid('', 17)]), sys.argv[1])";
    python(&dir, [OsStr::new("-c"), OsStr::new(code), relu.as_os_str()]);
    let out = dir.join("out.onnx");
    let r = whittle(&[
        "prune",
        relu.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--method",
        "global",
    ]);
    assert_clean_error(&r, &["no prunable layer"]);
    assert!(!out.exists());
}

#[test]
fn channel_pruning_removes_parameters_and_macs_and_measures_latency() {
    let dir = scratch("prune-channel");
    let r = prune_json(
        &dir,
        "c.onnx",
        &[
            "--method",
            "channel",
            "--sparsity",
            "0.5",
            "--round-to",
            "1",
            "--latency-runs",
            "3",
            "--data",
            &mnist_spec(),
            "--eval-limit",
            "500",
            "--finetune-epochs",
            "1",
            "--limit",
            "300",
            "--distill",
        ],
    );
    assert_eq!(r["finetune_epochs"], 1);
    let c = &r["channels"];
    let (before, after) = (
        c["params_before"].as_u64().unwrap(),
        c["params_after"].as_u64().unwrap(),
    );
    assert!(after < before * 3 / 4, "{c}");
    assert!(c["macs_after"].as_u64().unwrap() < c["macs_before"].as_u64().unwrap());
    let removed = 1.0 - after as f64 / before as f64;
    assert!((r["sparsity"].as_f64().unwrap() - removed).abs() < 1e-12);
    assert!(
        !c["skipped"].as_array().unwrap().is_empty(),
        "stem and classifier are protected"
    );
    let l = &r["latency"];
    assert!(l["whittle_ms_before"].as_f64().unwrap() > 0.0, "{l}");
    assert!(l["ort_ms_after"].as_f64().unwrap() > 0.0, "{l}");
    assert!(r["accuracy_after"].as_f64().unwrap() > 0.5, "{r}");
    // Two iterative steps to 50% reach the one-shot size (targets are of the original).
    let it = prune_json(
        &dir,
        "it.onnx",
        &[
            "--method",
            "channel",
            "--sparsity",
            "0.5",
            "--round-to",
            "1",
            "--schedule",
            "iterative",
            "--steps",
            "2",
            "--latency-runs",
            "0",
        ],
    );
    let it_after = it["channels"]["params_after"].as_u64().unwrap() as f64;
    assert!(
        (it_after / after as f64 - 1.0).abs() < 0.05,
        "{it_after} vs {after}"
    );
    assert_eq!(it["channels"]["params_before"].as_u64(), Some(before));
}

#[test]
fn channel_pruning_refuses_what_it_cannot_do() {
    let dir = scratch("prune-channel-bad");
    let out = dir.join("x.onnx");
    let o = out.to_str().unwrap();
    let (model, data) = (lenet(), mnist_spec());
    let cases: [(&[&str], &str); 5] = [
        (&["--distill"], "--finetune-epochs"),
        (
            &["--schedule", "gradual", "--data", &data],
            "oneshot or iterative",
        ),
        (&["--criterion", "taylor"], "give --data"),
        (
            &["--criterion", "magnitude"],
            "l1, l2, bn, taylor or random",
        ),
        (&["--round-to", "0"], "--round-to"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["prune", &model, "-o", o, "--method", "channel"];
        args.extend_from_slice(extra);
        assert_clean_error(&whittle(&args), &[needle]);
        assert!(!out.exists());
    }
    let global = whittle(&[
        "prune",
        &model,
        "-o",
        o,
        "--method",
        "magnitude",
        "--global",
    ]);
    assert_clean_error(&global, &["--method channel"]);
}
