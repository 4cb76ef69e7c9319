//! Ops that move channels around: Flatten/Reshape, Concat and reductions.

use whittle_ir::attr::NodeAttrs;
use whittle_ir::proto::NodeProto;

use super::layout::{Layout, Segment};
use super::node_name;
use super::walk::Walk;
use crate::optimize::util;
use crate::Result;

impl Walk<'_> {
    /// Flatten, or a Reshape to `[N, C·H·W]`: each channel becomes H·W consecutive features.
    pub(super) fn flatten(&mut self, node: &NodeProto) -> Result<()> {
        let Some(layout) = self.input_layout(node, 0) else {
            return Ok(());
        };
        let input = node.input.first().and_then(|n| self.dims(n));
        let output = node.output.first().and_then(|n| self.dims(n));
        let axis = if node.op_type == "Flatten" {
            node.int_or("axis", 1)?
        } else {
            1
        };
        let merges_trailing = match (&input, &output) {
            (Some(i), Some(o)) => {
                o.len() == 2
                    && i.len() > layout.axis
                    && o[0] == i[..layout.axis].iter().product::<usize>()
            }
            _ => false,
        };
        let (Some(input), true) = (input, merges_trailing && axis as usize == layout.axis) else {
            self.block_inputs(node, "reshape that mixes channels");
            return Ok(());
        };
        let spread: usize = input[layout.axis + 1..].iter().product();
        let segments = (layout.segments.iter())
            .map(|s| Segment {
                expand: s.expand * spread,
                ..s.clone()
            })
            .collect();
        self.set_output(node, Layout { axis: 1, segments });
        Ok(())
    }

    /// Concat along the channel axis: the output lists its inputs' segments in order;
    /// inputs without a layout become blocked groups.
    pub(super) fn concat(&mut self, node: &NodeProto) -> Result<()> {
        let rank = node.output.first().and_then(|o| self.rank(o)).unwrap_or(0) as i64;
        let axis = node.int_or("axis", 0)?;
        let axis = if axis < 0 { axis + rank } else { axis } as usize;
        let mut segments = Vec::new();
        for name in node.input.clone() {
            match self.layouts.get(&name).cloned() {
                Some(l) if l.axis == axis => segments.extend(l.segments),
                None => match self.dims(&name).and_then(|d| d.get(axis).copied()) {
                    Some(n) => {
                        let g = self.groups.create(n, &node_name(node));
                        self.groups
                            .block(g, format!("channels of '{name}' are not prunable"));
                        segments.push(Segment {
                            group: g,
                            len: n,
                            expand: 1,
                        });
                    }
                    None => {
                        self.block_inputs(node, "concat of unknown width");
                        return Ok(());
                    }
                },
                Some(_) => {
                    self.block_inputs(node, "concat along a non-channel axis");
                    return Ok(());
                }
            }
        }
        self.set_output(node, Layout { axis, segments });
        Ok(())
    }

    /// Reductions over spatial axes with `keepdims=1` keep channels apart.
    pub(super) fn reduce(&mut self, node: &NodeProto) -> Result<()> {
        let Some(layout) = self.input_layout(node, 0) else {
            return Ok(());
        };
        let rank = node.input.first().and_then(|n| self.rank(n)).unwrap_or(0) as i64;
        let axes = match node.ints("axes")? {
            Some(a) => Some(a),
            None => match node.input.get(1) {
                Some(n) => util::constant_ints(self.model, n)?,
                None => None,
            },
        };
        let keeps = node.int_or("keepdims", 1)? == 1;
        let spatial = axes.is_some_and(|a| {
            a.iter()
                .all(|&x| (if x < 0 { x + rank } else { x }) != layout.axis as i64)
        });
        if keeps && spatial {
            self.set_output(node, layout);
        } else {
            self.block_inputs(node, "reduction over channels");
        }
        Ok(())
    }
}
