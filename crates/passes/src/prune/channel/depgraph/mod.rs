//! The dependency graph: which tensor axes follow which channels.
//!
//! Every Conv/Gemm/MatMul with a constant weight starts a group of output channels. A
//! forward walk gives each value a `Layout`: its channel axis as a list of segments, each
//! belonging to a group (several after a Concat, each channel spread over `expand`
//! consecutive features after a Flatten). Ops that keep channels apart (BN, activations,
//! pools, depthwise Conv, broadcasting elementwise ops) pass layouts on and add their
//! per-channel parameters; elementwise ops with two channel operands couple their groups;
//! Conv/Gemm/MatMul consume the layout on their weight's input axis (a grouped Conv per
//! group, requiring its input and output groups to stay balanced over its groups).
//! Anything else, graph outputs and protected layers block the groups they touch.

mod channelwise;
mod conv;
mod elementwise;
mod layout;
mod linear;
mod reshape;
mod walk;

use std::collections::{HashMap, HashSet};

use whittle_ir::proto::NodeProto;
use whittle_ir::{GraphEdit, Model};

use super::groups::Groups;
use crate::Result;
use walk::Walk;

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
    block_unbalanced(&mut walk.groups);
    block_protected(&mut walk.groups, protected);
    block_shared(&mut walk.groups, model);
    Ok(DepGraph {
        groups: walk.groups,
        depthwise: walk.depthwise,
    })
}

/// Blocks groups whose balanced segments (from grouped Convs) cannot be kept: a width that
/// does not split into them, or one channel per segment, where nothing can go.
fn block_unbalanced(groups: &mut Groups) {
    let hits: Vec<(usize, String)> = (groups.roots())
        .filter_map(|(g, group)| {
            let (width, n) = (group.width, group.segments);
            let reason = if !width.is_multiple_of(n) {
                format!("{width} channels do not split into the {n} equal segments grouped convolutions need")
            } else if n > 1 && n == width {
                format!("grouped convolutions need {n} equal segments of one channel: none can go")
            } else {
                return None;
            };
            Some((g, reason))
        })
        .collect();
    for (g, reason) in hits {
        groups.block(g, reason);
    }
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

/// The name a node goes by in reports (its first output when unnamed).
pub fn node_name(node: &NodeProto) -> String {
    crate::factorize::layer_name(node)
}
