//! Elementwise binary operators with NumPy broadcasting.
//!
//! The shapes are first coalesced (size-1 output dimensions dropped, neighbours that both
//! operands broadcast alike merged), so the output is a set of rows along the last coalesced
//! dimension in which each operand is either a contiguous row or one repeated value. That
//! covers the fast cases in one loop each: same shape (one row), scalar, per-channel NCHW
//! bias (`[N, C, H*W]` with a value per row) and a last-axis row repeated.

use super::{check_len, dispatch, error, Result, PAR_CHUNK};
use rayon::prelude::*;

/// An elementwise binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `max(a, b)` (NaN if either is NaN, as ONNX Max).
    Max,
    /// `min(a, b)` (NaN if either is NaN, as ONNX Min).
    Min,
}

impl BinaryOp {
    /// The operator of an ONNX node type (`Add`, `Sub`, `Mul`, `Div`, `Max`, `Min`).
    pub fn of_op_type(op_type: &str) -> Option<BinaryOp> {
        Some(match op_type {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            "Div" => BinaryOp::Div,
            "Max" => BinaryOp::Max,
            "Min" => BinaryOp::Min,
            _ => return None,
        })
    }
}

/// The NumPy broadcast of two shapes: right-aligned, each pair of sizes equal or one of them 1.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|j| {
            let da = dim_at(a, rank, j);
            let db = dim_at(b, rank, j);
            match (da, db) {
                _ if da == db => Ok(da),
                (1, _) => Ok(db),
                (_, 1) => Ok(da),
                _ => Err(error(
                    "broadcast",
                    format!("shapes {a:?} and {b:?} do not broadcast (sizes {da} and {db})"),
                )),
            }
        })
        .collect()
}

/// Size of dimension `j` of `shape` right-aligned to `rank` dimensions (1 where missing).
fn dim_at(shape: &[usize], rank: usize, j: usize) -> usize {
    (j + shape.len()).checked_sub(rank).map_or(1, |i| shape[i])
}

/// The element stride of `operand` (a shape that broadcasts to `out`) along each dimension
/// of `out`, times `inner`: 0 where the operand repeats (size 1 or missing).
pub(crate) fn broadcast_strides(operand: &[usize], out: &[usize], inner: usize) -> Vec<usize> {
    let rank = out.len();
    let mut strides = vec![0; rank];
    let mut step = inner;
    for j in (0..rank).rev() {
        let d = dim_at(operand, rank, j);
        if d != 1 {
            strides[j] = step;
        }
        step *= d;
    }
    strides
}

#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

#[inline(always)]
fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

/// `out = op(a, b)` with NumPy broadcasting; `out` holds `broadcast_shape(a_shape, b_shape)`.
pub fn binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
) -> Result<()> {
    let out_shape = broadcast_shape(a_shape, b_shape)?;
    check_len("binary", "A", a_shape.iter().product(), a.len())?;
    check_len("binary", "B", b_shape.iter().product(), b.len())?;
    check_len("binary", "output", out_shape.iter().product(), out.len())?;
    if out.is_empty() {
        return Ok(());
    }
    let plan = Coalesced::new(a_shape, b_shape, &out_shape);
    match op {
        BinaryOp::Add => plan.run(a, b, out, |x, y| x + y),
        BinaryOp::Sub => plan.run(a, b, out, |x, y| x - y),
        BinaryOp::Mul => plan.run(a, b, out, |x, y| x * y),
        BinaryOp::Div => plan.run(a, b, out, |x, y| x / y),
        BinaryOp::Max => plan.run(a, b, out, nan_max),
        BinaryOp::Min => plan.run(a, b, out, nan_min),
    }
    Ok(())
}

/// The output as rows of `row` elements over the coalesced outer dimensions `outer`, with
/// each operand's stride per outer dimension and along the row (0: repeated, 1: contiguous).
struct Coalesced {
    outer: Vec<usize>,
    a_outer: Vec<usize>,
    b_outer: Vec<usize>,
    row: usize,
    a_row: usize,
    b_row: usize,
}

