//! The training forward of the elementwise and data-movement operators on the kernels' rayon
//! loops (candle's run on its own spinning thread pool, which competes with rayon's workers
//! for the cores): Relu and Erf as unary maps, broadcasting Add/Sub/Mul/Div, and Transpose
//! as a strided gather.

use candle_core::Device;
use whittle_ir::proto::NodeProto;

use super::dense::product;
use super::KernelRun;
use crate::backward::rules::kern;
use crate::error::Result;
use crate::kernels::activation::{unary, UnaryOp};
use crate::kernels::binary::{binary, broadcast_shape, BinaryOp};
use crate::kernels::layout::{gather, StridedView};
use crate::kernels::zeros;
use crate::plan::lower::transpose_perm;
use crate::value::Value;

/// `op` of every element of `x`.
pub(super) fn map(op: UnaryOp, x: &Value, device: &Device) -> Result<Option<KernelRun>> {
    let mut y = zeros(x.numel());
    kern(x.with_f32(|xd| unary(op, xd, &mut y))?)?;
    KernelRun::single(y, x.shape().to_vec(), device)
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
