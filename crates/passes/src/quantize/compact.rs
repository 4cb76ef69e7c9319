//! A QDQ model made smaller after export, as ONNX Runtime's quantizer users would expect
//! of an 8-bit model:
//! - the large float constants that an `Add`, `Sub` or `Concat` reads (a vision
//!   transformer's positional embedding and class token, the biases after its MatMuls) and
//!   a `LayerNormalization`'s scale and bias, stored in uint8 (ORT's quantizer stores an
//!   `Add`'s initializer input and a LayerNormalization's scale in 8 bits too). Their
//!   rounding, at most half of 1/255 of the constant's range, is small beside that of the
//!   activations they are added to or scale. They are decoded by `Cast` -> `Sub` (the zero
//!   point, when not 0) -> `Mul` (the scale), those of one shape stacked and decoded
//!   together, then `Split`, not by a `DequantizeLinear` each: ONNX Runtime constant-folds
//!   these nodes when it loads the model but never a DequantizeLinear (it keeps them for
//!   its QDQ fusions), so it ran one per constant on every inference (55 in the seed
//!   table's INT8 ViT, about a seventh of its time at batch 1). whittle's planned executor
//!   folds both;
//! - zero points of 0 that only `DequantizeLinear` nodes read left out (the operator's
//!   default), except before a Gemm (ORT's QGemm fusion wants them);
//! - equal scales and zero points (a Reshape or Transpose takes its input's range) stored
//!   once, by the `dedupe-initializers` pass;
//! - the QuantizeLinear/DequantizeLinear nodes unnamed (a name is optional in ONNX; theirs
//!   only repeated their output's).

use std::collections::{BTreeMap, HashSet};

use whittle_ir::attr::make;
use whittle_ir::graph::{node_inputs, GraphEdit};
use whittle_ir::proto::{AttributeProto, NodeProto};
use whittle_ir::{DataType, Model, TensorData};

use super::build::Builder;
use super::config::QuantConfig;
use super::plan::is_excluded;
use super::scheme::{quantize_weight, QParams, QuantType, QuantizedWeight, Scheme};
use super::weights::initializer;
use crate::optimize::dedupe_initializers::DedupeInitializers;
use crate::optimize::Pass;
use crate::Result;

/// Float constants smaller than this stay float: the decoding nodes and parameters take
/// about as many bytes as 8 bits save on them.
pub const MIN_CONSTANT_ELEMENTS: usize = 64;

/// Operators whose float constant inputs are stored in 8 bits: any input of these...
pub const CONSTANT_READERS: [&str; 3] = ["Add", "Sub", "Concat"];

/// ...and the scale and bias (inputs 1 and 2) of these.
pub const PARAMETER_READERS: [&str; 1] = ["LayerNormalization"];

/// How those constants are quantized: uint8 over `[min, max]`, one scale per tensor (the
/// finest steps 8 bits give; nothing multiplies them as integers).
const CONSTANT_SCHEME: Scheme = Scheme {
    qtype: QuantType::Uint8,
    symmetric: false,
    reduce_range: false,
};

/// Applies the three reductions of the module documentation to `out`, a QDQ export of
/// `source` (whose node names `cfg.exclude` uses: the constants of an excluded node stay
/// float). Returns how many constants were stored in 8 bits.
pub fn compact(out: &mut Model, source: &Model, cfg: &QuantConfig) -> Result<usize> {
    let kept = excluded_inputs(source, cfg);
    let quantized = quantize_constants(out, &kept)?;
    omit_zero_points(out)?;
    DedupeInitializers.run(out)?;
    for node in &mut out.graph_mut().node {
        if is_dequantize(node) || (node.op_type == "QuantizeLinear" && node.domain.is_empty()) {
            node.name.clear();
        }
    }
    Ok(quantized)
}

/// Inputs of the nodes of `source` that `cfg.exclude` names.
fn excluded_inputs(source: &Model, cfg: &QuantConfig) -> HashSet<String> {
    (source.graph().node.iter().enumerate())
        .filter(|(i, n)| is_excluded(n, *i, &cfg.exclude))
        .flat_map(|(_, n)| n.input.iter().cloned())
        .collect()
}

