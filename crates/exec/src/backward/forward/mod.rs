//! The training forward's kernels: in the executor's node-by-node run
//! ([`crate::RunOptions::replace`]), Conv, MaxPool (1-D and 2-D), training-mode
//! BatchNormalization, ([`dense`]) MatMul, Gemm, LayerNormalization and Softmax over the last
//! axis, and ([`maps`]) the activations (Relu, Sigmoid, Tanh, HardSigmoid, HardSwish,
//! LeakyRelu), Erf, GlobalAveragePool, Add/Sub/Mul/Div and Transpose (float32) run on the
//! kernels instead of their candle operators, with
//! the same window arithmetic as their gradient rules. MaxPool keeps each output's arg-max
//! and BatchNormalization its batch statistics for their rules, so the backward does not
//! recompute them. Every other node, and these where the kernels do not apply, runs through
//! its candle operator.

mod dense;
mod maps;

use candle_core::{Device, Tensor};
use whittle_ir::proto::NodeProto;
use whittle_ir::{DataType, NodeAttrs};

use super::rules::kern;
use super::rules::window::{row_product_plane, swap_inner, swap_inner_into, Window};
use crate::error::{ExecError, Result};
use crate::kernels::activation::{Activation, UnaryOp};
use crate::kernels::conv::conv2d;
use crate::kernels::gemm::{gemm, Bias, Epilogue, MatRef};
use crate::kernels::norm::{batch_norm_apply, batch_norm_train, BatchMoments, ChannelGeometry};
use crate::kernels::pool::max_pool2d;
use crate::kernels::zeros;
use crate::value::Value;

/// Outputs of a node run on a kernel, MaxPool's arg-max (flat input positions) and
/// BatchNormalization's batch statistics.
#[derive(Default)]
pub(super) struct KernelRun {
    pub outputs: Vec<Value>,
    pub argmax: Option<Vec<i64>>,
    pub moments: Option<BatchMoments>,
}

impl KernelRun {
    /// The run of a node with one float output `y` of `shape`.
    fn single(y: Vec<f32>, shape: Vec<usize>, device: &Device) -> Result<Option<KernelRun>> {
        Ok(Some(KernelRun {
            outputs: vec![Value::from_float(Tensor::from_vec(y, shape, device)?)?],
            ..Default::default()
        }))
    }
}

/// Runs `node` on a kernel when one covers it; `Ok(None)` leaves it to its operator. A
/// BatchNormalization normalizes with `batch` when given (the statistics of the whole batch
/// that `inputs` are a part of), else with its input's own.
pub(super) fn run(
    node: &NodeProto,
    inputs: &[Option<Value>],
    device: &Device,
    batch: Option<&BatchMoments>,
) -> Result<Option<KernelRun>> {
    if !node.domain.is_empty() && node.domain != "ai.onnx" {
        return Ok(None);
    }
    let f32s = inputs
        .iter()
        .flatten()
        .all(|v| v.dtype() == DataType::Float);
    let cpu = matches!(device, Device::Cpu);
    let (Some(Some(x)), true, true) = (inputs.first(), f32s, cpu) else {
        return Ok(None);
    };
    let result = match node.op_type.as_str() {
        "Conv" => conv(node, x, inputs, device),
        "MaxPool" if covers_max_pool(node)? => max_pool(node, x, device),
        "BatchNormalization" => batch_norm(node, x, inputs, device, batch),
        "MatMul" => dense::matmul(x, inputs, device),
        "Gemm" => dense::gemm(node, x, inputs, device),
        "LayerNormalization" => dense::layer_norm(node, x, inputs, device),
        "Softmax" => dense::softmax(node, x, device),
        "Erf" => maps::map(UnaryOp::Erf, x, device),
        "GlobalAveragePool" => maps::global_average_pool(x, device),
        "Add" | "Sub" | "Mul" | "Div" => maps::arithmetic(node, x, inputs, device),
        "Transpose" => maps::transpose(node, x, device),
        _ => match maps::activation(node) {
            Ok(Some(act)) => maps::map(UnaryOp::Act(act), x, device),
            Ok(None) => return Ok(None),
            Err(e) => Err(e),
        },
    };
    result.map_err(|e| match e {
        ExecError::Msg(message) => ExecError::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            message,
        },
        other => other,
    })
}

/// Input `i`'s values, `None` when the node omits it.
fn operand(inputs: &[Option<Value>], i: usize) -> Result<Option<Vec<f32>>> {
    match inputs.get(i) {
        Some(Some(v)) => v.to_f32_vec().map(Some),
        _ => Ok(None),
    }
}

/// Whether MaxPool's forward kernel can run `node` (one output, or Indices in the row-major
/// storage order the kernel writes).
pub(super) fn covers_max_pool(node: &NodeProto) -> Result<bool> {
    let rank = node.ints("kernel_shape")?.map_or(0, |k| k.len());
    let indices = node.output.get(1).is_some_and(|o| !o.is_empty());
    let order = node.int_or("storage_order", 0)?;
    Ok((1..=2).contains(&rank) && (!indices || order == 0))
}

/// The output shape of a window op: `x`'s batch, `channels`, then the window's output size
/// (1-D inputs keep one spatial dimension).
fn window_out(x: &[usize], channels: usize, out_h: usize, out_w: usize) -> Vec<usize> {
    match x.len() {
        3 => vec![x[0], channels, out_w],
        _ => vec![x[0], channels, out_h, out_w],
    }
}

