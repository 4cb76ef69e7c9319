//! The training forward of the dense operators on the kernels: MatMul (rank 2 and more, batch
//! dimensions broadcast), Gemm (with a per-column or absent `C`), LayerNormalization and
//! Softmax over the last axis. Other forms return `Ok(None)` and run on their operators.

use candle_core::Device;
use whittle_ir::proto::NodeProto;
use whittle_ir::NodeAttrs;

use super::{operand, KernelRun};
use crate::backward::rules::kern;
use crate::error::Result;
use crate::kernels::activation::Activation;
use crate::kernels::gemm::{self, batched_matmul, matmul_shape, Bias, Epilogue, MatRef};
use crate::kernels::{norm, zeros};
use crate::value::Value;

/// MatMul of operands of rank 2 or more.
pub(super) fn matmul(
    a: &Value,
    inputs: &[Option<Value>],
    device: &Device,
) -> Result<Option<KernelRun>> {
    let Some(b) = second_operand(a, inputs, |ra, rb| ra >= 2 && rb >= 2) else {
        return Ok(None);
    };
    let (sa, sb) = (a.shape(), b.shape());
    let out = kern(matmul_shape(sa, sb))?;
    let mut y = zeros(out.iter().product());
    product(a, b, |ad, bd| batched_matmul(ad, sa, bd, sb, &mut y))?;
    KernelRun::single(y, out, device)
}

/// The second input of a product whose operands' ranks `ranks_fit` accepts (None: the
/// product runs on its operator).
fn second_operand<'a>(
    a: &Value,
    inputs: &'a [Option<Value>],
    ranks_fit: impl Fn(usize, usize) -> bool,
) -> Option<&'a Value> {
    let b = inputs.get(1)?.as_ref()?;
    ranks_fit(a.shape().len(), b.shape().len()).then_some(b)
}

/// Runs `kernel` on the float32 data of `a` and `b`.
pub(super) fn product(
    a: &Value,
    b: &Value,
    kernel: impl FnOnce(&[f32], &[f32]) -> crate::kernels::Result<()>,
) -> Result<()> {
    kern(a.with_f32(|ad| b.with_f32(|bd| kernel(ad, bd)))??)
}

/// Gemm `alpha·A'·B' + beta·C` with 2-D `A` and `B` and `C` absent or one value per column.
pub(super) fn gemm(
    node: &NodeProto,
    a: &Value,
    inputs: &[Option<Value>],
    device: &Device,
) -> Result<Option<KernelRun>> {
    let Some(b) = second_operand(a, inputs, |ra, rb| ra == 2 && rb == 2) else {
        return Ok(None);
    };
    let (sa, sb) = (a.shape(), b.shape());
    let (ta, tb) = (
        node.int_or("transA", 0)? != 0,
        node.int_or("transB", 0)? != 0,
    );
    let (alpha, beta) = (node.float_or("alpha", 1.0)?, node.float_or("beta", 1.0)?);
    let m = if ta { sa[1] } else { sa[0] };
    let n = if tb { sb[0] } else { sb[1] };
    let bias = match inputs.get(2) {
        Some(Some(c)) => {
            let cs = c.shape();
            let per_column = cs.last() == Some(&n) && cs.iter().rev().skip(1).all(|&d| d == 1);
            if !per_column {
                return Ok(None);
            }
            let values = c.to_f32_vec()?;
            Some(values.into_iter().map(|v| v * beta).collect::<Vec<_>>())
        }
        _ => None,
    };
    let epilogue = Epilogue {
        bias: bias.as_deref().map_or(Bias::None, Bias::PerCol),
        activation: Activation::None,
    };
    let mut y = zeros(m * n);
    product(a, b, |ad, bd| {
        let am = MatRef::row_major(ad, sa[0], sa[1])?;
        let bm = MatRef::row_major(bd, sb[0], sb[1])?;
        let (am, bm) = (if ta { am.t() } else { am }, if tb { bm.t() } else { bm });
        gemm::gemm(am, bm, &mut y, alpha, 0.0, &epilogue)
    })?;
    KernelRun::single(y, vec![m, n], device)
}

/// Whether `axis` names the last of `rank` axes.
fn is_last(axis: i64, rank: usize) -> bool {
    rank > 0 && (axis == -1 || axis == rank as i64 - 1)
}

/// LayerNormalization over the last axis, with only its output `Y` named.
pub(super) fn layer_norm(
    node: &NodeProto,
    x: &Value,
    inputs: &[Option<Value>],
    device: &Device,
) -> Result<Option<KernelRun>> {
    let xs = x.shape();
    let extra_outputs = node.output.iter().skip(1).any(|o| !o.is_empty());
    if !is_last(node.int_or("axis", -1)?, xs.len()) || extra_outputs {
        return Ok(None);
    }
    let cols = xs[xs.len() - 1];
    let (Some(scale), bias) = (operand(inputs, 1)?, operand(inputs, 2)?) else {
        return Ok(None);
    };
    if scale.len() != cols || bias.as_ref().is_some_and(|b| b.len() != cols) {
        return Ok(None);
    }
    let eps = node.float_or("epsilon", 1e-5)?;
    let mut y = zeros(x.numel());
    kern(x.with_f32(|xd| norm::layer_norm(xd, cols, &scale, bias.as_deref(), eps, &mut y, None))?)?;
    KernelRun::single(y, xs.to_vec(), device)
}

/// Softmax whose `axis` attribute names the last axis (the same operation in every opset).
pub(super) fn softmax(node: &NodeProto, x: &Value, device: &Device) -> Result<Option<KernelRun>> {
    let xs = x.shape();
    if !node.int("axis")?.is_some_and(|a| is_last(a, xs.len())) {
        return Ok(None);
    }
    let mut y = zeros(x.numel());
    kern(x.with_f32(|xd| norm::softmax(xd, xs[xs.len() - 1], &mut y))?)?;
    KernelRun::single(y, xs.to_vec(), device)
}
