//! Unstructured and N:M pruning of the pretrained MNIST LeNet5: exact sparsity, ONNX
//! Runtime agreement and onnx.checker on the output, one global threshold, and masked
//! fine-tuning that keeps the zeros and recovers accuracy.

#[path = "../../exec/tests/common.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{model_path, ort_outputs, scratch};
use whittle_data::Split;
use whittle_exec::{Executor, Value};
use whittle_ir::{ExternalData, Model, TensorData};
use whittle_passes::prune::report::sparsity_report;
use whittle_passes::prune::{
    driver, prunable_layers, Curve, FineTune, GradualSchedule, Method, Pruner, Unstructured,
};
use whittle_passes::quantize::sensitivity::EvalSet;
use whittle_train::{OptimizerConfig, OptimizerKind, Schedule, TrainConfig};

fn lenet() -> Model {
    Model::load(model_path("mnist_lenet5.onnx")).unwrap()
}

fn mnist(split: Split, n: usize) -> whittle_data::Dataset {
    whittle_data::load(
        &format!("mnist:{}", common::assets().join("mnist").display()),
        split,
        Some(n),
    )
    .unwrap()
}

/// Weights of `model` by initializer name.
fn weights(model: &Model, name: &str) -> Vec<f32> {
    let graph = model.graph();
    let init = graph.initializer.iter().find(|t| t.name == name).unwrap();
    TensorData::from_proto(init, None)
        .unwrap()
        .to_vec()
        .unwrap()
}

/// Runs `onnx.checker.check_model(path, full_check=True)` (a minimal local helper).
fn onnx_check(path: &Path) {
    let python = std::env::var("WHITTLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let code = "import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True)";
    let out = std::process::Command::new(python)
        .args(["-c", code])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One epoch of plain SGD at lr 0.01 and a constant rate (fine-tuning a pretrained model;
/// spelt out so that changes to the trainer's defaults do not change these tests).
fn sgd_one_epoch() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        lr: 0.01,
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Sgd,
            ..OptimizerConfig::default()
        },
        schedule: Schedule::Constant,
        ..TrainConfig::default()
    }
}

fn accuracy(model: &Model, test: &whittle_data::Dataset) -> f64 {
    let eval = EvalSet::from_rows("input", &test.images, Some(test.labels.clone()), 250).unwrap();
    eval.accuracy(model).unwrap()
}

const WEIGHTS: [&str; 4] = [
    "conv1.weight",
    "conv2.weight",
    "linear1.weight",
    "linear2.weight",
];

#[test]
fn magnitude_half_per_layer_is_exact_and_runs_in_onnx_runtime() {
    let model = lenet();
    let pruner = Unstructured::new(Method::Magnitude, Vec::new()).unwrap();
    let pruned = driver::oneshot(&pruner, &model, 0.5, None).unwrap();
    let layers = prunable_layers(&pruned.model, &[]).unwrap();
    let report = sparsity_report(&pruned.model, &layers).unwrap();
    // Every layer has an even number of weights: round(0.5 n) = n / 2 exactly.
    assert_eq!(report.layers.len(), 4);
    for layer in &report.layers {
        assert_eq!(layer.zeros * 2, layer.params, "{layer:?}");
    }
    // Kept weights are unchanged and at least as large as every pruned one.
    for name in WEIGHTS {
        let (before, after) = (weights(&model, name), weights(&pruned.model, name));
        let kept_min = after
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| v.abs())
            .fold(f32::MAX, f32::min);
        for (b, a) in before.iter().zip(&after) {
            assert!(
                *a == 0.0 && b.abs() <= kept_min || a == b,
                "{name}: {b} -> {a}"
            );
        }
    }
    let dir = scratch("prune-magnitude");
    let path = dir.join("sparse.onnx");
    pruned.model.save(&path, &ExternalData::Never).unwrap();
    onnx_check(&path);
    let images = mnist(Split::Test, 16).images;
    let ort = ort_outputs(&path, &[("input".into(), images.clone())], &dir.join("ort"));
    let exec = Executor::new(&pruned.model).unwrap();
    let ours = exec
        .run(HashMap::from([(
            "input".into(),
            Value::try_from(&images).unwrap(),
        )]))
        .unwrap()["logits"]
        .to_data()
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let theirs = ort[0].to_vec::<f32>().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-4, "whittle {a} vs ORT {b}");
    }
}

#[test]
fn two_of_four_keeps_two_per_group_along_the_reduction_axis() {
    let model = lenet();
    // conv1 [_, 1, 3, 3] has one input channel: it cannot hold 2:4 and stays dense, named
    // in a note; excluding it gives the same model without the note.
    let pruner = Unstructured::new(Method::NM { n: 2, m: 4 }, Vec::new()).unwrap();
    let pruned = pruner.prune(&model, 0.5).unwrap();
    assert!(
        pruned.notes.len() == 1 && pruned.notes[0].contains("conv1.weight (1 elements)"),
        "{:?}",
        pruned.notes
    );
    assert!(pruned.masks.iter().all(|m| m.weight != "conv1.weight"));
    let pruner = Unstructured::new(Method::NM { n: 2, m: 4 }, vec!["conv1.weight".into()]).unwrap();
    let excluded = pruner.prune(&model, 0.5).unwrap();
    assert!(excluded.notes.is_empty());
    assert_eq!(excluded.model.to_bytes(), pruned.model.to_bytes());
    assert_eq!(
        weights(&pruned.model, "conv1.weight"),
        weights(&model, "conv1.weight")
    );
    // conv2 [64, 32, 3, 3]: groups of 4 input channels at each (o, kh, kw).
    let conv = weights(&pruned.model, "conv2.weight");
    for o in 0..64 {
        for g in 0..8 {
            for pos in 0..9 {
                let nonzero = (0..4)
                    .filter(|j| conv[(o * 32 + g * 4 + j) * 9 + pos] != 0.0)
                    .count();
                assert_eq!(nonzero, 2, "conv2 o={o} group={g} pos={pos}");
            }
        }
    }
    // Gemm with transB = 1: B is [N, K], groups of 4 consecutive K.
    for (name, k) in [("linear1.weight", 3136), ("linear2.weight", 200)] {
        for row in weights(&pruned.model, name).chunks(k) {
            for group in row.chunks(4) {
                assert_eq!(group.iter().filter(|v| **v != 0.0).count(), 2, "{name}");
            }
        }
    }
}

