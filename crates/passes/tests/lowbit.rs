//! FP16 and INT4 passes on the real models, checked with onnx.checker and ONNX Runtime
//! (the reference) and against whittle's own executor.

#[path = "../../exec/tests/common.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{model_path, ort_outputs, scratch};
use whittle_data::Split;
use whittle_exec::{Executor, Value};
use whittle_ir::{ExternalData, Model, TensorData};
use whittle_passes::{fp16, int4};

/// Runs `onnx.checker.check_model(path, full_check=True)`.
fn onnx_check(path: &Path) {
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let code = "import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True)";
    let out = std::process::Command::new(python)
        .args(["-c", code, &path.display().to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "onnx.checker rejects {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn save(model: &Model, dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    model.save(&path, &ExternalData::Never).unwrap();
    path
}

fn argmax_rows(scores: &TensorData) -> Vec<usize> {
    let c = scores.dims()[1];
    let v = scores.to_f64_vec().unwrap();
    v.chunks(c)
        .map(|r| (0..c).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Smallest per-row cosine of two [rows, d] tensors; NaN when any row's is (`f64::min`
/// would drop it and let a NaN output pass).
fn min_row_cosine(a: &TensorData, b: &TensorData) -> f64 {
    let d = *a.dims().last().unwrap();
    let (va, vb) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    va.chunks(d)
        .zip(vb.chunks(d))
        .map(|(x, y)| cosine(x, y))
        .fold(
            f64::INFINITY,
            |m, c| if c.is_nan() || c < m { c } else { m },
        )
}

/// MNIST test accuracy of a LeNet5 file in ONNX Runtime.
fn ort_mnist_accuracy(model: &Path, dir: &Path) -> f64 {
    let data = whittle_data::spec::load(
        &format!("mnist:{}", common::assets().join("mnist").display()),
        Split::Test,
        None,
    )
    .unwrap();
    let out = ort_outputs(model, &[("input".into(), data.images.clone())], dir);
    let pred = argmax_rows(&out[0]);
    let hits = pred
        .iter()
        .zip(&data.labels)
        .filter(|(p, &l)| **p as i64 == l)
        .count();
    hits as f64 / data.labels.len() as f64
}

/// Token ids and attention mask of `count` real sentences from Debian's documentation,
/// tokenised by bench/quantize_vs_ort.py's WordPiece tokenizer.
fn minilm_inputs(count: usize, dir: &Path) -> Vec<(String, TensorData)> {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let code = format!(
        "import sys, numpy as np; sys.path.insert(0, {bench:?}); from quantize_vs_ort import *\n\
         f = minilm_batch(sentences({count}), WordPiece(VOCAB))\n\
         [np.save(sys.argv[1] + '/' + k + '.npy', v) for k, v in f.items()]",
        bench = bench.display().to_string()
    );
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args(["-c", &code, &dir.display().to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ["input_ids", "attention_mask"]
        .iter()
        .map(|k| {
            let data = whittle_data::npy::read_npy(&dir.join(format!("{k}.npy"))).unwrap();
            (k.to_string(), data)
        })
        .collect()
}

/// Mean per-row cosine of two [rows, d] tensors.
fn mean_row_cosine(a: &TensorData, b: &TensorData) -> f64 {
    let d = *a.dims().last().unwrap();
    let (va, vb) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let rows: Vec<f64> = va
        .chunks(d)
        .zip(vb.chunks(d))
        .map(|(x, y)| cosine(x, y))
        .collect();
    rows.iter().sum::<f64>() / rows.len() as f64
}

/// Index of the mean-pooled sentence embedding among MiniLM's outputs.
const MINILM_EMBEDDING: usize = 3;

/// Runs `path` in whittle's executor on `inputs`; outputs in graph order.
fn whittle_outputs(path: &Path, inputs: &[(String, TensorData)]) -> Vec<TensorData> {
    let exec = Executor::new(&Model::load(path).unwrap()).unwrap();
    let feed: HashMap<String, Value> = inputs
        .iter()
        .map(|(n, d)| (n.clone(), Value::try_from(d).unwrap()))
        .collect();
    let out = exec.run(feed).unwrap();
    exec.output_names()
        .iter()
        .map(|n| out[n].to_data().unwrap())
        .collect()
}

#[test]
fn fp16_lenet5_keeps_accuracy_and_halves_size() {
    let dir = scratch("fp16-lenet5");
    let src = model_path("mnist_lenet5.onnx");
    let (half, report) =
        fp16::convert(&Model::load(&src).unwrap(), &fp16::Fp16Options::default()).unwrap();
    assert_eq!(report.clamped_values, 0);
    assert!(report.kept_fp32.is_empty(), "{:?}", report.kept_fp32);
    let path = save(&half, &dir, "lenet5_fp16.onnx");
    onnx_check(&path);
    let ratio = Model::disk_size(&path).unwrap() as f64 / Model::disk_size(&src).unwrap() as f64;
    assert!(ratio <= 0.52, "fp16 size ratio {ratio}");
    let (acc32, acc16) = (
        ort_mnist_accuracy(&src, &dir.join("a")),
        ort_mnist_accuracy(&path, &dir.join("b")),
    );
    assert!(acc32 > 0.98, "fp32 accuracy {acc32}");
    assert!(
        (acc32 - acc16).abs() <= 0.0005,
        "fp32 {acc32} vs fp16 {acc16}"
    );
}

#[test]
fn fp16_minilm_embeddings_match_in_ort_and_whittle() {
    let dir = scratch("fp16-minilm");
    let src = model_path("paraphrase-MiniLM-L3-v2.onnx");
    let (half, report) =
        fp16::convert(&Model::load(&src).unwrap(), &fp16::Fp16Options::default()).unwrap();
    assert!(report.nodes_converted > 100, "{report:?}");
    let path = save(&half, &dir, "minilm_fp16.onnx");
    onnx_check(&path);
    let inputs = minilm_inputs(16, &dir);
    let ref32 = ort_outputs(&src, &inputs, &dir.join("a"));
    let ort16 = ort_outputs(&path, &inputs, &dir.join("b"));
    let cos = min_row_cosine(&ref32[MINILM_EMBEDDING], &ort16[MINILM_EMBEDDING]);
    assert!(cos >= 0.999, "ORT fp16 embedding cosine {cos}");
    let ours = whittle_outputs(&path, &inputs);
    let agree = min_row_cosine(&ort16[MINILM_EMBEDDING], &ours[MINILM_EMBEDDING]);
    assert!(
        agree >= 0.999,
        "whittle vs ORT on the fp16 model: cosine {agree}"
    );
}

#[test]
fn int4_minilm_embeddings_match_in_ort_and_whittle() {
    let dir = scratch("int4-minilm");
    let src = model_path("paraphrase-MiniLM-L3-v2.onnx");
    let opts = int4::Int4Options {
        block_size: 32,
        ..Default::default()
    };
    let (q, report) = int4::quantize(&Model::load(&src).unwrap(), &opts).unwrap();
    let count = |op: &str| report.quantized.iter().filter(|l| l.op_type == op).count();
    assert_eq!(count("MatMulNBits"), 18, "{report:?}");
    // The word and position embedding tables (47 MB of the 69 MB) in 4-bit blocks too.
    assert_eq!(count("GatherBlockQuantized"), 2, "{report:?}");
    let path = save(&q, &dir, "minilm_int4.onnx");
    onnx_check(&path);
    let ratio = Model::disk_size(&path).unwrap() as f64 / Model::disk_size(&src).unwrap() as f64;
    assert!(ratio <= 0.2, "int4 size ratio {ratio}");
    let inputs = minilm_inputs(16, &dir);
    let ref32 = ort_outputs(&src, &inputs, &dir.join("a"));
    let ort4 = ort_outputs(&path, &inputs, &dir.join("b"));
    let cos = mean_row_cosine(&ref32[MINILM_EMBEDDING], &ort4[MINILM_EMBEDDING]);
    assert!(cos >= 0.98, "ORT int4 embedding cosine {cos}");
    let ours = whittle_outputs(&path, &inputs);
    let agree = min_row_cosine(&ort4[MINILM_EMBEDDING], &ours[MINILM_EMBEDDING]);
    assert!(
        agree >= 0.9999,
        "whittle vs ORT on the int4 model: cosine {agree}"
    );
}

#[test]
fn int4_lenet5_gemms_with_bias_keep_accuracy() {
    let dir = scratch("int4-lenet5");
    let src = model_path("mnist_lenet5.onnx");
    for symmetric in [false, true] {
        let opts = int4::Int4Options {
            block_size: 64,
            symmetric,
            ..Default::default()
        };
        let (q, report) = int4::quantize(&Model::load(&src).unwrap(), &opts).unwrap();
        assert_eq!(report.quantized.len(), 2, "{report:?}");
        let path = save(&q, &dir, &format!("lenet5_int4_{symmetric}.onnx"));
        onnx_check(&path);
        let acc = ort_mnist_accuracy(&path, &dir.join(format!("o{symmetric}")));
        assert!(acc > 0.985, "int4 (symmetric {symmetric}) accuracy {acc}");
    }
}

#[test]
fn dynamic_minilm_stores_embeddings_in_int8_and_keeps_its_embeddings() {
    let dir = scratch("dynamic-minilm");
    let src = model_path("paraphrase-MiniLM-L3-v2.onnx");
    let cfg = whittle_passes::quantize::QuantConfig {
        per_channel: true,
        reduce_range: true,
        ..Default::default()
    };
    let (q, report) =
        whittle_passes::quantize::dynamic_int8(&Model::load(&src).unwrap(), &cfg).unwrap();
    let gathers = report
        .quantized_nodes
        .iter()
        .filter(|n| n.op_type == "Gather")
        .count();
    assert_eq!(gathers, 2, "word and position tables: {:?}", report.notes);
    let path = save(&q, &dir, "minilm_dynamic.onnx");
    onnx_check(&path);
    let ratio = Model::disk_size(&path).unwrap() as f64 / Model::disk_size(&src).unwrap() as f64;
    assert!(ratio < 0.27, "dynamic size ratio {ratio}");
    let inputs = minilm_inputs(16, &dir);
    let ref32 = ort_outputs(&src, &inputs, &dir.join("a"));
    let ort8 = ort_outputs(&path, &inputs, &dir.join("b"));
    let cos = mean_row_cosine(&ref32[MINILM_EMBEDDING], &ort8[MINILM_EMBEDDING]);
    assert!(cos >= 0.99, "ORT dynamic int8 embedding cosine {cos}");
    let ours = whittle_outputs(&path, &inputs);
    let agree = min_row_cosine(&ort8[MINILM_EMBEDDING], &ours[MINILM_EMBEDDING]);
    assert!(
        agree >= 0.999,
        "whittle vs ORT on the int8 model: cosine {agree}"
    );
}
