//! `constant-folding`: every node whose inputs are all constants (initializers that are
//! not graph inputs, `Constant` nodes, earlier folded values) is evaluated with whittle's
//! operators and replaced by an initializer. `Shape` and `Size` of a value whose shape is
//! fully static (shape inference with the model's declared inputs; symbolic sizes are
//! never fixed) fold too, so shape-computing subgraphs disappear.
//!
//! Never folded: nondeterministic operators ([`NONDETERMINISTIC`]), nodes with subgraphs,
//! operators whittle does not implement or fails to evaluate, nodes that produce a graph
//! output (so graph outputs stay node outputs), and size blow-ups: a node is not folded
//! when one of its outputs has more than [`MAX_GROWN_ELEMENTS`] elements *and* more
//! elements than all its inputs together (e.g. `ConstantOfShape`, `Expand` or `Tile`
//! making a large tensor from a small one): such nodes stay and are computed at run time.
//! Where shape inference knows the output's size, a blow-up is not even evaluated; where it
//! does not, the operator refuses an output larger than the memory available.

use std::collections::{HashMap, HashSet};

use whittle_exec::Value;
use whittle_ir::graph::node_inputs;
use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{GraphEdit, Model, NodeAttrs, TensorData};

use super::util::{constant_initializers, graph_outputs, inferred_types, Evaluator};
use super::{Pass, PassStats};
use crate::error::Result;

/// Operators whose result is random, so folding would freeze one sample.
pub const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// Outputs above this many elements fold only when not larger than the node's inputs.
pub const MAX_GROWN_ELEMENTS: usize = 1 << 20;

/// The `constant-folding` pass.
pub struct ConstantFolding;

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        "constant-folding"
    }

    fn description(&self) -> &'static str {
        "evaluate nodes with constant inputs (and Shape of static shapes) into initializers"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let values = evaluate_constants(model)?;
        let graph = model.graph_mut();
        let outputs = graph_outputs(graph);
        let removed: HashSet<usize> = (graph.node.iter().enumerate())
            .filter(|(_, n)| {
                let outs = || n.output.iter().filter(|o| !o.is_empty());
                outs().all(|o| values.contains_key(o)) && !outs().any(|o| outputs.contains(o))
            })
            .map(|(i, _)| i)
            .collect();
        if removed.is_empty() {
            return Ok(PassStats::default());
        }
        let mut read_by_removed = HashSet::new();
        let mut kept = Vec::new();
        for (i, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
            if removed.contains(&i) {
                read_by_removed.extend(node_inputs(&node));
            } else {
                kept.push(node);
            }
        }
        graph.node = kept;
        let mut still_read: HashSet<String> = graph.node.iter().flat_map(node_inputs).collect();
        still_read.extend(outputs);
        let constants = constant_initializers(graph);
        graph.initializer.retain(|t| {
            !(read_by_removed.contains(&t.name)
                && !still_read.contains(&t.name)
                && constants.contains_key(&t.name))
        });
        let mut frontier: Vec<&String> =
            values.keys().filter(|v| still_read.contains(*v)).collect();
        frontier.sort();
        for name in frontier {
            if graph.initializer(name).is_none() {
                graph
                    .initializer
                    .push(values[name].to_data()?.to_proto(name));
            }
        }
        Ok(PassStats {
            changes: removed.len(),
        })
    }
}

/// Values of every node output that can be computed without running the model.
fn evaluate_constants(model: &Model) -> Result<HashMap<String, Value>> {
    let graph = model.graph();
    let types = inferred_types(model);
    let initializers = constant_initializers(graph);
    let evaluator = Evaluator::new()?;
    let mut env: HashMap<String, Value> = HashMap::new();
    let mut folded: HashMap<String, Value> = HashMap::new();
    for i in graph.topological_order()? {
        let node = &graph.node[i];
        if !is_foldable_op(node) {
            continue;
        }
        if let Some(v) = static_shape_value(node, &types)? {
            folded.insert(node.output[0].clone(), v);
            continue;
        }
        let mut inputs = Vec::with_capacity(node.input.len());
        let mut all_constant = true;
        for name in &node.input {
            if name.is_empty() {
                inputs.push(None);
            } else if let Some(v) = folded.get(name).or_else(|| env.get(name)) {
                inputs.push(Some(v.clone()));
            } else if let Some(&at) = initializers.get(name) {
                let data = TensorData::from_proto(&graph.initializer[at], None)?;
                let v = Value::try_from(&data)?;
                env.insert(name.clone(), v.clone());
                inputs.push(Some(v));
            } else {
                all_constant = false;
                break;
            }
        }
        if !all_constant {
            continue;
        }
        let input_elements: usize = inputs.iter().flatten().map(Value::numel).sum();
        let grows = |n: usize| n > MAX_GROWN_ELEMENTS && n > input_elements;
        // Planned sizes first: a blow-up that shape inference foresees is never evaluated.
        let planned = node
            .output
            .iter()
            .filter_map(|o| types.get(o)?.known_dims());
        if planned
            .map(|d| d.iter().try_fold(1usize, |n, &x| n.checked_mul(x)))
            .any(|n| n.is_none_or(grows))
        {
            continue;
        }
        // Evaluation failures (an operator whittle cannot run on these types, an output
        // larger than the memory available) leave the node.
        let Ok(outs) = evaluator.eval(model, node, inputs) else {
            continue;
        };
        if outs.iter().any(|v| grows(v.numel())) {
            continue;
        }
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                folded.insert(name.clone(), v);
            }
        }
    }
    Ok(folded)
}

