//! The training forward of the elementwise and data-movement operators on the kernels' rayon
//! loops (candle's run on its own spinning thread pool, which competes with rayon's workers
//! for the cores): the activations and Erf as unary maps, GlobalAveragePool, broadcasting
//! Add/Sub/Mul/Div, and Transpose as a strided gather.

use candle_core::Device;
use whittle_ir::proto::NodeProto;
use whittle_ir::NodeAttrs;

use super::dense::product;
use super::KernelRun;
use crate::backward::rules::kern;
use crate::error::Result;
use crate::kernels::activation::{unary, Activation, UnaryOp};
use crate::kernels::binary::{binary, broadcast_shape, BinaryOp};
use crate::kernels::layout::{gather, StridedView};
use crate::kernels::pool::global_avg_pool;
use crate::kernels::zeros;
use crate::plan::lower::transpose_perm;
use crate::value::Value;

/// The activation `node` computes when its attributes alone define it (Relu, Sigmoid, Tanh,
/// HardSigmoid, HardSwish, LeakyRelu), `None` for every other operator.
pub(super) fn activation(node: &NodeProto) -> Result<Option<Activation>> {
    Ok(Some(match node.op_type.as_str() {
        "Relu" => Activation::Relu,
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "HardSwish" => Activation::HardSwish,
        "HardSigmoid" => Activation::HardSigmoid {
            alpha: node.float_or("alpha", 0.2)?,
            beta: node.float_or("beta", 0.5)?,
        },
        "LeakyRelu" => Activation::LeakyRelu(node.float_or("alpha", 0.01)?),
        _ => return Ok(None),
    }))
}

/// `op` of every element of `x`.
pub(super) fn map(op: UnaryOp, x: &Value, device: &Device) -> Result<Option<KernelRun>> {
    let mut y = zeros(x.numel());
    kern(x.with_f32(|xd| unary(op, xd, &mut y))?)?;
    KernelRun::single(y, x.shape().to_vec(), device)
}

/// GlobalAveragePool of an input of rank 3 or more: the mean of each `[n, c]` plane.
pub(super) fn global_average_pool(x: &Value, device: &Device) -> Result<Option<KernelRun>> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Ok(None);
    }
    let planes = xs[0] * xs[1];
    let plane = xs[2..].iter().product();
    if plane == 1 {
        // The mean of one value: the input is the output (same shape).
        return Ok(Some(KernelRun {
            outputs: vec![x.clone()],
            ..Default::default()
        }));
    }
    let mut y = zeros(planes);
    kern(x.with_f32(|xd| global_avg_pool(planes, plane, xd, &mut y))?)?;
    let mut out = xs.to_vec();
    out[2..].fill(1);
    KernelRun::single(y, out, device)
}

/// Add, Sub, Mul or Div of the first two inputs, NumPy-broadcast.
pub(super) fn arithmetic(
    node: &NodeProto,
    a: &Value,
    inputs: &[Option<Value>],
    device: &Device,
) -> Result<Option<KernelRun>> {
    let (Some(Some(b)), 2) = (inputs.get(1), inputs.len()) else {
        return Ok(None);
    };
    let Some(op) = BinaryOp::of_op_type(&node.op_type) else {
        return Ok(None);
    };
    let (sa, sb) = (a.shape(), b.shape());
    let out = kern(broadcast_shape(sa, sb))?;
    let mut y = zeros(out.iter().product());
    product(a, b, |ad, bd| binary(op, ad, sa, bd, sb, &mut y))?;
    KernelRun::single(y, out, device)
}

/// Transpose by `perm` (default: the axes reversed); `Ok(None)` when `perm` is no
/// permutation of the axes (the operator says why).
pub(super) fn transpose(node: &NodeProto, x: &Value, device: &Device) -> Result<Option<KernelRun>> {
    let Some(perm) = transpose_perm(node, x.shape().len())? else {
        return Ok(None);
    };
    let Some(view) = StridedView::contiguous(x.shape()).permute(&perm) else {
        return Ok(None);
    };
    let mut y = zeros(view.numel());
    kern(x.with_f32(|xd| gather(&view, xd, &mut y))?)?;
    KernelRun::single(y, view.dims, device)
}
