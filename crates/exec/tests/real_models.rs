//! whittle's executor against ONNX Runtime on the real models: outputs agree, and a model
//! loaded and saved by whittle gives ORT bit-identical outputs.

mod common;

use std::collections::HashMap;

use whittle_exec::{Executor, Value};
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::{ExternalData, Model, TensorData};

/// Largest |whittle - ORT| over all outputs, divided by max(1, max finite |ORT|) of that
/// output; infinite where one side only is not finite.
fn normalised_max_diff(got: &TensorData, want: &TensorData) -> f64 {
    assert_eq!(got.dims(), want.dims(), "output shapes differ");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    let scale = w
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    max_abs_diff(g, w) / scale
}

fn run_whittle(model: &Model, inputs: &[(String, TensorData)]) -> Vec<TensorData> {
    let exec = Executor::new(model).unwrap();
    let feed: HashMap<String, Value> = inputs
        .iter()
        .map(|(n, d)| (n.clone(), Value::try_from(d).unwrap()))
        .collect();
    // The first run records the plan (crates/exec/src/plan); the second runs it.
    exec.run(feed.clone()).unwrap();
    let out = exec.run(feed).unwrap();
    exec.output_names()
        .iter()
        .map(|n| out[n].to_data().unwrap())
        .collect()
}

/// Checks agreement with ORT within `tol` (normalised) and the save round trip.
fn check_model(file: &str, inputs: Vec<(String, TensorData)>, tol: f64) {
    let path = common::model_path(file);
    let scratch = common::scratch(&file.replace('/', "_"));
    let model = Model::load(&path).unwrap();
    whittle_ir::validate(&model).unwrap();
    let reference = common::ort_outputs(&path, &inputs, &scratch.join("original"));
    let ours = run_whittle(&model, &inputs);
    assert_eq!(ours.len(), reference.len());
    for (i, (g, w)) in ours.iter().zip(&reference).enumerate() {
        let diff = normalised_max_diff(g, w);
        println!(
            "{file} output {i} {:?}: normalised max diff {diff:.2e}",
            g.dims()
        );
        assert!(
            diff <= tol,
            "{file} output {i}: normalised max diff {diff:.3e} > {tol:e}"
        );
    }
    let saved = scratch.join("resaved.onnx");
    model.save(&saved, &ExternalData::Never).unwrap();
    let again = common::ort_outputs(&saved, &inputs, &scratch.join("resaved"));
    assert_eq!(
        again, reference,
        "{file}: ORT outputs changed after whittle's save"
    );
    let external = scratch.join("external.onnx");
    model
        .save(&external, &ExternalData::File("external.onnx.data".into()))
        .unwrap();
    let again = common::ort_outputs(&external, &inputs, &scratch.join("external"));
    assert_eq!(
        again, reference,
        "{file}: ORT outputs changed with external data"
    );
}

/// A deterministic smooth image batch in [lo, hi], shape [1, 3, h, w].
fn image(h: usize, w: usize, lo: f32, hi: f32) -> TensorData {
    let mut v = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let s = ((x as f32 * 0.07 + c as f32).sin() * (y as f32 * 0.05).cos() + 1.0) / 2.0;
                v.push(lo + (hi - lo) * s);
            }
        }
    }
    TensorData::from_slice(vec![1, 3, h, w], &v).unwrap()
}

/// WordPiece-free tokenisation good enough for whole words in the vocabulary.
fn minilm_inputs() -> Vec<(String, TensorData)> {
    let vocab = std::fs::read_to_string(common::model_path("minilm-vocab.txt")).unwrap();
    let id: HashMap<&str, i64> = vocab
        .lines()
        .enumerate()
        .map(|(i, w)| (w, i as i64))
        .collect();
    let sentences = [
        "the package manager installs software from a repository",
        "a small fast model runs on the device",
    ];
    let rows: Vec<Vec<i64>> = sentences
        .iter()
        .map(|s| {
            let mut ids = vec![id["[CLS]"]];
            ids.extend(s.split(' ').map(|w| *id.get(w).unwrap_or(&id["[UNK]"])));
            ids.push(id["[SEP]"]);
            ids
        })
        .collect();
    let len = rows.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in &rows {
        for j in 0..len {
            ids.push(r.get(j).copied().unwrap_or(0));
            mask.push((j < r.len()) as i64);
        }
    }
    vec![
        (
            "input_ids".into(),
            TensorData::from_slice(vec![2, len], &ids).unwrap(),
        ),
        (
            "attention_mask".into(),
            TensorData::from_slice(vec![2, len], &mask).unwrap(),
        ),
    ]
}

#[test]
fn lenet5_matches_ort() {
    let mnist = common::assets().join("mnist");
    let data = whittle_data::spec::load(
        &format!("mnist:{}", mnist.display()),
        whittle_data::Split::Test,
        Some(32),
    )
    .unwrap();
    check_model(
        "mnist_lenet5.onnx",
        vec![("input".into(), data.images)],
        1e-5,
    );
}

#[test]
fn minilm_matches_ort() {
    check_model("paraphrase-MiniLM-L3-v2.onnx", minilm_inputs(), 1e-4);
}

#[test]
fn yolov8n_matches_ort() {
    check_model(
        "yolov8n-320.onnx",
        vec![("images".into(), image(320, 320, 0.0, 1.0))],
        1e-4,
    );
}

#[test]
fn ppocr_det_matches_ort() {
    let x = image(128, 160, -1.0, 1.0);
    check_model(
        "ppocr/ch_PP-OCRv4_det_infer.onnx",
        vec![("x".into(), x)],
        1e-4,
    );
}

#[test]
fn ppocr_cls_matches_ort() {
    let x = image(48, 192, -1.0, 1.0);
    check_model(
        "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        vec![("x".into(), x)],
        1e-4,
    );
}

#[test]
fn ppocr_rec_matches_ort() {
    let x = image(48, 160, -1.0, 1.0);
    check_model(
        "ppocr/ch_PP-OCRv4_rec_infer.onnx",
        vec![("x".into(), x)],
        1e-4,
    );
}