impl Coalesced {
    fn new(a_shape: &[usize], b_shape: &[usize], out: &[usize]) -> Self {
        let a_strides = broadcast_strides(a_shape, out, 1);
        let b_strides = broadcast_strides(b_shape, out, 1);
        // (size, a stride, b stride) of each output dimension larger than 1, merged with its
        // left neighbour when both operands step through both dimensions alike.
        let mut dims: Vec<(usize, usize, usize)> = Vec::new();
        for j in 0..out.len() {
            if out[j] == 1 {
                continue;
            }
            let (d, sa, sb) = (out[j], a_strides[j], b_strides[j]);
            match dims.last_mut() {
                Some(last)
                    if (last.1 == 0) == (sa == 0)
                        && (last.2 == 0) == (sb == 0)
                        && (sa == 0 || last.1 == sa * d)
                        && (sb == 0 || last.2 == sb * d) =>
                {
                    *last = (last.0 * d, sa, sb);
                }
                _ => dims.push((d, sa, sb)),
            }
        }
        let (row, a_row, b_row) = dims.pop().unwrap_or((1, 1, 1));
        Coalesced {
            outer: dims.iter().map(|d| d.0).collect(),
            a_outer: dims.iter().map(|d| d.1).collect(),
            b_outer: dims.iter().map(|d| d.2).collect(),
            row,
            a_row,
            b_row,
        }
    }

    /// Element offsets in A and B of the first element of output row `r`.
    #[inline(always)]
    fn offsets(&self, mut r: usize) -> (usize, usize) {
        if let ([_], [sa], [sb]) = (&self.outer[..], &self.a_outer[..], &self.b_outer[..]) {
            // One outer dimension (a per-channel NCHW scale or bias): no division per row,
            // which cost more than the row itself on short rows (2x2 planes: 4 elements).
            return (r * sa, r * sb);
        }
        let (mut ao, mut bo) = (0, 0);
        for d in (0..self.outer.len()).rev() {
            let idx = r % self.outer[d];
            r /= self.outer[d];
            ao += idx * self.a_outer[d];
            bo += idx * self.b_outer[d];
        }
        (ao, bo)
    }

    fn run(&self, a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
        let rows_per_task = (PAR_CHUNK / self.row).max(1);
        let task = |first_row: usize, block: &mut [f32]| {
            dispatch(
                #[inline(always)]
                || {
                    for (i, o) in block.chunks_mut(self.row).enumerate() {
                        let (ao, bo) = self.offsets(first_row + i);
                        row_op(&f, &a[ao..], self.a_row, &b[bo..], self.b_row, o);
                    }
                },
            )
        };
        if out.len() <= PAR_CHUNK || rayon::current_num_threads() == 1 {
            task(0, out);
        } else {
            out.par_chunks_mut(rows_per_task * self.row)
                .enumerate()
                .for_each(|(t, block)| task(t * rows_per_task, block));
        }
    }
}

/// One output row: each operand contiguous (stride 1) or one repeated value (stride 0).
#[inline(always)]
fn row_op(f: &impl Fn(f32, f32) -> f32, a: &[f32], sa: usize, b: &[f32], sb: usize, o: &mut [f32]) {
    let n = o.len();
    match (sa, sb) {
        (0, 0) => o.fill(f(a[0], b[0])),
        (0, _) => {
            let x = a[0];
            o.iter_mut().zip(&b[..n]).for_each(|(o, &y)| *o = f(x, y));
        }
        (_, 0) => {
            let y = b[0];
            o.iter_mut().zip(&a[..n]).for_each(|(o, &x)| *o = f(x, y));
        }
        _ => o
            .iter_mut()
            .zip(&a[..n])
            .zip(&b[..n])
            .for_each(|((o, &x), &y)| *o = f(x, y)),
    }
}
