//! Which nodes get quantized, and why every other node stays float.

use std::collections::HashMap;

use serde::Serialize;
use whittle_ir::graph::{node_display_name, GraphEdit};
use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::{DataType, Model, NodeAttrs};

use super::config::{Format, QuantConfig, CHAIN_OP_TYPES, DEFAULT_OP_TYPES};
use crate::{bail, Result};

/// Operators that already work on quantized integers.
pub const QUANTIZED_OPS: [&str; 7] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
];

/// Operators whose output takes its input's scale (values only move, never change).
pub const SHARED_SCALE_OPS: [&str; 3] = ["MaxPool", "Relu", "Flatten"];

/// A node left in float and the reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FloatNode {
    /// Node name (or `op_type#index` for unnamed nodes).
    pub name: String,
    /// Operator type.
    pub op_type: String,
    /// Why it stays float.
    pub reason: String,
}

/// A node to quantize.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// Index in `graph.node`.
    pub node: usize,
    /// Display name.
    pub name: String,
    /// Operator type.
    pub op_type: String,
    /// Float activation inputs to quantize.
    pub activations: Vec<String>,
    /// The weight initializer and its channel axis (Conv, Gemm, MatMul with a constant B).
    pub weight: Option<(String, usize)>,
    /// The bias initializer (Conv input 2, Gemm input C when 1-D).
    pub bias: Option<String>,
}

/// The nodes to quantize and those kept float.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    /// Quantized nodes, in graph order.
    pub targets: Vec<Target>,
    /// Float nodes with reasons.
    pub float_nodes: Vec<FloatNode>,
    /// Nodes that were already quantized in the input model.
    pub already_quantized: usize,
}

/// Whether weights need constant initializers (dynamic mode) or also accept activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightSource {
    /// Only initializers (dynamic quantization).
    Initializer,
    /// Initializers or activations (static quantization).
    Any,
}

/// Decides, for every node, whether it is quantized.
pub fn plan(model: &Model, cfg: &QuantConfig, weights: WeightSource) -> Result<Plan> {
    check_op_types(cfg, weights)?;
    let g = model.graph();
    let float_types = float_value_types(model);
    let producers = g.producers();
    let mut out = Plan::default();
    for (i, node) in g.node.iter().enumerate() {
        let name = node_display_name(node, i);
        let reason = match classify(g, node, &name, cfg, weights, &float_types, &producers)? {
            Ok(mut t) => {
                t.node = i;
                t.name = name;
                out.targets.push(t);
                continue;
            }
            Err(reason) => reason,
        };
        if QUANTIZED_OPS.contains(&node.op_type.as_str()) {
            out.already_quantized += 1;
        }
        out.float_nodes.push(FloatNode {
            name,
            op_type: node.op_type.clone(),
            reason,
        });
    }
    check_exclude(g, &cfg.exclude)?;
    Ok(out)
}

/// Whether `exclude` names node `i` (by its [`node_display_name`]).
pub fn is_excluded(node: &NodeProto, i: usize, exclude: &[String]) -> bool {
    !exclude.is_empty() && exclude.contains(&node_display_name(node, i))
}

/// Fails on the first name of `exclude` that labels no node of `graph` (a typo would
/// otherwise quantize the layer it meant to keep).
pub fn check_exclude(graph: &GraphProto, exclude: &[String]) -> Result<()> {
    for ex in exclude {
        if !graph
            .node
            .iter()
            .enumerate()
            .any(|(i, n)| &node_display_name(n, i) == ex)
        {
            bail!("`exclude` names node '{ex}', which is not in the model");
        }
    }
    Ok(())
}

/// Fails on an operator type of `cfg.op_types` that the chosen layout cannot quantize:
/// dynamic mode and the QOperator format take Conv, Gemm and MatMul; QDQ also the
/// [`CHAIN_OP_TYPES`].
pub fn check_op_types(cfg: &QuantConfig, weights: WeightSource) -> Result<()> {
    let chain = cfg.format == Format::Qdq && weights == WeightSource::Any;
    let allowed: Vec<&str> = DEFAULT_OP_TYPES
        .iter()
        .chain(if chain { &CHAIN_OP_TYPES[..] } else { &[] })
        .copied()
        .collect();
    if let Some(bad) = cfg.op_types.iter().find(|t| !allowed.contains(&t.as_str())) {
        let layout = match (weights, cfg.format) {
            (WeightSource::Initializer, _) => "dynamic mode",
            (_, Format::QOperator) => "the qoperator format",
            (_, Format::Qdq) => "the qdq format",
        };
        bail!(
            "`op_types`: '{bad}' is not an operator type {layout} quantizes (it takes {})",
            allowed.join(", ")
        );
    }
    Ok(())
}

/// Element type of every value whose type is known (inputs, initializers, value_info,
/// outputs), by shape inference.
fn float_value_types(model: &Model) -> HashMap<String, DataType> {
    let mut types: HashMap<String, DataType> = whittle_ir::shape::infer(model, &HashMap::new())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, t)| Some((k, t.dtype?)))
                .collect()
        })
        .unwrap_or_default();
    for init in &model.graph().initializer {
        if let Some(dt) = DataType::from_code(init.data_type) {
            types.insert(init.name.clone(), dt);
        }
    }
    types
}

