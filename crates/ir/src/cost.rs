//! Multiply-accumulate counts of compute-heavy operators, from static shapes.
//!
//! Conventions (as in common profilers): Conv: N·Cout·Hout·Wout·(Cin/groups)·Kh·Kw;
//! ConvTranspose: N·Cin·Hin·Win·(Cout/groups)·Kh·Kw; Gemm/MatMul: M·N·K (batched: times the
//! batch). Quantized variants count like their float twins. Other operators count 0.
//!
//! Also the one parameter count ([`parameter_count`]) and model MAC count ([`model_macs`])
//! every report uses.

use std::collections::HashMap;

use crate::attr::NodeAttrs;
use crate::graph::GraphEdit;
use crate::model::Model;
use crate::proto::{GraphProto, NodeProto, TensorProto};
use crate::shape::{self, Dim, TensorType};
use crate::{IrError, Result};

/// Elements of a stored tensor (0 for a negative, invalid dimension).
pub fn tensor_elements(t: &TensorProto) -> u64 {
    t.dims.iter().product::<i64>().max(0) as u64
}

/// Parameters of a graph: the elements of every initializer and of every `Constant`
/// node's tensor, so that folding constants into initializers (or back) leaves the count
/// unchanged; int64 tensors (shapes, axes, indices) are not parameters. BatchNormalization's
/// running statistics count.
pub fn parameter_count(graph: &GraphProto) -> u64 {
    let weights = |t: &&TensorProto| t.data_type != crate::DataType::Int64.code();
    let initializers: u64 = graph
        .initializer
        .iter()
        .filter(weights)
        .map(tensor_elements)
        .sum();
    let constants: u64 = (graph.node.iter())
        .filter(|n| n.op_type == "Constant" && matches!(n.domain.as_str(), "" | "ai.onnx"))
        .flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()))
        .filter(weights)
        .map(tensor_elements)
        .sum();
    initializers + constants
}

/// Multiply-accumulates of one forward pass, with the runtime inputs' shapes: those of
/// `overrides` by name, declared dims otherwise, every symbolic or unknown dimension taken
/// as 1 (one sample). Fails naming the first node whose operand shapes stay unknown.
pub fn model_macs(model: &Model, overrides: &HashMap<String, Vec<usize>>) -> Result<u64> {
    let graph = model.graph();
    let mut fixed = overrides.clone();
    let runtime = graph.runtime_inputs();
    for v in graph
        .input
        .iter()
        .filter(|v| runtime.contains(&v.name.as_str()))
    {
        if let (false, Some(dims)) = (
            fixed.contains_key(&v.name),
            TensorType::from_value_info(v).dims,
        ) {
            let dims = dims
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    _ => 1,
                })
                .collect();
            fixed.insert(v.name.clone(), dims);
        }
    }
    let types = shape::infer(model, &fixed)?;
    let lookup = |name: &str| types.get(name).and_then(TensorType::known_dims);
    graph.node.iter().try_fold(0u64, |total, node| {
        let macs = node_macs(node, &lookup).ok_or_else(|| {
            IrError::Invalid(format!(
                "the shapes of node '{}' ({}) are unknown, so its MACs are; fix the input shapes",
                node.name, node.op_type
            ))
        })?;
        Ok(total.saturating_add(macs))
    })
}

