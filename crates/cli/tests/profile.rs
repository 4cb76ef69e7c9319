//! `whittle profile` and `whittle bench` end to end on LeNet5: JSON contracts, rendered
//! formats, child-process batches, and bad input. (Local helpers, not shared with cli.rs.)

use std::process::{Command, Output};

fn model(name: &str) -> String {
    let path = whittle_data::assets_dir().join("models").join(name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/fetch-assets.sh",
        path.display()
    );
    path.display().to_string()
}

fn lenet() -> String {
    model("mnist_lenet5.onnx")
}

fn whittle(args: &[&str]) -> Output {
    whittle_env(args, &[])
}

/// Runs whittle with `env` set (`None`: removed).
fn whittle_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whittle"));
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(args).output().expect("run whittle")
}

/// A one-line error with exit code 1; returns it.
fn clean_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.trim().lines().count() == 1,
        "{err}"
    );
    err
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = whittle(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn failure(args: &[&str], code: i32) -> String {
    let out = whittle(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

#[test]
fn profile_json_is_consistent_with_inspect() {
    let lenet = lenet();
    let p = json(&[
        "profile", &lenet, "--batch", "1", "--runs", "2", "--warmup", "0", "--json",
    ]);
    let inspect = json(&["inspect", &lenet, "--shape", "input=1x1x28x28", "--json"]);
    assert_eq!(p["total_macs"], inspect["macs"]);
    assert_eq!(p["total_params"], inspect["parameters"]);
    let nodes = p["nodes"].as_array().unwrap();
    assert_eq!(nodes.len() as u64, inspect["nodes"].as_u64().unwrap());
    for field in [
        "name",
        "op_type",
        "macs",
        "params",
        "time_ms",
        "output_shape",
        "share",
        "activation_bytes",
    ] {
        assert!(nodes.iter().all(|n| !n[field].is_null()), "{field} missing");
    }
    let macs: u64 = nodes.iter().map(|n| n["macs"].as_u64().unwrap()).sum();
    assert_eq!(p["total_macs"].as_u64(), Some(macs));
    let counted: u64 = p["by_op_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize, nodes.len());
    assert!(p["bottlenecks"].is_array());
    assert!(p["peak_activation_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn profile_renders_markdown_and_html() {
    let lenet = lenet();
    let base = [
        "profile", &lenet, "--batch", "2", "--runs", "1", "--warmup", "0",
    ];
    let md = whittle(&[&base[..], &["--format", "md"]].concat());
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("| op type | nodes | time ms | share |"), "{md}");
    assert!(md.contains("| Conv | 2 |"), "{md}");
    let html = whittle(&[&base[..], &["--format", "html"]].concat());
    let html = String::from_utf8_lossy(&html.stdout);
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("class=\"bar\""));
}

#[test]
fn bench_runs_each_batch_in_both_engines() {
    let lenet = lenet();
    for engine in ["whittle", "ort"] {
        let b = json(&[
            "bench", &lenet, "--batch", "1,4", "--engine", engine, "--runs", "4", "--warmup", "1",
            "--json",
        ]);
        assert_eq!(b["engine"], engine);
        assert!(b["size_bytes"].as_u64().unwrap() > 0 && b["params"].as_u64().unwrap() > 0);
        let batches = b["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 2);
        for (r, batch) in batches.iter().zip([1.0, 4.0]) {
            let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing"));
            assert_eq!(f("batch"), batch);
            assert!(f("p99_ms") >= f("median_ms") && f("p90_ms") >= f("median_ms"));
            assert!((f("throughput") - batch * 1e3 / f("mean_ms")).abs() < 1e-6);
            assert!(f("std_ms") >= 0.0 && f("fps") > 0.0 && f("peak_rss_bytes") > 0.0);
        }
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let lenet = lenet();
    let err = failure(&["profile", &lenet, "--runs", "0"], 1);
    assert!(
        err.starts_with("error: ") && err.contains("--runs") && err.trim().lines().count() == 1
    );
    let minilm = model("paraphrase-MiniLM-L3-v2.onnx");
    let err = failure(&["profile", &minilm, "--batch", "1"], 1);
    assert!(err.contains("'sequence_length'"), "{err}");
    assert!(err.contains("--shape input_ids="), "{err}");
    let err = failure(&["bench", &lenet, "--shape", "input:1x1x28x28"], 1);
    assert!(err.contains("NAME=DIMS"), "{err}");
    let err = failure(&["bench", &lenet, "--shape", "input=1xax28"], 1);
    assert!(err.contains("numbers joined by 'x'"), "{err}");
    let err = failure(&["bench", &lenet, "--engine", "tvm"], 2);
    assert!(err.contains("expected whittle or ort"), "{err}");
    let err = failure(&["bench", &lenet, "--runs", "0"], 1);
    assert!(err.contains("--runs"), "{err}");
}

#[test]
fn a_dynamic_batch_is_taken_as_one_and_said_so() {
    // LeNet5's input is [N, 1, 28, 28].
    let lenet = lenet();
    let p = json(&["profile", &lenet, "--runs", "1", "--warmup", "0", "--json"]);
    assert_eq!(
        p["input_shapes"]["input"],
        serde_json::json!([1, 1, 28, 28])
    );
    let note = p["notes"][0].as_str().unwrap();
    assert!(
        note.contains("'input'") && note.contains("taken as 1"),
        "{note}"
    );
    let text = whittle(&["profile", &lenet, "--runs", "1", "--warmup", "0"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("note: the dynamic batch dimension"));
    let b = json(&["bench", &lenet, "--runs", "1", "--warmup", "0", "--json"]);
    assert_eq!(b["batches"][0]["batch"], 1);
    assert!(b["batches"][0]["notes"][0]
        .as_str()
        .unwrap()
        .contains("taken as 1"));
    // With --batch nothing is assumed.
    let b = json(&["bench", &lenet, "--batch", "2", "--runs", "1", "--json"]);
    assert!(b["batches"][0].get("notes").is_none(), "{b}");
}

#[test]
fn zero_and_oversized_batches_are_refused_before_running() {
    let lenet = lenet();
    for command in ["profile", "bench"] {
        let err = clean_error(&whittle(&[command, &lenet, "--batch", "0"]));
        assert!(err.contains("--batch 0"), "{err}");
        // 10^7 images are 31 GB of input; the memory limit makes the check deterministic.
        let out = whittle_env(
            &[command, &lenet, "--batch", "10000000", "--json"],
            &[("WHITTLE_MEMORY_LIMIT", Some("100000000"))],
        );
        let err = clean_error(&out);
        assert!(
            err.contains("[10000000, 1, 28, 28]")
                && err.contains("needs")
                && err.contains("--batch"),
            "{err}"
        );
    }
    // A batch that fits runs under the same limit.
    let out = whittle_env(
        &["profile", &lenet, "--batch", "8", "--runs", "1", "--json"],
        &[("WHITTLE_MEMORY_LIMIT", Some("100000000"))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn threads_beyond_the_cores_are_capped_with_a_warning() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let out = whittle(&[
        "bench",
        &lenet(),
        "--threads",
        "100000",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: --threads 100000 is more than the")
            && err.contains(&format!("using {cores}")),
        "{err}"
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["threads"].as_u64(), Some(cores as u64));
}

#[test]
fn a_missing_onnx_runtime_is_named_once_with_how_to_install_it() {
    let lenet = lenet();
    let args = ["bench", &lenet, "--engine", "ort", "--runs", "1"];
    let err = clean_error(&whittle_env(
        &args,
        &[("ORT_DYLIB_PATH", Some("/nonexistent/libort.so"))],
    ));
    assert!(
        err.contains("ORT_DYLIB_PATH=/nonexistent/libort.so is not a file"),
        "{err}"
    );
    assert_eq!(err.matches("ONNX Runtime").count(), 1, "{err}");
    // No python3 on the PATH: the Python package cannot be found either.
    let err = clean_error(&whittle_env(
        &args,
        &[("ORT_DYLIB_PATH", None), ("PATH", Some(""))],
    ));
    assert!(
        err.contains("library not found") && err.contains("python3 -m pip install onnxruntime"),
        "{err}"
    );
    assert_eq!(err.matches("ONNX Runtime").count(), 1, "{err}");
}
