//! The native steps of a plan: a [`Kernel`] holds what a [`crate::kernels`] call needs,
//! constant operands (weights, biases) prepared once at plan time; [`super::lower`] picks
//! the kernel for a node.

use crate::kernels::activation::{unary, unary_in_place, Activation, UnaryOp};
use crate::kernels::binary::{binary, BinaryOp};
use crate::kernels::conv::{conv2d, Conv2dShape};
use crate::kernels::gemm::{batched_matmul, gemm, Bias, Epilogue, MatRef, PackedWeights};
use crate::kernels::layout::{gather, StridedView};
use crate::kernels::norm::{layer_norm, softmax_axis};
use crate::kernels::pool::{avg_pool2d, global_avg_pool, max_pool2d, Pool2dShape};
use crate::kernels::quant::{
    dequantize, dequantize_in_place, quantize, quantize_in_place, QuantParams, Quantized,
};
use crate::kernels::Result;

/// A native f32 step. Runtime operands are the step's inputs (the first
/// [`Kernel::runtime_inputs`] of the node's); constant ones live here.
pub enum Kernel {
    /// `y = act(x · W + bias)` with `x` of shape `[.., k]`: MatMul or Gemm with a constant
    /// weight, packed once, and the bias `Add` and activation fused in.
    Dense {
        /// The weight `op(W)` (`k x n`), alpha folded in.
        weight: PackedWeights,
        /// Per-output-column bias (`n`).
        bias: Option<Vec<f32>>,
        /// Fused activation.
        act: Activation,
    },
    /// 2-D convolution (NCHW) with a constant weight, bias and fused activation.
    Conv {
        /// Sizes, strides, pads, dilations, groups.
        shape: Conv2dShape,
        /// `[c_out, c_in / groups, kh, kw]`.
        weight: Vec<f32>,
        /// Per-output-channel bias.
        bias: Option<Vec<f32>>,
        /// Fused activation.
        act: Activation,
    },
    /// NumPy matmul of two runtime operands (rank >= 2 each).
    MatMul {
        /// Shape of A.
        a: Vec<usize>,
        /// Shape of B.
        b: Vec<usize>,
    },
    /// A broadcasting binary operator (either operand may be a constant).
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Shape of A.
        a: Vec<usize>,
        /// Shape of B.
        b: Vec<usize>,
    },
    /// An elementwise map.
    Unary(UnaryOp),
    /// Concat: each of the `outer` rows of the output is the inputs' rows one after another
    /// (`rows[i]` elements of input `i`).
    Concat {
        /// Product of the dimensions before the axis.
        outer: usize,
        /// Elements per row of each input (its dimensions from the axis on).
        rows: Vec<usize>,
    },
    /// MaxPool without indices.
    MaxPool(Pool2dShape),
    /// AveragePool.
    AvgPool {
        /// Sizes, strides, pads.
        shape: Pool2dShape,
        /// Padding counts in the divisor.
        count_include_pad: bool,
    },
    /// GlobalAveragePool over `planes` planes of `plane` elements.
    GlobalAvgPool {
        /// `N * C`.
        planes: usize,
        /// `H * W`.
        plane: usize,
    },
    /// Softmax (or LogSoftmax with `log`) over an axis of `cols` elements, `inner`
    /// elements apart (1: the last axis; more: the trailing axes after it).
    Softmax {
        /// Length of the axis.
        cols: usize,
        /// Product of the dimensions after the axis.
        inner: usize,
        /// LogSoftmax.
        log: bool,
    },
    /// Data movement: the output is a strided view of the input (Transpose, Slice, one
    /// output of Split, nearest Resize by whole factors).
    Gather(StridedView),
    /// LayerNormalization over rows of `cols` with constant scale and bias.
    LayerNorm {
        /// Row length.
        cols: usize,
        /// Scale (`cols`).
        scale: Vec<f32>,
        /// Bias (`cols`).
        bias: Option<Vec<f32>>,
        /// Epsilon.
        eps: f32,
    },
    /// QuantizeLinear with constant scale and zero point: the output holds the 8- or
    /// 16-bit integers as exact f32 values ([`crate::kernels::quant`]).
    Quantize(QuantParams),
    /// DequantizeLinear with constant scale and zero point, of exact f32 integers (the
    /// output of a [`Kernel::Quantize`]) or of integer tensors.
    Dequantize(QuantParams),
    /// QuantizeLinear (`quantize`) or DequantizeLinear whose scale or zero point is
    /// computed at run time: the step's inputs are `x`, the scale and the zero point (when
    /// given), and the parameters are laid out per run ([`super::run`]).
    QuantizeWith {
        /// QuantizeLinear, else DequantizeLinear.
        quantize: bool,
        /// The quantized type.
        dtype: whittle_ir::DataType,
        /// The node's `axis`.
        axis: i64,
        /// The node's `block_size`.
        block: i64,
        /// Inputs the step reads (2 without a zero point, else 3).
        inputs: usize,
    },
}

impl Kernel {
    /// A GEMM step with weight `w` and no bias or activation yet.
    pub fn dense(w: MatRef) -> Kernel {
        Kernel::Dense {
            weight: PackedWeights::new(w),
            bias: None,
            act: Activation::None,
        }
    }

