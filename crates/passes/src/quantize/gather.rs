//! Embedding tables in 8 bits: a `Gather` whose data is a large float initializer reads an
//! int8 copy instead and a `DequantizeLinear` turns the gathered rows back into floats
//! (the layout ONNX Runtime's dynamic quantizer also emits). Per tensor, or with
//! `per_channel` (at opset >= 13) one scale per column: the last axis, which the gathered
//! rows keep. Tables are asymmetric uint8 whatever the weight type: a lookup multiplies no
//! integers, so it needs neither a zero point of 0 nor a reduced range, and 256 levels
//! over `[min, max]` are the finest steps 8 bits give.

use whittle_ir::graph::GraphEdit;
use whittle_ir::Model;

use super::build::Builder;
use super::config::QuantConfig;
use super::plan::is_excluded;
use super::scheme::{quantize_weight, QuantType, Scheme};
use super::weights::initializer;
use crate::Result;

/// Tables smaller than this stay float: their bytes do not matter and a lookup is cheap.
pub const MIN_TABLE_ELEMENTS: usize = 4096;

/// How tables are quantized (see the module documentation).
const TABLE_SCHEME: Scheme = Scheme {
    qtype: QuantType::Uint8,
    symmetric: false,
    reduce_range: false,
};

/// Indices of the eligible `Gather` nodes: 2-D float initializer data of at least
/// [`MIN_TABLE_ELEMENTS`] elements that no other node reads and no caller overrides (not
/// a graph input), gathered along axis 0, not named by `exclude`. INT8 and INT4 share it.
pub fn eligible(model: &Model, exclude: &[String]) -> Result<Vec<usize>> {
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
        let shared = consumers.get(table).is_some_and(|c| c.len() > 1)
            || graph.input.iter().any(|v| &v.name == table);
        if node.op_type == "Gather"
            && node.domain.is_empty()
            && init.data_type == whittle_ir::DataType::Float as i32
            && init.dims.len() == 2
            && axis == 0
            && elements >= MIN_TABLE_ELEMENTS as i64
            && !shared
            && !is_excluded(node, i, exclude)
        {
            eligible.push(i);
        }
    }
    Ok(eligible)
}

/// The table initializers that the `Gather` nodes at `nodes` (indices into `model`, as
/// [`eligible`] gives them) read: what [`quantize_tables`] takes once an exporter has
/// moved the nodes.
pub fn table_names(model: &Model, nodes: &[usize]) -> Vec<String> {
    let graph = model.graph();
    nodes
        .iter()
        .map(|&i| graph.node[i].input[0].clone())
        .collect()
}

/// Quantizes the `tables` (initializer names from [`table_names`]) in front of the
/// `Gather` nodes of `model` reading them, per column when `cfg.per_channel`; the tables'
/// values are read from `source` (the float model `model` was rewritten from).
pub fn quantize_tables(
    model: &mut Model,
    source: &Model,
    tables: &[String],
    cfg: &QuantConfig,
) -> Result<()> {
    // Per-axis DequantizeLinear needs opset 13.
    let per_column = cfg.per_channel && model.opset("").is_some_and(|v| v >= 13);
    let readers: Vec<usize> = (model.graph().node.iter().enumerate())
        .filter(|(_, n)| {
            n.op_type == "Gather" && n.input.first().is_some_and(|t| tables.contains(t))
        })
        .map(|(i, _)| i)
        .collect();
    let mut b = Builder::new(model.graph_mut());
    for i in readers {
        let node = b.graph.node[i].clone();
        let table = initializer(source.graph(), &node.input[0])?;
        let axis = per_column.then_some(1);
        let q = quantize_weight(&node.input[0], &table, &TABLE_SCHEME, axis)?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use whittle_exec::{Executor, Value};
    use whittle_ir::{DataType, TensorData};

    use super::*;
    use crate::optimize::util::testing::{model, node, typed_value, value, weight};

    #[test]
    fn tables_are_asymmetric_uint8_within_half_a_step() {
        // A skewed table (values in [0, 1.0]) and int8 weights configured: the table still
        // takes uint8 over [min, max], so its step is range / 255, not 2 * absmax / 254.
        let table = weight("table", &[128, 64], 0.5);
        let m = model(
            vec![node("Gather", &["table", "ids"], &["rows"])],
            vec![typed_value("ids", DataType::Int64, &[3])],
            vec![value("rows", &[3, 64])],
            vec![table.clone()],
        );
        let mut q = m.clone();
        quantize_tables(&mut q, &m, &["table".to_string()], &QuantConfig::default()).unwrap();
        let data = q.graph().initializer("table_quantized").unwrap();
        assert_eq!(data.data_type, DataType::Uint8 as i32);
        let ids = TensorData::from_slice(vec![3], &[0i64, 5, 127]).unwrap();
        let feed = HashMap::from([("ids".to_string(), Value::try_from(&ids).unwrap())]);
        let run = |m: &Model| -> Vec<f32> {
            let out = Executor::new(m).unwrap().run(feed.clone()).unwrap();
            out["rows"].to_f32_vec().unwrap()
        };
        let (float, quant) = (run(&m), run(&q));
        let values: Vec<f32> = TensorData::from_proto(&table, None)
            .unwrap()
            .to_vec()
            .unwrap();
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let step = (hi - lo.min(0.0)) / 255.0;
        let worst = whittle_ir::numeric::max_abs_diff(float.iter().copied(), quant.iter().copied());
        assert!(
            worst <= f64::from(step / 2.0 + 1e-6),
            "error {worst}, step {step}"
        );
        assert!(worst > 0.0);
    }
}
