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
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
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
    let err = failure(&["profile", &lenet, "--json"], 1);
    assert!(
        err.contains("'N'") && err.contains("--batch B or --shape input="),
        "{err}"
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
