//! INT4 weight-only quantization of MatMul / Gemm weights, block-wise along K, and of
//! embedding tables ([`tables`]: `Gather` on a large float initializer becomes
//! `com.microsoft` `GatherBlockQuantized` with the same 4-bit blocks along each row).
//!
//! Each constant 2-D float32 weight `B` ([K, N] for MatMul, Gemm's `B` or `Bᵀ`) is split
//! into blocks of `block_size` consecutive K elements per output column; each block gets
//! its own float32 scale (and, when asymmetric, a 4-bit zero point). The layer becomes a
//! `com.microsoft` `MatMulNBits` node (bits = 4): B packed as uint8 `[N, k_blocks,
//! block_size / 2]` (low nibble first), scales `[N * k_blocks]`, zero points packed two
//! per byte per column (`[N * ceil(k_blocks / 2)]`, absent when symmetric: the implied
//! zero point is 8). A Gemm's bias goes to MatMulNBits' `bias` input.
//!
//! Why MatMulNBits rather than `DequantizeLinear` with `block_size` (opset 21): ONNX
//! Runtime's CPU provider runs MatMulNBits with fused MLAS kernels that read the 4-bit
//! weights directly, while a DequantizeLinear → MatMul pair materialises the float32
//! weight on every run (or, once constant-folded, stores it back in float32 and loses
//! the size gain). It is also what ORT's own `MatMulNBitsQuantizer` emits by default.
//!
//! K need not be a multiple of `block_size`: the last block is zero-padded. Layers are
//! skipped (and reported) when B is not a 2-D float32 initializer, when it is also a
//! graph input (a caller may override it), when a Gemm transposes A, scales by alpha,
//! or has a bias that is not a constant of N elements, or when K < 16 (MatMulNBits'
//! smallest block). Nodes named in [`Int4Options::exclude`] stay float; a name that is
//! not in the model is refused.

mod tables;

use std::collections::HashMap;

use serde::Serialize;
use whittle_ir::proto::{GraphProto, NodeProto, OperatorSetIdProto, TensorProto};
use whittle_ir::{attr::make, DataType, GraphEdit, Model, NodeAttrs, TensorData};

use crate::quantize::gather;
use crate::quantize::plan::{check_exclude, is_excluded};
use crate::{bail, Result};
use whittle_ir::graph::node_display_name;

/// The operator domain of MatMulNBits.
pub const CONTRIB_DOMAIN: &str = "com.microsoft";

/// Smallest K MatMulNBits accepts (its smallest block).
const MIN_K: usize = 16;

/// Options of [`quantize`].
#[derive(Clone, Debug)]
pub struct Int4Options {
    /// K elements per block: a power of two, at least 16 (32, 64 or 128 are typical).
    pub block_size: usize,
    /// Symmetric blocks (no zero points) rather than min/max blocks with zero points.
    pub symmetric: bool,
    /// MatMulNBits `accuracy_level` (0: unset; 4: ORT quantizes A to int8 on CPU).
    pub accuracy_level: i64,
    /// Nodes to leave in float, by name (`OpType#index` for unnamed nodes).
    pub exclude: Vec<String>,
}

impl Default for Int4Options {
    fn default() -> Self {
        Int4Options {
            block_size: 32,
            symmetric: false,
            accuracy_level: 0,
            exclude: Vec::new(),
        }
    }
}

/// A layer whose weight became 4-bit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantizedLayer {
    /// Node name.
    pub node: String,
    /// The operator it became: `MatMulNBits` or `GatherBlockQuantized`.
    pub op_type: String,
    /// Elements along the blocked axis: input features, or a table's row length.
    pub k: usize,
    /// Output features, or a table's rows.
    pub n: usize,
}

/// A MatMul / Gemm / embedding-table Gather left as is, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedLayer {
    /// Node name.
    pub node: String,
    /// Operator type.
    pub op_type: String,
    /// Why it was not quantized.
    pub reason: String,
}

/// What [`quantize`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Int4Report {
    /// Layers now running as MatMulNBits.
    pub quantized: Vec<QuantizedLayer>,
    /// Layers left in float32.
    pub skipped: Vec<SkippedLayer>,
}

/// A weight in MatMulNBits layout.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeight {
    /// Packed codes `[N, k_blocks, block_size / 2]`.
    pub codes: Vec<u8>,
    /// Scales `[N * k_blocks]`.
    pub scales: Vec<f32>,
    /// Packed zero points `[N * ceil(k_blocks / 2)]`; `None` when symmetric.
    pub zero_points: Option<Vec<u8>>,
    /// Blocks per column.
    pub k_blocks: usize,
}

/// What a MatMul / Gemm becomes.
struct Target {
    /// Weight as [N][K] rows (one row per output feature).
    rows: Vec<Vec<f32>>,
    k: usize,
    bias: Option<Vec<f32>>,
}

