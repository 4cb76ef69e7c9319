//! `dead-code`: removes nodes whose outputs reach no graph output, initializers nothing
//! reads, and `value_info` entries of values that no longer exist (or are listed twice).
//! Graph inputs are kept even when unused: they are the model's interface.

use std::collections::HashSet;

use whittle_ir::graph::node_inputs;
use whittle_ir::{GraphEdit, Model};

use super::{Pass, PassStats};
use crate::error::Result;

/// The `dead-code` pass.
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }

    fn description(&self) -> &'static str {
        "remove dead nodes, unused initializers and stale value_info (graph inputs are kept)"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let graph = model.graph_mut();
        let order = graph.topological_order()?;
        let mut live: HashSet<String> = graph.output.iter().map(|v| v.name.clone()).collect();
        let mut keep = vec![false; graph.node.len()];
        for &i in order.iter().rev() {
            let node = &graph.node[i];
            if node.output.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(node_inputs(node));
            }
        }
        let nodes_before = graph.node.len();
        let mut flags = keep.into_iter();
        graph.node.retain(|_| flags.next().unwrap_or(true));
        let mut changes = nodes_before - graph.node.len();

        let inputs: HashSet<String> = graph.input.iter().map(|v| v.name.clone()).collect();
        let inits_before = graph.initializer.len();
        graph
            .initializer
            .retain(|t| live.contains(&t.name) || inputs.contains(&t.name));
        changes += inits_before - graph.initializer.len();

        let mut defined: HashSet<String> = inputs;
        defined.extend(graph.initializer.iter().map(|t| t.name.clone()));
        defined.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
        let infos_before = graph.value_info.len();
        let mut seen = HashSet::new();
        graph
            .value_info
            .retain(|v| defined.contains(&v.name) && seen.insert(v.name.clone()));
        changes += infos_before - graph.value_info.len();
        Ok(PassStats { changes })
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;

    #[test]
    fn removes_dead_nodes_initializers_and_value_info() {
        let mut m = model(
            vec![
                node("Add", &["x", "w"], &["a"]),
                node("Mul", &["x", "unused_w"], &["dead"]),
                node("Relu", &["dead"], &["dead2"]),
                node("Relu", &["a"], &["y"]),
            ],
            vec![value("x", &[2]), value("spare", &[2])],
            vec![value("y", &[2])],
            vec![weight("w", &[2], 0.0), weight("unused_w", &[2], 1.0)],
        );
        m.graph_mut().value_info = vec![value("a", &[2]), value("dead", &[2]), value("a", &[2])];
        let stats = DeadCode.run(&mut m).unwrap();
        assert_eq!(
            ops(&m),
            vec![
                ("Add".to_string(), vec!["a".to_string()]),
                ("Relu".to_string(), vec!["y".to_string()])
            ]
        );
        let g = m.graph();
        assert_eq!(g.initializer.len(), 1);
        assert_eq!(g.initializer[0].name, "w");
        assert_eq!(g.input.len(), 2, "unused graph inputs are kept");
        assert_eq!(g.value_info.len(), 1);
        assert_eq!(stats.changes, 2 + 1 + 2);
        assert_eq!(DeadCode.run(&mut m).unwrap().changes, 0);
    }
}
