//! `whittle quantize` end to end: outputs pass onnx.checker and run in ONNX Runtime with
//! the stated accuracy, and bad input fails cleanly.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{assets, python, scratch, whittle_text as whittle};

fn lenet() -> PathBuf {
    assets().join("models/mnist_lenet5.onnx")
}

fn mnist() -> String {
    format!("mnist:{}", assets().join("mnist").display())
}

/// Quantizes LeNet5 with `extra` flags into `dir/q.onnx`; returns the JSON report.
fn quantize_lenet(dir: &Path, extra: &[&str]) -> Value {
    let (out, model) = (dir.join("q.onnx"), lenet());
    let mut args = vec![
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let data = mnist();
    args.extend_from_slice(&["--calib-data", &data, "--json"]);
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = whittle(&args);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// scripts/ort_quant_check.py: onnx.checker full check + ONNX Runtime figures.
fn ort_check(quant: &Path, float: &Path, extra: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_quant_check.py");
    let mut args = vec![script.as_os_str(), quant.as_os_str(), float.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    serde_json::from_str(&python(Path::new("."), args)).unwrap()
}

fn mnist_dir() -> String {
    assets().join("mnist").display().to_string()
}

#[test]
fn static_per_channel_qdq_keeps_lenet_accuracy_in_onnx_runtime() {
    let dir = scratch("qdq");
    let report = quantize_lenet(
        &dir,
        &[
            "--per-channel",
            "--report",
            dir.join("r.html").to_str().unwrap(),
        ],
    );
    for field in [
        "mode",
        "format",
        "input_bytes",
        "output_bytes",
        "size_ratio",
        "quantized_nodes",
        "float_nodes",
        "calibration",
        "seconds",
    ] {
        assert!(report.get(field).is_some(), "JSON lacks {field}");
    }
    assert_eq!(report["mode"], "static");
    assert_eq!(report["format"], "qdq");
    assert_eq!(report["calibration"]["samples"], 512);
    let ratio = report["size_ratio"].as_f64().unwrap();
    assert!(ratio <= 0.28, "size ratio {ratio}");
    assert!(report["verification"]["passed"].as_bool().unwrap());
    assert!(std::fs::read_to_string(dir.join("r.html"))
        .unwrap()
        .contains("Per-tensor error"));
    let ort = ort_check(&dir.join("q.onnx"), &lenet(), &["--mnist", &mnist_dir()]);
    let (acc, float) = (
        ort["accuracy"].as_f64().unwrap(),
        ort["float_accuracy"].as_f64().unwrap(),
    );
    assert!((float - 0.9889).abs() < 1e-9, "float accuracy {float}");
    assert!(acc >= float - 0.003, "INT8 accuracy {acc} vs float {float}");
    assert!(ort["ops"]["QuantizeLinear"].as_u64().unwrap() >= 4);
}

#[test]
fn every_calibration_method_gives_a_valid_runnable_model() {
    for method in ["entropy", "percentile", "mse"] {
        let dir = scratch(method);
        let report = quantize_lenet(&dir, &["--calibration", method, "--calib-samples", "128"]);
        assert_eq!(report["calibration"]["method"]["method"], method);
        let ort = ort_check(
            &dir.join("q.onnx"),
            &lenet(),
            &["--mnist", &mnist_dir(), "--limit", "2000"],
        );
        let acc = ort["accuracy"].as_f64().unwrap();
        assert!(acc >= 0.97, "{method}: accuracy {acc}");
    }
}

#[test]
fn qoperator_format_runs_in_onnx_runtime() {
    let dir = scratch("qop");
    let report = quantize_lenet(&dir, &["--format", "qoperator", "--per-channel"]);
    assert_eq!(report["format"], "qoperator");
    let ort = ort_check(
        &dir.join("q.onnx"),
        &lenet(),
        &["--mnist", &mnist_dir(), "--limit", "2000"],
    );
    assert_eq!(ort["ops"]["QLinearConv"], 2);
    assert!(ort["accuracy"].as_f64().unwrap() >= 0.98, "{ort}");
}

#[test]
fn dynamic_minilm_stays_close_to_float_in_onnx_runtime() {
    let dir = scratch("dyn");
    let model = assets().join("models/paraphrase-MiniLM-L3-v2.onnx");
    let out = dir.join("q.onnx");
    let (code, stdout, stderr) = whittle(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mode",
        "dynamic",
        "--per-channel",
        // u8 x s8 products saturate in ONNX Runtime's kernels on CPUs without VNNI;
        // 7-bit weights avoid it (ORT's own quantize_dynamic gives cosine 0.96 without).
        "--reduce-range",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let ops: Vec<&str> = (report["quantized_nodes"].as_array().unwrap().iter())
        .map(|n| n["op_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "MatMul").count(),
        18,
        "{ops:?}"
    );
    assert_eq!(ops.iter().filter(|o| **o == "Gather").count(), 2, "{ops:?}");
    // The 18 weight matrices (5.3M parameters, 21 MB) and the word and position embedding
    // tables (47 MB) shrink 4x: 69.1 MB -> 17.5 MB.
    let ratio = report["size_ratio"].as_f64().unwrap();
    assert!(ratio < 0.27, "size ratio {ratio}");
    let ort = ort_check(&out, &model, &["--tokens"]);
    let cos = ort["min_cosine"].as_f64().unwrap();
    assert!(cos >= 0.99, "cosine {cos}");
}

#[test]
fn accuracy_budget_keeps_the_most_sensitive_layers_float() {
    let dir = scratch("budget");
    let data = mnist();
    // A 70th-percentile range clips most activations: fully quantized, LeNet5 collapses.
    let report = quantize_lenet(
        &dir,
        &[
            "--calib-samples",
            "64",
            "--calibration",
            "percentile",
            "--percentile",
            "70",
            "--accuracy-budget",
            "1",
            "--eval-data",
            &data,
            "--eval-samples",
            "1000",
        ],
    );
    let acc = &report["accuracy"];
    assert_eq!(acc["samples"], 1000);
    assert_eq!(acc["budget"].as_f64().unwrap(), 0.01);
    assert!(acc["accuracy_drop"].as_f64().unwrap() <= 0.01, "{acc}");
    let kept: Vec<&Value> = report["float_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["reason"].as_str().unwrap().contains("accuracy budget"))
        .collect();
    assert!(!kept.is_empty(), "no layer was kept float");
    let quantized = report["quantized_nodes"].as_array().unwrap().len();
    assert_eq!(quantized + kept.len(), 4);
    // Sensitivities are sorted, most sensitive first, and the first one was kept float.
    let sens = report["sensitivity"].as_array().unwrap();
    assert_eq!(sens.len(), 4);
    assert_eq!(sens[0]["name"], kept[0]["name"]);
    assert!(sens[0]["value"].as_f64() >= sens[3]["value"].as_f64());
}

#[test]
fn bad_input_fails_cleanly_and_leaves_no_file() {
    let dir = scratch("bad");
    let out = dir.join("q.onnx");
    let (l, o) = (lenet(), out.to_str().unwrap().to_string());
    let l = l.to_str().unwrap();
    let data = mnist();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["quantize", l, "-o", &o], "needs --calib-data"),
        (
            vec!["quantize", l, "-o", l, "--mode", "dynamic"],
            "is the input model",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--mode",
                "int4",
                "--block-size",
                "24",
            ],
            "block size 24 must be a power of two",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--calib-data",
                &data,
                "--exclude",
                "nope",
            ],
            "'nope'",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--calib-data",
                &data,
                "--op-types",
                "Concat",
            ],
            "nothing to quantize",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--calib-data",
                &data,
                "--op-types",
                "Conv,Foo",
            ],
            "--op-types: 'Foo' is not an operator type the qdq format quantizes",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--mode",
                "int4",
                "--exclude",
                "nope",
            ],
            "--exclude names node 'nope', which is not in the model",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--mode",
                "fp16",
                "--exclude",
                "nope",
            ],
            "--exclude names node 'nope', which is not in the model",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--mode",
                "dynamic",
                "--calibration",
                "entropy",
                "--block-size",
                "64",
            ],
            "--mode dynamic does not use --calibration (for static), --block-size (for int4)",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--mode",
                "dynamic",
                "--no-latency",
                "--threads",
                "2",
            ],
            "--no-latency skips it",
        ),
        (
            vec!["quantize", l, "-o", &o, "--mode", "fp16", "--per-channel"],
            "--mode fp16 does not use --per-channel (for static, dynamic)",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--calib-data",
                &data,
                "--percentile",
                "99",
            ],
            "--percentile applies to --calibration percentile only",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--calib-data",
                &data,
                "--eval-data",
                &data,
                "--accuracy-budget",
                "NaN",
            ],
            "--accuracy-budget must be a percentage between 0 and 100, got NaN",
        ),
        (
            vec![
                "quantize",
                l,
                "-o",
                &o,
                "--calib-data",
                &data,
                "--eval-data",
                &data,
                "--accuracy-budget=-5",
            ],
            "--accuracy-budget must be a percentage between 0 and 100, got -5",
        ),
    ];
    for (args, want) in cases {
        let (code, _, stderr) = whittle(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            stderr.starts_with("error:") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    // Calibration data of the wrong shape.
    let x = dir.join("x.npy");
    let y = dir.join("y.npy");
    let py = format!(
        "import numpy as np; np.save('{}', np.zeros((4, 3, 28, 28), np.float32)); np.save('{}', np.zeros(4, np.int64))",
        x.display(),
        y.display()
    );
    python(&dir, ["-c", &py]);
    let spec = format!("npy:{},{}", x.display(), y.display());
    let (code, _, stderr) = whittle(&["quantize", l, "-o", &o, "--calib-data", &spec]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--calib-data does not fit the model"),
        "{stderr}"
    );
    assert!(!out.exists());
    // An existing output needs --force.
    std::fs::write(&out, b"keep").unwrap();
    let (code, _, stderr) = whittle(&["quantize", l, "-o", &o, "--mode", "dynamic"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    // Re-quantizing a quantized model says so.
    let q = dir.join("q2.onnx");
    whittle(&[
        "quantize",
        l,
        "-o",
        q.to_str().unwrap(),
        "--mode",
        "dynamic",
    ]);
    let again = dir.join("q3.onnx");
    let (code, _, stderr) = whittle(&[
        "quantize",
        q.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
        "--mode",
        "dynamic",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already quantized"), "{stderr}");
    assert!(!again.exists());
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}

/// FP16 and INT4 go through `whittle quantize` with the same report as INT8: FP16 halves
/// LeNet5 and keeps its MNIST accuracy (checked by whittle's own evaluation).
#[test]
fn fp16_and_int4_modes_shrink_lenet5_and_keep_accuracy() {
    let dir = scratch("lowbit");
    let l = lenet().display().to_string();
    let data = mnist();
    for (mode, max_ratio) in [("fp16", 0.52), ("int4", 0.30)] {
        let o = dir.join(format!("{mode}.onnx")).display().to_string();
        let args = [
            "quantize",
            &l,
            "-o",
            &o,
            "--mode",
            mode,
            "--eval-data",
            &data,
            "--json",
        ];
        let (code, stdout, stderr) = whittle(&args);
        assert_eq!(code, 0, "{mode}: {stderr}");
        let json: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["mode"], mode);
        let ratio = json["size_ratio"].as_f64().unwrap();
        assert!(ratio <= max_ratio, "{mode}: size ratio {ratio}");
        assert!(!json["quantized_nodes"].as_array().unwrap().is_empty());
        let acc = &json["accuracy"];
        assert_eq!(acc["samples"], 10000);
        let drop = acc["accuracy_drop"].as_f64().unwrap();
        assert!(drop <= 0.003, "{mode}: accuracy drop {drop} ({acc})");
    }
}

#[test]
fn full_range_int8_weights_get_a_note_on_cpus_without_vnni() {
    let dir = scratch("quant-vnni");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let vnni = cpuinfo.contains("avx512_vnni") || cpuinfo.contains("avx_vnni");
    let has_note = |report: &Value| {
        (report["notes"].as_array().unwrap().iter())
            .any(|n| n.as_str().unwrap().contains("--reduce-range"))
    };
    let full = quantize_lenet(&dir, &["--calib-samples", "64", "--force"]);
    assert_eq!(
        has_note(&full),
        !vnni && cfg!(target_arch = "x86_64"),
        "{full}"
    );
    let reduced = quantize_lenet(
        &dir,
        &["--calib-samples", "64", "--force", "--reduce-range"],
    );
    assert!(!has_note(&reduced), "{reduced}");
}

#[test]
fn non_finite_calibration_data_is_refused_naming_the_tensor_and_sample() {
    let dir = scratch("nan-calib");
    let out = dir.join("q.onnx");
    let l = lenet();
    // All-NaN images (a 45.7% model with scale 1.0 before), and finite images with one
    // infinite pixel in the fifth.
    let py = "import numpy as np\n\
              np.save('nan.npy', np.full((8, 1, 28, 28), np.nan, np.float32))\n\
              x = np.zeros((8, 1, 28, 28), np.float32); x[4, 0, 3, 3] = np.inf\n\
              np.save('inf.npy', x); np.save('y.npy', np.zeros(8, np.int64))";
    python(&dir, ["-c", py]);
    for (images, want) in [
        ("nan.npy", "tensor 'input' holds NaN in sample 1"),
        ("inf.npy", "tensor 'input' holds inf in sample 5"),
    ] {
        let spec = format!(
            "npy:{},{}",
            dir.join(images).display(),
            dir.join("y.npy").display()
        );
        let args = [
            "quantize",
            l.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--calib-data",
            &spec,
        ];
        let (code, _, stderr) = whittle(&args);
        assert_eq!(code, 1, "{images}: {stderr}");
        assert!(stderr.contains(want), "{images}: {stderr}");
        assert!(!out.exists(), "{images} left an output");
    }
}

#[test]
fn int4_keeps_excluded_layers_float() {
    let dir = scratch("int4-exclude");
    let out = dir.join("q.onnx");
    let l = lenet();
    let args = [
        "quantize",
        l.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mode",
        "int4",
        "--exclude",
        "Gemm#9",
        "--no-latency",
        "--json",
    ];
    let (code, stdout, stderr) = whittle(&args);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let quantized: Vec<&str> = (report["quantized_nodes"].as_array().unwrap().iter())
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(quantized, ["Gemm#7"]);
    let kept = (report["float_nodes"].as_array().unwrap().iter())
        .find(|n| n["name"] == "Gemm#9")
        .unwrap();
    assert!(
        kept["reason"].as_str().unwrap().contains("--exclude"),
        "{kept}"
    );
    let ops = python(
        &dir,
        [
            "-c",
            "import onnx, sys; print(sorted(n.op_type for n in onnx.load(sys.argv[1]).graph.node if n.op_type in ('Gemm', 'MatMulNBits')))",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(ops.trim(), "['Gemm', 'MatMulNBits']");
}

#[test]
fn force_onto_its_own_input_compares_sizes_with_the_input_as_it_was() {
    let dir = scratch("in-place");
    let model = dir.join("m.onnx");
    std::fs::copy(lenet(), &model).unwrap();
    let before = std::fs::metadata(&model).unwrap().len();
    let m = model.to_str().unwrap();
    let (code, stdout, stderr) = whittle(&[
        "quantize",
        m,
        "-o",
        m,
        "--force",
        "--mode",
        "dynamic",
        "--no-latency",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["input_bytes"].as_u64(), Some(before));
    let after = std::fs::metadata(&model).unwrap().len();
    assert_eq!(report["output_bytes"].as_u64(), Some(after));
    assert!(after < before / 2, "{after} of {before} bytes");
    assert!(
        !report["notes"].to_string().contains("not smaller"),
        "{report}"
    );
}

#[test]
fn dynamic_conv_model_latency_is_measured_in_onnx_runtime_and_a_slowdown_warned() {
    let dir = scratch("latency");
    let (out, l) = (dir.join("q.onnx"), lenet());
    let base = [
        "quantize",
        l.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mode",
        "dynamic",
        "--force",
        "--json",
    ];
    let (code, stdout, stderr) = whittle(&base);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let latency = &report["latency_ms"];
    let (before, after) = (
        latency["before"].as_f64().unwrap(),
        latency["after"].as_f64().unwrap(),
    );
    assert!(before > 0.0 && after > 0.0, "{latency}");
    assert_eq!(latency["batch"], 1);
    assert_eq!(latency["threads"], 1);
    // ORT runs LeNet5's convolutions as ConvInteger, about 4x slower than float Conv
    // (0.11 ms -> 0.42 ms measured with ORT's own quantize_dynamic).
    let warnings = report["warnings"].to_string();
    if after > before * 1.05 {
        assert!(
            warnings.contains("ConvInteger x2") && warnings.contains("--mode static"),
            "{warnings}"
        );
        assert!(
            stderr.contains("warning: the dynamic model runs"),
            "{stderr}"
        );
    } else {
        assert_eq!(warnings, "[]");
    }
    let (code, stdout, stderr) = whittle(&[&base[..], &["--no-latency"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["latency_ms"].is_null(), "{report}");
    assert!(report["notes"].to_string().contains("--no-latency"));
}

#[test]
fn float_nodes_are_one_summary_line_unless_verbose() {
    let dir = scratch("quiet");
    let (out, l) = (dir.join("q.onnx"), lenet());
    let data = mnist();
    let args = [
        "quantize",
        l.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--calib-data",
        &data,
        "--calib-samples",
        "64",
        "--no-latency",
        "--force",
    ];
    let float_lines = |extra: &[&str]| -> Vec<String> {
        let (code, stdout, stderr) = whittle(&[&args[..], extra].concat());
        assert_eq!(code, 0, "{stderr}");
        (stdout.lines())
            .filter(|l| l.starts_with("float:"))
            .map(String::from)
            .collect()
    };
    // LeNet5 static QDQ: 3 Relu, 2 MaxPool and the Flatten stay float.
    let quiet = float_lines(&[]);
    assert_eq!(quiet.len(), 1, "{quiet:?}");
    assert!(
        quiet[0].starts_with("float: 6 nodes (Relu 3, MaxPool 2, Flatten 1)"),
        "{quiet:?}"
    );
    let verbose = float_lines(&["--verbose"]);
    assert_eq!(verbose.len(), 6, "{verbose:?}");
    assert!(
        verbose
            .iter()
            .any(|l| l.contains("Relu#1 (Relu): op type Relu is not selected")),
        "{verbose:?}"
    );
}
