//! Broadcasting elementwise ops: coupling of channel operands, per-channel constants.

use whittle_ir::proto::NodeProto;

use super::layout::Layout;
use super::node_name;
use super::walk::Walk;
use crate::prune::channel::groups::Role;
use crate::Result;

/// Elementwise ops with broadcasting over all inputs.
pub(super) const ELEMENTWISE: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu",
];

impl Walk<'_> {
    /// Broadcasting ops: channel operands couple; constant operands with one entry per
    /// channel are sliced; anything else must broadcast over the channel axis.
    pub(super) fn elementwise(&mut self, node: &NodeProto) -> Result<()> {
        let out_rank = node.output.first().and_then(|o| self.rank(o));
        let mut merged: Option<Layout> = None;
        for name in node.input.iter() {
            let Some(layout) = self.layouts.get(name).cloned() else {
                continue;
            };
            let from_end = self.rank(name).map(|r| r - layout.axis);
            let Some((rank, from_end)) = out_rank.zip(from_end) else {
                self.block_inputs(node, "operand of unknown rank");
                return Ok(());
            };
            let layout = Layout {
                axis: rank - from_end,
                ..layout
            };
            merged = match merged {
                None => Some(layout),
                Some(m) if self.unify(&m, &layout, node) => Some(m),
                Some(_) => {
                    self.block_inputs(node, "operands with different channel layouts");
                    return Ok(());
                }
            };
        }
        let Some(layout) = merged else { return Ok(()) };
        let rank = out_rank.unwrap_or(0);
        for name in node.input.clone() {
            if !self.layouts.contains_key(&name)
                && !self.broadcast_operand(node, &name, &layout, rank)
            {
                self.block_inputs(node, "operand that does not broadcast over channels");
                return Ok(());
            }
        }
        self.set_output(node, layout);
        Ok(())
    }

    /// Couples two layouts segment by segment; false when their segments differ.
    fn unify(&mut self, a: &Layout, b: &Layout, node: &NodeProto) -> bool {
        let same_shape = a.axis == b.axis
            && a.segments.len() == b.segments.len()
            && (a.segments.iter().zip(&b.segments))
                .all(|(x, y)| x.len == y.len && x.expand == y.expand);
        if same_shape {
            for (x, y) in a.segments.iter().zip(&b.segments) {
                self.groups.union(x.group, y.group, &node_name(node));
            }
        }
        same_shape
    }

    /// Handles a non-channel operand: true when it broadcasts or is a per-channel constant.
    fn broadcast_operand(
        &mut self,
        node: &NodeProto,
        name: &str,
        layout: &Layout,
        rank: usize,
    ) -> bool {
        let Some(dims) = self.dims(name) else {
            return false;
        };
        let from_end = rank - layout.axis;
        if dims.len() < from_end || dims[dims.len() - from_end] == 1 {
            return true;
        }
        let axis = dims.len() - from_end;
        let is_weight = self.weight_dims(name).is_some();
        if is_weight && dims[axis] == layout.extent() {
            self.slice_layout(layout, node, name, axis, Role::PerChannel);
            return true;
        }
        false
    }
}