    /// A short name of the kernel (`+act` when an activation is fused in).
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Dense {
                act: Activation::None,
                ..
            } => "dense",
            Kernel::Dense { .. } => "dense+act",
            Kernel::Conv {
                act: Activation::None,
                ..
            } => "conv",
            Kernel::Conv { .. } => "conv+act",
            Kernel::MatMul { .. } => "matmul",
            Kernel::Binary { .. } => "binary",
            Kernel::Unary(_) => "unary",
            Kernel::Concat { .. } => "concat",
            Kernel::MaxPool(_) | Kernel::AvgPool { .. } | Kernel::GlobalAvgPool { .. } => "pool",
            Kernel::Softmax { .. } => "softmax",
            Kernel::Gather(_) => "gather",
            Kernel::LayerNorm { .. } => "layernorm",
            Kernel::Quantize(_) | Kernel::QuantizeWith { quantize: true, .. } => "quantize",
            Kernel::Dequantize(_) | Kernel::QuantizeWith { .. } => "dequantize",
        }
    }

    /// How many of the node's inputs the kernel reads at run time (the rest are folded in).
    pub fn runtime_inputs(&self) -> usize {
        match self {
            Kernel::MatMul { .. } | Kernel::Binary { .. } => 2,
            Kernel::Concat { rows, .. } => rows.len(),
            Kernel::QuantizeWith { inputs, .. } => *inputs,
            _ => 1,
        }
    }

    /// The activation slot of a kernel that can fuse one.
    pub fn activation_slot(&mut self) -> Option<&mut Activation> {
        match self {
            Kernel::Dense { act, .. } | Kernel::Conv { act, .. } => Some(act),
            _ => None,
        }
    }

    /// Adds a per-output-column bias to a GEMM step (before any activation); false when
    /// it cannot take one.
    pub fn fuse_bias(&mut self, b: Vec<f32>) -> bool {
        match self {
            Kernel::Dense {
                bias: bias @ None,
                act: Activation::None,
                weight,
            } if b.len() == weight.cols() => {
                *bias = Some(b);
                true
            }
            _ => false,
        }
    }

    /// Whether the kernel may write its output over its first input.
    pub fn in_place(&self) -> bool {
        matches!(
            self,
            Kernel::Unary(_) | Kernel::Quantize(_) | Kernel::Dequantize(_)
        )
    }

    /// Runs the kernel on `ins` (the step's runtime inputs) into `out`.
    pub fn run(&self, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
        match self {
            Kernel::Dense { weight, bias, act } => {
                let (k, n) = (weight.rows(), weight.cols());
                // Rows of x (of the output when k is 0).
                let m = ins[0].len().checked_div(k).unwrap_or(out.len() / n.max(1));
                let x = MatRef::row_major(ins[0], m, k)?;
                let ep = Epilogue {
                    bias: bias.as_deref().map_or(Bias::None, Bias::PerCol),
                    activation: *act,
                };
                gemm(x, weight.as_ref(), out, 1.0, 0.0, &ep)
            }
            Kernel::Conv {
                shape,
                weight,
                bias,
                act,
            } => conv2d(shape, ins[0], weight, bias.as_deref(), *act, out),
            Kernel::MatMul { a, b } => batched_matmul(ins[0], a, ins[1], b, out),
            Kernel::Binary { op, a, b } => binary(*op, ins[0], a, ins[1], b, out),
            Kernel::Unary(op) => unary(*op, ins[0], out),
            Kernel::Concat { outer, rows } => {
                concat(*outer, rows, ins, out);
                Ok(())
            }
            Kernel::MaxPool(s) => max_pool2d(s, ins[0], out, None),
            Kernel::AvgPool {
                shape,
                count_include_pad,
            } => avg_pool2d(shape, *count_include_pad, ins[0], out),
            Kernel::GlobalAvgPool { planes, plane } => {
                global_avg_pool(*planes, *plane, ins[0], out)
            }
            Kernel::Softmax { cols, inner, log } => softmax_axis(ins[0], *cols, *inner, *log, out),
            Kernel::Gather(view) => gather(view, ins[0], out),
            Kernel::LayerNorm {
                cols,
                scale,
                bias,
                eps,
            } => layer_norm(ins[0], *cols, scale, bias.as_deref(), *eps, out, None),
            Kernel::Quantize(p) => quantize(ins[0], p, out),
            Kernel::Dequantize(p) => dequantize(Quantized::F32(ins[0]), p, out),
            Kernel::QuantizeWith { .. } => Err(crate::kernels::error(
                "quantize",
                "runtime parameters are laid out by the plan's run",
            )),
        }
    }

    /// Runs an [`Kernel::in_place`] kernel on `y`, which holds its first input.
    pub fn run_in_place(&self, y: &mut [f32]) {
        match self {
            Kernel::Unary(op) => unary_in_place(*op, y),
            Kernel::Quantize(p) => quantize_in_place(y, p),
            Kernel::Dequantize(p) => dequantize_in_place(y, p),
            _ => {}
        }
    }
}

/// Copies the `outer` rows of each input into their places in `out` (sizes checked when
/// the plan was built: `out` holds `outer * sum(rows)` elements).
fn concat(outer: usize, rows: &[usize], ins: &[&[f32]], out: &mut [f32]) {
    let width: usize = rows.iter().sum();
    for (o, dst) in out.chunks_mut(width.max(1)).take(outer).enumerate() {
        let mut at = 0;
        for (x, &r) in ins.iter().zip(rows) {
            dst[at..at + r].copy_from_slice(&x[o * r..(o + 1) * r]);
            at += r;
        }
    }
}
