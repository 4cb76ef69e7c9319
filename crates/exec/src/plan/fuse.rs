//! Plan rewrites: BatchNormalization folded into the Conv before it, nodes mapped to
//! native kernels, and bias `Add` plus activation fused into the GEMM before them.

use candle_core::{Device, Tensor};
use whittle_ir::proto::GraphProto;
use whittle_ir::{DataType, NodeAttrs};

use super::{lower, Home, Kernel, Plan, PlanStep, PlannedValue, StepOp, ValueId};
use crate::kernels::activation::{Activation, UnaryOp};
use crate::value::Value;

/// For each value, the steps that read it.
fn consumers(plan: &Plan) -> Vec<Vec<usize>> {
    let mut users = vec![Vec::new(); plan.values.len()];
    for (s, step) in plan.steps.iter().enumerate() {
        for &i in step.inputs.iter().flatten() {
            if !users[i].contains(&s) {
                users[i].push(s);
            }
        }
    }
    users
}

/// Whether value `v` may disappear into a fused step: read only by `readers` and not
/// returned by the run.
fn internal(plan: &Plan, users: &[Vec<usize>], v: ValueId, readers: usize) -> bool {
    users[v].len() == readers && !plan.outputs.contains(&v)
}

fn op_of<'g>(plan: &Plan, graph: &'g GraphProto, step: usize) -> &'g str {
    graph.node[plan.steps[step].node].op_type.as_str()
}

fn constant(values: &[PlannedValue], id: Option<ValueId>) -> Option<Vec<f32>> {
    match &values[id?].home {
        Home::Const(v) if v.dtype() == DataType::Float => v.to_f32_vec().ok(),
        _ => None,
    }
}

/// Folds each inference BatchNormalization that is the only reader of a Conv's output,
/// with constant weights and statistics, into the Conv's weight and bias: the Conv step
/// reads the folded constants and writes the BatchNormalization's output.
pub fn fold_batch_norms(plan: &mut Plan, graph: &GraphProto) {
    let users = consumers(plan);
    let mut removed = vec![false; plan.steps.len()];
    for c in 0..plan.steps.len() {
        let conv = &plan.steps[c];
        if op_of(plan, graph, c) != "Conv" || !matches!(conv.op, StepOp::Fallback(_)) {
            continue;
        }
        let Some(Some(y)) = conv.outputs.first().copied() else {
            continue;
        };
        let [bn] = users[y][..] else {
            continue;
        };
        if op_of(plan, graph, bn) != "BatchNormalization" || !internal(plan, &users, y, 1) {
            continue;
        }
        if let Some((w, b)) = folded(plan, graph, c, bn) {
            let out = plan.steps[bn].outputs[0];
            let base = plan.values[y].name.clone();
            let w = add_const(plan, format!("{base}.folded_weight"), w);
            let b = add_const(plan, format!("{base}.folded_bias"), b);
            let conv = &mut plan.steps[c];
            conv.inputs = vec![conv.inputs[0], Some(w), Some(b)];
            conv.outputs = vec![out];
            removed[bn] = true;
        }
    }
    retain_steps(plan, &removed);
}