/// Replaces eligible MatMul / Gemm weights by 4-bit MatMulNBits and embedding tables by
/// GatherBlockQuantized; see the module docs.
pub fn quantize(model: &Model, opts: &Int4Options) -> Result<(Model, Int4Report)> {
    let bs = opts.block_size;
    if bs < MIN_K || !bs.is_power_of_two() {
        bail!("int4: block size {bs} must be a power of two and at least {MIN_K}");
    }
    check_exclude(model.graph(), &opts.exclude)?;
    let tables = gather::eligible(model, &opts.exclude)?;
    let mut out = model.clone();
    let graph = out.graph_mut();
    let mut report = Int4Report::default();
    let mut replaced = Vec::new();
    for i in 0..graph.node.len() {
        let node = &graph.node[i];
        let label = node_display_name(node, i);
        let decision = if tables.contains(&i) {
            tables::target(graph, node, bs)?
        } else if matches!(node.op_type.as_str(), "MatMul" | "Gemm") && node.domain.is_empty() {
            if is_excluded(node, i, &opts.exclude) {
                Err("excluded by name (`exclude`)".to_string())
            } else {
                target(graph, node)?
            }
        } else {
            continue;
        };
        match decision {
            Err(reason) => report.skipped.push(SkippedLayer {
                node: label,
                op_type: node.op_type.clone(),
                reason,
            }),
            Ok(t) => {
                let packed = pack_weight(&t.rows, t.k, bs, opts.symmetric);
                let new = if tables.contains(&i) {
                    tables::gather_block_quantized(graph, i, &packed, opts)?
                } else {
                    matmul_nbits(graph, i, &t, &packed, opts)?
                };
                report.quantized.push(QuantizedLayer {
                    node: label,
                    op_type: new.op_type.clone(),
                    k: t.k,
                    n: t.rows.len(),
                });
                // Only initializers no node reads any more are dropped.
                let old = std::mem::replace(&mut graph.node[i], new);
                replaced.extend(old.input);
            }
        }
    }
    drop_unused_initializers(graph, &replaced);
    if !report.quantized.is_empty() && out.opset(CONTRIB_DOMAIN).is_none() {
        out.proto.opset_import.push(OperatorSetIdProto {
            domain: CONTRIB_DOMAIN.into(),
            version: 1,
        });
    }
    Ok((out, report))
}

/// The weight rows, K and bias of a node, or why it cannot be quantized.
fn target(graph: &GraphProto, node: &NodeProto) -> Result<std::result::Result<Target, String>> {
    let b_name = node.input.get(1).cloned().unwrap_or_default();
    let Some(b) = graph.initializer(&b_name) else {
        return Ok(Err("B is not a constant initializer".into()));
    };
    if graph.input.iter().any(|v| v.name == b_name) {
        return Ok(Err(
            "B is also a graph input, so a caller may override it".into()
        ));
    }
    if b.data_type != DataType::Float.code() || b.dims.len() != 2 {
        return Ok(Err(format!(
            "B is not a 2-D float32 tensor (dims {:?})",
            b.dims
        )));
    }
    let data = TensorData::from_proto(b, None)?;
    let (r, c) = (data.dims()[0], data.dims()[1]);
    let values = data.to_vec::<f32>()?;
    let transposed = node.op_type == "Gemm" && node.int_or("transB", 0)? != 0;
    let (k, n) = if transposed { (c, r) } else { (r, c) };
    if k < MIN_K {
        return Ok(Err(format!(
            "K = {k} is below MatMulNBits' smallest block of {MIN_K}"
        )));
    }
    let rows: Vec<Vec<f32>> = if transposed {
        values.chunks(k).map(<[f32]>::to_vec).collect()
    } else {
        (0..n)
            .map(|j| (0..k).map(|i| values[i * n + j]).collect())
            .collect()
    };
    let bias = match node.op_type.as_str() {
        "Gemm" => match gemm_bias(graph, node, n)? {
            Ok(bias) => bias,
            Err(reason) => return Ok(Err(reason)),
        },
        _ => None,
    };
    Ok(Ok(Target { rows, k, bias }))
}

/// Gemm's `beta * C` as a bias of N elements, or why the Gemm does not fit MatMulNBits.
fn gemm_bias(
    graph: &GraphProto,
    node: &NodeProto,
    n: usize,
) -> Result<std::result::Result<Option<Vec<f32>>, String>> {
    if node.int_or("transA", 0)? != 0 || node.float_or("alpha", 1.0)? != 1.0 {
        return Ok(Err("Gemm transposes A or scales it by alpha".into()));
    }
    let Some(c_name) = node.input.get(2).filter(|s| !s.is_empty()) else {
        return Ok(Ok(None));
    };
    let Some(c) = graph.initializer(c_name) else {
        return Ok(Err("Gemm's C is not a constant initializer".into()));
    };
    let c = TensorData::from_proto(c, None)?;
    let row_shaped = matches!(c.dims(), [m] | [1, m] if *m == n);
    if c.dtype() != DataType::Float || !row_shaped {
        return Ok(Err(format!(
            "Gemm's C {:?} is not a bias of {n} elements",
            c.dims()
        )));
    }
    let beta = node.float_or("beta", 1.0)?;
    Ok(Ok(Some(
        c.to_vec::<f32>()?.into_iter().map(|v| v * beta).collect(),
    )))
}

