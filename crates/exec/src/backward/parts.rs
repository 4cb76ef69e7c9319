//! A training pass in parts of its batch, one per thread, side by side.
//!
//! Where every node of a graph keeps the batch's items apart (convolutions, activations,
//! pooling, per-item products) except BatchNormalization, whose statistics span the batch,
//! a pass on a pool of several threads runs each thread's share of the items through the
//! nodes on its own, from one BatchNormalization to the next: the parts meet only there,
//! where their per-channel moments (forward) and gradient sums (backward) are combined into
//! the whole batch's, so the pass computes what one run over the whole batch computes, up to
//! rounding. Each part's values stay in its thread's cache and both threads start every
//! stretch of nodes at once, where splitting each small node's work among the threads left
//! one of two idle for 38% of a zoo:mobilenetv3-small step (profile in docs/BENCHMARKS.md).
//! Dropout draws each part's mask from its own seed. Parameter gradients are the parts'
//! added in order.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use candle_core::Tensor;
use rayon::prelude::*;
use whittle_ir::proto::NodeProto;
use whittle_ir::NodeAttrs;

use super::rules::{kern, Rule};
use super::{node_error, on_node, seed_values, GraphBackward, Recording};
use crate::error::Result;
use crate::executor::Executor;
use crate::kernels::norm::{
    batch_moments, batch_norm_backward_apply, batch_norm_backward_sums, combine_moments,
    BackwardSums, BatchMoments, ChannelGeometry,
};
use crate::value::Value;

/// Items below which a part is not worth a thread of its own.
const MIN_PART: usize = 8;

/// Operators that compute each batch item from that item alone, given that only their first
/// input carries the batch (weights, biases, Dropout's ratio do not).
const PER_ITEM: &[&str] = &[
    "Conv",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Erf",
    "Gelu",
    "Identity",
    "Dropout",
];

/// Elementwise operators whose inputs all carry the batch (a residual Add, a squeeze-excite
/// Mul).
const ELEMENTWISE: &[&str] = &["Add", "Sub", "Mul", "Div"];

/// A graph whose training passes can run in parts of the batch.
pub(super) struct BatchParts {
    /// Run-order positions of the BatchNormalization nodes, where the parts meet.
    norms: Vec<usize>,
}

