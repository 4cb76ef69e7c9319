//! The native steps of a plan: which nodes map to which [`crate::kernels`] call, with
//! constant operands (weights, biases) prepared once at plan time.

use whittle_ir::proto::NodeProto;
use whittle_ir::{DataType, NodeAttrs};

use super::{Home, PlannedValue, ValueId};
use crate::kernels::activation::{unary, unary_in_place, Activation, UnaryOp};
use crate::kernels::gemm::{batched_matmul, gemm, Bias, Epilogue, MatRef, PackedWeights};
use crate::kernels::Result;

/// A native f32 step. Runtime operands are the step's inputs; constant ones live here.
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
    /// NumPy matmul of two runtime operands (rank >= 2 each).
    MatMul {
        /// Shape of A.
        a: Vec<usize>,
        /// Shape of B.
        b: Vec<usize>,
    },
    /// An elementwise map.
    Unary(UnaryOp),
}

impl Kernel {
    /// The kernel that runs `node` on inputs `ins` (recorded types in `values`), if any:
    /// f32 operands with the constant operands a kernel needs known at plan time.
    pub fn for_node(
        node: &NodeProto,
        ins: &[Option<ValueId>],
        values: &[PlannedValue],
    ) -> Option<Kernel> {
        if !node.domain.is_empty() {
            return None;
        }
        let f32s = ins
            .iter()
            .flatten()
            .all(|&i| values[i].dtype == DataType::Float);
        if !f32s || ins.is_empty() || ins[0].is_none() {
            return None;
        }
        let shape = |i: usize| -> Option<&[usize]> { Some(&values[(*ins.get(i)?)?].shape) };
        let constant = |i: usize| -> Option<Vec<f32>> {
            match &values[(*ins.get(i)?)?].home {
                Home::Const(v) => v.to_f32_vec().ok(),
                _ => None,
            }
        };
        match node.op_type.as_str() {
            "MatMul" => {
                let b = shape(1)?;
                if let (Some(w), 2) = (constant(1), b.len()) {
                    let w = MatRef::row_major(&w, b[0], b[1]).ok()?;
                    return Some(dense(w, None));
                }
                let a = shape(0)?;
                (a.len() >= 2 && b.len() >= 2).then(|| Kernel::MatMul {
                    a: a.to_vec(),
                    b: b.to_vec(),
                })
            }
            "Gemm" => gemm_node(node, &shape, &constant),
            op => unary_op(node, op, &constant).map(Kernel::Unary),
        }
    }

    /// A short name of the kernel, with its fused activation.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Dense {
                act: Activation::None,
                ..
            } => "dense",
            Kernel::Dense { .. } => "dense+act",
            Kernel::MatMul { .. } => "matmul",
            Kernel::Unary(_) => "unary",
        }
    }

    /// The activation fused into this kernel, for a kernel that can take one.
    pub fn activation_slot(&mut self) -> Option<&mut Activation> {
        match self {
            Kernel::Dense { act, .. } => Some(act),
            _ => None,
        }
    }

    /// Adds a per-output-column bias to a kernel that can fuse one (before any activation);
    /// false when it cannot.
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
        matches!(self, Kernel::Unary(_))
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
            Kernel::MatMul { a, b } => batched_matmul(ins[0], a, ins[1], b, out),
            Kernel::Unary(op) => unary(*op, ins[0], out),
        }
    }

    /// Runs an [`Kernel::in_place`] kernel on `y`, which holds its first input.
    pub fn run_in_place(&self, y: &mut [f32]) {
        if let Kernel::Unary(op) = self {
            unary_in_place(*op, y);
        }
    }
}

fn dense(w: MatRef, bias: Option<Vec<f32>>) -> Kernel {
    Kernel::Dense {
        weight: PackedWeights::new(w),
        bias,
        act: Activation::None,
    }
}

/// Gemm with runtime A (not transposed), constant B, and C absent or a constant row.
fn gemm_node<'v>(
    node: &NodeProto,
    shape: &dyn Fn(usize) -> Option<&'v [usize]>,
    constant: &dyn Fn(usize) -> Option<Vec<f32>>,
) -> Option<Kernel> {
    let alpha = node.float_or("alpha", 1.0).ok()?;
    let beta = node.float_or("beta", 1.0).ok()?;
    if node.int_or("transA", 0).ok()? != 0 {
        return None;
    }
    let b = shape(1)?;
    if b.len() != 2 {
        return None;
    }
    let mut w = constant(1)?;
    w.iter_mut().for_each(|x| *x *= alpha);
    let m = MatRef::row_major(&w, b[0], b[1]).ok()?;
    let m = if node.int_or("transB", 0).ok()? != 0 {
        m.t()
    } else {
        m
    };
    let n = m.cols();
    let bias = match shape(2) {
        None => None,
        Some(c) if c.iter().product::<usize>() == n && c.last() == Some(&n) => {
            Some(constant(2)?.into_iter().map(|x| x * beta).collect())
        }
        Some(_) => return None,
    };
    Some(dense(m, bias))
}

/// The unary map a node computes: activations and elementwise functions, with constant
/// attributes or inputs (Clip bounds).
fn unary_op(
    node: &NodeProto,
    op: &str,
    constant: &dyn Fn(usize) -> Option<Vec<f32>>,
) -> Option<UnaryOp> {
    let act = |a| Some(UnaryOp::Act(a));
    match op {
        "Relu" => act(Activation::Relu),
        "Sigmoid" => act(Activation::Sigmoid),
        "Tanh" => act(Activation::Tanh),
        "HardSwish" => act(Activation::HardSwish),
        "LeakyRelu" => act(Activation::LeakyRelu(node.float_or("alpha", 0.01).ok()?)),
        "HardSigmoid" => act(Activation::HardSigmoid {
            alpha: node.float_or("alpha", 0.2).ok()?,
            beta: node.float_or("beta", 0.5).ok()?,
        }),
        "Gelu" => match node.string_or("approximate", "none").ok()?.as_str() {
            "none" => act(Activation::Gelu),
            "tanh" => act(Activation::GeluTanh),
            _ => None,
        },
        "Clip" => {
            let bound = |i: usize, attr: &str, default: f32| match node
                .input
                .get(i)
                .filter(|n| !n.is_empty())
            {
                Some(_) => constant(i).and_then(|v| (v.len() == 1).then(|| v[0])),
                None => node.float_or(attr, default).ok(),
            };
            act(Activation::Clip(
                bound(1, "min", f32::MIN)?,
                bound(2, "max", f32::MAX)?,
            ))
        }
        "Exp" => Some(UnaryOp::Exp),
        "Erf" => Some(UnaryOp::Erf),
        "Neg" => Some(UnaryOp::Neg),
        "Abs" => Some(UnaryOp::Abs),
        "Sqrt" => Some(UnaryOp::Sqrt),
        "Reciprocal" => Some(UnaryOp::Reciprocal),
        "Log" => Some(UnaryOp::Log),
        _ => None,
    }
}