/// Quantizes weight rows ([N][K]) block-wise into MatMulNBits' 4-bit layout.
pub fn pack_weight(
    rows: &[Vec<f32>],
    k: usize,
    block_size: usize,
    symmetric: bool,
) -> PackedWeight {
    let k_blocks = k.div_ceil(block_size);
    let mut codes = Vec::with_capacity(rows.len() * k_blocks * block_size / 2);
    let mut scales = Vec::with_capacity(rows.len() * k_blocks);
    let mut zps = Vec::with_capacity(rows.len() * k_blocks.div_ceil(2));
    for row in rows {
        let mut row_zps = Vec::with_capacity(k_blocks);
        for b in 0..k_blocks {
            let mut block = row[b * block_size..k.min((b + 1) * block_size)].to_vec();
            block.resize(block_size, 0.0);
            let (scale, zp) = block_params(&block, symmetric);
            let q: Vec<u8> = block
                .iter()
                .map(|&w| quantize_value(w, scale, zp))
                .collect();
            codes.extend(q.chunks(2).map(|p| p[0] | (p[1] << 4)));
            scales.push(scale);
            row_zps.push(zp);
        }
        zps.extend(
            row_zps
                .chunks(2)
                .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4)),
        );
    }
    PackedWeight {
        codes,
        scales,
        zero_points: (!symmetric).then_some(zps),
        k_blocks,
    }
}

/// Scale and zero point of one block. Symmetric: the value of largest magnitude maps to
/// -8 (zero point 8, the full signed range); asymmetric: [min(0, lo), max(0, hi)] spans 0..15.
fn block_params(block: &[f32], symmetric: bool) -> (f32, u8) {
    if symmetric {
        let extreme = block
            .iter()
            .copied()
            .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let scale = if extreme == 0.0 { 1.0 } else { extreme / -8.0 };
        return (scale, 8);
    }
    let lo = block.iter().copied().fold(0f32, f32::min);
    let hi = block.iter().copied().fold(0f32, f32::max);
    if hi == lo {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 15.0;
    let zp = (-lo / scale).round().clamp(0.0, 15.0) as u8;
    (scale, zp)
}

fn quantize_value(w: f32, scale: f32, zp: u8) -> u8 {
    ((w / scale).round() + zp as f32).clamp(0.0, 15.0) as u8
}

/// The MatMulNBits node replacing node `i`, with its new initializers added.
fn matmul_nbits(
    graph: &mut GraphProto,
    i: usize,
    t: &Target,
    packed: &PackedWeight,
    opts: &Int4Options,
) -> Result<NodeProto> {
    let node = graph.node[i].clone();
    let n = t.rows.len();
    let base = &node.input[1];
    let mut add = |suffix: &str, data: TensorData| add_initializer(graph, base, suffix, &data);
    let blob = opts.block_size / 2;
    let b = add(
        "q4",
        TensorData::from_slice(vec![n, packed.k_blocks, blob], &packed.codes)?,
    );
    let scales = add(
        "scales",
        TensorData::from_slice(vec![packed.scales.len()], &packed.scales)?,
    );
    let zp = match &packed.zero_points {
        Some(z) => add("zero_points", TensorData::from_slice(vec![z.len()], z)?),
        None => String::new(),
    };
    let mut inputs = vec![node.input[0].clone(), b, scales, zp];
    if let Some(bias) = &t.bias {
        let bias = add("bias", TensorData::from_slice(vec![n], bias)?);
        inputs.extend([String::new(), bias]);
    }
    while inputs.last().is_some_and(String::is_empty) {
        inputs.pop();
    }
    let mut attribute = vec![
        make::int("K", t.k as i64),
        make::int("N", n as i64),
        make::int("bits", 4),
        make::int("block_size", opts.block_size as i64),
    ];
    if opts.accuracy_level != 0 {
        attribute.push(make::int("accuracy_level", opts.accuracy_level));
    }
    Ok(NodeProto {
        name: node.name,
        op_type: "MatMulNBits".into(),
        domain: CONTRIB_DOMAIN.into(),
        input: inputs,
        output: node.output,
        attribute,
        ..Default::default()
    })
}

/// Adds `data` as a new initializer named after `base` and `suffix`; returns its name.
fn add_initializer(graph: &mut GraphProto, base: &str, suffix: &str, data: &TensorData) -> String {
    let name = graph.fresh_name(&format!("{base}_{suffix}"));
    graph.initializer.push(data.to_proto(&name));
    name
}

/// Removes the `replaced` float32 weights and biases that no node reads any more.
fn drop_unused_initializers(graph: &mut GraphProto, replaced: &[String]) {
    let used: HashMap<String, Vec<usize>> = graph.consumers();
    let outputs: Vec<String> = graph.output.iter().map(|v| v.name.clone()).collect();
    let unused = |t: &TensorProto| {
        replaced.contains(&t.name) && !used.contains_key(&t.name) && !outputs.contains(&t.name)
    };
    graph.initializer.retain(|t| !unused(t));
}