/// The folded weight and bias of Conv step `c` followed by BatchNormalization step `bn`.
fn folded(plan: &Plan, graph: &GraphProto, c: usize, bn: usize) -> Option<(Value, Value)> {
    let (conv, norm) = (&plan.steps[c], &plan.steps[bn]);
    let bn_node = &graph.node[norm.node];
    let training = bn_node.int_or("training_mode", 0).ok()? != 0;
    if training || norm.outputs.iter().skip(1).any(Option::is_some) {
        return None;
    }
    let eps = bn_node.float_or("epsilon", 1e-5).ok()?;
    let v = &plan.values;
    let w_id = (*conv.inputs.get(1)?)?;
    let w = constant(v, Some(w_id))?;
    let w_shape = v[w_id].shape.clone();
    let c_out = *w_shape.first()?;
    let bias = match conv.inputs.get(2).copied().flatten() {
        Some(id) => constant(v, Some(id))?,
        None => vec![0.0; c_out],
    };
    let get = |i: usize| constant(v, *norm.inputs.get(i)?).filter(|x| x.len() == c_out);
    let (scale, shift, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    if bias.len() != c_out || c_out == 0 {
        return None;
    }
    let per = w.len() / c_out;
    let mut new_w = w;
    let mut new_b = Vec::with_capacity(c_out);
    for o in 0..c_out {
        let s = scale[o] / (var[o] + eps).sqrt();
        new_w[o * per..(o + 1) * per]
            .iter_mut()
            .for_each(|x| *x *= s);
        new_b.push((bias[o] - mean[o]) * s + shift[o]);
    }
    let tensor = |data: Vec<f32>, shape: Vec<usize>| {
        Tensor::from_vec(data, shape, &Device::Cpu)
            .ok()
            .and_then(|t| Value::f32(t).ok())
    };
    Some((tensor(new_w, w_shape)?, tensor(new_b, vec![c_out])?))
}

fn add_const(plan: &mut Plan, name: String, value: Value) -> ValueId {
    plan.values.push(PlannedValue {
        name,
        dtype: value.dtype(),
        shape: value.shape().to_vec(),
        home: Home::Const(value),
    });
    plan.values.len() - 1
}

fn retain_steps(plan: &mut Plan, removed: &[bool]) {
    let mut i = 0;
    plan.steps.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
}

/// Maps nodes to native kernels, then (with `fuse`) folds a constant bias `Add` and an
/// activation (including `x * Sigmoid(x)` as SiLU) into the GEMM step producing their input.
pub fn select_kernels(plan: &mut Plan, graph: &GraphProto, opset: i64, fuse: bool) {
    expand_splits(plan, graph);
    for step in &mut plan.steps {
        let out = match (&step.op, &step.outputs[..]) {
            (StepOp::Fallback(_), [Some(o)]) => *o,
            _ => continue,
        };
        let node = &graph.node[step.node];
        let (shape, dtype) = (&plan.values[out].shape, plan.values[out].dtype);
        if let Some(k) = lower::kernel_for(node, opset, &step.inputs, &plan.values, shape, dtype) {
            // Runtime operands only: constants live in the kernel.
            step.inputs.truncate(k.runtime_inputs());
            step.op = StepOp::Kernel(k);
        }
    }
    if fuse {
        fuse_epilogues(plan, graph);
    }
}

/// Replaces each Split step (f32, every output named) by one gather step per output.
fn expand_splits(plan: &mut Plan, graph: &GraphProto) {
    for step in std::mem::take(&mut plan.steps) {
        let node = &graph.node[step.node];
        let x = step.inputs.first().copied().flatten();
        let kernels = match (&step.op, x) {
            (StepOp::Fallback(_), Some(x))
                if node.op_type == "Split" && step.outputs.iter().all(Option::is_some) =>
            {
                let outs: Vec<&[usize]> = step
                    .outputs
                    .iter()
                    .flatten()
                    .map(|&o| plan.values[o].shape.as_slice())
                    .collect();
                lower::split(node, &plan.values[x], &outs)
            }
            _ => None,
        };
        let Some(kernels) = kernels else {
            plan.steps.push(step);
            continue;
        };
        for (k, out) in kernels.into_iter().zip(&step.outputs) {
            plan.steps.push(PlanStep {
                node: step.node,
                pos: step.pos,
                op: StepOp::Kernel(k),
                inputs: vec![x],
                outputs: vec![*out],
                frees: Vec::new(),
            });
        }
    }
}

fn fuse_epilogues(plan: &mut Plan, graph: &GraphProto) {
    let mut removed = vec![false; plan.steps.len()];
    for p in 0..plan.steps.len() {
        if removed[p]
            || !matches!(
                plan.steps[p].op,
                StepOp::Kernel(Kernel::Dense { .. } | Kernel::Conv { .. })
            )
        {
            continue;
        }
        // Bias, then activation, each while the chain's value has a single reader.
        loop {
            let users = consumers(plan);
            let Some(y) = plan.steps[p].outputs[0] else {
                break;
            };
            let next = match users[y][..] {
                [n] if !removed[n] && internal(plan, &users, y, 1) => n,
                [a, b] if internal(plan, &users, y, 2) => {
                    match silu(plan, graph, &users, y, a, b) {
                        Some((sig, mul)) => {
                            if let StepOp::Kernel(k) = &mut plan.steps[p].op {
                                match k.activation_slot() {
                                    Some(act @ Activation::None) => *act = Activation::Silu,
                                    _ => break,
                                }
                            }
                            plan.steps[p].outputs = plan.steps[mul].outputs.clone();
                            removed[sig] = true;
                            removed[mul] = true;
                            break;
                        }
                        None => break,
                    }
                }
                _ => break,
            };
            if !absorb(plan, graph, p, next, y) {
                break;
            }
            plan.steps[p].outputs = plan.steps[next].outputs.clone();
            removed[next] = true;
        }
    }
    retain_steps(plan, &removed);
}

/// Folds step `next` (reading `y`, the output of `p`) into `p`: a constant per-column bias
/// `Add`, or an activation kernel.
fn absorb(plan: &mut Plan, graph: &GraphProto, p: usize, next: usize, y: ValueId) -> bool {
    let next_step = &plan.steps[next];
    let absorbed = match (op_of(plan, graph, next), &next_step.op) {
        ("Add", _) => {
            let other = next_step
                .inputs
                .iter()
                .flatten()
                .find(|&&i| i != y)
                .copied();
            let out_shape = &plan.values[next_step.outputs[0].unwrap_or(y)].shape;
            // A row bias: `[.., n]` with every other dimension 1, output shape unchanged.
            let row = other.is_some_and(|o| {
                let s = &plan.values[o].shape;
                s.iter().rev().skip(1).all(|&d| d == 1) && s.len() <= out_shape.len()
            });
            match constant(&plan.values, other) {
                Some(b) if row && out_shape == &plan.values[y].shape => Some(Fold::Bias(b)),
                _ => None,
            }
        }
        (_, StepOp::Kernel(Kernel::Unary(UnaryOp::Act(a)))) => Some(Fold::Act(*a)),
        _ => None,
    };
    let StepOp::Kernel(k) = &mut plan.steps[p].op else {
        return false;
    };
    match absorbed {
        Some(Fold::Bias(b)) => k.fuse_bias(b),
        Some(Fold::Act(a)) => match k.activation_slot() {
            Some(act @ Activation::None) => {
                *act = a;
                true
            }
            _ => false,
        },
        None => false,
    }
}

enum Fold {
    Bias(Vec<f32>),
    Act(Activation),
}

/// `y * Sigmoid(y)` read by steps `a` and `b`: the Sigmoid step and the Mul step.
fn silu(
    plan: &Plan,
    graph: &GraphProto,
    users: &[Vec<usize>],
    y: ValueId,
    a: usize,
    b: usize,
) -> Option<(usize, usize)> {
    let (sig, mul) = if op_of(plan, graph, a) == "Sigmoid" {
        (a, b)
    } else {
        (b, a)
    };
    let s = plan.steps[sig].outputs.first().copied().flatten()?;
    let mul_ins: Vec<ValueId> = plan.steps[mul].inputs.iter().flatten().copied().collect();
    let ok = op_of(plan, graph, sig) == "Sigmoid"
        && op_of(plan, graph, mul) == "Mul"
        && matches!(plan.steps[sig].op, StepOp::Kernel(_))
        && (mul_ins == [y, s] || mul_ins == [s, y])
        && internal(plan, users, s, 1)
        && sig < mul;
    ok.then_some((sig, mul))
}
