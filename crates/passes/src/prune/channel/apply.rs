//! Physically removes pruned channels: slices every coupled initializer, updates depthwise
//! `group` attributes and re-infers intermediate shapes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use whittle_ir::attr::make;
use whittle_ir::{shape, GraphEdit, Model, TensorData};

use super::depgraph::DepGraph;
use crate::{bail, Result};

/// Axis indices to drop, per initializer and axis, for each block of rows of the leading
/// axes (one block unless a grouped Conv drops different columns per group).
type Drops = BTreeMap<(String, usize), Vec<BTreeSet<usize>>>;

/// `model` with every group of `kept` reduced to its kept channels.
pub fn apply(model: &Model, dep: &DepGraph, kept: &HashMap<usize, Vec<usize>>) -> Result<Model> {
    let drops = collect_drops(dep, kept)?;
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

fn collect_drops(dep: &DepGraph, kept: &HashMap<usize, Vec<usize>>) -> Result<Drops> {
    let mut drops = Drops::new();
    for (id, keep) in kept {
        let group = dep.groups.get(*id);
        let removed: Vec<usize> = (0..group.width)
            .filter(|k| keep.binary_search(k).is_err())
            .collect();
        for slice in &group.slices {
            let key = (slice.tensor.clone(), slice.axis);
            let blocks = drops
                .entry(key)
                .or_insert_with(|| vec![BTreeSet::new(); slice.blocks()]);
            if blocks.len() != slice.blocks() {
                bail!(
                    "initializer '{}' is sliced on axis {} both per group and as a whole",
                    slice.tensor,
                    slice.axis
                );
            }
            for (block, index) in removed.iter().flat_map(|&k| slice.positions(k)) {
                blocks[block].insert(index);
            }
        }
    }
    drops.retain(|_, blocks| blocks.iter().any(|set| !set.is_empty()));
    Ok(drops)
}

/// `data` without the indices `drop[b]` on `axis` in the `b`-th block of rows of the axes
/// before it; every block must drop as many indices.
fn drop_indices(
    data: &TensorData,
    axis: usize,
    drop: &[BTreeSet<usize>],
    name: &str,
) -> Result<TensorData> {
    let dims = data.dims().to_vec();
    let extent = dims.get(axis).copied().unwrap_or(0);
    let keeps: Vec<Vec<usize>> = (drop.iter())
        .map(|d| (0..extent).filter(|i| !d.contains(i)).collect())
        .collect();
    let outer: usize = dims[..axis.min(dims.len())].iter().product();
    let balanced = keeps.iter().all(|k| k.len() == keeps[0].len());
    let Some(bytes) = (data.bytes())
        .filter(|_| axis < dims.len() && balanced && outer.is_multiple_of(keeps.len()))
    else {
        bail!(
            "cannot slice initializer '{name}' on axis {axis} in {} blocks",
            drop.len()
        );
    };
    let elem = bytes.len() / data.numel().max(1);
    let rows = outer / keeps.len();
    let inner: usize = dims[axis + 1..].iter().product::<usize>() * elem;
    let mut out = Vec::with_capacity(bytes.len());
    for o in 0..outer {
        for &k in &keeps[o / rows] {
            let at = (o * extent + k) * inner;
            out.extend_from_slice(&bytes[at..at + inner]);
        }
    }
    let mut new_dims = dims;
    new_dims[axis] = keeps[0].len();
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
