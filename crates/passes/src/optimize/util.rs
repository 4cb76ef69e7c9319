//! Graph helpers shared by the optimization passes: constant lookup, node evaluation
//! with whittle's operators, aliasing one value to another, and float tensor building.

use std::collections::{HashMap, HashSet};

use whittle_exec::{Executor, Registry, Value};
use whittle_ir::proto::{GraphProto, ModelProto, NodeProto};
use whittle_ir::shape::{infer, TensorType};
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use crate::error::Result;

/// Names of the graph's outputs.
pub fn graph_outputs(graph: &GraphProto) -> HashSet<String> {
    graph.output.iter().map(|v| v.name.clone()).collect()
}

/// Initializers that are not also graph inputs (an initializer listed as an input is a
/// default the caller may override, so it is not a constant).
pub fn constant_initializers(graph: &GraphProto) -> HashMap<String, usize> {
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    (graph.initializer.iter().enumerate())
        .filter(|(_, t)| !inputs.contains(t.name.as_str()))
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// The value of `name` when it is a constant: a non-overridable initializer or the output
/// of a `Constant` node. `None` for anything computed at run time.
pub fn constant(model: &Model, name: &str) -> Result<Option<TensorData>> {
    let graph = model.graph();
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    if name.is_empty() || inputs.contains(name) {
        return Ok(None);
    }
    if let Some(t) = graph.initializer(name) {
        return Ok(Some(TensorData::from_proto(t, None)?));
    }
    let producer = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == name));
    match producer {
        Some(node) if node.op_type == "Constant" && is_default_domain(node) => {
            let ops = Evaluator::new()?;
            let value = ops.eval(model, node, Vec::new())?;
            Ok(value.into_iter().next().map(|v| v.to_data()).transpose()?)
        }
        _ => Ok(None),
    }
}

/// Constant values read as i64 (shapes, axes, permutations).
pub fn constant_ints(model: &Model, name: &str) -> Result<Option<Vec<i64>>> {
    Ok(constant(model, name)?
        .filter(|d| d.dtype().is_integer())
        .map(|d| d.to_i64_vec())
        .transpose()?)
}

/// True for nodes of the default ONNX domain.
pub fn is_default_domain(node: &NodeProto) -> bool {
    node.domain.is_empty() || node.domain == "ai.onnx"
}

/// Runs single nodes with whittle's operator implementations.
pub struct Evaluator {
    exec: Executor,
}

impl Evaluator {
    /// An evaluator (an executor over an empty graph provides the operator context).
    pub fn new() -> Result<Self> {
        let empty = Model::new(ModelProto {
            graph: Some(GraphProto::default()),
            ..Default::default()
        });
        Ok(Evaluator {
            exec: Executor::new(&empty)?,
        })
    }

    /// Whether whittle implements `node`'s operator.
    pub fn supports(node: &NodeProto) -> bool {
        Registry::standard()
            .get(&node.domain, &node.op_type)
            .is_some()
    }

    /// Runs `node` of `model` (for its opset) in inference mode on `inputs`.
    pub fn eval(
        &self,
        model: &Model,
        node: &NodeProto,
        inputs: Vec<Option<Value>>,
    ) -> Result<Vec<Value>> {
        let Some(op) = Registry::standard().get(&node.domain, &node.op_type) else {
            crate::bail!(
                "node '{}': operator {} is not supported",
                node.name,
                node.op_type
            );
        };
        let scope = HashMap::new();
        let ctx = whittle_exec::ops::OpCtx {
            node,
            opset: model.opset(&node.domain).unwrap_or(1),
            training: false,
            seed: None,
            inputs,
            exec: &self.exec,
            scope: &scope,
        };
        Ok(op(&ctx)?)
    }
}

/// Inferred types of the model's values; empty when inference fails, so passes that
/// rely on shapes simply find nothing to do.
pub fn inferred_types(model: &Model) -> HashMap<String, TensorType> {
    infer(model, &HashMap::new()).unwrap_or_default()
}

/// Makes every reader of `old` read `new` instead and deletes the node at `producer`,
/// which defines `old` (whose value equals `new`'s). When `old` is a graph output its
/// name is kept: `new` is renamed to `old` instead, which is possible only when `new`
/// is a node output that is not itself a graph output. Returns false (and changes
/// nothing) when neither way is possible.
pub fn alias(graph: &mut GraphProto, producer: usize, old: &str, new: &str) -> bool {
    let outputs = graph_outputs(graph);
    if outputs.contains(old) {
        let new_is_node_output = graph.node.iter().any(|n| n.output.iter().any(|o| o == new));
        if outputs.contains(new) || !new_is_node_output {
            return false;
        }
        graph.remove_node(producer);
        graph.value_info.retain(|v| v.name != new);
        graph.rename_value(new, old);
    } else {
        graph.remove_node(producer);
        graph.value_info.retain(|v| v.name != old);
        graph.rename_value(old, new);
    }
    true
}

