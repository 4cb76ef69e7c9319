//! Precision and sparsity of every weighted layer of a model, read from the model itself:
//! the element type of each layer's weight (through `DequantizeLinear`, `Cast` and layout
//! operators back to its initializer) and the fraction of weights that are exactly zero
//! (stored values equal to the zero point for integer weights).

use serde::{Deserialize, Serialize};
use whittle_ir::attr::NodeAttrs;
use whittle_ir::graph::node_display_name;
use whittle_ir::proto::{GraphProto, NodeProto, TensorProto};
use whittle_ir::tensor::unpack_nibbles;
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use crate::error::Context;
use crate::Result;

/// The weighted layers of one model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightStats {
    /// The model's name, as in the report's models.
    pub model: String,
    /// Every node with a weight initializer, in graph order.
    pub layers: Vec<LayerPrecision>,
}

/// Precision and sparsity of one layer's weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerPrecision {
    /// The node's name (`OpType#index` when it has none).
    pub name: String,
    /// The node's operator.
    pub op_type: String,
    /// The initializer holding the weight.
    pub weight: String,
    /// How the weight is stored ("float32", "float16", "int8", "4-bit blocks of 32").
    pub precision: String,
    /// Bits per stored weight.
    pub bits: u32,
    /// Weights in the layer.
    pub params: u64,
    /// Fraction of the weights that are zero (None: the zero point varies per channel).
    pub sparsity: Option<f64>,
}

/// The weighted layers of `model`'s main graph, named `name` in the report.
pub fn weight_stats(name: &str, model: &Model) -> Result<WeightStats> {
    let graph = model.graph();
    let producers = graph.producers();
    let mut layers = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let Some((input, zp_input)) = weight_inputs(node) else {
            continue;
        };
        let Some(value) = node.input.get(input) else {
            continue;
        };
        let Some((init, dq_zp)) = trace(graph, &producers, value) else {
            continue;
        };
        let zero_point = node
            .input
            .get(zp_input.unwrap_or(usize::MAX))
            .or(dq_zp.as_ref())
            .filter(|z| !z.is_empty());
        let layer = describe(graph, node, init, zero_point).context(|| {
            format!(
                "reading the weight {} of node {}",
                init.name,
                node_display_name(node, index)
            )
        })?;
        layers.push(LayerPrecision {
            name: node_display_name(node, index),
            op_type: node.op_type.clone(),
            weight: init.name.clone(),
            ..layer
        });
    }
    Ok(WeightStats {
        model: name.to_string(),
        layers,
    })
}

/// The input holding the weight of a weighted operator, and the input holding its zero
/// point where the operator takes one itself.
fn weight_inputs(node: &NodeProto) -> Option<(usize, Option<usize>)> {
    match (node.domain.as_str(), node.op_type.as_str()) {
        ("" | "ai.onnx", "Conv" | "ConvTranspose" | "Gemm" | "MatMul") => Some((1, None)),
        ("" | "ai.onnx", "ConvInteger" | "MatMulInteger") => Some((1, Some(3))),
        ("" | "ai.onnx", "QLinearConv" | "QLinearMatMul") => Some((3, Some(5))),
        ("com.microsoft", "MatMulNBits") => Some((1, Some(3))),
        _ => None,
    }
}

/// The initializer `value` comes from, through at most a few `DequantizeLinear`, `Cast`
/// and layout operators, with the `DequantizeLinear`'s zero-point input if one was passed.
fn trace<'g>(
    graph: &'g GraphProto,
    producers: &std::collections::HashMap<String, usize>,
    value: &str,
) -> Option<(&'g TensorProto, Option<String>)> {
    let mut value = value;
    let mut zero_point = None;
    for _ in 0..8 {
        if let Some(init) = graph.initializer(value) {
            return Some((init, zero_point));
        }
        let node = &graph.node[*producers.get(value)?];
        match node.op_type.as_str() {
            "DequantizeLinear" => zero_point = node.input.get(2).cloned(),
            "Cast" | "Transpose" | "Reshape" | "Identity" | "Squeeze" | "Unsqueeze" => {}
            _ => return None,
        }
        value = node.input.first()?;
    }
    None
}