fn conv(
    node: &NodeProto,
    x: &Value,
    inputs: &[Option<Value>],
    device: &Device,
) -> Result<Option<KernelRun>> {
    let Some(Some(w)) = inputs.get(1) else {
        return Ok(None);
    };
    let (xs, ws) = (x.shape(), w.shape());
    if !(3..=4).contains(&xs.len()) || ws.len() != xs.len() {
        return Ok(None);
    }
    let shape = Window::of(node, xs, &ws[2..])?.conv_shape(xs, ws, node)?;
    let out = window_out(xs, shape.c_out, shape.out_h(), shape.out_w());
    let mut y = zeros(out.iter().product());
    let bias = inputs.get(2).and_then(Option::as_ref);
    let mut run = |xd: &[f32], wd: &[f32], bd: Option<&[f32]>| {
        let Some(p) = row_product_plane(&shape) else {
            return conv2d(&shape, xd, wd, bd, Activation::None, &mut y);
        };
        let (n, c_in, c_out) = (shape.n, shape.c_in, shape.c_out);
        let ep = Epilogue {
            bias: bd.map_or(Bias::None, Bias::PerCol),
            activation: Activation::None,
        };
        let rows = swap_inner(xd, n, c_in, p)?;
        let w = MatRef::row_major(wd, c_out, c_in)?.t();
        // Output rows straight into `y` when they are its layout (p = 1).
        let mut by_rows = (p > 1).then(|| vec![0.0; y.len()]);
        let out = by_rows.as_deref_mut().unwrap_or(&mut y);
        gemm(
            MatRef::row_major(&rows, n * p, c_in)?,
            w,
            out,
            1.0,
            0.0,
            &ep,
        )?;
        if let Some(out) = by_rows {
            swap_inner_into(&out, n, p, c_out, &mut y)?;
        }
        Ok(())
    };
    // Each operand borrowed from its tensor (one `Result` layer per borrow).
    let status = x.with_f32(|xd| {
        w.with_f32(|wd| match bias {
            Some(b) => b.with_f32(|bd| run(xd, wd, Some(bd))),
            None => Ok(run(xd, wd, None)),
        })
    })???;
    kern(status)?;
    KernelRun::single(y, out, device)
}

fn max_pool(node: &NodeProto, x: &Value, device: &Device) -> Result<Option<KernelRun>> {
    let xs = x.shape();
    let kernel: Vec<usize> = node
        .ints("kernel_shape")?
        .unwrap_or_default()
        .iter()
        .map(|&k| usize::try_from(k).unwrap_or(0))
        .collect();
    if xs.len() != kernel.len() + 2 {
        return Ok(None);
    }
    let shape = Window::of(node, xs, &kernel)?.pool_shape(xs, node)?;
    let out = window_out(xs, shape.c, shape.out_h(), shape.out_w());
    let count = out.iter().product();
    let (mut y, mut argmax) = (zeros(count), vec![0i64; count]);
    kern(x.with_f32(|xd| max_pool2d(&shape, xd, &mut y, Some(&mut argmax)))?)?;
    let mut outputs = vec![Value::from_float(Tensor::from_vec(
        y,
        out.clone(),
        device,
    )?)?];
    if node.output.get(1).is_some_and(|o| !o.is_empty()) {
        let t = Tensor::from_vec(argmax.clone(), out, device)?;
        outputs.push(Value::new(t, DataType::Int64)?);
    }
    Ok(Some(KernelRun {
        outputs,
        argmax: Some(argmax),
        ..Default::default()
    }))
}

/// Training-mode BatchNormalization: `Y`, the running mean and variance updated with
/// `momentum` (as the operator computes them), and the batch mean and variance, the five
/// outputs its operator gives in training; with the statistics `batch` when given.
fn batch_norm(
    node: &NodeProto,
    x: &Value,
    inputs: &[Option<Value>],
    device: &Device,
    batch: Option<&BatchMoments>,
) -> Result<Option<KernelRun>> {
    let operand = |i| operand(inputs, i);
    let (Some(gamma), Some(beta), Some(old_mean), Some(old_var)) =
        (operand(1)?, operand(2)?, operand(3)?, operand(4)?)
    else {
        return Ok(None);
    };
    let xs = x.shape();
    let g = ChannelGeometry::of(xs);
    let fits = [&gamma, &beta, &old_mean, &old_var]
        .iter()
        .all(|v| v.len() == g.c);
    if xs.len() < 2 || !fits {
        return Ok(None);
    }
    let eps = node.float_or("epsilon", 1e-5)?;
    let momentum = node.float_or("momentum", 0.9)?;
    let mut y = zeros(x.numel());
    let m = match batch {
        Some(m) => {
            kern(x.with_f32(|xd| batch_norm_apply(g, xd, &gamma, &beta, m, &mut y))?)?;
            m.clone()
        }
        None => kern(x.with_f32(|xd| batch_norm_train(g, xd, &gamma, &beta, eps, &mut y))?)?,
    };
    let running = |old: &[f32], new: &[f32]| -> Vec<f32> {
        old.iter()
            .zip(new)
            .map(|(o, n)| o * momentum + n * (1.0 - momentum))
            .collect()
    };
    let vector = |v: Vec<f32>| Value::from_float(Tensor::from_vec(v, g.c, device)?);
    let outputs = vec![
        Value::from_float(Tensor::from_vec(y, xs.to_vec(), device)?)?,
        vector(running(&old_mean, &m.mean))?,
        vector(running(&old_var, &m.var))?,
        vector(m.mean.clone())?,
        vector(m.var.clone())?,
    ];
    Ok(Some(KernelRun {
        outputs,
        moments: Some(m),
        ..Default::default()
    }))
}
