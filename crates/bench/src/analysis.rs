//! Static figures of a graph at fixed shapes: parameters a node reads, FLOPs from MACs,
//! and peak activation memory by liveness.
//!
//! Conventions: MACs as [`whittle_ir::cost`] counts them (Conv N·Cout·Hout·Wout·(Cin/groups)·Kh·Kw,
//! ConvTranspose N·Cin·Hin·Win·(Cout/groups)·Kh·Kw, Gemm/MatMul M·N·K times the batch,
//! quantized twins alike, every other operator 0). FLOPs = 2·MACs (one multiply and one add
//! per MAC); element-wise work, normalisation, activations and data movement count 0.

use std::collections::{HashMap, HashSet};

use whittle_ir::graph::node_inputs;
use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::GraphEdit;

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
        .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
        .sum()
}

/// Elements of the distinct initializers any node reads.
pub fn total_params(graph: &GraphProto) -> u64 {
    let read: HashSet<String> = graph.node.iter().flat_map(node_inputs).collect();
    graph
        .initializer
        .iter()
        .filter(|t| read.contains(&t.name))
        .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
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
    let mut live: u64 = graph.runtime_inputs().iter().map(|n| bytes(n)).sum();
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
        live += graph.node[i]
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| bytes(o))
            .sum::<u64>();
        peak = peak.max(live);
        live -= dies_at[pos].iter().map(|n| bytes(n)).sum::<u64>();
    }
    peak
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
        assert_eq!(total_params(&g), 8 * 27 + 8);
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
