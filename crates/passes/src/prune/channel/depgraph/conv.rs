//! Convolutions: plain, depthwise and grouped.

use whittle_ir::attr::NodeAttrs;
use whittle_ir::proto::NodeProto;

use super::layout::Layout;
use super::node_name;
use super::walk::Walk;
use crate::prune::channel::groups::Role;
use crate::Result;

impl Walk<'_> {
    pub(super) fn conv(&mut self, node: &NodeProto) -> Result<()> {
        let x = self.input_layout(node, 0);
        let weight = node
            .input
            .get(1)
            .and_then(|w| Some((w.clone(), self.weight_dims(w)?)));
        let Some((w, wdims)) = weight.filter(|(_, d)| d.len() >= 3) else {
            self.block_inputs(node, "Conv without a constant weight");
            return Ok(());
        };
        let groups = node.int_or("group", 1)? as usize;
        let bias = node
            .input
            .get(2)
            .filter(|b| self.weight_dims(b).is_some())
            .cloned();
        if groups == 1 {
            if let Some(layout) = &x {
                self.slice_layout(layout, node, &w, 1, Role::Consumer);
            }
            let g = self.groups.create(wdims[0], &node_name(node));
            let out = Layout::single(g, wdims[0], 1);
            self.slice_layout(&out, node, &w, 0, Role::Producer);
            if let Some(b) = bias {
                self.slice_layout(&out, node, &b, 0, Role::Producer);
            }
            self.set_output(node, out);
        } else if let Some(layout) =
            x.filter(|l| wdims[1] == 1 && wdims[0] == groups && l.extent() == groups)
        {
            self.slice_layout(&layout, node, &w, 0, Role::PerChannel);
            if let Some(b) = bias {
                self.slice_layout(&layout, node, &b, 0, Role::PerChannel);
            }
            self.depthwise.push(node_name(node));
            self.set_output(node, layout);
        } else {
            self.block_inputs(node, "grouped convolution");
        }
        Ok(())
    }
}
