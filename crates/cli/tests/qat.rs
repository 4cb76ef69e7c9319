//! `whittle qat` end to end on LeNet5 and MNIST: the QDQ output has the layout of
//! `whittle quantize --mode static`, passes onnx.checker, runs in ONNX Runtime like in
//! whittle, and keeps PTQ's accuracy; bad input fails cleanly. Uses tests/support.

mod support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use support::{
    assert_clean_error, asset, mnist_spec, python, scratch, whittle, whittle_json, whittle_text,
};
use whittle_data::Split;
use whittle_exec::{Executor, Value};
use whittle_ir::{DataType, ExternalData, Model, TensorData};

fn sorted_ops(path: &Path) -> Vec<String> {
    let m = Model::load(path).unwrap();
    let mut ops: Vec<String> = m.graph().node.iter().map(|n| n.op_type.clone()).collect();
    ops.sort();
    ops
}

/// `onnx.checker.check_model(full_check=True)`, then ONNX Runtime's logits on `images`.
fn checked_ort_logits(model: &Path, images: &TensorData, dir: &Path) -> Vec<f32> {
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    whittle_data::npy::write_npy(&x, images).unwrap();
    let code = "import sys, onnx, numpy as np, onnxruntime as ort\n\
                onnx.checker.check_model(sys.argv[1], full_check=True)\n\
                s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
                np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0])";
    let paths = [model, &x, &y].map(Path::as_os_str);
    python(
        dir,
        [OsStr::new("-c"), OsStr::new(code)]
            .into_iter()
            .chain(paths),
    );
    whittle_data::npy::read_npy(&y).unwrap().to_vec().unwrap()
}

fn whittle_logits(model: &Path, images: &TensorData) -> Vec<f32> {
    let exec = Executor::new(&Model::load(model).unwrap()).unwrap();
    let feed = HashMap::from([("input".to_string(), Value::try_from(images).unwrap())]);
    let out = exec.run(feed).unwrap();
    out.into_values()
        .next()
        .unwrap()
        .to_data()
        .unwrap()
        .to_vec()
        .unwrap()
}

fn argmax_rows(v: &[f32]) -> Vec<usize> {
    v.chunks(10)
        .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

#[test]
fn qat_lenet5_matches_the_static_layout_runs_in_ort_and_keeps_accuracy() {
    let dir = scratch("qat-lenet");
    let (out, ptq) = (dir.join("qat.onnx"), dir.join("ptq.onnx"));
    let lenet = asset("models/mnist_lenet5.onnx");
    let mnist = mnist_spec();
    let (o, p) = (out.display().to_string(), ptq.display().to_string());
    let common = [
        "--data",
        &mnist,
        "--epochs",
        "1",
        "--lr",
        "0.001",
        "--test-samples",
        "1000",
    ];
    let mut args = vec![
        "qat",
        &lenet,
        "-o",
        &o,
        "--limit",
        "2000",
        "--calib-samples",
        "256",
        "--json",
    ];
    args.extend(common);
    let json = whittle_json(&args);
    let acc = |k: &str| json[k].as_f64().unwrap();
    assert!(acc("accuracy_fp32") > 0.97, "{json}");
    assert!(acc("accuracy_qat") >= acc("accuracy_ptq") - 0.01, "{json}");
    assert!(json["size_qat"].as_u64().unwrap() * 3 < json["size_fp32"].as_u64().unwrap());
    assert_eq!(json["epochs"].as_array().unwrap().len(), 1);
    let q = [
        "quantize",
        &lenet,
        "-o",
        &p,
        "--calib-data",
        &mnist,
        "--calib-samples",
        "256",
        "--json",
    ];
    whittle_json(&q);
    assert_eq!(sorted_ops(&out), sorted_ops(&ptq));

    let spec = whittle_data::spec::load(&mnist, Split::Test, Some(200)).unwrap();
    let ort = checked_ort_logits(&out, &spec.images, &dir);
    let ours = whittle_logits(&out, &spec.images);
    let (a, b) = (argmax_rows(&ort), argmax_rows(&ours));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(agree >= 198, "whittle and ORT agree on {agree}/200");

    // Starting from the PTQ model keeps the layout; --reduce-range gives 7-bit weights.
    let again = dir.join("again.onnx").display().to_string();
    let mut args = vec![
        "qat",
        &p,
        "-o",
        &again,
        "--limit",
        "300",
        "--lsq",
        "--reduce-range",
    ];
    args.extend(common);
    args.push("--json");
    let json = whittle_json(&args);
    assert!(json["accuracy_qat"].as_f64().unwrap() > 0.95, "{json}");
    assert_eq!(sorted_ops(Path::new(&again)), sorted_ops(&ptq));
    let largest = |path: &str| {
        let model = Model::load(path).unwrap();
        let g = model.graph();
        (g.initializer.iter())
            .filter(|t| t.data_type == DataType::Int8 as i32 && t.dims.len() > 1)
            .flat_map(|t| {
                TensorData::from_proto(t, None)
                    .unwrap()
                    .to_vec::<i8>()
                    .unwrap()
            })
            .map(|v| i32::from(v).abs())
            .max()
            .unwrap()
    };
    assert_eq!(largest(&p), 127, "full-range PTQ weights");
    let reduced = largest(&again);
    assert!(
        (60..=64).contains(&reduced),
        "7-bit weights reach {reduced}"
    );
}

#[test]
fn qat_refuses_bad_input() {
    let dir = scratch("qat-bad");
    let lenet = asset("models/mnist_lenet5.onnx");
    let mnist = mnist_spec();
    let o = dir.join("o.onnx").display().to_string();
    let out = whittle(&[
        "qat",
        &lenet,
        "-o",
        &o,
        "--data",
        &mnist,
        "--epochs",
        "2",
        "--start-epoch",
        "2",
    ]);
    assert_clean_error(&out, &["--start-epoch 2", "--epochs 2"]);
    let out = whittle(&["qat", &lenet, "-o", &o, "--epochs", "1"]);
    assert_clean_error(&out, &["--data"]);
    // A model without Conv, Gemm or MatMul.
    let relu = dir.join("relu.onnx");
    let mut m = Model::load(&lenet).unwrap();
    let g = m.graph_mut();
    g.node.retain(|n| n.op_type == "Relu");
    g.node.truncate(1);
    g.node[0].input[0] = "input".into();
    g.output[0].name = g.node[0].output[0].clone();
    g.output[0].r#type = g.input[0].r#type.clone();
    g.initializer.clear();
    m.save(&relu, &ExternalData::Never).unwrap();
    let out = whittle(&[
        "qat",
        &relu.display().to_string(),
        "-o",
        &o,
        "--data",
        &mnist,
    ]);
    assert_clean_error(&out, &["nothing to quantize"]);
    for (flag, value) in [("--test-samples", "0"), ("--calib-samples", "0")] {
        let out = whittle(&["qat", &lenet, "-o", &o, "--data", &mnist, flag, value]);
        assert_clean_error(&out, &[&format!("{flag} must be at least 1")]);
    }
    // Every weight and bias trains (not only what Conv and Gemm read directly), and the
    // log counts them: LeNet5 has 648,226.
    let (code, _, err) = whittle_text(&[
        "qat",
        &lenet,
        "-o",
        &o,
        "--data",
        &mnist,
        "--limit",
        "64",
        "--calib-samples",
        "32",
        "--test-samples",
        "20",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("(648226 parameters, 2.5 MiB;"),
        "memory line: {err}"
    );
    std::fs::remove_file(&o).unwrap();
    assert!(!Path::new(&o).exists());
}