#[test]
fn global_prunes_below_one_threshold_across_layers() {
    let model = lenet();
    let pruner = Unstructured::new(Method::Global, Vec::new()).unwrap();
    let pruned = pruner.prune(&model, 0.7).unwrap();
    let (mut largest_pruned, mut smallest_kept, mut zeros, mut total) = (0f32, f32::MAX, 0, 0);
    for name in WEIGHTS {
        let after = weights(&pruned.model, name);
        for (b, a) in weights(&model, name).iter().zip(&after) {
            if *a == 0.0 {
                largest_pruned = largest_pruned.max(b.abs());
                zeros += 1;
            } else {
                smallest_kept = smallest_kept.min(a.abs());
            }
        }
        total += after.len();
    }
    assert!(
        smallest_kept >= largest_pruned,
        "{smallest_kept} < {largest_pruned}"
    );
    assert_eq!(zeros, (0.7 * total as f64).round() as usize);
    // Layers end at different sparsities under one threshold.
    let report = sparsity_report(&pruned.model, &prunable_layers(&model, &[]).unwrap()).unwrap();
    let spread = report.layers.iter().map(|l| l.sparsity).fold(0.0, f64::max)
        - report.layers.iter().map(|l| l.sparsity).fold(1.0, f64::min);
    assert!(spread > 0.1, "{report:?}");
}

#[test]
fn masked_finetune_keeps_zeros_and_recovers_accuracy() {
    let (model, train, test) = (lenet(), mnist(Split::Train, 2000), mnist(Split::Test, 1000));
    let pruner = Unstructured::new(Method::Global, Vec::new()).unwrap();
    let pruned = pruner.prune(&model, 0.9).unwrap();
    let finetune = FineTune {
        train: &train,
        config: TrainConfig {
            batch_size: 32,
            ..sgd_one_epoch()
        },
        teacher: None,
    };
    let tuned = driver::oneshot(&pruner, &model, 0.9, Some(&finetune)).unwrap();
    for mask in &tuned.masks {
        let after = weights(&tuned.model, &mask.weight);
        for (v, keep) in after.iter().zip(&mask.keep) {
            assert!(*keep || *v == 0.0, "{} lost a zero", mask.weight);
        }
        let before = weights(&pruned.model, &mask.weight);
        assert_eq!(
            after.iter().filter(|v| **v == 0.0).count(),
            before.iter().filter(|v| **v == 0.0).count(),
            "{}",
            mask.weight
        );
    }
    let (dense, sparse, recovered) = (
        accuracy(&model, &test),
        accuracy(&pruned.model, &test),
        accuracy(&tuned.model, &test),
    );
    assert!(dense > 0.97, "{dense}");
    assert!(
        recovered > sparse + 0.01,
        "pruned {sparse}, fine-tuned {recovered}"
    );
}

#[test]
fn gradual_pruning_reaches_the_final_sparsity_during_training() {
    let train = mnist(Split::Train, 600);
    let finetune = FineTune {
        train: &train,
        config: TrainConfig {
            batch_size: 50,
            ..sgd_one_epoch()
        },
        teacher: None,
    };
    // 12 steps; masks at steps 2, 4, 6 and 8 (linear to 60%), then kept.
    let schedule = GradualSchedule {
        curve: Curve::Linear,
        initial: 0.0,
        last: 0.6,
        start: 0,
        end: 8,
        frequency: 2,
    };
    let pruner = Unstructured::new(Method::Magnitude, Vec::new()).unwrap();
    let pruned = driver::gradual(&pruner, &lenet(), &schedule, &finetune).unwrap();
    let report =
        sparsity_report(&pruned.model, &prunable_layers(&pruned.model, &[]).unwrap()).unwrap();
    for layer in &report.layers {
        assert_eq!(
            layer.zeros,
            (0.6 * layer.params as f64).round() as usize,
            "{layer:?}"
        );
    }
    assert!(pruned.notes.is_empty(), "{:?}", pruned.notes);
}

#[test]
fn iterative_steps_nest_their_masks() {
    let model = lenet();
    let pruner =
        Unstructured::new(Method::Random { seed: 3 }, vec!["conv1.weight".into()]).unwrap();
    let pruned = driver::iterative(&pruner, &model, 0.8, 4, Curve::Cubic, None).unwrap();
    let report = sparsity_report(&pruned.model, &prunable_layers(&model, &[]).unwrap()).unwrap();
    assert_eq!(report.layers[0].zeros, 0, "conv1 is excluded");
    for layer in &report.layers[1..] {
        assert_eq!(
            layer.zeros,
            (0.8 * layer.params as f64).round() as usize,
            "{layer:?}"
        );
    }
    assert_eq!(pruned.notes.len(), 4, "{:?}", pruned.notes);
}
