//! Static figures of a graph at fixed shapes: parameters a node reads, FLOPs from MACs,
//! peak activation memory by liveness, and whether a run at given input shapes fits in
//! the memory available ([`ensure_run_fits`]).
//!
//! Conventions: MACs as [`whittle_ir::cost`] counts them (Conv N·Cout·Hout·Wout·(Cin/groups)·Kh·Kw,
//! ConvTranspose N·Cin·Hin·Win·(Cout/groups)·Kh·Kw, Gemm/MatMul M·N·K times the batch,
//! quantized twins alike, every other operator 0). FLOPs = 2·MACs (one multiply and one add
//! per MAC); element-wise work, normalisation, activations and data movement count 0.

use std::collections::{HashMap, HashSet};

use whittle_ir::graph::node_inputs;
use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::{DataType, GraphEdit, Model, TensorType};

use crate::error::{BenchError, Result};
use crate::inputs::ResolvedInput;

/// FLOPs of a node with `macs` multiply-accumulates.
pub fn flops(macs: u64) -> u64 {
    2 * macs
}

/// Elements of the initializers `node` reads (each counted once per node).
pub fn node_params(graph: &GraphProto, node: &NodeProto) -> u64 {
    let read: HashSet<&str> = node.input.iter().map(String::as_str).collect();
    graph
        .initializer
        .iter()
        .filter(|t| read.contains(t.name.as_str()))
        .map(whittle_ir::cost::tensor_elements)
        .sum()
}

/// Peak bytes of live activations when the nodes run in `order`: runtime inputs are live
/// from the start, a node's outputs from its step, and a value dies after its last reader
/// (graph outputs live to the end). At each step the node's inputs and outputs are live
/// together. Initializers are not activations and are not counted.
pub fn peak_activation_bytes(
    graph: &GraphProto,
    order: &[usize],
    bytes: &dyn Fn(&str) -> u64,
) -> u64 {
    let mut last_read: HashMap<String, usize> = HashMap::new();
    for (pos, &i) in order.iter().enumerate() {
        for name in node_inputs(&graph.node[i]) {
            last_read.insert(name, pos);
        }
    }
    let kept: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut dies_at: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    let sum = |sizes: &mut dyn Iterator<Item = u64>| sizes.fold(0u64, u64::saturating_add);
    let mut live: u64 = sum(&mut graph.runtime_inputs().iter().map(|n| bytes(n)));
    let mut peak = live;
    let activations = graph
        .runtime_inputs()
        .into_iter()
        .map(str::to_string)
        .chain(order.iter().flat_map(|&i| graph.node[i].output.clone()))
        .filter(|n| !n.is_empty() && !kept.contains(n.as_str()));
    let born: HashMap<String, usize> = order
        .iter()
        .enumerate()
        .flat_map(|(pos, &i)| graph.node[i].output.iter().map(move |o| (o.clone(), pos)))
        .collect();
    for name in activations {
        let end = last_read
            .get(&name)
            .or(born.get(&name))
            .copied()
            .unwrap_or(0);
        dies_at[end].push(name);
    }
    for (pos, &i) in order.iter().enumerate() {
        let born = sum(&mut graph.node[i]
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| bytes(o)));
        live = live.saturating_add(born);
        peak = peak.max(live);
        live = live.saturating_sub(sum(&mut dies_at[pos].iter().map(|n| bytes(n))));
    }
    peak
}

/// Bytes of a `dtype` tensor of shape `dims`; `u64::MAX` when that overflows.
pub fn value_bytes(dtype: DataType, dims: &[usize]) -> u64 {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| dtype.storage_bytes(n))
        .map_or(u64::MAX, |b| b as u64)
}

/// Checks, before any input is allocated, that one run of `model` at `inputs` fits in the
/// memory available ([`whittle_ir::memory::ensure_fits`]): its inputs and activations at
/// their peak, at the shapes inference gives (values it leaves open count 0, so this is a
/// lower bound). Returns the inferred types of the graph's values.
pub fn ensure_run_fits(
    model: &Model,
    inputs: &[ResolvedInput],
) -> Result<HashMap<String, TensorType>> {
    let overrides = inputs
        .iter()
        .map(|i| (i.name.clone(), i.dims.clone()))
        .collect();
    let inferred = whittle_ir::shape::infer(model, &overrides)?;
    let bytes = |name: &str| match inferred.get(name).map(|t| (t.dtype, t.known_dims())) {
        Some((Some(dtype), Some(dims))) => value_bytes(dtype, &dims),
        _ => 0,
    };
    let graph = model.graph();
    let order = graph.topological_order()?;
    let peak = peak_activation_bytes(graph, &order, &bytes);
    let input_bytes = inputs
        .iter()
        .map(|i| tensor_bytes(&i.dims, i.dtype.size().unwrap_or(1)))
        .try_fold(0u128, |sum, b| b.map(|b| sum + b));
    let needed = input_bytes.map(|i| i.max(u128::from(peak)));
    let shapes: Vec<String> = inputs
        .iter()
        .map(|i| format!("'{}' {:?}", i.name, i.dims))
        .collect();
    let what = format!(
        "one run with input {} (inputs and activations at their peak)",
        shapes.join(", ")
    );
    ensure_fits(needed, &what)
        .map_err(|e| BenchError::Invalid(format!("{e}; lower `batch` or the `shapes` sizes")))?;
    Ok(inferred)
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle_ir::proto::{TensorProto, ValueInfoProto};

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn port(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            ..Default::default()
        }
    }

    /// x -> a = Conv(x, w) -> b = Relu(a) -> c = Add(b, a) -> y = Relu(c); dead = Shape(x).
    fn graph() -> GraphProto {
        GraphProto {
            node: vec![
                node("Conv", &["x", "w", "bias"], &["a"]),
                node("Shape", &["x"], &["dead"]),
                node("Relu", &["a"], &["b"]),
                node("Add", &["b", "a"], &["c"]),
                node("Relu", &["c"], &["y"]),
            ],
            initializer: vec![
                TensorProto {
                    name: "w".into(),
                    dims: vec![8, 3, 3, 3],
                    ..Default::default()
                },
                TensorProto {
                    name: "bias".into(),
                    dims: vec![8],
                    ..Default::default()
                },
                TensorProto {
                    name: "unused".into(),
                    dims: vec![100],
                    ..Default::default()
                },
            ],
            input: vec![port("x")],
            output: vec![port("y")],
            ..Default::default()
        }
    }

    #[test]
    fn params_count_the_initializers_read() {
        let g = graph();
        assert_eq!(node_params(&g, &g.node[0]), 8 * 27 + 8);
        assert_eq!(node_params(&g, &g.node[2]), 0);
        assert_eq!(flops(1000), 2000);
    }

    #[test]
    fn peak_follows_liveness() {
        let g = graph();
        let sizes: HashMap<&str, u64> = [
            ("x", 100),
            ("a", 1000),
            ("dead", 8),
            ("b", 1000),
            ("c", 1000),
            ("y", 1000),
        ]
        .into_iter()
        .collect();
        let bytes = |n: &str| sizes.get(n).copied().unwrap_or(0);
        // Step by step: x 100 | +a 1100 | +dead 1108, x and dead die -> 1000 | +b 2000 |
        // +c 3000, a and b die -> 1000 | +y 2000. Peak 3000 (a, b, c live at Add).
        assert_eq!(peak_activation_bytes(&g, &[0, 1, 2, 3, 4], &bytes), 3000);
    }
}
