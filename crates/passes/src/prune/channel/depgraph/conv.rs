//! Convolutions: plain, depthwise and grouped.
//!
//! A Conv with `G` groups and weight `[C_out, C_in/G, kh, kw]` computes output channel `o`
//! from input channels `[g·C_in/G, (g+1)·C_in/G)` of its group `g = o / (C_out/G)`. Pruning
//! keeps `G`: both channel spaces must then keep the same number of channels in each of
//! their `G` segments, and the weight drops, in the rows of group `g`, the columns of the
//! input channels removed from segment `g`.

use whittle_ir::attr::NodeAttrs;
use whittle_ir::proto::NodeProto;

use super::layout::Layout;
use super::node_name;
use super::walk::Walk;
use crate::prune::channel::groups::Role;
use crate::Result;

impl Walk<'_> {
    /// A depthwise Conv passes its input's channels on; any other consumes them on its
    /// weight's axis 1 and starts a group of output channels.
    pub(super) fn conv(&mut self, node: &NodeProto) -> Result<()> {
        let weight = node
            .input
            .get(1)
            .and_then(|w| Some((w.clone(), self.weight_dims(w)?)));
        let groups = usize::try_from(node.int_or("group", 1)?).unwrap_or(0);
        let Some((w, wdims)) = weight.filter(|(_, d)| d.len() >= 3 && groups > 0) else {
            self.block_inputs(node, "Conv without a constant weight or a valid group");
            return Ok(());
        };
        let bias = node.input.get(2).filter(|b| !b.is_empty()).cloned();
        if bias.as_ref().is_some_and(|b| self.weight_dims(b).is_none()) {
            self.block_inputs(node, "Conv whose bias is computed at run time");
            return Ok(());
        }
        let depthwise = groups > 1 && wdims[1] == 1 && wdims[0] == groups;
        match self.input_layout(node, 0) {
            Some(layout) if depthwise && layout.extent() == groups => {
                self.depthwise_conv(node, layout, &w, bias);
                return Ok(());
            }
            Some(layout) => self.conv_input(node, &layout, &w, wdims[1], groups),
            None => {}
        }
        self.conv_output(node, &w, wdims[0], bias, groups);
        Ok(())
    }

    /// One group per channel: the weight and bias follow the input's channels.
    fn depthwise_conv(&mut self, node: &NodeProto, layout: Layout, w: &str, bias: Option<String>) {
        self.slice_layout(&layout, node, w, 0, Role::PerChannel);
        if let Some(b) = bias {
            self.slice_layout(&layout, node, &b, 0, Role::PerChannel);
        }
        self.depthwise.push(node_name(node));
        self.set_output(node, layout);
    }

    /// Slices the weight's input axis along `layout`: as a whole with one group; per group
    /// when the input channels are one group, which must then stay balanced over `groups`.
    fn conv_input(
        &mut self,
        node: &NodeProto,
        layout: &Layout,
        w: &str,
        columns: usize,
        groups: usize,
    ) {
        if groups == 1 {
            self.slice_layout(layout, node, w, 1, Role::Consumer);
            return;
        }
        match layout.segments.as_slice() {
            [s] if s.expand == 1 && s.len == groups * columns => {
                self.groups.require_segments(s.group, groups);
                let role = Role::GroupedConsumer { groups, columns };
                self.slice_layout(layout, node, w, 1, role);
            }
            _ => self.block_layout(
                layout,
                &format!(
                    "grouped convolution '{}' reads channels of several groups",
                    node_name(node)
                ),
            ),
        }
    }

    /// Starts the group of the `width` output channels, balanced over `groups` segments.
    fn conv_output(
        &mut self,
        node: &NodeProto,
        w: &str,
        width: usize,
        bias: Option<String>,
        groups: usize,
    ) {
        let g = self.groups.create(width, &node_name(node));
        self.groups.require_segments(g, groups);
        let out = Layout::single(g, width, 1);
        self.slice_layout(&out, node, w, 0, Role::Producer);
        if let Some(b) = bias {
            self.slice_layout(&out, node, &b, 0, Role::Producer);
        }
        self.set_output(node, out);
    }
}
