//! 4-bit embedding tables: a `Gather` reading a large float initializer (the ones
//! [`gather::eligible`] picks for INT8 too) becomes ONNX Runtime's `com.microsoft`
//! `GatherBlockQuantized`: the table's rows in blocks of `block_size` along the row, codes
//! packed two per byte (low nibble first) as uint8 `[rows, row_length / 2]`, a float32
//! scale per block `[rows, blocks]` and, when asymmetric, 4-bit zero points packed the
//! same way `[rows, ceil(blocks / 2)]` (the blocks of [`pack_weight`], as MatMulNBits
//! stores them).
//!
//! Why not `DequantizeLinear` with `block_size` (opset 21) before the `Gather`: ONNX
//! Runtime does not constant-fold a DequantizeLinear, so it dequantizes the whole table
//! on every run; measured on paraphrase-MiniLM-L3-v2 (ORT 1.32, one thread, 24 tokens):
//! 43 ms per run against 6.2 ms for the float model, while `GatherBlockQuantized`, which
//! dequantizes only the gathered rows, takes 4.5 ms.
//!
//! [`gather::eligible`]: crate::quantize::gather::eligible
//! [`pack_weight`]: super::pack_weight

use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::{attr::make, GraphEdit, TensorData};

use super::{add_initializer, Int4Options, PackedWeight, Target, CONTRIB_DOMAIN};
use crate::Result;

/// The rows of the table that `node` gathers from, or why they cannot take blocks of
/// `block_size` (the packed rows hold no padding, so the row length must be a multiple).
pub(super) fn target(
    graph: &GraphProto,
    node: &NodeProto,
    block_size: usize,
) -> Result<std::result::Result<Target, String>> {
    let Some(table) = graph.initializer(&node.input[0]) else {
        return Ok(Err("the table is not a constant initializer".into()));
    };
    let data = TensorData::from_proto(table, None)?;
    let width = data.dims()[1];
    if width % block_size != 0 {
        return Ok(Err(format!(
            "row length {width} is not a multiple of the block size {block_size}"
        )));
    }
    let rows = data
        .to_vec::<f32>()?
        .chunks(width)
        .map(<[f32]>::to_vec)
        .collect();
    Ok(Ok(Target {
        rows,
        k: width,
        bias: None,
    }))
}

/// The GatherBlockQuantized node replacing the `Gather` at `i`, with its new initializers
/// added.
pub(super) fn gather_block_quantized(
    graph: &mut GraphProto,
    i: usize,
    packed: &PackedWeight,
    opts: &Int4Options,
) -> Result<NodeProto> {
    let node = graph.node[i].clone();
    let rows = packed.scales.len() / packed.k_blocks;
    let row_bytes = packed.codes.len() / rows;
    let base = &node.input[0];
    let data = add_initializer(
        graph,
        base,
        "q4",
        &TensorData::from_slice(vec![rows, row_bytes], &packed.codes)?,
    );
    let scales = add_initializer(
        graph,
        base,
        "scales",
        &TensorData::from_slice(vec![rows, packed.k_blocks], &packed.scales)?,
    );
    let mut inputs = vec![data, node.input[1].clone(), scales];
    if let Some(z) = &packed.zero_points {
        let zp = TensorData::from_slice(vec![rows, z.len() / rows], z)?;
        inputs.push(add_initializer(graph, base, "zero_points", &zp));
    }
    Ok(NodeProto {
        name: node.name,
        op_type: "GatherBlockQuantized".into(),
        domain: CONTRIB_DOMAIN.into(),
        input: inputs,
        output: node.output,
        attribute: vec![
            make::int("gather_axis", 0),
            make::int("quantize_axis", 1),
            make::int("block_size", opts.block_size as i64),
            make::int("bits", 4),
        ],
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use whittle_exec::{Executor, Value};
    use whittle_ir::{DataType, GraphEdit, Model};

    use crate::int4::{quantize, Int4Options};
    use crate::optimize::util::testing::{model, node, typed_value, value, weight};

    /// A [256, 64] table gathered by three ids (one counted from the end).
    fn table_model() -> Model {
        model(
            vec![node("Gather", &["table", "ids"], &["rows"])],
            vec![typed_value("ids", DataType::Int64, &[3])],
            vec![value("rows", &[3, 64])],
            vec![weight("table", &[256, 64], 0.5)],
        )
    }

    fn run(m: &Model) -> Vec<f32> {
        let ids = whittle_ir::TensorData::from_slice(vec![3], &[0i64, 17, -1]).unwrap();
        let feed = HashMap::from([("ids".to_string(), Value::try_from(&ids).unwrap())]);
        let out = Executor::new(m).unwrap().run(feed).unwrap();
        out["rows"].to_f32_vec().unwrap()
    }

    #[test]
    fn tables_become_4_bit_blocks_within_half_a_step() {
        let m = table_model();
        for symmetric in [false, true] {
            let opts = Int4Options {
                block_size: 32,
                symmetric,
                ..Int4Options::default()
            };
            let (q, report) = quantize(&m, &opts).unwrap();
            assert_eq!(report.quantized.len(), 1);
            assert_eq!(report.quantized[0].op_type, "GatherBlockQuantized");
            let g = q.graph();
            assert_eq!(g.node[0].op_type, "GatherBlockQuantized");
            // 256 x 64 codes in 4 bits, 2 blocks per row; the float table is gone.
            assert!(g.initializer("table").is_none());
            assert_eq!(g.initializer[0].dims, [256, 32]);
            assert_eq!(g.initializer[1].dims, [256, 2]);
            assert_eq!(g.initializer.len(), if symmetric { 2 } else { 3 });
            let (float, quant) = (run(&m), run(&q));
            // Each block's step is at most its range / 15 (asymmetric) or 2 * absmax / 15.
            let table =
                whittle_ir::TensorData::from_proto(m.graph().initializer("table").unwrap(), None)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
            let absmax = table.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = whittle_ir::numeric::max_abs_diff(float.iter().copied(), quant);
            assert!(
                worst > 0.0 && worst <= f64::from(absmax * 2.0 / 15.0 / 2.0) + 1e-6,
                "{worst}"
            );
        }
    }

    #[test]
    fn excluded_tables_and_rows_off_the_block_grid_stay_float() {
        let m = table_model();
        let opts = Int4Options {
            exclude: vec!["Gather_rows".into()],
            ..Int4Options::default()
        };
        let (q, report) = quantize(&m, &opts).unwrap();
        assert!(report.quantized.is_empty());
        assert_eq!(q.graph().node[0].op_type, "Gather");
        let opts = Int4Options {
            block_size: 128,
            ..Int4Options::default()
        };
        let (_, report) = quantize(&m, &opts).unwrap();
        assert!(report.quantized.is_empty());
        assert!(
            report.skipped[0].reason.contains("row length 64"),
            "{report:?}"
        );
        let unknown = Int4Options {
            exclude: vec!["nope".into()],
            ..Int4Options::default()
        };
        let err = quantize(&m, &unknown).unwrap_err().to_string();
        assert!(err.contains("'nope'"), "{err}");
    }
}
