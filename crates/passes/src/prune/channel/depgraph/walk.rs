//! The forward walk: per-value layouts, slicing and blocking helpers, and the dispatch of
//! each node to the handler of its op family.

use std::collections::HashMap;

use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{GraphEdit, Model};

use super::channelwise::CHANNELWISE;
use super::elementwise::ELEMENTWISE;
use super::layout::Layout;
use super::node_name;
use crate::optimize::util;
use crate::prune::channel::groups::{Groups, Role, Slice};
use crate::Result;

/// The state of the forward walk over a model's nodes.
pub(super) struct Walk<'a> {
    /// The model analysed.
    pub(super) model: &'a Model,
    /// Inferred types of its values (batch 1).
    pub(super) shapes: &'a HashMap<String, TensorType>,
    /// The channel groups found so far.
    pub(super) groups: Groups,
    /// The channel layout of every value that carries prunable channels.
    pub(super) layouts: HashMap<String, Layout>,
    /// Node names of depthwise Convs.
    pub(super) depthwise: Vec<String>,
}

impl Walk<'_> {
    /// Static dims of value `name`, when known.
    pub(super) fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).and_then(TensorType::known_dims)
    }

    /// Rank of value `name`, when known.
    pub(super) fn rank(&self, name: &str) -> Option<usize> {
        self.shapes.get(name).and_then(TensorType::rank)
    }

    /// The initializer `name` when it is a constant weight.
    pub(super) fn weight_dims(&self, name: &str) -> Option<Vec<usize>> {
        let t = self.model.graph().initializer(name)?;
        Some(t.dims.iter().map(|&d| d.max(0) as usize).collect())
    }

    /// Blocks every group along `layout`.
    pub(super) fn block_layout(&mut self, layout: &Layout, reason: &str) {
        for s in &layout.segments {
            self.groups.block(s.group, reason);
        }
    }

    /// Blocks every layout among the values `node` reads.
    pub(super) fn block_inputs(&mut self, node: &NodeProto, why: &str) {
        let reason = format!("{why} at '{}' ({})", node_name(node), node.op_type);
        for name in whittle_ir::graph::node_inputs(node) {
            if let Some(layout) = self.layouts.get(&name).cloned() {
                self.block_layout(&layout, &reason);
            }
        }
    }

    /// Adds a slice of `tensor` on `axis` for every segment of `layout`.
    pub(super) fn slice_layout(
        &mut self,
        layout: &Layout,
        node: &NodeProto,
        tensor: &str,
        axis: usize,
        role: Role,
    ) {
        for (offset, s) in layout.placed() {
            let slice = Slice {
                tensor: tensor.to_string(),
                axis,
                offset,
                expand: s.expand,
                role,
            };
            self.groups.add_slice(s.group, &node_name(node), slice);
        }
    }

    /// The layout of `node`'s `i`-th input, if it carries channels.
    pub(super) fn input_layout(&self, node: &NodeProto, i: usize) -> Option<Layout> {
        node.input.get(i).and_then(|n| self.layouts.get(n)).cloned()
    }

    /// Records `layout` for `node`'s first output.
    pub(super) fn set_output(&mut self, node: &NodeProto, layout: Layout) {
        if let Some(out) = node.output.first().filter(|o| !o.is_empty()) {
            self.layouts.insert(out.clone(), layout);
        }
    }

    /// Dispatches `node` to the handler of its op family; unknown ops block their inputs.
    pub(super) fn visit(&mut self, node: &NodeProto) -> Result<()> {
        let op = node.op_type.as_str();
        let has_subgraph = node
            .attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty());
        if !util::is_default_domain(node) || has_subgraph {
            self.block_inputs(node, "unsupported consumer");
            return Ok(());
        }
        match op {
            "Conv" => self.conv(node),
            "Gemm" | "MatMul" => self.linear(node),
            "BatchNormalization" | "InstanceNormalization" => self.norm(node),
            "Flatten" | "Reshape" => self.flatten(node),
            "Concat" => self.concat(node),
            "ReduceMean" | "ReduceMax" | "ReduceSum" => self.reduce(node),
            _ if CHANNELWISE.contains(&op) => self.channelwise(node),
            _ if ELEMENTWISE.contains(&op) => self.elementwise(node),
            _ => {
                self.block_inputs(node, "unsupported consumer");
                Ok(())
            }
        }
    }
}
