//! Embedding tables in int8: a `Gather` whose data is a large float initializer reads an
//! int8 copy instead and a `DequantizeLinear` turns the gathered rows back into floats
//! (the layout ONNX Runtime's dynamic quantizer also emits). Per tensor, or with
//! `per_channel` (at opset >= 13) one scale per column: the last axis, which the gathered
//! rows keep.

use whittle_ir::graph::GraphEdit;
use whittle_ir::Model;

use super::build::Builder;
use super::config::QuantConfig;
use super::scheme::{quantize_weight, Scheme};
use super::weights::initializer;
use crate::Result;

/// Tables smaller than this stay float: their bytes do not matter and a lookup is cheap.
pub const MIN_TABLE_ELEMENTS: usize = 4096;

/// Indices of the eligible `Gather` nodes: float initializer data of at least
/// [`MIN_TABLE_ELEMENTS`] elements that no other node reads, gathered along axis 0, not
/// excluded.
pub fn eligible(model: &Model, cfg: &QuantConfig) -> Result<Vec<usize>> {
    let graph = model.graph();
    let consumers = graph.consumers();
    let mut eligible = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let Some(table) = node.input.first() else {
            continue;
        };
        let Some(init) = graph.initializer(table) else {
            continue;
        };
        let axis = whittle_ir::NodeAttrs::int_or(node, "axis", 0)?;
        let elements: i64 = init.dims.iter().product();
        let shared = consumers.get(table).is_some_and(|c| c.len() > 1);
        if node.op_type == "Gather"
            && node.domain.is_empty()
            && init.data_type == whittle_ir::DataType::Float as i32
            && init.dims.len() == 2
            && axis == 0
            && elements >= MIN_TABLE_ELEMENTS as i64
            && !shared
            && !cfg.exclude.contains(&node.name)
        {
            eligible.push(i);
        }
    }
    Ok(eligible)
}

/// Quantizes the tables of the [`eligible`] `Gather` nodes.
pub fn quantize_tables(model: &mut Model, cfg: &QuantConfig) -> Result<()> {
    // Per-axis DequantizeLinear needs opset 13.
    let per_column = cfg.per_channel && model.opset("").is_some_and(|v| v >= 13);
    // Reduce-range guards integer products against overflow; a lookup has none.
    let full_range = Scheme::weights(cfg.weight_type, false);
    let eligible = eligible(model, cfg)?;
    let mut b = Builder::new(model.graph_mut());
    for i in eligible {
        let node = b.graph.node[i].clone();
        let table = initializer(b.graph, &node.input[0])?;
        let axis = per_column.then_some(1);
        let q = quantize_weight(&node.input[0], &table, &full_range, axis)?;
        let data = b.constant(&format!("{}_quantized", node.input[0]), &q.data);
        let scale = b.constant(&format!("{}_scale", node.input[0]), &q.scale_tensor()?);
        let zero = b.constant(
            &format!("{}_zero_point", node.input[0]),
            &q.zero_point_tensor()?,
        );
        let rows = b.fresh(&format!("{}_quantized", node.output[0]));
        let mut gather = node.clone();
        gather.input[0] = data;
        gather.output = vec![rows.clone()];
        b.graph.node.push(gather);
        let attrs = match axis {
            Some(_) => vec![whittle_ir::attr::make::int("axis", -1)],
            None => vec![],
        };
        b.node(
            "DequantizeLinear",
            vec![rows, scale, zero],
            node.output.clone(),
            attrs,
        );
        b.drop_node(i);
    }
    b.prune();
    model.graph_mut().sort_topologically()?;
    Ok(())
}