/// Makes node `producer` write the first output of node `replaced` (whose value it now
/// computes) and deletes `replaced`. The producer's old output must have no other reader.
pub fn take_over_output(graph: &mut GraphProto, producer: usize, replaced: usize) {
    let name = graph.node[replaced].output[0].clone();
    let old = std::mem::replace(&mut graph.node[producer].output[0], name);
    graph.value_info.retain(|v| v.name != old);
    graph.remove_node(replaced);
}

/// Uses of each value: how many node input slots (including subgraph reads) name it.
pub fn use_counts(graph: &GraphProto) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for node in &graph.node {
        for name in whittle_ir::graph::node_inputs(node) {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

/// True when `name` is read by exactly one input slot and is not a graph output, so the
/// value may be rewritten in place by its only reader's pass.
pub fn single_use(graph: &GraphProto, counts: &HashMap<String, usize>, name: &str) -> bool {
    counts.get(name) == Some(&1) && !graph.output.iter().any(|o| o.name == name)
}

/// Sets input `slot` of node `at` to the constant `data`: rewrites the initializer in
/// place when only this slot reads it, otherwise adds a fresh initializer.
pub fn set_constant_input(graph: &mut GraphProto, at: usize, slot: usize, data: &TensorData) {
    let current = graph.node[at].input.get(slot).cloned().unwrap_or_default();
    let counts = use_counts(graph);
    let in_place = !current.is_empty()
        && single_use(graph, &counts, &current)
        && constant_initializers(graph).contains_key(&current);
    let name = if in_place {
        graph.initializer.retain(|t| t.name != current);
        current
    } else {
        let base = match current.as_str() {
            "" => format!("{}_const{slot}", graph.node[at].name),
            c => format!("{c}_folded"),
        };
        graph.fresh_name(&base)
    };
    graph.initializer.push(data.to_proto(&name));
    let inputs = &mut graph.node[at].input;
    if inputs.len() <= slot {
        inputs.resize(slot + 1, String::new());
    }
    inputs[slot] = name;
}

/// A float tensor of `dtype` (FLOAT or DOUBLE) from f64 values.
pub fn float_tensor(dtype: DataType, dims: Vec<usize>, values: &[f64]) -> Result<TensorData> {
    Ok(match dtype {
        DataType::Double => TensorData::from_slice(dims, values)?,
        DataType::Float => {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            TensorData::from_slice(dims, &v)?
        }
        other => crate::bail!("cannot build a {other} tensor"),
    })
}

/// True for the float types the arithmetic folds support.
pub fn is_foldable_float(dtype: DataType) -> bool {
    matches!(dtype, DataType::Float | DataType::Double)
}

#[cfg(test)]
pub mod testing {
    //! Builders of small hand-made models for the passes' unit tests.

    use whittle_ir::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
    };
    use whittle_ir::{DataType, Model, TensorData, TensorType};

    /// A node with the given op, inputs and outputs (named after its first output).
    pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: format!("{op}_{}", outputs[0]),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A float value declaration of static shape.
    pub fn value(name: &str, dims: &[usize]) -> ValueInfoProto {
        typed_value(name, DataType::Float, dims)
    }

    /// A value declaration of static shape and element type.
    pub fn typed_value(name: &str, dtype: DataType, dims: &[usize]) -> ValueInfoProto {
        TensorType::known(dtype, dims).to_value_info(name)
    }

    /// A float initializer with values 0.1, 0.2, ... shifted by `offset`.
    pub fn weight(name: &str, dims: &[usize], offset: f32) -> whittle_ir::proto::TensorProto {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| offset + ((i * 7) % 11) as f32 * 0.1 - 0.5)
            .collect();
        TensorData::from_slice(dims.to_vec(), &v)
            .unwrap()
            .to_proto(name)
    }

    /// An i64 initializer.
    pub fn ints(name: &str, v: &[i64]) -> whittle_ir::proto::TensorProto {
        TensorData::from_slice(vec![v.len()], v)
            .unwrap()
            .to_proto(name)
    }

    /// A model (opset 17) of `nodes` with the given inputs, outputs and initializers.
    pub fn model(
        nodes: Vec<NodeProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        initializers: Vec<whittle_ir::proto::TensorProto>,
    ) -> Model {
        Model::new(ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                name: "test".into(),
                node: nodes,
                input: inputs,
                output: outputs,
                initializer: initializers,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// `(op_type, outputs)` of every node, for exact comparisons.
    pub fn ops(model: &Model) -> Vec<(String, Vec<String>)> {
        model
            .graph()
            .node
            .iter()
            .map(|n| (n.op_type.clone(), n.output.clone()))
            .collect()
    }
}
