//! The zoo's deeper models on the graph-level backward: every parameter's gradient equals
//! candle's tape's (training mode: batch statistics, seeded Dropout), so none of them falls
//! back to the tape. LeNet5 and zoo:cnn are pinned in exec's `backward` and in `loss_curve`.

#[path = "common/graph_vs_tape.rs"]
mod graph_vs_tape;

use std::collections::HashMap;

use graph_vs_tape::{assert_graph_matches_tape, input};
use whittle_exec::Executor;
use whittle_train::params::trainable_initializers;

/// Builds `spec` from the zoo, trains all its parameters, and compares one batch of
/// `batch` random 1x28x28 images; returns the number of parameters compared.
fn compare(spec: &str, batch: usize, tol: f64) -> usize {
    let model = whittle_zoo::build(spec).unwrap();
    let mut exec = Executor::new(&model).unwrap();
    exec.set_trainable(&trainable_initializers(model.graph()))
        .unwrap();
    let name = exec.inputs()[0].name.clone();
    let feed = HashMap::from([(name, input(&[batch, 1, 28, 28], 1))]);
    assert_graph_matches_tape(&exec, feed, tol)
}

#[test]
fn resnet_gradients_equal_the_tape() {
    // Stem, 3 stages of one basic block (one with a projection shortcut), classifier.
    assert!(compare("resnet", 4, 1e-4) >= 20);
}

#[test]
fn mobilenetv3_small_gradients_equal_the_tape() {
    assert!(compare("mobilenetv3-small", 4, 1e-4) >= 100);
}

#[test]
fn vit_tiny_gradients_equal_the_tape() {
    assert!(compare("vit-tiny", 4, 1e-4) >= 60);
}