/// Precision, bits, weight count and sparsity of `init` as `node` stores it.
fn describe(
    graph: &GraphProto,
    node: &NodeProto,
    init: &TensorProto,
    zero_point: Option<&String>,
) -> Result<LayerPrecision> {
    let tensor = TensorData::from_proto(init, None).context(|| "decoding it".into())?;
    if node.op_type == "MatMulNBits" {
        return blocked(node, &tensor, zero_point.is_some());
    }
    let dtype = tensor.dtype();
    let values = tensor
        .to_f64_vec()
        .context(|| "reading its values".into())?;
    let zero = match zero_point {
        None => Some(0.0),
        Some(name) => match graph.initializer(name) {
            Some(z) => uniform(
                &TensorData::from_proto(z, None)
                    .context(|| format!("decoding zero point {name}"))?,
            )?,
            None => None,
        },
    };
    let sparsity = zero.map(|z| zero_fraction(values.iter().map(|&v| v == z), values.len()));
    Ok(LayerPrecision {
        precision: precision(dtype),
        bits: bits(dtype),
        params: values.len() as u64,
        sparsity,
        ..Default::default()
    })
}

/// A `MatMulNBits` weight: `N` rows of `K` values packed `bits` wide in blocks of
/// `block_size` (the last block of a row padded); the zero point is `2^(bits-1)` unless
/// the node passes its own.
fn blocked(node: &NodeProto, packed: &TensorData, own_zero_points: bool) -> Result<LayerPrecision> {
    let int = |name: &str, default: i64| -> Result<usize> {
        let v = node
            .int_or(name, default)
            .context(|| format!("attribute {name}"))?;
        Ok(usize::try_from(v).unwrap_or(0))
    };
    let (n, k, bits, block) = (
        int("N", 0)?,
        int("K", 0)?,
        int("bits", 4)?,
        int("block_size", 0)?,
    );
    let bytes = packed.bytes().unwrap_or_default();
    let row_bytes = bytes.len() / n.max(1);
    let whole_rows = n > 0 && row_bytes * n == bytes.len();
    let sparsity = (bits == 4 && !own_zero_points && whole_rows).then(|| {
        let zeros = bytes.chunks(row_bytes).map(|row| {
            unpack_nibbles(row, row_bytes * 2, false)
                .into_iter()
                .take(k)
                .filter(|&v| v == 8)
                .count()
        });
        zeros.sum::<usize>() as f64 / (n * k).max(1) as f64
    });
    Ok(LayerPrecision {
        precision: format!("{bits}-bit blocks of {block}"),
        bits: bits as u32,
        params: (n * k) as u64,
        sparsity,
        ..Default::default()
    })
}

/// The value of a zero point that is the same for every channel (None when it varies).
fn uniform(zero_point: &TensorData) -> Result<Option<f64>> {
    let values = zero_point
        .to_f64_vec()
        .context(|| "reading a zero point".into())?;
    Ok(match values.split_first() {
        Some((first, rest)) if rest.iter().all(|v| v == first) => Some(*first),
        Some(_) => None,
        None => Some(0.0),
    })
}

fn zero_fraction(is_zero: impl Iterator<Item = bool>, n: usize) -> f64 {
    is_zero.filter(|&z| z).count() as f64 / n.max(1) as f64
}

/// An element type as a person names it ("float32", "int8").
fn precision(dtype: DataType) -> String {
    match dtype {
        DataType::Float => "float32".into(),
        DataType::Double => "float64".into(),
        other => other.name().to_ascii_lowercase(),
    }
}

/// Bits per element of `dtype`.
fn bits(dtype: DataType) -> u32 {
    match dtype.size() {
        Some(bytes) => 8 * bytes as u32,
        None if dtype.storage_bytes(2) == Some(1) => 4,
        None => 0,
    }
}
