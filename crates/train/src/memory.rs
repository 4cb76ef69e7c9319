//! A peak-memory estimate of training, measured from one inference pass over a batch:
//! parameters, gradients, optimizer state, and the activations backward keeps — all of them,
//! or with gradient checkpointing the segment boundaries plus the largest segment.

use std::collections::HashMap;

use serde::Serialize;
use whittle_exec::{Executor, RunOptions, Value};

use crate::error::Result;

/// Estimated bytes of one training step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Number of trainable values.
    pub parameter_count: u64,
    /// Bytes of the trainable parameters.
    pub parameters: u64,
    /// Their gradients.
    pub gradients: u64,
    /// Optimizer state (momentum, Adam moments).
    pub optimizer_state: u64,
    /// Activations kept for backward without checkpointing.
    pub activations: u64,
    /// Activations kept with gradient checkpointing (boundaries + largest segment).
    pub checkpointed_activations: Option<u64>,
    /// The peak: parameters + gradients + optimizer state + the activations in use.
    pub peak: u64,
}

fn bytes(v: &Value) -> u64 {
    (v.numel() * v.dtype().size().unwrap_or(1)) as u64
}

/// Measures the activations of `exec` on `inputs` (one batch); `state_copies` is the number
/// of optimizer tensors per parameter; `bounds` the checkpointing segments, if any.
pub fn estimate(
    exec: &Executor,
    inputs: &HashMap<String, Value>,
    state_copies: u64,
    bounds: Option<&[usize]>,
) -> Result<MemoryEstimate> {
    let parameter_count: u64 = exec
        .params()
        .values()
        .map(|v| v.as_tensor().elem_count() as u64)
        .sum();
    let parameters: u64 = exec
        .params()
        .values()
        .map(|v| (v.as_tensor().elem_count() * v.as_tensor().dtype().size_in_bytes()) as u64)
        .sum();
    let all = [0, exec.run_order().len()];
    let bounds = bounds.unwrap_or(&all);
    let (mut boundary, mut largest, mut activations) = (0u64, 0u64, 0u64);
    let mut env = inputs.clone();
    for w in bounds.windows(2) {
        let mut produced = 0u64;
        let mut hook = |_: &str, _: &_, v: &Value| {
            produced += bytes(v);
            Ok(())
        };
        let opts = RunOptions {
            hook: Some(&mut hook),
            ..Default::default()
        };
        env = exec.run_range(w[0]..w[1], env, opts)?;
        boundary += env.values().map(bytes).sum::<u64>();
        largest = largest.max(produced);
        activations += produced;
    }
    let checkpointed = (bounds.len() > 2).then_some(boundary + largest);
    let kept = checkpointed.unwrap_or(activations);
    Ok(MemoryEstimate {
        parameter_count,
        parameters,
        gradients: parameters,
        optimizer_state: parameters * state_copies,
        activations,
        checkpointed_activations: checkpointed,
        peak: parameters * (2 + state_copies) + kept,
    })
}
