//! Integer kernels with a float rescale, shared by the dynamic mode and the QOperator
//! format's Gemm: `MatMulInteger`/`ConvInteger` -> Cast -> Mul(x_scale * w_scale) -> Add(bias).

use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::{DataType, TensorData};

use super::build::Builder;
use super::plan::Target;
use super::scheme::{param_tensor, QuantizedWeight};
use super::weights::initializer;
use crate::Result;

/// A quantized activation: integer tensor, its scale tensor and zero-point tensor names.
#[derive(Clone, Debug)]
pub struct QuantizedInput {
    /// The integer tensor.
    pub data: String,
    /// Its scale (a float scalar).
    pub scale: String,
    /// Its zero point (a scalar of the integer type).
    pub zero_point: String,
}

/// Shape that broadcasts a per-channel vector of `n` over the output of `node`:
/// `[1, n, 1, ...]` for Conv (output channel axis 1), `[n]` for matrix products.
fn channel_shape(node: &NodeProto, n: usize, rank: usize) -> Vec<usize> {
    if node.op_type == "Conv" {
        let mut dims = vec![1; rank.max(3)];
        dims[1] = n;
        dims
    } else {
        vec![n]
    }
}

/// Replaces `node` (a Conv, Gemm or MatMul target) by its integer kernel on `x` and the
/// quantized weight `w` (Gemm/MatMul weight as `[K, N]`), rescaled to float and biased,
/// writing the node's original output name. The bias is read from `src`, the float graph.
pub fn integer_product(
    src: &GraphProto,
    b: &mut Builder,
    t: &Target,
    x: &QuantizedInput,
    w: &QuantizedWeight,
) -> Result<()> {
    let node = b.graph.node[t.node].clone();
    let Some((wname, _)) = &t.weight else {
        crate::bail!("node '{}' has no constant weight", t.name);
    };
    let y = node.output[0].clone();
    let wq = b.constant(&format!("{wname}_quantized"), &w.data);
    let wz = b.constant(&format!("{wname}_zero_point"), &w.zero_point_tensor()?);
    let acc = b.fresh(&format!("{y}_int32"));
    let inputs = vec![x.data.clone(), wq, x.zero_point.clone(), wz];
    let (op, attrs) = match node.op_type.as_str() {
        "Conv" => ("ConvInteger", node.attribute.clone()),
        _ => ("MatMulInteger", vec![]),
    };
    b.node(op, inputs, vec![acc.clone()], attrs);
    let accf = b.fresh(&format!("{y}_int32_float"));
    let to = whittle_ir::attr::make::int("to", DataType::Float.code() as i64);
    b.node("Cast", vec![acc], vec![accf.clone()], vec![to]);
    let scales: Vec<f32> = w.params.iter().map(|p| p.scale).collect();
    let rank = w.data.dims().len();
    let shape = channel_shape(&node, scales.len(), rank);
    let ws = if w.axis.is_some() {
        TensorData::from_slice(shape.clone(), &scales)?
    } else {
        param_tensor(&scales, false)?
    };
    let ws = b.constant(&format!("{wname}_scale"), &ws);
    let scale = b.fresh(&format!("{y}_scale"));
    b.node(
        "Mul",
        vec![x.scale.clone(), ws],
        vec![scale.clone()],
        vec![],
    );
    let Some(bias) = &t.bias else {
        b.node("Mul", vec![accf, scale], vec![y], vec![]);
        b.drop_node(t.node);
        return Ok(());
    };
    let scaled = b.fresh(&format!("{y}_unbiased"));
    b.node("Mul", vec![accf, scale], vec![scaled.clone()], vec![]);
    let bias_data = initializer(src, bias)?;
    let n = bias_data.numel();
    let bias_data = bias_data.reshaped(channel_shape(&node, n, rank))?;
    let bias = b.constant(&format!("{bias}_reshaped"), &bias_data);
    b.node("Add", vec![scaled, bias], vec![y], vec![]);
    b.drop_node(t.node);
    Ok(())
}
