//! What a model is made of, for the inspect page: its inputs and outputs, operators, and
//! size, parameters and MACs as the pipeline's evaluator measures them.

use std::collections::BTreeMap;

use serde::Serialize;
use whittle_ir::proto::ValueInfoProto;
use whittle_ir::{GraphEdit, Model, TensorType};
use whittle_pipeline::eval::{Evaluator, Metrics};
use whittle_pipeline::{Ctx, SilentObserver};

/// A graph input or output.
#[derive(Debug, Serialize)]
pub struct Port {
    /// Its name.
    pub name: String,
    /// Element type and dimensions, e.g. `float32[N,1,28,28]`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// The inspect page's figures.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The model as given (a path or a zoo spec).
    pub model: String,
    /// Inputs a run must be fed (initializers excluded).
    pub inputs: Vec<Port>,
    /// Outputs.
    pub outputs: Vec<Port>,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Nodes per operator (`domain:Op` outside the default domain).
    pub ops: BTreeMap<String, usize>,
    /// Size, parameters and MACs from the evaluator.
    pub metrics: Metrics,
}

/// Inspects `model`, named `name`.
pub fn inspect(name: &str, model: &Model) -> whittle_pipeline::Result<Inspection> {
    let graph = model.graph();
    let runtime = graph.runtime_inputs();
    let port = |v: &ValueInfoProto| Port {
        name: v.name.clone(),
        ty: TensorType::from_value_info(v).to_string(),
    };
    let mut ops = BTreeMap::new();
    for node in &graph.node {
        let op = match node.domain.as_str() {
            "" | "ai.onnx" => node.op_type.clone(),
            domain => format!("{domain}:{}", node.op_type),
        };
        *ops.entry(op).or_insert(0) += 1;
    }
    let metrics = Evaluator::new()
        .with_cost()
        .evaluate(&Ctx::new(&SilentObserver), model)?;
    Ok(Inspection {
        model: name.to_string(),
        inputs: (graph.input.iter())
            .filter(|v| runtime.contains(&v.name.as_str()))
            .map(port)
            .collect(),
        outputs: graph.output.iter().map(port).collect(),
        nodes: graph.node.len(),
        ops,
        metrics,
    })
}
