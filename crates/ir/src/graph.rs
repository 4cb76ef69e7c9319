//! Graph queries and editing: producers, consumers, topological order, node and value edits.

use std::collections::{HashMap, HashSet};

use crate::error::{IrError, Result};
use crate::proto::{GraphProto, NodeProto, TensorProto};

/// Names a subgraph reads from its enclosing scope (used but not defined inside it).
pub fn outer_scope_inputs(graph: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    defined.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    let mut used = Vec::new();
    let mut seen = HashSet::new();
    for node in &graph.node {
        for name in node_inputs(node) {
            if !defined.contains(name.as_str()) && seen.insert(name.clone()) {
                used.push(name);
            }
        }
        defined.extend(node.output.iter().map(String::as_str));
    }
    used
}

/// Every value a node reads: its inputs plus what its subgraphs take from outer scope.
pub fn node_inputs(node: &NodeProto) -> Vec<String> {
    let mut names: Vec<String> = node
        .input
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    for attr in &node.attribute {
        for g in attr.g.iter().chain(attr.graphs.iter()) {
            names.extend(outer_scope_inputs(g));
        }
    }
    names
}

/// The name a node goes by in reports, plans and errors: its own name, or `OpType#index`
/// (its index in the graph's node list) when it has none.
pub fn node_display_name(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("{}#{index}", node.op_type)
    } else {
        node.name.clone()
    }
}

/// Queries and edits on a graph. Node indices refer to `graph.node`.
pub trait GraphEdit {
    /// Node index that produces each value.
    fn producers(&self) -> HashMap<String, usize>;
    /// Node indices that read each value (including reads from inside subgraphs).
    fn consumers(&self) -> HashMap<String, Vec<usize>>;
    /// Node indices in an order where every node follows the producers of its inputs.
    fn topological_order(&self) -> Result<Vec<usize>>;
    /// Reorders `node` topologically (stable for already-sorted graphs).
    fn sort_topologically(&mut self) -> Result<()>;
    /// Inserts a node at index `at` (use [`GraphEdit::sort_topologically`] after bulk edits).
    fn insert_node(&mut self, at: usize, node: NodeProto);
    /// Removes and returns the node at `at`.
    fn remove_node(&mut self, at: usize) -> NodeProto;
    /// Replaces the node at `at`, returning the old one.
    fn replace_node(&mut self, at: usize, node: NodeProto) -> NodeProto;
    /// Index of the node called `name`.
    fn find_node(&self, name: &str) -> Option<usize>;
    /// Renames a value everywhere it appears (nodes, subgraph reads, interface, initializers).
    fn rename_value(&mut self, old: &str, new: &str);
    /// The initializer called `name`.
    fn initializer(&self, name: &str) -> Option<&TensorProto>;
    /// Graph inputs that are not initializers (what a caller must feed).
    fn runtime_inputs(&self) -> Vec<&str>;
    /// A name starting with `base` used by no value or node in the graph.
    fn fresh_name(&self, base: &str) -> String;
}

