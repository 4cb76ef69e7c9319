//! Matrix products: Gemm and MatMul with a constant weight.

use whittle_ir::attr::NodeAttrs;
use whittle_ir::proto::NodeProto;

use super::layout::Layout;
use super::node_name;
use super::walk::Walk;
use crate::prune::channel::groups::Role;
use crate::Result;

impl Walk<'_> {
    /// Gemm/MatMul with a constant weight: consumes the input's channels on the weight's
    /// input axis and starts a group of output features.
    pub(super) fn linear(&mut self, node: &NodeProto) -> Result<()> {
        let is_gemm = node.op_type == "Gemm";
        let trans_b = is_gemm && node.int_or("transB", 0)? != 0;
        let trans_a = is_gemm && node.int_or("transA", 0)? != 0;
        let w = node.input.get(1).cloned().unwrap_or_default();
        let x = self.input_layout(node, 0);
        let x_rank = node.input.first().and_then(|n| self.rank(n));
        let wdims = self.weight_dims(&w).filter(|d| d.len() == 2);
        let ok_input = x.as_ref().is_none_or(|l| Some(l.axis + 1) == x_rank);
        let Some(wdims) = wdims.filter(|_| !trans_a && ok_input) else {
            self.block_inputs(node, "matrix product without a constant weight on channels");
            return Ok(());
        };
        let (in_axis, out_axis) = if trans_b { (1, 0) } else { (0, 1) };
        if let Some(layout) = &x {
            self.slice_layout(layout, node, &w, in_axis, Role::Consumer);
        }
        let width = wdims[out_axis];
        let g = self.groups.create(width, &node_name(node));
        let out_rank = node.output.first().and_then(|o| self.rank(o)).unwrap_or(2);
        let out = Layout::single(g, width, out_rank.saturating_sub(1));
        self.slice_layout(&out, node, &w, out_axis, Role::Producer);
        if let Some(c) = node.input.get(2).filter(|c| !c.is_empty()) {
            self.bias(node, c, &out);
        }
        self.set_output(node, out);
        Ok(())
    }

    /// A Gemm's `C`: sliced when it has one entry per output, fine when broadcast.
    fn bias(&mut self, node: &NodeProto, c: &str, out: &Layout) {
        let width = out.extent();
        match self.weight_dims(c).as_deref() {
            Some([n]) if *n == width => self.slice_layout(out, node, c, 0, Role::Producer),
            Some([1, n]) if *n == width => self.slice_layout(out, node, c, 1, Role::Producer),
            Some(d) if d.iter().all(|&x| x == 1) => {}
            _ => self.block_layout(
                out,
                &format!("bias of '{}' is not per-channel", node_name(node)),
            ),
        }
    }
}
