//! `eliminate-identity`: removes `Identity` nodes and inference-mode `Dropout` nodes
//! (no `training_mode` input, or a constant false one; the mask output unused), making
//! their readers read the input directly. Graph output names never change: when the
//! removed node's output is a graph output, the producer of its input is renamed to it
//! instead, and the node stays when that is impossible (its input is a graph input, an
//! initializer or another graph output).

use std::collections::HashMap;

use whittle_ir::proto::NodeProto;
use whittle_ir::Model;

use super::util::{alias, constant, graph_outputs, is_default_domain, use_counts};
use super::{Pass, PassStats};
use crate::error::Result;

/// The `eliminate-identity` pass.
pub struct EliminateIdentity;

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate-identity"
    }

    fn description(&self) -> &'static str {
        "remove Identity and inference-mode Dropout nodes"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let mut changes = 0;
        let mut skip = 0;
        while let Some(at) = next_removable(model, skip)? {
            let node = &model.graph().node[at];
            let (old, new) = (node.output[0].clone(), node.input[0].clone());
            if alias(model.graph_mut(), at, &old, &new) {
                changes += 1;
            } else {
                skip = at + 1;
            }
        }
        Ok(PassStats { changes })
    }
}

/// Index of the first node at or after `from` that passes its input through unchanged.
fn next_removable(model: &Model, from: usize) -> Result<Option<usize>> {
    let graph = model.graph();
    let counts = use_counts(graph);
    for (i, node) in graph.node.iter().enumerate().skip(from) {
        if is_pass_through(model, node, &counts)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn is_pass_through(
    model: &Model,
    node: &NodeProto,
    counts: &HashMap<String, usize>,
) -> Result<bool> {
    let simple = is_default_domain(node)
        && node.input.first().is_some_and(|i| !i.is_empty())
        && node.output.first().is_some_and(|o| !o.is_empty());
    if !simple {
        return Ok(false);
    }
    match node.op_type.as_str() {
        "Identity" => Ok(true),
        "Dropout" => {
            let outputs = graph_outputs(model.graph());
            let mask_unused = node
                .output
                .get(1)
                .is_none_or(|m| m.is_empty() || (!counts.contains_key(m) && !outputs.contains(m)));
            let inference = match node.input.get(2).filter(|n| !n.is_empty()) {
                None => true,
                Some(mode) => constant(model, mode)?
                    .map(|d| d.to_i64_vec())
                    .transpose()?
                    .is_some_and(|v| v.iter().all(|&x| x == 0)),
            };
            Ok(mask_unused && inference)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;
    use whittle_ir::TensorData;

    #[test]
    fn identities_and_inference_dropout_go() {
        let mut m = model(
            vec![
                node("Identity", &["x"], &["a"]),
                node("Relu", &["a"], &["b"]),
                node("Dropout", &["b"], &["c"]),
                node("Neg", &["c"], &["d"]),
                node("Identity", &["d"], &["y"]),
                node("Identity", &["x"], &["z"]),
            ],
            vec![value("x", &[3])],
            vec![value("y", &[3]), value("z", &[3])],
            vec![],
        );
        let stats = EliminateIdentity.run(&mut m).unwrap();
        assert_eq!(stats.changes, 3);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ops(&m),
            vec![
                ("Relu".into(), s(&["b"])),
                ("Neg".into(), s(&["y"])),
                ("Identity".into(), s(&["z"])),
            ],
            "graph output z is an identity of the graph input, so it stays"
        );
        assert_eq!(m.graph().node[0].input, s(&["x"]));
        assert_eq!(m.graph().node[1].input, s(&["b"]));
    }

    #[test]
    fn training_dropout_and_used_masks_stay() {
        let t = TensorData::from_slice(vec![], &[true])
            .unwrap()
            .to_proto("train");
        let mut m = model(
            vec![
                node("Dropout", &["x", "", "train"], &["a"]),
                node("Dropout", &["a"], &["b", "mask"]),
                node("Relu", &["b"], &["y"]),
            ],
            vec![value("x", &[3])],
            vec![value("y", &[3]), value("mask", &[3])],
            vec![t],
        );
        assert_eq!(EliminateIdentity.run(&mut m).unwrap().changes, 0);
        assert_eq!(m.op_types(), ["Dropout", "Dropout", "Relu"]);
    }
}