fn is_foldable_op(node: &NodeProto) -> bool {
    let has_subgraph = node
        .attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty());
    !has_subgraph && !NONDETERMINISTIC.contains(&node.op_type.as_str()) && Evaluator::supports(node)
}

/// The output of a `Shape` or `Size` node whose input shape is fully static.
fn static_shape_value(
    node: &NodeProto,
    types: &HashMap<String, TensorType>,
) -> Result<Option<Value>> {
    let dims = || {
        node.input
            .first()
            .and_then(|x| types.get(x))
            .and_then(TensorType::known_dims)
    };
    let data = match node.op_type.as_str() {
        "Shape" => {
            let Some(dims) = dims() else { return Ok(None) };
            let rank = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clamp(node.int_or("start", 0)?);
            let end = clamp(node.int_or("end", rank)?).max(start);
            let v: Vec<i64> = dims[start..end].iter().map(|&d| d as i64).collect();
            TensorData::from_slice(vec![v.len()], &v)?
        }
        "Size" => {
            let Some(dims) = dims() else { return Ok(None) };
            TensorData::scalar(dims.iter().product::<usize>() as i64)
        }
        _ => return Ok(None),
    };
    Ok(Some(Value::try_from(&data)?))
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;
    use whittle_ir::attr::make;
    use whittle_ir::DataType;

    #[test]
    fn constant_subgraphs_fold_and_runtime_nodes_stay() {
        let mut shape = node("Shape", &["x"], &["s"]);
        shape.attribute.push(make::int("start", 1));
        let mut c = node("Constant", &[], &["two"]);
        c.attribute.push(make::tensor(
            "value",
            TensorData::from_slice(vec![2], &[2.0f32, 2.0])
                .unwrap()
                .to_proto(""),
        ));
        let mut m = model(
            vec![
                c,
                node("Mul", &["w", "two"], &["w2"]),
                node("Add", &["x", "w2"], &["a"]),
                shape,
                node("Expand", &["a", "s"], &["y"]),
                node("RandomNormalLike", &["w"], &["noise"]),
            ],
            vec![value("x", &[3, 2])],
            vec![value("y", &[3, 2]), value("noise", &[2])],
            vec![weight("w", &[2], 0.0)],
        );
        let stats = ConstantFolding.run(&mut m).unwrap();
        assert_eq!(stats.changes, 3, "Constant, Mul and Shape fold");
        assert_eq!(m.op_types(), ["Add", "Expand", "RandomNormalLike"]);
        let g = m.graph();
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w", "s", "w2"]);
        let w = TensorData::from_proto(&g.initializer[0], None)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let w2 = TensorData::from_proto(&g.initializer[2], None)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(w2, vec![w[0] * 2.0, w[1] * 2.0]);
        let s = TensorData::from_proto(&g.initializer[1], None)
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(s, vec![2]);
    }

    #[test]
    fn a_planned_blow_up_is_not_evaluated() {
        // ConstantOfShape of 2^31 int64 values: 16 GiB from a few bytes. Shape inference
        // knows the size, so folding never allocates it.
        let mut fill = node("ConstantOfShape", &["shape"], &["big"]);
        fill.attribute.push(make::tensor(
            "value",
            TensorData::from_slice(vec![1], &[7i64])
                .unwrap()
                .to_proto(""),
        ));
        let mut m = model(
            vec![fill, node("Add", &["x", "big"], &["y"])],
            vec![typed_value("x", DataType::Int64, &[1])],
            vec![typed_value("y", DataType::Int64, &[1 << 31])],
            vec![ints("shape", &[1 << 31])],
        );
        let started = std::time::Instant::now();
        assert_eq!(ConstantFolding.run(&mut m).unwrap().changes, 0);
        assert_eq!(m.op_types(), ["ConstantOfShape", "Add"]);
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs_f64() < 1.0, "took {elapsed:?}");
    }

    #[test]
    fn large_expansions_and_symbolic_shapes_stay() {
        let mut cast = node("Cast", &["s"], &["sf"]);
        cast.attribute.push(make::int("to", 1));
        let mut symbolic = value("xs", &[1, 3]);
        if let Some(whittle_ir::proto::type_proto::Value::TensorType(t)) =
            symbolic.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape.as_mut().unwrap().dim[0].value =
                Some(whittle_ir::proto::tensor_shape_proto::dimension::Value::DimParam("n".into()));
        }
        let mut m = model(
            vec![
                node("ConstantOfShape", &["big"], &["zeros"]),
                node("Add", &["x", "zeros"], &["y"]),
                node("Shape", &["xs"], &["s"]),
                cast,
            ],
            vec![value("x", &[2048, 1024]), symbolic],
            vec![value("y", &[2048, 1024]), value("sf", &[2])],
            vec![ints("big", &[2048, 1024])],
        );
        assert_eq!(ConstantFolding.run(&mut m).unwrap().changes, 0);
        assert_eq!(m.op_types(), ["ConstantOfShape", "Add", "Shape", "Cast"]);
    }
}
