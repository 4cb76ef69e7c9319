//! Whole-graph gradients of the graph-level backward against candle's tape, for the
//! trainer's tests and those of the passes that build training graphs (QAT), which include
//! this file by path.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use whittle_exec::backward::GraphBackward;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::seed::SplitMix64;

/// Seed of both runs (Dropout masks).
const SEED: u64 = 5;

/// `n` values uniform in `[-1, 1)` from a seed (24 random bits each, exact in f32).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect()
}

/// A float32 input of `dims` uniform in `[-1, 1)`.
pub fn input(dims: &[usize], seed: u64) -> Value {
    let v = uniform(dims.iter().product(), seed);
    Value::f32(Tensor::from_vec(v, dims, &Device::Cpu).unwrap()).unwrap()
}

/// Asserts that the graph-level backward of `exec` (with its trainable parameters set)
/// derives, and that for the loss `Σ sum(y·R)` over the float outputs `y` (fixed random
/// `R`) it gives every parameter the tape's gradient to `tol` relative to that gradient's
/// largest element. Returns how many parameters were compared.
pub fn assert_graph_matches_tape(exec: &Executor, feed: HashMap<String, Value>, tol: f64) -> usize {
    let gb = GraphBackward::new(exec).unwrap_or_else(|e| panic!("no graph backward: {e}"));
    let rec = gb.forward(exec, feed.clone(), SEED, None).unwrap();
    let seeds: HashMap<String, Tensor> = rec
        .outputs
        .iter()
        .filter(|(_, v)| v.dtype().is_float())
        .enumerate()
        .map(|(k, (name, v))| {
            let r = uniform(v.shape().iter().product(), 100 + k as u64);
            (
                name.clone(),
                Tensor::from_vec(r, v.shape(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let graph = gb.backward(exec, &rec, seeds.clone()).unwrap();

    let opts = RunOptions {
        training: true,
        seed: Some(SEED),
        ..Default::default()
    };
    let outputs = exec.run_with(feed, opts).unwrap();
    let loss = seeds
        .iter()
        .map(|(name, r)| (outputs[name].tensor() * r).unwrap().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .expect("no float output");
    let tape = exec.gradients(&loss).unwrap();

    assert_eq!(graph.len(), tape.len(), "parameters with a gradient");
    let largest = |t: &Tensor| {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64
    };
    // Gradients that are zero in exact arithmetic (a bias before a normalisation, the key
    // bias of attention) are rounding noise on both sides: each tensor is compared to at
    // least a thousandth of the model's largest gradient.
    let floor = 1e-3 * tape.values().map(largest).fold(0.0, f64::max);
    for (name, t) in &tape {
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = graph[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = largest(t).max(floor).max(1e-12);
        let diff = whittle_ir::numeric::max_abs_diff(a.iter().copied(), b.iter().copied());
        assert!(
            diff / scale < tol,
            "{name}: {diff:e} off the tape (largest gradient {scale:e})"
        );
    }
    tape.len()
}
