//! The dependency graph: which tensor axes follow which channels.
//!
//! Every Conv/Gemm/MatMul with a constant weight starts a group of output channels. A
//! forward walk gives each value a [`Layout`]: its channel axis as a list of segments, each
//! belonging to a group (several after a Concat, each channel spread over `expand`
//! consecutive features after a Flatten). Ops that keep channels apart (BN, activations,
//! pools, depthwise Conv, broadcasting elementwise ops) pass layouts on and add their
//! per-channel parameters; elementwise ops with two channel operands couple their groups;
//! Conv/Gemm/MatMul consume the layout on their weight's input axis. Anything else, graph
//! outputs and protected layers block the groups they touch.

use std::collections::{HashMap, HashSet};

use whittle_ir::attr::NodeAttrs;
use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{GraphEdit, Model};

use super::groups::{Groups, Role, Slice};
use crate::optimize::util;
use crate::Result;

/// A run of channels of one group inside a value's channel axis.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    group: usize,
    len: usize,
    expand: usize,
}

/// The channel axis of a value and the groups along it.
#[derive(Clone, Debug)]
struct Layout {
    axis: usize,
    segments: Vec<Segment>,
}

impl Layout {
    fn single(group: usize, len: usize, axis: usize) -> Self {
        Layout {
            axis,
            segments: vec![Segment {
                group,
                len,
                expand: 1,
            }],
        }
    }

    /// Segments with their start offsets on the axis.
    fn placed(&self) -> Vec<(usize, &Segment)> {
        let mut offset = 0;
        (self.segments.iter())
            .map(|s| {
                let at = offset;
                offset += s.len * s.expand;
                (at, s)
            })
            .collect()
    }

    /// Elements along the axis.
    fn extent(&self) -> usize {
        self.segments.iter().map(|s| s.len * s.expand).sum()
    }
}

/// Ops that map each channel to itself, reading only their first input as data.
const CHANNELWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Erf",
    "Exp",
    "Abs",
    "Neg",
    "Identity",
    "Dropout",
    "Mish",
    "ThresholdedRelu",
    "Sqrt",
    "Reciprocal",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
];

/// Elementwise ops with broadcasting over all inputs.
const ELEMENTWISE: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu",
];

/// The result of the analysis: the groups and the depthwise Convs whose `group` follows
/// their channel count.
pub struct DepGraph {
    /// All groups (blocked ones included).
    pub groups: Groups,
    /// Node names of depthwise Convs.
    pub depthwise: Vec<String>,
}

/// Builds the dependency graph of `model`; `protected` layers keep their output channels.
pub fn analyze(model: &Model, protected: &[String]) -> Result<DepGraph> {
    let shapes = super::cost::static_shapes(model)?;
    let mut walk = Walk {
        model,
        shapes: &shapes,
        groups: Groups::default(),
        layouts: HashMap::new(),
        depthwise: Vec::new(),
    };
    let graph = model.graph();
    for i in graph.topological_order()? {
        walk.visit(&graph.node[i])?;
    }
    for out in &graph.output {
        if let Some(layout) = walk.layouts.get(&out.name).cloned() {
            walk.block_layout(&layout, &format!("reaches graph output '{}'", out.name));
        }
    }
    block_protected(&mut walk.groups, protected);
    block_shared(&mut walk.groups, model);
    Ok(DepGraph {
        groups: walk.groups,
        depthwise: walk.depthwise,
    })
}

fn block_protected(groups: &mut Groups, protected: &[String]) {
    let hits: Vec<(usize, String)> = (groups.roots())
        .filter_map(|(g, group)| {
            let hit = group.producers.iter().find(|p| protected.contains(p))?;
            Some((g, hit.clone()))
        })
        .collect();
    for (g, layer) in hits {
        groups.block(g, format!("protected layer '{layer}'"));
    }
}

/// Blocks groups slicing an initializer that several nodes read, or that is also a graph
/// input (it could be overridden at run time).
fn block_shared(groups: &mut Groups, model: &Model) {
    let graph = model.graph();
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    let consumers = graph.consumers();
    let shared = |t: &str| inputs.contains(t) || consumers.get(t).is_some_and(|c| c.len() > 1);
    let hits: Vec<(usize, String)> = (groups.roots())
        .filter_map(|(g, group)| {
            let t = group.slices.iter().find(|s| shared(&s.tensor))?;
            Some((g, t.tensor.clone()))
        })
        .collect();
    for (g, t) in hits {
        groups.block(g, format!("initializer '{t}' is shared or overridable"));
    }
}