/// MACs of one node, given a lookup from value name to static shape.
/// `None` when a needed shape is unknown.
pub fn node_macs(node: &NodeProto, shape: &dyn Fn(&str) -> Option<Vec<usize>>) -> Option<u64> {
    let input = |i: usize| {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| shape(n))
    };
    let output = || node.output.first().and_then(|n| shape(n));
    let numel = |d: &[usize]| d.iter().map(|&x| x as u64).product::<u64>();
    match node.op_type.as_str() {
        "Conv" | "ConvInteger" => {
            let w = input(1)?;
            Some(numel(&output()?) * numel(w.get(1..)?))
        }
        "QLinearConv" => {
            let w = input(3)?;
            Some(numel(&output()?) * numel(w.get(1..)?))
        }
        "ConvTranspose" => {
            let (x, w) = (input(0)?, input(1)?);
            Some(numel(&x) * numel(w.get(1..)?))
        }
        "Gemm" => {
            let a = input(0)?;
            let trans_a = node.int_or("transA", 0).ok()? != 0;
            let k = if trans_a { *a.first()? } else { *a.get(1)? };
            Some(numel(&output()?) * k as u64)
        }
        "MatMul" | "MatMulInteger" => {
            let a = input(0)?;
            Some(numel(&output()?) * *a.last()? as u64)
        }
        // com.microsoft's 4-bit MatMul: K (input features) is an attribute.
        "MatMulNBits" => {
            let k = node.int("K").ok()??;
            Some(numel(&output()?) * u64::try_from(k).ok()?)
        }
        "QLinearMatMul" => {
            let a = input(0)?;
            Some(numel(&output()?) * *a.last()? as u64)
        }
        _ => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::make;
    use std::collections::HashMap;

    fn node(op: &str, inputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into()],
            ..Default::default()
        }
    }

    fn shapes(pairs: &[(&str, &[usize])]) -> HashMap<String, Vec<usize>> {
        pairs
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect()
    }

    #[test]
    fn conv_macs_follow_the_usual_convention() {
        // LeNet5's first conv: 1x1x28x28 -> 1x32x28x28, 3x3 kernel, 1 input channel.
        let s = shapes(&[
            ("x", &[1, 1, 28, 28]),
            ("w", &[32, 1, 3, 3]),
            ("y", &[1, 32, 28, 28]),
        ]);
        let macs = node_macs(&node("Conv", &["x", "w"]), &|n| s.get(n).cloned());
        assert_eq!(macs, Some(32 * 28 * 28 * 9));
        // Depthwise: groups = C, so each output sees one input channel.
        let s = shapes(&[
            ("x", &[2, 8, 10, 10]),
            ("w", &[8, 1, 3, 3]),
            ("y", &[2, 8, 10, 10]),
        ]);
        let macs = node_macs(&node("Conv", &["x", "w"]), &|n| s.get(n).cloned());
        assert_eq!(macs, Some(2 * 8 * 100 * 9));
    }

    #[test]
    fn gemm_and_matmul_are_m_n_k() {
        let s = shapes(&[("a", &[4, 3136]), ("b", &[200, 3136]), ("y", &[4, 200])]);
        assert_eq!(
            node_macs(&node("Gemm", &["a", "b"]), &|n| s.get(n).cloned()),
            Some(4 * 200 * 3136)
        );
        let mut t = node("Gemm", &["a", "b"]);
        t.attribute.push(make::int("transA", 1));
        let s2 = shapes(&[("a", &[3136, 4]), ("b", &[3136, 200]), ("y", &[4, 200])]);
        assert_eq!(node_macs(&t, &|n| s2.get(n).cloned()), Some(4 * 200 * 3136));
        let s = shapes(&[
            ("a", &[2, 12, 128, 32]),
            ("b", &[2, 12, 32, 128]),
            ("y", &[2, 12, 128, 128]),
        ]);
        assert_eq!(
            node_macs(&node("MatMul", &["a", "b"]), &|n| s.get(n).cloned()),
            Some(2 * 12 * 128 * 128 * 32)
        );
    }

    #[test]
    fn conv_transpose_counts_per_input_pixel() {
        // Each of the 4x5x5 input pixels scatters a (Cout/groups)x3x3 kernel.
        let s = shapes(&[
            ("x", &[1, 4, 5, 5]),
            ("w", &[4, 2, 3, 3]),
            ("y", &[1, 2, 11, 11]),
        ]);
        let n = node("ConvTranspose", &["x", "w"]);
        assert_eq!(node_macs(&n, &|n| s.get(n).cloned()), Some(4 * 25 * 2 * 9));
        // groups = 2: w is [Cin, Cout/groups, kh, kw] = [4, 1, 3, 3].
        let s = shapes(&[
            ("x", &[3, 4, 5, 5]),
            ("w", &[4, 1, 3, 3]),
            ("y", &[3, 2, 11, 11]),
        ]);
        assert_eq!(node_macs(&n, &|n| s.get(n).cloned()), Some(3 * 4 * 25 * 9));
    }

    #[test]
    fn broadcast_and_vector_matmuls_count_each_output_times_k() {
        // [8,128,64] x [64,32]: 8 batches of 128x32 outputs, K = 64.
        let s = shapes(&[("a", &[8, 128, 64]), ("b", &[64, 32]), ("y", &[8, 128, 32])]);
        let m = node("MatMul", &["a", "b"]);
        assert_eq!(
            node_macs(&m, &|n| s.get(n).cloned()),
            Some(8 * 128 * 32 * 64)
        );
        // Broadcast batch dims [2,1] x [3] -> [2,3].
        let s = shapes(&[
            ("a", &[2, 1, 4, 8]),
            ("b", &[3, 8, 5]),
            ("y", &[2, 3, 4, 5]),
        ]);
        assert_eq!(
            node_macs(&m, &|n| s.get(n).cloned()),
            Some(2 * 3 * 4 * 5 * 8)
        );
        // Vector x matrix: [8] x [8,5] -> [5].
        let s = shapes(&[("a", &[8]), ("b", &[8, 5]), ("y", &[5])]);
        assert_eq!(node_macs(&m, &|n| s.get(n).cloned()), Some(5 * 8));
    }

    #[test]
    fn matmul_nbits_counts_k_from_its_attribute() {
        let mut n = node("MatMulNBits", &["x", "packed", "scales"]);
        n.attribute = vec![make::int("K", 64), make::int("N", 16)];
        let s = shapes(&[("x", &[1, 64]), ("y", &[1, 16])]);
        assert_eq!(node_macs(&n, &|v| s.get(v).cloned()), Some(16 * 64));
        n.attribute.clear();
        assert_eq!(node_macs(&n, &|v| s.get(v).cloned()), None);
    }

    #[test]
    fn unknown_shapes_give_none_and_other_ops_zero() {
        let s: HashMap<String, Vec<usize>> = HashMap::new();
        assert_eq!(
            node_macs(&node("Conv", &["x", "w"]), &|n| s.get(n).cloned()),
            None
        );
        assert_eq!(
            node_macs(&node("Relu", &["x"]), &|n| s.get(n).cloned()),
            Some(0)
        );
    }
}