type Decision = std::result::Result<Target, String>;

#[allow(clippy::too_many_arguments)]
fn classify(
    g: &GraphProto,
    node: &NodeProto,
    label: &str,
    cfg: &QuantConfig,
    weights: WeightSource,
    types: &HashMap<String, DataType>,
    producers: &HashMap<String, usize>,
) -> Result<Decision> {
    let op = node.op_type.as_str();
    if QUANTIZED_OPS.contains(&op) {
        return Ok(Err("already quantized in the input model".into()));
    }
    if !node.domain.is_empty() && node.domain != "ai.onnx" {
        return Ok(Err(format!("operator of domain '{}'", node.domain)));
    }
    if !cfg.op_types.iter().any(|t| t == op) {
        return Ok(Err(format!("op type {op} is not selected (`op_types`)")));
    }
    if cfg.exclude.iter().any(|e| e == label) {
        return Ok(Err("excluded by name (`exclude`)".into()));
    }
    let from_dq = node.input.iter().any(|x| {
        producers
            .get(x)
            .is_some_and(|&p| g.node[p].op_type == "DequantizeLinear")
    });
    if from_dq {
        return Ok(Err("already quantized (reads a DequantizeLinear)".into()));
    }
    let is_float = |x: &String| types.get(x).copied() == Some(DataType::Float);
    if let Some(x) = node.input.iter().find(|x| !x.is_empty() && !is_float(x)) {
        let t = types
            .get(x)
            .map_or("unknown".to_string(), |t| t.to_string());
        return Ok(Err(format!("input '{x}' is {t}, not float32")));
    }
    let is_init = |x: &String| g.initializer(x).is_some();
    let target = |activations: Vec<String>, weight, bias| Target {
        node: 0,
        name: String::new(),
        op_type: op.to_string(),
        activations,
        weight,
        bias,
    };
    let inputs = &node.input;
    Ok(match op {
        "Conv" | "Gemm" | "MatMul" => {
            let Some(axis) = weight_axis(node, g)? else {
                return Ok(Err(weight_shape_reason(node)));
            };
            let (a, b) = (inputs[0].clone(), inputs[1].clone());
            let bias = inputs.get(2).filter(|c| is_bias(g, c)).cloned();
            if op == "Gemm" && inputs.get(2).is_some_and(|c| !c.is_empty()) && bias.is_none() {
                return Ok(Err("Gemm's C is not a constant 1-D bias".into()));
            }
            if op == "Gemm" && gemm_is_unusual(node)? {
                return Ok(Err(
                    "Gemm with transA, alpha or beta other than 0, 1, 1".into()
                ));
            }
            if is_init(&a) {
                return Ok(Err("the first input is a constant".into()));
            }
            match (is_init(&b), weights) {
                (true, _) => Ok(target(vec![a], Some((b, axis)), bias)),
                (false, WeightSource::Initializer) => {
                    Err("both inputs are activations (dynamic mode quantizes weights)".into())
                }
                (false, WeightSource::Any) if op == "MatMul" => Ok(target(vec![a, b], None, None)),
                (false, WeightSource::Any) => Err("weight is not a constant initializer".into()),
            }
        }
        _ if cfg.format == Format::QOperator => Err(format!(
            "no standard ONNX integer operator for {op} (QOperator format)"
        )),
        _ if weights == WeightSource::Initializer => {
            Err("dynamic mode quantizes only Conv, Gemm and MatMul".into())
        }
        _ => {
            let acts: Vec<String> = inputs
                .iter()
                .filter(|x| !x.is_empty() && !is_init(x))
                .cloned()
                .collect();
            if acts.is_empty() {
                return Ok(Err("no activation input".into()));
            }
            let acts = if matches!(op, "Add" | "Mul" | "Concat") {
                acts
            } else {
                acts.into_iter().take(1).collect()
            };
            Ok(target(acts, None, None))
        }
    })
}

fn weight_shape_reason(node: &NodeProto) -> String {
    format!(
        "{} weight shape is not supported (rank or axis)",
        node.op_type
    )
}

fn gemm_is_unusual(node: &NodeProto) -> Result<bool> {
    Ok(node.int_or("transA", 0)? != 0
        || node.float_or("alpha", 1.0)? != 1.0
        || node.float_or("beta", 1.0)? != 1.0)
}

/// Whether `c` is a constant 1-D bias (Conv: [M]; Gemm: [N]).
fn is_bias(g: &GraphProto, c: &str) -> bool {
    g.initializer(c).is_some_and(|t| t.dims.len() == 1)
}

/// The per-channel axis of the weight (input 1): Conv 0, Gemm 0 with transB else 1,
/// MatMul the last axis. `None` when the weight has an unusable rank.
pub fn weight_axis(node: &NodeProto, g: &GraphProto) -> Result<Option<usize>> {
    let rank = g
        .initializer(&node.input[1])
        .map(|t| t.dims.len())
        .unwrap_or(2);
    Ok(match node.op_type.as_str() {
        "Conv" if rank >= 3 => Some(0),
        "Gemm" if rank == 2 => Some(if node.int_or("transB", 0)? != 0 { 0 } else { 1 }),
        "MatMul" if rank >= 2 => Some(rank - 1),
        _ => None,
    })
}