struct Walk<'a> {
    model: &'a Model,
    shapes: &'a HashMap<String, TensorType>,
    groups: Groups,
    layouts: HashMap<String, Layout>,
    depthwise: Vec<String>,
}

impl Walk<'_> {
    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).and_then(TensorType::known_dims)
    }

    fn rank(&self, name: &str) -> Option<usize> {
        self.shapes.get(name).and_then(TensorType::rank)
    }

    /// The initializer `name` when it is a constant weight.
    fn weight_dims(&self, name: &str) -> Option<Vec<usize>> {
        let t = self.model.graph().initializer(name)?;
        Some(t.dims.iter().map(|&d| d.max(0) as usize).collect())
    }

    fn block_layout(&mut self, layout: &Layout, reason: &str) {
        for s in &layout.segments {
            self.groups.block(s.group, reason);
        }
    }

    /// Blocks every layout among the values `node` reads.
    fn block_inputs(&mut self, node: &NodeProto, why: &str) {
        let reason = format!("{why} at '{}' ({})", node_name(node), node.op_type);
        for name in whittle_ir::graph::node_inputs(node) {
            if let Some(layout) = self.layouts.get(&name).cloned() {
                self.block_layout(&layout, &reason);
            }
        }
    }

    /// Adds a slice of `tensor` on `axis` for every segment of `layout`.
    fn slice_layout(
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

    fn input_layout(&self, node: &NodeProto, i: usize) -> Option<Layout> {
        node.input.get(i).and_then(|n| self.layouts.get(n)).cloned()
    }

    fn set_output(&mut self, node: &NodeProto, layout: Layout) {
        if let Some(out) = node.output.first().filter(|o| !o.is_empty()) {
            self.layouts.insert(out.clone(), layout);
        }
    }

    fn visit(&mut self, node: &NodeProto) -> Result<()> {
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

    fn channelwise(&mut self, node: &NodeProto) -> Result<()> {
        let others: Vec<String> = node.input.iter().skip(1).cloned().collect();
        if others.iter().any(|n| self.layouts.contains_key(n)) {
            self.block_inputs(node, "channels used as a parameter");
        } else if let Some(layout) = self.input_layout(node, 0) {
            self.set_output(node, layout);
        }
        Ok(())
    }

    fn conv(&mut self, node: &NodeProto) -> Result<()> {
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

    fn linear(&mut self, node: &NodeProto) -> Result<()> {
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

    fn norm(&mut self, node: &NodeProto) -> Result<()> {
        let Some(layout) = self.input_layout(node, 0).filter(|l| l.axis == 1) else {
            self.block_inputs(node, "normalization over a non-channel axis");
            return Ok(());
        };
        for (i, name) in node.input.iter().enumerate().skip(1) {
            if self.weight_dims(name).is_none() {
                self.block_layout(
                    &layout,
                    &format!("'{}' has a non-constant parameter", node_name(node)),
                );
                continue;
            }
            let role = match i {
                1 => Role::Scale,
                2 => Role::PerChannel,
                _ => Role::Statistic,
            };
            self.slice_layout(&layout, node, name, 0, role);
        }
        self.set_output(node, layout);
        Ok(())
    }

    /// Flatten, or a Reshape to `[N, C·H·W]`: each channel becomes H·W consecutive features.
    fn flatten(&mut self, node: &NodeProto) -> Result<()> {
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

    fn concat(&mut self, node: &NodeProto) -> Result<()> {
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
    fn reduce(&mut self, node: &NodeProto) -> Result<()> {
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

    /// Broadcasting ops: channel operands couple; constant operands with one entry per
    /// channel are sliced; anything else must broadcast over the channel axis.
    fn elementwise(&mut self, node: &NodeProto) -> Result<()> {
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

/// The name a node goes by in reports (its first output when unnamed).
pub fn node_name(node: &NodeProto) -> String {
    crate::factorize::layer_name(node)
}
