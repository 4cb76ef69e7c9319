//! A small graph builder for quantization rewrites: fresh names, constant initializers,
//! new nodes, and the clean-up of what the rewrite left unused.

use std::collections::HashSet;

use whittle_ir::graph::node_inputs;
use whittle_ir::proto::{AttributeProto, GraphProto, NodeProto};
use whittle_ir::TensorData;

use super::scheme::{int_tensor, param_tensor, QParams, Scheme};
use crate::Result;

/// Adds nodes and initializers to a graph under names it has not used.
pub struct Builder<'g> {
    /// The graph being edited.
    pub graph: &'g mut GraphProto,
    used: HashSet<String>,
}

impl<'g> Builder<'g> {
    /// Starts editing `graph`.
    pub fn new(graph: &'g mut GraphProto) -> Self {
        let mut used: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
        used.extend(graph.input.iter().map(|v| v.name.clone()));
        for n in &graph.node {
            used.extend(n.output.iter().cloned());
            used.extend(n.input.iter().cloned());
            used.insert(n.name.clone());
        }
        Builder { graph, used }
    }

    /// A name starting with `base` not used yet (and now reserved).
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Adds `data` as an initializer named after `base`; returns its name.
    pub fn constant(&mut self, base: &str, data: &TensorData) -> String {
        let name = self.fresh(base);
        self.graph.initializer.push(data.to_proto(&name));
        name
    }

    /// Appends a node (the graph is re-sorted at the end of the rewrite).
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        let name = self.fresh(&format!("{}_{op_type}", outputs[0]));
        self.graph.node.push(NodeProto {
            name,
            op_type: op_type.into(),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    /// Scale and zero-point initializers of a per-tensor activation quantization.
    pub fn qparams(&mut self, base: &str, p: QParams, scheme: &Scheme) -> Result<(String, String)> {
        let s = self.constant(&format!("{base}_scale"), &param_tensor(&[p.scale], false)?);
        let zp = int_tensor(scheme.qtype.dtype(), vec![], &[p.zero_point])?;
        let z = self.constant(&format!("{base}_zero_point"), &zp);
        Ok((s, z))
    }

    /// Marks node `i` as replaced: it loses its outputs and [`Builder::prune`] removes it
    /// (indices of other nodes stay valid until then).
    pub fn drop_node(&mut self, i: usize) {
        self.graph.node[i].output.clear();
    }

    /// Removes initializers no node reads and no graph output names, and nodes whose
    /// outputs nobody reads (dangling dequantizations), until nothing changes.
    pub fn prune(&mut self) {
        loop {
            let mut read: HashSet<String> =
                self.graph.output.iter().map(|o| o.name.clone()).collect();
            for n in &self.graph.node {
                read.extend(node_inputs(n));
            }
            let before = self.graph.node.len();
            self.graph
                .node
                .retain(|n| n.output.iter().any(|o| !o.is_empty() && read.contains(o)));
            if self.graph.node.len() == before {
                let unused: HashSet<String> = self
                    .graph
                    .initializer
                    .iter()
                    .filter(|t| !read.contains(&t.name))
                    .map(|t| t.name.clone())
                    .collect();
                self.graph.initializer.retain(|t| !unused.contains(&t.name));
                self.graph.input.retain(|v| !unused.contains(&v.name));
                return;
            }
        }
    }
}
