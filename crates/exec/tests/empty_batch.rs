//! A batch of zero samples is a valid ONNX input: real models run on it and give the output
//! shapes ONNX Runtime gives, or a clean error where ONNX Runtime fails too (a Reshape with
//! -1 over zero elements is ambiguous); no operator panics on an empty tensor.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use whittle_exec::{Executor, Value};
use whittle_ir::proto::type_proto::Value as TypeValue;
use whittle_ir::{Model, TensorData};

fn run(file: &str, inputs: &[(&str, TensorData)]) -> Result<Vec<Vec<usize>>, String> {
    let model = Model::load(common::model_path(file)).unwrap();
    let exec = Executor::new(&model).unwrap();
    let feed: HashMap<String, Value> = inputs
        .iter()
        .map(|(n, d)| (n.to_string(), Value::try_from(d).unwrap()))
        .collect();
    let outcome = catch_unwind(AssertUnwindSafe(|| exec.run(feed)))
        .unwrap_or_else(|_| panic!("{file}: whittle panicked on a zero batch"));
    let out = outcome.map_err(|e| e.to_string())?;
    Ok(exec
        .output_names()
        .iter()
        .map(|n| out[n].shape().to_vec())
        .collect())
}

fn empty_f32(dims: &[usize]) -> TensorData {
    TensorData::from_slice::<f32>(dims.to_vec(), &[]).unwrap()
}

fn empty_i64(dims: &[usize]) -> TensorData {
    TensorData::from_slice::<i64>(dims.to_vec(), &[]).unwrap()
}

/// Runs `file` at batch 0 in whittle and in ONNX Runtime; the output shapes must agree.
fn check_against_ort(file: &str, inputs: Vec<(&str, TensorData)>) {
    let ours = run(file, &inputs).unwrap_or_else(|e| panic!("{file}: {e}"));
    let named: Vec<(String, TensorData)> = inputs
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect();
    let scratch = common::scratch(&format!("empty-{}", file.replace('/', "_")));
    let reference = common::ort_outputs(&common::model_path(file), &named, &scratch);
    let want: Vec<Vec<usize>> = reference.iter().map(|d| d.dims().to_vec()).collect();
    assert_eq!(ours, want, "{file}: output shapes at batch 0");
    assert!(want.iter().all(|d| d[0] == 0), "{file}: {want:?}");
}

#[test]
fn lenet5_runs_on_an_empty_batch() {
    check_against_ort(
        "mnist_lenet5.onnx",
        vec![("input", empty_f32(&[0, 1, 28, 28]))],
    );
}

#[test]
fn minilm_and_ppocr_run_on_an_empty_batch() {
    check_against_ort(
        "paraphrase-MiniLM-L3-v2.onnx",
        vec![
            ("input_ids", empty_i64(&[0, 8])),
            ("attention_mask", empty_i64(&[0, 8])),
        ],
    );
    check_against_ort(
        "ppocr/ch_PP-OCRv4_det_infer.onnx",
        vec![("x", empty_f32(&[0, 3, 64, 64]))],
    );
    check_against_ort(
        "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        vec![("x", empty_f32(&[0, 3, 48, 192]))],
    );
}

/// ONNX Runtime refuses these too: a Reshape to `[0, C, -1]` of zero elements leaves the -1
/// undetermined (the spec makes it an error).
#[test]
fn an_ambiguous_reshape_of_an_empty_batch_is_a_clean_error() {
    for (file, input, dims) in [
        ("yolov8n-320.onnx", "images", [0, 3, 320, 320]),
        ("ppocr/ch_PP-OCRv4_rec_infer.onnx", "x", [0, 3, 48, 160]),
    ] {
        let err = run(file, &[(input, empty_f32(&dims))]).unwrap_err();
        assert!(
            err.contains("(Reshape): cannot infer the -1"),
            "{file}: {err}"
        );
    }
}

/// Every ONNX node test, with inputs made empty (all inputs sharing the first input's
/// leading size along that axis together, then each input alone along its first and its
/// last axis): whittle may refuse, but never panics.
#[test]
fn node_tests_with_empty_inputs_never_panic() {
    let root = common::assets().join("onnx-node-tests");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("test_data_set_0").is_dir())
        .collect();
    dirs.sort();
    let mut panics = Vec::new();
    let mut ran = 0;
    for dir in dirs {
        let Ok(mut model) = Model::load(dir.join("model.onnx")) else {
            continue;
        };
        // The tests declare fixed input shapes, which a run checks: open them.
        for input in &mut model.graph_mut().input {
            if let Some(Some(TypeValue::TensorType(t))) =
                input.r#type.as_mut().map(|t| t.value.as_mut())
            {
                t.shape = None;
            }
        }
        let Ok(exec) = Executor::new(&model) else {
            continue;
        };
        let specs = exec.inputs();
        let mut inputs = Vec::new();
        for i in 0..specs.len() {
            let path = dir.join(format!("test_data_set_0/input_{i}.pb"));
            let Ok(bytes) = std::fs::read(&path) else {
                break;
            };
            let Ok((_, data)) = TensorData::decode(&bytes, None) else {
                break;
            };
            inputs.push(data);
        }
        if inputs.len() != specs.len() {
            continue;
        }
        let lead = |d: &TensorData| d.dims().first().copied().filter(|&n| n > 0);
        let emptied_at = |d: &TensorData, axis: usize| {
            let mut dims = d.dims().to_vec();
            dims[axis] = 0;
            TensorData::from_bytes(d.dtype(), dims, vec![]).ok()
        };
        let emptied = |d: &TensorData| emptied_at(d, 0);
        let first = inputs.first().and_then(lead);
        let mut variants: Vec<Vec<TensorData>> = vec![inputs
            .iter()
            .map(|d| match lead(d) {
                Some(n) if Some(n) == first => emptied(d).unwrap_or_else(|| d.clone()),
                _ => d.clone(),
            })
            .collect()];
        // Each input alone, empty along its first and along its last axis.
        for (i, input) in inputs.iter().enumerate().filter(|(_, d)| lead(d).is_some()) {
            for axis in [0, input.dims().len() - 1] {
                if let Some(e) = emptied_at(input, axis) {
                    let mut v = inputs.clone();
                    v[i] = e;
                    variants.push(v);
                }
            }
        }
        for v in variants {
            let Ok(feed) = specs
                .iter()
                .zip(&v)
                .map(|(s, d)| Value::try_from(d).map(|v| (s.name.clone(), v)))
                .collect::<Result<HashMap<_, _>, _>>()
            else {
                continue;
            };
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| exec.run(feed))).is_err() {
                let dims: Vec<_> = v.iter().map(|d| d.dims().to_vec()).collect();
                panics.push(format!("{} {dims:?}", dir.display()));
            }
        }
    }
    println!("{ran} runs with empty inputs");
    assert!(ran > 1000, "only {ran} runs");
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}