/// Stores every float initializer of at least [`MIN_CONSTANT_ELEMENTS`] elements that only
/// [`CONSTANT_READERS`] read, or [`PARAMETER_READERS`] as their scale or bias (not a graph
/// input, not in `kept`), as uint8 behind the nodes of [`decode`], whose output takes the
/// initializer's name, so its readers are unchanged.
fn quantize_constants(out: &mut Model, kept: &HashSet<String>) -> Result<usize> {
    let graph = out.graph();
    let consumers = graph.consumers();
    let read_only_by_readers = |name: &str| {
        consumers.get(name).is_some_and(|c| {
            c.iter().all(|&i| {
                let n: &NodeProto = &graph.node[i];
                let op = n.op_type.as_str();
                let parameter = PARAMETER_READERS.contains(&op)
                    && n.input
                        .iter()
                        .position(|x| x == name)
                        .is_some_and(|k| k > 0)
                    && n.input.first().is_some_and(|x| x != name);
                n.domain.is_empty() && (CONSTANT_READERS.contains(&op) || parameter)
            })
        })
    };
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    let names: Vec<String> = (graph.initializer.iter())
        .filter(|t| {
            t.data_type == DataType::Float as i32
                && t.dims.iter().product::<i64>() >= MIN_CONSTANT_ELEMENTS as i64
                && !inputs.contains(t.name.as_str())
                && !kept.contains(&t.name)
                && read_only_by_readers(&t.name)
        })
        .map(|t| t.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let float: Vec<TensorData> = (names.iter())
        .map(|n| initializer(out.graph(), n))
        .collect::<Result<_>>()?;
    let drop: HashSet<&String> = names.iter().collect();
    out.graph_mut()
        .initializer
        .retain(|t| !drop.contains(&t.name));
    let split_as_input = out.opset("").unwrap_or(1) >= 13;
    let mut groups: BTreeMap<Vec<usize>, Vec<(String, QuantizedWeight)>> = BTreeMap::new();
    for (name, values) in names.iter().zip(&float) {
        let q = quantize_weight(name, values, &CONSTANT_SCHEME, None)?;
        groups
            .entry(values.dims().to_vec())
            .or_default()
            .push((name.clone(), q));
    }
    let mut b = Builder::new(out.graph_mut());
    for (dims, group) in &groups {
        decode(&mut b, dims, group, split_as_input)?;
    }
    out.graph_mut().sort_topologically()?;
    Ok(names.len())
}

/// Adds the constants of `group` (all of shape `dims`, uint8 with one scale and zero
/// point each) stacked in one tensor, and the unnamed nodes that give each back in float
/// under its name: `Cast` -> `Sub` of the zero points (left out when all are 0) -> `Mul` by
/// the scales, then (for two or more) `Reshape` to `[K * dims[0], ...]` and `Split` into
/// the K constants. One decode for all the biases and LayerNormalization parameters of a
/// width takes fewer bytes than one per constant (the seed table's INT8 ViT: 796,026
/// bytes against 803,664 with a DequantizeLinear each, whose nodes and names outweighed
/// its 128-byte constants). `split_as_input`: the opset (13 on) takes Split's sizes as an
/// input, not an attribute.
fn decode(
    b: &mut Builder,
    dims: &[usize],
    group: &[(String, QuantizedWeight)],
    split_as_input: bool,
) -> Result<()> {
    let k = group.len();
    let base = match group {
        [(name, _)] => name.clone(),
        _ => format!(
            "constants_{}",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("x")
        ),
    };
    // One scale and zero point per constant, broadcast over its elements.
    let (stacked, param_dims) = match k {
        1 => (dims.to_vec(), vec![]),
        _ => (
            [&[k][..], dims].concat(),
            [vec![k], vec![1; dims.len()]].concat(),
        ),
    };
    let bytes: Vec<u8> = group
        .iter()
        .flat_map(|(_, q)| q.data.bytes().unwrap_or_default().to_vec())
        .collect();
    let data = TensorData::from_bytes(DataType::Uint8, stacked, bytes)?;
    let param = |f: fn(&QParams) -> f32| -> Result<TensorData> {
        let v: Vec<f32> = group.iter().map(|(_, q)| f(&q.params[0])).collect();
        Ok(TensorData::from_slice(param_dims.clone(), &v)?)
    };
    let data = b.constant(&format!("{base}_quantized"), &data);
    let scale = b.constant(&format!("{base}_scale"), &param(|p| p.scale)?);
    let decoded = match group {
        [(name, _)] => name.clone(),
        _ => b.fresh(&format!("{base}_decoded")),
    };
    let mut x = b.fresh(&format!("{base}_cast"));
    let to = make::int("to", DataType::Float as i64);
    let mut nodes = vec![unnamed("Cast", vec![data], &[&x], vec![to])];
    if group.iter().any(|(_, q)| q.params[0].zero_point != 0) {
        let zero = b.constant(
            &format!("{base}_zero_point"),
            &param(|p| p.zero_point as f32)?,
        );
        let centred = b.fresh(&format!("{base}_centred"));
        nodes.push(unnamed("Sub", vec![x, zero], &[&centred], vec![]));
        x = centred;
    }
    nodes.push(unnamed("Mul", vec![x, scale], &[&decoded], vec![]));
    if k > 1 {
        let rows = [
            &[(k * dims[0]) as i64][..],
            &dims[1..].iter().map(|&d| d as i64).collect::<Vec<_>>(),
        ]
        .concat();
        let shape = b.constant(
            &format!("{base}_shape"),
            &TensorData::from_slice(vec![rows.len()], &rows)?,
        );
        let flat = b.fresh(&format!("{base}_rows"));
        nodes.push(unnamed("Reshape", vec![decoded, shape], &[&flat], vec![]));
        let sizes = vec![dims[0] as i64; k];
        let outputs: Vec<&str> = group.iter().map(|(n, _)| n.as_str()).collect();
        let split = if split_as_input {
            let t = b.constant(
                &format!("{base}_split"),
                &TensorData::from_slice(vec![k], &sizes)?,
            );
            unnamed("Split", vec![flat, t], &outputs, vec![])
        } else {
            unnamed(
                "Split",
                vec![flat],
                &outputs,
                vec![make::ints("split", &sizes)],
            )
        };
        nodes.push(split);
    }
    b.graph.node.extend(nodes);
    Ok(())
}

fn unnamed(
    op: &str,
    input: Vec<String>,
    output: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input,
        output: output.iter().map(|o| o.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

/// Leaves out the zero-point input of every `DequantizeLinear` (not feeding a Gemm) whose
/// zero point is an initializer of zeros that only `DequantizeLinear` nodes read (a
/// `QuantizeLinear` needs its zero point: it gives the output type), and drops those
/// initializers nothing reads any more.
fn omit_zero_points(out: &mut Model) -> Result<()> {
    let graph = out.graph();
    let consumers = graph.consumers();
    let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    let mut zeros = HashSet::new();
    for node in graph.node.iter().filter(|n| is_dequantize(n)) {
        let Some(zp) = node.input.get(2).filter(|z| !z.is_empty()) else {
            continue;
        };
        let Some(t) = graph.initializer(zp) else {
            continue;
        };
        let only_dq = consumers
            .get(zp)
            .is_some_and(|c| c.iter().all(|&i| is_dequantize(&graph.node[i])));
        if only_dq && !inputs.contains(zp.as_str()) && all_zero(&TensorData::from_proto(t, None)?) {
            zeros.insert(zp.clone());
        }
    }
    // ONNX Runtime fuses DequantizeLinear -> Gemm into QGemm only with the weight's zero
    // point given (QLinearConv and QLinearMatMul do without).
    let gemm_inputs: HashSet<String> = (graph.node.iter())
        .filter(|n| n.op_type == "Gemm")
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    let g = out.graph_mut();
    for node in g.node.iter_mut().filter(|n| is_dequantize(n)) {
        let feeds_gemm = node.output.iter().any(|y| gemm_inputs.contains(y));
        if !feeds_gemm && node.input.get(2).is_some_and(|z| zeros.contains(z)) {
            node.input.truncate(2);
        }
    }
    let still_read: HashSet<String> = g.node.iter().flat_map(node_inputs).collect();
    g.initializer
        .retain(|t| !zeros.contains(&t.name) || still_read.contains(&t.name));
    Ok(())
}

fn is_dequantize(node: &NodeProto) -> bool {
    node.op_type == "DequantizeLinear" && node.domain.is_empty()
}

fn all_zero(t: &TensorData) -> bool {
    t.bytes().is_some_and(|b| b.iter().all(|&x| x == 0))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use whittle_exec::{Executor, Value};
    use whittle_ir::attr::make;
    use whittle_ir::graph::GraphEdit;
    use whittle_ir::{DataType, Model, NodeAttrs, TensorData};

    use whittle_ir::proto::TensorProto;

    use crate::optimize::util::testing::{model, node, value};
    use crate::quantize::{static_int8, QuantConfig};

    /// `n` pseudo-random values in `[centre - 0.5, centre + 0.5)`.
    fn values(n: usize, seed: u64, centre: f32) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                centre + (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn constant(name: &str, dims: &[usize], seed: u64, centre: f32) -> TensorProto {
        let n = dims.iter().product();
        TensorData::from_slice(dims.to_vec(), &values(n, seed, centre))
            .unwrap()
            .to_proto(name)
    }

    /// A transformer-like block on 8 tokens of 64 features: MatMul -> bias Add ->
    /// LayerNormalization -> positional Add -> MatMul.
    fn block() -> Model {
        let mut ln = node("LayerNormalization", &["h", "g", "beta"], &["n"]);
        ln.attribute.push(make::int("axis", -1));
        model(
            vec![
                node("MatMul", &["x", "w"], &["m"]),
                node("Add", &["m", "b"], &["h"]),
                ln,
                node("Add", &["n", "pos"], &["p"]),
                node("MatMul", &["p", "w2"], &["y"]),
            ],
            vec![value("x", &[8, 64])],
            vec![value("y", &[8, 16])],
            vec![
                constant("w", &[64, 64], 1, 0.0),
                constant("b", &[64], 2, 0.2),
                constant("g", &[64], 3, 1.0),
                constant("beta", &[64], 4, 0.0),
                constant("pos", &[8, 64], 5, 0.0),
                constant("w2", &[64, 16], 6, 0.0),
            ],
        )
    }

    fn feed(seed: u64) -> HashMap<String, Value> {
        let x = TensorData::from_slice(vec![8, 64], &values(512, 100 + seed, 0.0)).unwrap();
        HashMap::from([("x".to_string(), Value::try_from(&x).unwrap())])
    }

    fn run(m: &Model, feed: HashMap<String, Value>) -> Vec<f32> {
        let out = Executor::new(m).unwrap().run(feed).unwrap();
        out["y"].to_f32_vec().unwrap()
    }

    #[test]
    fn constants_go_8_bit_zero_points_and_copies_go_and_outputs_stay_close() {
        let m = block();
        let cfg = QuantConfig {
            per_channel: true,
            ..Default::default()
        };
        let (q, _) = static_int8(&m, &cfg, (0..4).map(feed)).unwrap();
        let g = q.graph();
        // The bias, the LayerNormalization's scale and bias and the positional table are
        // uint8, decoded by unnamed Cast -> Sub -> Mul nodes (the three of 64 elements
        // stacked, then Reshape -> Split) whose last output keeps their names; no
        // DequantizeLinear reads a constant any more.
        let producer = |x: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == x));
        for name in ["b", "g", "beta", "pos"] {
            assert!(g.initializer(name).is_none(), "{name} is still float");
            let mut chain = vec![];
            let mut x = name.to_string();
            while let Some(n) = producer(&x) {
                assert!(n.name.is_empty());
                chain.push(n.op_type.as_str());
                x = n.input[0].clone();
            }
            assert_eq!(g.initializer(&x).unwrap().data_type, DataType::Uint8 as i32);
            let grouped = ["Split", "Reshape", "Mul", "Sub", "Cast"];
            assert_eq!(
                chain,
                if name == "pos" {
                    &grouped[2..]
                } else {
                    &grouped
                },
                "{name}"
            );
        }
        let consumers = g.consumers();
        for dq in g.node.iter().filter(|n| n.op_type == "DequantizeLinear") {
            if g.initializer(&dq.input[0]).is_some() {
                let readers = &consumers[&dq.output[0]];
                assert!(readers.iter().all(|&r| g.node[r].op_type == "MatMul"));
            }
        }
        // Zero points of 0 read only by DequantizeLinear nodes are left out; the weights'
        // per-channel zero points were all 0.
        for dq in g.node.iter().filter(|n| n.op_type == "DequantizeLinear") {
            if let Some(z) = dq.input.get(2) {
                let z = TensorData::from_proto(g.initializer(z).unwrap(), None).unwrap();
                assert!(z.bytes().unwrap().iter().any(|&b| b != 0), "{dq:?}");
            }
        }
        let w = g.node.iter().find(|n| n.input[0] == "w_quantized").unwrap();
        assert_eq!(w.input.len(), 2);
        // Equal scalars are stored once.
        let mut scalars: Vec<(i32, Vec<u8>)> = (g.initializer.iter())
            .filter(|t| t.dims.iter().product::<i64>() == 1)
            .map(|t| {
                let d = TensorData::from_proto(t, None).unwrap();
                (t.data_type, d.bytes().unwrap().to_vec())
            })
            .collect();
        let all = scalars.len();
        scalars.sort();
        scalars.dedup();
        assert_eq!(scalars.len(), all);
        // The first MatMul's output, read by a float Add, is not re-quantized; the second
        // MatMul's input is.
        let quantizes = |x: &str| {
            g.node
                .iter()
                .any(|n| n.op_type == "QuantizeLinear" && n.input[0] == x)
        };
        assert!(!quantizes("m"));
        assert!(quantizes("p"));
        assert!(g
            .node
            .iter()
            .filter(|n| n.op_type.ends_with("QuantizeLinear"))
            .all(|n| n.name.is_empty()));
        // Outputs within a few activation steps of the float model's (1.4% of their
        // largest magnitude here).
        for seed in [0, 9] {
            let (float, quant) = (run(&m, feed(seed)), run(&q, feed(seed)));
            let range = float.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = whittle_ir::numeric::max_abs_diff(float, quant);
            assert!(worst < 0.025 * f64::from(range), "{worst} of {range}");
        }
    }

    #[test]
    fn before_opset_13_the_split_sizes_are_an_attribute() {
        let mut m = block();
        m.proto.opset_import[0].version = 11;
        let (q, _) = static_int8(&m, &QuantConfig::default(), (0..2).map(feed)).unwrap();
        let split = q
            .graph()
            .node
            .iter()
            .find(|n| n.op_type == "Split")
            .unwrap();
        assert_eq!(split.input.len(), 1);
        assert_eq!(split.ints("split").unwrap(), Some(vec![64, 64, 64]));
        let (float, quant) = (run(&m, feed(1)), run(&q, feed(1)));
        let range = float.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = whittle_ir::numeric::max_abs_diff(float, quant);
        assert!(worst < 0.025 * f64::from(range), "{worst} of {range}");
    }

    #[test]
    fn an_excluded_node_keeps_its_constants_float() {
        let cfg = QuantConfig {
            exclude: vec!["Add_p".into()],
            ..Default::default()
        };
        let (q, _) = static_int8(&block(), &cfg, (0..2).map(feed)).unwrap();
        let pos = q.graph().initializer("pos").unwrap();
        assert_eq!(pos.data_type, DataType::Float as i32);
        assert!(q.graph().initializer("b").is_none());
    }
}