impl BatchParts {
    /// The parts plan of `exec`'s graph, `None` where a node could mix batch items: an
    /// operator outside the per-item ones, a batch value in a weight's place, Flatten,
    /// Concat or Gemm over the batch axis, MaxPool indices (flat positions over the batch),
    /// a graph output that does not carry the batch.
    pub fn of(exec: &Executor) -> Option<BatchParts> {
        let mut batch: HashSet<String> = exec.inputs().into_iter().map(|i| i.name).collect();
        let mut norms = Vec::new();
        for (pos, node) in exec.run_order().into_iter().enumerate() {
            let carried: Vec<bool> = node.input.iter().map(|i| batch.contains(i)).collect();
            if !carried.contains(&true) {
                continue;
            }
            if !node.domain.is_empty() && node.domain != "ai.onnx" {
                return None;
            }
            let first_only = carried[0] && !carried[1..].contains(&true);
            let axis_from_one =
                |name: &str, default: i64| node.int_or(name, default).ok() >= Some(1);
            let fits = match node.op_type.as_str() {
                "BatchNormalization" => {
                    norms.push(pos);
                    first_only && node.input.len() == 5 && node.input.iter().all(|i| !i.is_empty())
                }
                "MaxPool" if node.output.get(1).is_some_and(|o| !o.is_empty()) => false,
                "Flatten" => first_only && axis_from_one("axis", 1),
                "Gemm" => first_only && node.int_or("transA", 0).ok() == Some(0),
                "Concat" => !carried.contains(&false) && axis_from_one("axis", 0),
                op if ELEMENTWISE.contains(&op) => !carried.contains(&false),
                op => first_only && PER_ITEM.contains(&op),
            };
            if !fits {
                return None;
            }
            batch.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
        let outputs = exec.output_names();
        outputs
            .iter()
            .all(|o| batch.contains(o))
            .then_some(BatchParts { norms })
    }

    /// The item ranges of the parts of a pass on `inputs` on the current pool: one per
    /// thread, of at least [`MIN_PART`] items; `None` (one run over the whole batch) on one
    /// thread, for a small batch, or where the inputs disagree on the batch size.
    pub fn ranges(&self, inputs: &HashMap<String, Value>) -> Option<Vec<Range<usize>>> {
        let mut sizes = inputs.values().map(|v| v.shape().first().copied());
        let n = sizes.next()??;
        if sizes.any(|s| s != Some(n)) {
            return None;
        }
        let parts = rayon::current_num_threads().min(n / MIN_PART);
        (parts >= 2).then(|| {
            (0..parts)
                .map(|p| n * p / parts..n * (p + 1) / parts)
                .collect()
        })
    }
}

/// The training forward of `inputs` in the parts `ranges` of the batch: each part runs from
/// one BatchNormalization to the next in parallel, the parts' moments of the next one's
/// input combined in between. Answers the parts' recordings, their outputs joined.
pub(super) fn forward(
    gb: &GraphBackward,
    plan: &BatchParts,
    exec: &Executor,
    inputs: HashMap<String, Value>,
    seed: u64,
    running_stats: Option<&mut HashMap<String, Value>>,
    ranges: &[Range<usize>],
) -> Result<Recording> {
    let order = exec.run_order();
    let mut passes = ranges
        .iter()
        .enumerate()
        .map(|(p, r)| gb.start(exec, rows(&inputs, r)?, part_seed(seed, p)))
        .collect::<Result<Vec<_>>>()?;
    // Every part records the same running statistics: the first part's are kept.
    let mut stats: Vec<HashMap<String, Value>> = ranges.iter().map(|_| HashMap::new()).collect();
    let mut bounds = vec![0];
    bounds.extend(&plan.norms);
    bounds.push(order.len());
    let mut batch: Option<BatchMoments> = None;
    for w in bounds.windows(2) {
        let next = order.get(w[1]).copied();
        let moments = passes
            .par_iter_mut()
            .zip(stats.par_iter_mut())
            .map(|(pass, stats)| {
                gb.run_nodes(exec, pass, w[0]..w[1], Some(stats), batch.as_ref())?;
                next.map(|norm| input_moments(norm, &pass.env)).transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        batch = match next {
            Some(norm) => {
                let parts: Vec<(usize, &BatchMoments)> =
                    moments.iter().flatten().map(|(n, m)| (*n, m)).collect();
                Some(kern(combine_moments(&parts, epsilon(norm)?))?)
            }
            None => None,
        };
    }
    if let (Some(out), Some(first)) = (running_stats, stats.into_iter().next()) {
        out.extend(first);
    }
    let mut parts = passes
        .into_iter()
        .map(|pass| gb.finish(exec, pass))
        .collect::<Result<Vec<_>>>()?;
    let mut outputs = HashMap::new();
    for name in exec.output_names() {
        let values: Vec<Value> = parts
            .iter_mut()
            .filter_map(|p| p.outputs.remove(&name))
            .collect();
        let tensors: Vec<&Tensor> = values.iter().map(Value::tensor).collect();
        let joined = values[0].with_tensor(Tensor::cat(&tensors, 0)?)?;
        outputs.insert(name, joined);
    }
    Ok(Recording {
        outputs,
        seed,
        parts,
        ..Default::default()
    })
}

/// The backward of a forward in parts: each part runs the rules from one BatchNormalization
/// to the next in parallel; at each, the parts' gradient sums are combined, the scale's and
/// bias's gradients taken from the total, and each part's input gradient from it.
pub(super) fn backward(
    gb: &GraphBackward,
    exec: &Executor,
    rec: &Recording,
    seeds: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let order = exec.run_order();
    let mut grads: Vec<HashMap<String, Vec<f32>>> =
        rec.parts.iter().map(|_| HashMap::new()).collect();
    for (name, g) in seeds {
        let mut row = 0;
        for (part, grads) in rec.parts.iter().zip(&mut grads) {
            let count = part.shape(&name)?.first().copied().unwrap_or(0);
            let values = seed_values(part, &name, &g.narrow(0, row, count)?)?;
            gb.accumulate(grads, &name, values);
            row += count;
        }
    }
    let steps: Vec<(usize, Rule)> = gb.steps.iter().rev().copied().collect();
    let mut rest = &steps[..];
    // The BatchNormalization whose input gradients the parts still owe, with its sums.
    let mut owed: Option<(&NodeProto, BackwardSums)> = None;
    loop {
        let cut = rest
            .iter()
            .position(|&(pos, _)| order[pos].op_type == "BatchNormalization")
            .unwrap_or(rest.len());
        let (run, after) = rest.split_at(cut);
        let norm = after.first().map(|&(pos, _)| order[pos]);
        let sums = rec
            .parts
            .par_iter()
            .zip(grads.par_iter_mut())
            .map(|(part, grads)| {
                if let Some((node, total)) = &owed {
                    input_gradient(gb, exec, part, grads, node, total)?;
                }
                for &(pos, rule) in run {
                    gb.apply_rule(exec, part, grads, (pos, order[pos]), rule)?;
                }
                match norm {
                    Some(node) => gradient_sums(exec, part, grads, node),
                    None => Ok(None),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(node) = norm else {
            break;
        };
        rest = &after[1..];
        owed = None;
        let mut parts = sums.into_iter().flatten();
        if let Some(mut total) = parts.next() {
            for s in parts {
                kern(total.add(&s))?;
            }
            let (dscale, dbias) = total.param_grads(moments_of(&rec.parts[0], node)?);
            for (slot, g) in [(1, dscale), (2, dbias)] {
                if let Some(name) = node.input.get(slot).filter(|n| gb.active.contains(*n)) {
                    gb.accumulate(&mut grads[0], name, g);
                }
            }
            owed = Some((node, total));
        }
    }
    gb.parameter_gradients(exec, grads)
}

/// The rows `range` of every input.
fn rows(inputs: &HashMap<String, Value>, range: &Range<usize>) -> Result<HashMap<String, Value>> {
    inputs
        .iter()
        .map(|(name, v)| {
            let part = v
                .tensor()
                .narrow(0, range.start, range.len())?
                .contiguous()?;
            Ok((name.clone(), v.with_tensor(part)?))
        })
        .collect()
}

/// The Dropout seed of part `p` (the pass's own for the first).
fn part_seed(seed: u64, p: usize) -> u64 {
    seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// BatchNormalization `node`'s epsilon.
fn epsilon(node: &NodeProto) -> Result<f32> {
    Ok(node.float_or("epsilon", 1e-5)?)
}

/// A part's moments of BatchNormalization `node`'s input (live in `env`), with the number
/// of values each channel's are over.
fn input_moments(node: &NodeProto, env: &HashMap<String, Value>) -> Result<(usize, BatchMoments)> {
    let x = node
        .input
        .first()
        .and_then(|n| env.get(n))
        .ok_or_else(|| node_error(node, "its input is not a value of the pass".into()))?;
    let (g, eps) = (ChannelGeometry::of(x.shape()), epsilon(node)?);
    let m = kern(x.with_f32(|xd| batch_moments(g, xd, eps))?)?;
    Ok((g.n * g.s, m))
}

/// The whole batch's statistics of BatchNormalization `node` (each part keeps them).
fn moments_of<'a>(part: &'a Recording, node: &NodeProto) -> Result<&'a BatchMoments> {
    node.output
        .first()
        .and_then(|y| part.batch_moments(y))
        .ok_or_else(|| node_error(node, "its batch statistics were not kept".into()))
}

/// A part's gradient sums of BatchNormalization `node` (`None` where the loss does not
/// reach its output).
fn gradient_sums(
    exec: &Executor,
    part: &Recording,
    grads: &HashMap<String, Vec<f32>>,
    node: &NodeProto,
) -> Result<Option<BackwardSums>> {
    let Some(dy) = node.output.first().and_then(|y| grads.get(y)) else {
        return Ok(None);
    };
    let x = part.value(exec, &node.input[0])?;
    let g = ChannelGeometry::of(x.shape());
    let m = moments_of(part, node)?;
    let sums = x.with_f32(|xd| batch_norm_backward_sums(g, xd, dy, m))?;
    Ok(Some(kern(sums).map_err(on_node(node))?))
}

/// Adds a part's input gradient of BatchNormalization `node` (from the whole batch's sums
/// `total`) into `grads`, where its input needs one.
fn input_gradient(
    gb: &GraphBackward,
    exec: &Executor,
    part: &Recording,
    grads: &mut HashMap<String, Vec<f32>>,
    node: &NodeProto,
    total: &BackwardSums,
) -> Result<()> {
    let Some(dy) = node.output.first().and_then(|y| grads.remove(y)) else {
        return Ok(());
    };
    let name = &node.input[0];
    if gb.active.contains(name) {
        let x = part.value(exec, name)?;
        let gamma = part.value(exec, &node.input[1])?.to_f32_vec()?;
        let g = ChannelGeometry::of(x.shape());
        let mut dx = gb.buffers.for_overwrite(x.numel());
        let m = moments_of(part, node)?;
        kern(x.with_f32(|xd| batch_norm_backward_apply(g, xd, &dy, &gamma, m, total, &mut dx))?)
            .map_err(on_node(node))?;
        gb.accumulate(grads, name, dx);
    }
    gb.buffers.give(dy);
    Ok(())
}
