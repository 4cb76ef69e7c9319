//! What a model is made of: its format versions, inputs and outputs, operators, size,
//! parameters and MACs. `whittle inspect` prints it and the web UI's inspect page shows it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use whittle_ir::cost::{model_macs, parameter_count};
use whittle_ir::proto::tensor_shape_proto::dimension::Value as Dim;
use whittle_ir::proto::{type_proto, ValueInfoProto};
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use crate::error::{Context, Result};
use crate::source::ModelSource;

/// A graph input or output.
#[derive(Debug, Serialize)]
pub struct Port {
    /// Its name.
    pub name: String,
    /// Element type, e.g. `float32` (`?` when the model does not say).
    pub dtype: String,
    /// Dimensions: numbers, symbolic names, or `?` for unknown ones.
    pub shape: Vec<String>,
}

/// Everything an inspection reports.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The model as given: a file path or a zoo spec.
    pub path: String,
    /// The ONNX IR version.
    pub ir_version: i64,
    /// Producer name and version (empty when the model does not say).
    pub producer: String,
    /// Opset version per domain (`ai.onnx` for the default one).
    pub opsets: BTreeMap<String, i64>,
    /// Inputs a run must be fed (initializers excluded).
    pub inputs: Vec<Port>,
    /// Outputs.
    pub outputs: Vec<Port>,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Nodes per operator (`domain:Op` outside the default domain).
    pub ops: BTreeMap<String, usize>,
    /// Trainable-sized parameters ([`whittle_ir::cost::parameter_count`]).
    pub parameters: u64,
    /// Bytes of the initializers' data.
    pub initializer_bytes: u64,
    /// Bytes on disk with external data, or of the encoded model for a zoo spec.
    pub size_bytes: u64,
    /// Multiply-accumulates of one forward pass at the shapes used (symbolic dims as 1).
    pub macs: u64,
}

/// Inspects `model`, loaded from `source`; `shapes` fixes input shapes for the MAC count.
pub fn inspect(
    source: &ModelSource,
    model: &Model,
    shapes: &HashMap<String, Vec<usize>>,
) -> Result<Inspection> {
    let graph = model.graph();
    let runtime = graph.runtime_inputs();
    let mut ops = BTreeMap::new();
    for node in &graph.node {
        *ops.entry(op_key(&node.domain, &node.op_type)).or_insert(0) += 1;
    }
    let initializer_bytes = (graph.initializer.iter())
        .map(|t| TensorData::from_proto(t, None).map(|d| d.byte_len() as u64))
        .sum::<std::result::Result<u64, _>>()
        .context(|| format!("{source}: reading initializers"))?;
    let size_bytes = match source.path() {
        Some(path) => Model::disk_size(path).context(|| path.display().to_string())?,
        None => model.encoded_len() as u64,
    };
    let macs = model_macs(model, shapes)
        .context(|| "estimating MACs (`shape` fixes the inputs)".to_string())?;
    let producer = format!(
        "{} {}",
        model.proto.producer_name, model.proto.producer_version
    );
    Ok(Inspection {
        path: source.to_string(),
        ir_version: model.proto.ir_version,
        producer: producer.trim().to_string(),
        opsets: (model.proto.opset_import.iter())
            .map(|o| (domain_name(&o.domain).to_string(), o.version))
            .collect(),
        inputs: (graph.input.iter())
            .filter(|v| runtime.contains(&v.name.as_str()))
            .map(port)
            .collect(),
        outputs: graph.output.iter().map(port).collect(),
        nodes: graph.node.len(),
        ops,
        parameters: parameter_count(graph),
        initializer_bytes,
        size_bytes,
        macs,
    })
}

/// `ai.onnx` for the default domain's empty name.
fn domain_name(domain: &str) -> &str {
    if domain.is_empty() {
        "ai.onnx"
    } else {
        domain
    }
}

/// `Op` in the default domain, `domain:Op` elsewhere.
fn op_key(domain: &str, op_type: &str) -> String {
    match domain_name(domain) {
        "ai.onnx" => op_type.to_string(),
        domain => format!("{domain}:{op_type}"),
    }
}

fn port(v: &ValueInfoProto) -> Port {
    let unknown = || "?".to_string();
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => (
            DataType::from_code(t.elem_type).map_or_else(unknown, |d| d.to_string()),
            (t.shape.iter().flat_map(|s| &s.dim))
                .map(|d| match &d.value {
                    Some(Dim::DimValue(v)) => v.to_string(),
                    Some(Dim::DimParam(p)) => p.clone(),
                    None => unknown(),
                })
                .collect(),
        ),
        _ => (unknown(), vec![]),
    };
    Port {
        name: v.name.clone(),
        dtype,
        shape,
    }
}
