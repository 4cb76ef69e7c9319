//! Plans built from static shape inference, without the recording run.
//!
//! When [`whittle_ir::shape::infer`] at a run's input shapes gives every node output a
//! known element type and known dimensions, the [`Recording`] a first, node-by-node run
//! would make is known in advance: the types come from inference, and the values the plan
//! folds (shape arithmetic, `Constant`, nodes reading only constants such as the
//! `DequantizeLinear` of quantized weights) are computed here, node by node, from the
//! constants and the inferred shapes. The first run at new shapes then runs the plan too.
//!
//! Inference is checked, not trusted: a folded node's value must have its inferred type
//! and shape (else no plan is built from inference), and a planned run stops at a candle
//! step whose output differs from it (as for a recorded plan), after which the executor
//! records the plan for those shapes instead ([`super::PlanCache::distrust`]).

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use whittle_ir::proto::{GraphProto, ModelProto, TensorProto, ValueInfoProto};
use whittle_ir::{DataType, Model, TensorType};

use super::build::Recording;
use super::PlanKey;
use crate::executor::{Executor, RunOptions};
use crate::ops::shape::shape_dims;
use crate::ops::OpFn;
use crate::value::Value;

/// Initializers with more elements than this are kept without their data in the model
/// inference reads (it tracks the values of small tensors only).
const SMALL: usize = 4096;

/// The model shape inference reads: the graph with the data of large initializers
/// dropped (their types stay), so keeping it costs little memory.
pub fn shape_model(model: &Model) -> Model {
    let (p, g) = (&model.proto, model.graph());
    let graph = GraphProto {
        node: g.node.clone(),
        name: g.name.clone(),
        initializer: Vec::new(),
        sparse_initializer: g.sparse_initializer.clone(),
        doc_string: String::new(),
        input: g.input.clone(),
        output: g.output.clone(),
        value_info: g.value_info.clone(),
        quantization_annotation: Vec::new(),
        metadata_props: Vec::new(),
    };
    let mut proto = ModelProto {
        ir_version: p.ir_version,
        opset_import: p.opset_import.clone(),
        domain: p.domain.clone(),
        functions: p.functions.clone(),
        graph: Some(graph),
        ..Default::default()
    };
    let graph = proto.graph.get_or_insert_with(Default::default);
    graph.initializer = g
        .initializer
        .iter()
        .map(|t| {
            let numel = t.dims.iter().map(|&d| d.max(0) as usize).product::<usize>();
            if numel <= SMALL {
                t.clone()
            } else {
                TensorProto {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    data_type: t.data_type,
                    ..Default::default()
                }
            }
        })
        .collect();
    Model { proto }
}

/// Replaces the value of initializer `name` in the [`shape_model`] (a small one keeps its
/// data there).
pub fn set_initializer(model: &mut Model, name: &str, value: &Value) {
    let Some(t) = model
        .graph_mut()
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
    else {
        return;
    };
    match value.to_data() {
        Ok(data) if data.numel() <= SMALL => *t = data.to_proto(name),
        _ => {
            *t = TensorProto {
                name: name.to_string(),
                dims: value.shape().iter().map(|&d| d as i64).collect(),
                data_type: value.dtype().code(),
                ..Default::default()
            }
        }
    }
}

/// The recording of a run at `key`'s input shapes, from inference over `shapes` (the
/// [`shape_model`]) and the folded nodes computed from constants; `None` when inference
/// leaves a type or dimension unknown, or a folded value contradicts it.
pub fn recording(
    exec: &Executor,
    shapes: &Model,
    key: &PlanKey,
    order: &[(usize, OpFn)],
    fold: HashSet<String>,
) -> Option<Recording> {
    let overrides: HashMap<String, Vec<usize>> = key
        .inputs
        .iter()
        .map(|(n, _, s)| (n.clone(), s.clone()))
        .collect();
    // Inputs declared without an element type take the fed one.
    let untyped = |vi: &&ValueInfoProto| {
        key.inputs.iter().any(|(n, ..)| *n == vi.name)
            && TensorType::from_value_info(vi).dtype.is_none()
    };
    let typed;
    let shapes = match shapes.graph().input.iter().any(|vi| untyped(&vi)) {
        false => shapes,
        true => {
            let mut m = shapes.clone();
            for (name, dtype, shape) in &key.inputs {
                if let Some(vi) = m.graph_mut().input.iter_mut().find(|v| &v.name == name) {
                    vi.r#type = TensorType::known(*dtype, shape).to_value_info(name).r#type;
                }
            }
            typed = m;
            &typed
        }
    };
    let inferred = whittle_ir::shape::infer(shapes, &overrides).ok()?;
    let mut types = HashMap::new();
    for (name, dtype, shape) in &key.inputs {
        types.insert(name.clone(), (*dtype, shape.clone()));
    }
    for &(i, _) in order {
        for name in exec.node(i).output.iter().filter(|o| !o.is_empty()) {
            let t = inferred.get(name)?;
            types.insert(name.clone(), (t.dtype?, t.known_dims()?));
        }
    }
    let mut folded: HashMap<String, Value> = HashMap::new();
    let opts = RunOptions::default();
    for (pos, &(i, op)) in order.iter().enumerate() {
        let node = exec.node(i);
        let outs: Vec<&String> = node.output.iter().filter(|o| !o.is_empty()).collect();
        if outs.is_empty() || !outs.iter().all(|o| fold.contains(*o)) {
            continue;
        }
        let value_of = |n: &str| folded.get(n).or_else(|| exec.constant(n));
        let x = node.input.first().map(String::as_str).unwrap_or("");
        let values = match node.op_type.as_str() {
            "Shape" | "Size" if value_of(x).is_none() => {
                let dims = &types.get(x)?.1;
                vec![shape_or_size(node, dims)?]
            }
            _ => {
                let mut inputs = Vec::with_capacity(node.input.len());
                for n in &node.input {
                    inputs.push(match n.as_str() {
                        "" => None,
                        n => Some(value_of(n)?.clone()),
                    });
                }
                exec.call_node(node, op, pos, inputs, &opts, &HashMap::new())
                    .ok()?
            }
        };
        for (name, v) in node.output.iter().zip(values) {
            if name.is_empty() {
                continue;
            }
            let (dtype, shape) = types.get(name)?;
            if v.dtype() != *dtype || v.shape() != shape.as_slice() {
                return None;
            }
            folded.insert(name.clone(), v);
        }
    }
    Some(Recording::from_parts(fold, types, folded))
}

/// The value of a `Shape` (with its `start` / `end`) or `Size` node of an input with
/// dimensions `dims`, as the candle operators compute it.
fn shape_or_size(node: &whittle_ir::proto::NodeProto, dims: &[usize]) -> Option<Value> {
    let t = if node.op_type == "Size" {
        Tensor::new(dims.iter().product::<usize>() as i64, &Device::Cpu).ok()?
    } else {
        let v = shape_dims(node, dims).ok()?;
        let n = v.len();
        Tensor::from_vec(v, n, &Device::Cpu).ok()?
    };
    Value::new(t, DataType::Int64).ok()
}