impl GraphEdit for GraphProto {
    fn producers(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (i, node) in self.node.iter().enumerate() {
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                map.insert(out.clone(), i);
            }
        }
        map
    }

    fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in self.node.iter().enumerate() {
            for name in node_inputs(node) {
                let list = map.entry(name).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        map
    }

    fn topological_order(&self) -> Result<Vec<usize>> {
        let producers = self.producers();
        let n = self.node.len();
        let mut indegree = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in self.node.iter().enumerate() {
            let mut deps: Vec<usize> = node_inputs(node)
                .iter()
                .filter_map(|name| producers.get(name).copied())
                .collect();
            deps.sort_unstable();
            deps.dedup();
            indegree[i] = deps.len();
            for d in deps {
                users[d].push(i);
            }
        }
        // Kahn's algorithm, always taking the lowest ready index to keep the original order.
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() < n {
            let stuck = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
            let node = &self.node[stuck];
            return Err(IrError::invalid(format!(
                "graph '{}' has a cycle through node '{}' ({})",
                self.name, node.name, node.op_type
            )));
        }
        Ok(order)
    }

    fn sort_topologically(&mut self) -> Result<()> {
        let order = self.topological_order()?;
        let mut old: Vec<Option<NodeProto>> = std::mem::take(&mut self.node)
            .into_iter()
            .map(Some)
            .collect();
        self.node = order.into_iter().filter_map(|i| old[i].take()).collect();
        Ok(())
    }

    fn insert_node(&mut self, at: usize, node: NodeProto) {
        self.node.insert(at.min(self.node.len()), node);
    }

    fn remove_node(&mut self, at: usize) -> NodeProto {
        self.node.remove(at)
    }

    fn replace_node(&mut self, at: usize, node: NodeProto) -> NodeProto {
        std::mem::replace(&mut self.node[at], node)
    }

    fn find_node(&self, name: &str) -> Option<usize> {
        self.node.iter().position(|n| n.name == name)
    }

    fn rename_value(&mut self, old: &str, new: &str) {
        rename_in_graph(self, old, new);
    }

    fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.initializer.iter().find(|t| t.name == name)
    }

    fn runtime_inputs(&self) -> Vec<&str> {
        let inits: HashSet<&str> = self.initializer.iter().map(|t| t.name.as_str()).collect();
        self.input
            .iter()
            .map(|v| v.name.as_str())
            .filter(|n| !inits.contains(n))
            .collect()
    }

    fn fresh_name(&self, base: &str) -> String {
        let mut used: HashSet<&str> = HashSet::new();
        used.extend(self.input.iter().map(|v| v.name.as_str()));
        used.extend(self.output.iter().map(|v| v.name.as_str()));
        used.extend(self.initializer.iter().map(|t| t.name.as_str()));
        used.extend(self.value_info.iter().map(|v| v.name.as_str()));
        for node in &self.node {
            used.insert(node.name.as_str());
            used.extend(node.output.iter().map(String::as_str));
            used.extend(node.input.iter().map(String::as_str));
        }
        if !used.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|c| !used.contains(c.as_str()))
            .expect("an unused suffix exists")
    }
}

fn rename_in_graph(g: &mut GraphProto, old: &str, new: &str) {
    let swap = |s: &mut String| {
        if s == old {
            *s = new.to_string();
        }
    };
    g.input.iter_mut().for_each(|v| swap(&mut v.name));
    g.output.iter_mut().for_each(|v| swap(&mut v.name));
    g.value_info.iter_mut().for_each(|v| swap(&mut v.name));
    g.initializer.iter_mut().for_each(|t| swap(&mut t.name));
    for node in &mut g.node {
        node.input.iter_mut().for_each(swap);
        node.output.iter_mut().for_each(swap);
        for attr in &mut node.attribute {
            for sub in attr.g.iter_mut().chain(attr.graphs.iter_mut()) {
                // A subgraph that defines the name itself shadows the outer value.
                let shadows = sub.input.iter().any(|v| v.name == old)
                    || sub.initializer.iter().any(|t| t.name == old)
                    || sub.node.iter().any(|n| n.output.iter().any(|o| o == old));
                if !shadows {
                    rename_in_graph(sub, old, new);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn unnamed_nodes_display_as_op_type_and_index() {
        assert_eq!(
            node_display_name(&node("", "Conv", &[], &["y"]), 3),
            "Conv#3"
        );
        assert_eq!(
            node_display_name(&node("stem", "Conv", &[], &["y"]), 3),
            "stem"
        );
    }

    #[test]
    fn sorts_out_of_order_nodes_and_finds_cycles() {
        let mut g = GraphProto {
            node: vec![
                node("b", "Relu", &["t"], &["y"]),
                node("a", "Neg", &["x"], &["t"]),
            ],
            ..Default::default()
        };
        g.sort_topologically().unwrap();
        assert_eq!(g.node[0].name, "a");
        assert_eq!(g.consumers()["t"], vec![1]);
        assert_eq!(g.producers()["y"], 1);

        g.node[0].input[0] = "y".into();
        let err = g.topological_order().unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn rename_and_fresh_names() {
        let mut g = GraphProto {
            node: vec![
                node("a", "Neg", &["x"], &["t"]),
                node("b", "Relu", &["t"], &["y"]),
            ],
            ..Default::default()
        };
        g.rename_value("t", "mid");
        assert_eq!(g.node[0].output[0], "mid");
        assert_eq!(g.node[1].input[0], "mid");
        assert_eq!(g.fresh_name("mid"), "mid_1");
        assert_eq!(g.fresh_name("new"), "new");
        let removed = g.remove_node(0);
        g.insert_node(5, removed);
        assert_eq!(g.find_node("a"), Some(1));
    }
}
