//! Physically removes pruned channels: slices every coupled initializer, updates depthwise
//! `group` attributes and re-infers intermediate shapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use whittle_ir::attr::make;
use whittle_ir::{shape, GraphEdit, Model, TensorData};

use super::depgraph::DepGraph;
use crate::{bail, Result};

/// Axis indices to drop, per initializer and axis.
type Drops = BTreeMap<(String, usize), BTreeSet<usize>>;

/// `model` with every group of `kept` reduced to its kept channels.
pub fn apply(model: &Model, dep: &DepGraph, kept: &HashMap<usize, Vec<usize>>) -> Result<Model> {
    let drops = collect_drops(dep, kept);
    let mut out = model.clone();
    let graph = out.graph_mut();
    for ((name, axis), drop) in &drops {
        let Some(i) = graph.initializer.iter().position(|t| &t.name == name) else {
            bail!("initializer '{name}' not found");
        };
        let data = TensorData::from_proto(&graph.initializer[i], None)?;
        graph.initializer[i] = drop_indices(&data, *axis, drop, name)?.to_proto(name);
    }
    for name in &dep.depthwise {
        update_depthwise(&mut out, name)?;
    }
    out.graph_mut().value_info.clear();
    // Symbolic sizes (the batch) stay symbolic in the annotations.
    let types = shape::infer(&out, &Default::default())?;
    shape::annotate(&mut out, &types);
    Ok(out)
}

fn collect_drops(dep: &DepGraph, kept: &HashMap<usize, Vec<usize>>) -> Drops {
    let mut drops = Drops::new();
    for (id, keep) in kept {
        let group = dep.groups.get(*id);
        let removed: Vec<usize> = (0..group.width)
            .filter(|k| keep.binary_search(k).is_err())
            .collect();
        for slice in &group.slices {
            let set = drops.entry((slice.tensor.clone(), slice.axis)).or_default();
            for &k in &removed {
                set.extend((0..slice.expand).map(|e| slice.offset + k * slice.expand + e));
            }
        }
    }
    drops.retain(|_, set| !set.is_empty());
    drops
}

/// `data` without the indices `drop` on `axis`.
fn drop_indices(
    data: &TensorData,
    axis: usize,
    drop: &BTreeSet<usize>,
    name: &str,
) -> Result<TensorData> {
    let dims = data.dims().to_vec();
    let Some(bytes) = data.bytes().filter(|_| axis < dims.len()) else {
        bail!("cannot slice initializer '{name}' on axis {axis}");
    };
    let elem = bytes.len() / data.numel().max(1);
    let keep: Vec<usize> = (0..dims[axis]).filter(|i| !drop.contains(i)).collect();
    let inner: usize = dims[axis + 1..].iter().product::<usize>() * elem;
    let outer: usize = dims[..axis].iter().product();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in &keep {
            let at = (o * dims[axis] + k) * inner;
            out.extend_from_slice(&bytes[at..at + inner]);
        }
    }
    let mut new_dims = dims;
    new_dims[axis] = keep.len();
    Ok(TensorData::from_bytes(data.dtype(), new_dims, out)?)
}

/// Sets a depthwise Conv's `group` to its (new) channel count.
fn update_depthwise(model: &mut Model, name: &str) -> Result<()> {
    let graph = model.graph_mut();
    let Some(i) =
        (0..graph.node.len()).find(|&i| super::depgraph::node_name(&graph.node[i]) == name)
    else {
        bail!("depthwise Conv '{name}' not found");
    };
    let weight = graph.node[i].input.get(1).cloned().unwrap_or_default();
    let Some(channels) = graph
        .initializer(&weight)
        .and_then(|t| t.dims.first().copied())
    else {
        bail!("depthwise Conv '{name}' lost its weight");
    };
    let node = &mut graph.node[i];
    node.attribute.retain(|a| a.name != "group");
    node.attribute.push(make::int("group", channels));
    Ok(())
}
