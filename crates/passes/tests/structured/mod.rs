//! Shared checks of the structured-compression tests (channel pruning, factorization):
//! ONNX checker, ORT agreement, MNIST accuracy.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use whittle_data::{Dataset, Split};
use whittle_ir::numeric::max_abs_diff;
use whittle_ir::{ExternalData, Model, TensorData};
use whittle_passes::optimize::verify::{random_inputs, relative_diff, run_model};
use whittle_passes::prune::channel::depgraph::analyze;
use whittle_passes::prune::channel::groups::{Group, Role};

#[path = "../../../exec/tests/common.rs"]
mod common;

#[allow(unused_imports)]
pub use common::{assets, model_path, ort_outputs, scratch};

/// Runs `onnx.checker.check_model(path, full_check=True)`.
pub fn onnx_check(path: &Path) {
    let code = "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)";
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args(["-c", code])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnx.checker rejects {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Largest relative difference between two output lists (infinite when one is not a
/// number: each output's difference is measured against agreement, 0, by `max_abs_diff`).
pub fn max_diff(got: &[TensorData], want: &[TensorData]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diffs: Vec<f64> = (got.iter().zip(want))
        .map(|(g, w)| relative_diff(g, w).unwrap())
        .collect();
    max_abs_diff(diffs.iter().copied(), diffs.iter().map(|_| 0.0))
}

/// Outputs of `model` in whittle's executor.
pub fn outputs(model: &Model, inputs: &[(String, TensorData)]) -> Vec<TensorData> {
    run_model(model, inputs)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

/// Random inputs (batch 2) for `model`.
pub fn inputs_for(model: &Model) -> Vec<(String, TensorData)> {
    let exec = whittle_exec::Executor::new(model).unwrap();
    let shapes = (exec.inputs().iter())
        .filter_map(|s| {
            let dims = s.dims.as_ref()?;
            let mut d: Vec<usize> = dims.iter().map(|d| d.unwrap_or(1)).collect();
            d[0] = 2;
            Some((s.name.clone(), d))
        })
        .collect();
    random_inputs(model, &shapes, 3).unwrap()
}

/// Saves `model`, checks it with onnx.checker and runs it in ORT: outputs must agree with
/// whittle's executor within 1e-4. Returns whittle's outputs.
pub fn check_in_ort(name: &str, model: &Model, inputs: &[(String, TensorData)]) -> Vec<TensorData> {
    let dir = scratch(name);
    let path = dir.join("model.onnx");
    model.save(&path, &ExternalData::Never).unwrap();
    onnx_check(&path);
    let ort = common::ort_outputs(&path, inputs, &dir);
    let ours = outputs(model, inputs);
    let diff = max_diff(&ours, &ort);
    assert!(diff <= 1e-4, "{name}: whittle vs ORT differ by {diff:.3e}");
    ours
}

/// The first `limit` MNIST test images.
pub fn mnist(limit: usize) -> Dataset {
    let spec = format!("mnist:{}", assets().join("mnist").display());
    whittle_data::load(&spec, Split::Test, Some(limit)).unwrap()
}

/// Accuracy of `model` (one input) on `data`, in whittle's executor.
pub fn accuracy(model: &Model, data: &Dataset) -> f64 {
    let exec = whittle_exec::Executor::new(model).unwrap();
    let input = exec.inputs()[0].name.clone();
    let logits = &outputs(model, &[(input, data.images.clone())])[0];
    let classes = logits.dims()[1];
    let values = logits.to_vec::<f32>().unwrap();
    let hits = (values.chunks(classes).zip(&data.labels))
        .filter(|(row, &label)| {
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            best as i64 == label
        })
        .count();
    hits as f64 / data.labels.len() as f64
}

/// Zeroes, in every prunable group, the weights, biases and BN γ/β producing the channels
/// `k` for which `dead(k, group)` holds (input sides and statistics stay).
pub fn kill_channels(model: &Model, dead: impl Fn(usize, &Group) -> bool) -> Model {
    let dep = analyze(model, &[]).unwrap();
    let mut out = model.clone();
    for (_, group) in dep.groups.roots().filter(|(_, g)| g.blocked.is_none()) {
        let producing = (group.slices.iter()).filter(|s| {
            !matches!(
                s.role,
                Role::Statistic | Role::Consumer | Role::GroupedConsumer { .. }
            )
        });
        for slice in producing {
            let graph = out.graph_mut();
            let i = graph
                .initializer
                .iter()
                .position(|t| t.name == slice.tensor)
                .unwrap();
            let data = TensorData::from_proto(&graph.initializer[i], None).unwrap();
            let dims = data.dims().to_vec();
            let mut values = data.to_vec::<f32>().unwrap();
            let inner: usize = dims[slice.axis + 1..].iter().product();
            let outer: usize = dims[..slice.axis].iter().product();
            for k in (0..group.width).filter(|&k| dead(k, group)) {
                for o in 0..outer {
                    for a in slice.offset + k * slice.expand..slice.offset + (k + 1) * slice.expand
                    {
                        let at = (o * dims[slice.axis] + a) * inner;
                        values[at..at + inner].iter_mut().for_each(|v| *v = 0.0);
                    }
                }
            }
            graph.initializer[i] = TensorData::from_slice(dims, &values)
                .unwrap()
                .to_proto(&slice.tensor);
        }
    }
    out
}
