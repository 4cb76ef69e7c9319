//! Rules of the products: Gemm, MatMul (broadcast batches) and Conv, on the GEMM and
//! convolution kernels.

use std::borrow::Cow;

use rayon::prelude::*;
use whittle_ir::NodeAttrs;

use super::elementwise::reduce_to;
use super::window::{row_product_plane, swap_inner, Window};
use super::{kern, RuleCtx};
use crate::bail;
use crate::error::Result;
use crate::kernels::conv::{conv2d_backward_input, conv2d_backward_weight, Conv2dShape};
use crate::kernels::gemm::{gemm, gemm_with, Epilogue, MatRef, Threads};

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// `alpha · a · b` into a recycled `a.rows() x b.cols()` gradient buffer of `ctx`.
fn product(ctx: &RuleCtx, a: MatRef, b: MatRef, alpha: f32) -> Result<Vec<f32>> {
    // beta = 0: the GEMM writes every element without reading it.
    let mut c = ctx.for_overwrite(a.rows() * b.cols());
    kern(gemm(a, b, &mut c, alpha, 0.0, &Epilogue::NONE))?;
    Ok(c)
}

/// Gemm: `Y = alpha·op(A)·op(B) + beta·C`.
pub(super) fn gemm_rule(c: &mut RuleCtx) -> Grads {
    operands(c, gemm_of)
}

/// The forward values of inputs 0 and 1, borrowed (not copied) as float32 for `rule`.
fn operands(c: &RuleCtx, rule: impl FnOnce(&RuleCtx, &[f32], &[f32]) -> Grads) -> Grads {
    let (a, b) = (c.input(0)?, c.input(1)?);
    a.with_f32(|a| b.with_f32(|b| rule(c, a, b)))??
}

fn gemm_of(c: &RuleCtx, a: &[f32], b: &[f32]) -> Grads {
    let node = c.node;
    let alpha = node.float_or("alpha", 1.0)?;
    let beta = node.float_or("beta", 1.0)?;
    let trans_a = node.int_or("transA", 0)? != 0;
    let trans_b = node.int_or("transB", 0)? != 0;
    let (sa, sb) = (c.in_shape(0)?, c.in_shape(1)?);
    let ([ra, ca], [rb, cb]) = (dims2(sa)?, dims2(sb)?);
    let dy = c.dy()?;
    let am = kern(MatRef::row_major(a, ra, ca))?;
    let bm = kern(MatRef::row_major(b, rb, cb))?;
    let op_a = if trans_a { am.t() } else { am };
    let op_b = if trans_b { bm.t() } else { bm };
    let (m, n) = (op_a.rows(), op_b.cols());
    let g = kern(MatRef::row_major(&dy, m, n))?;
    let mut grads = vec![None, None, None];
    if c.wants(0) {
        grads[0] = Some(if trans_a {
            product(c, op_b, g.t(), alpha)?
        } else {
            product(c, g, op_b.t(), alpha)?
        });
    }
    if c.wants(1) {
        grads[1] = Some(if trans_b {
            product(c, g.t(), op_a, alpha)?
        } else {
            product(c, op_a.t(), g, alpha)?
        });
    }
    if c.wants(2) {
        let mut dc = reduce_to(Cow::Borrowed(&dy), &[m, n], c.in_shape(2)?)?;
        dc.iter_mut().for_each(|v| *v *= beta);
        grads[2] = Some(dc);
    }
    Ok(grads)
}

fn dims2(s: &[usize]) -> Result<[usize; 2]> {
    match s {
        [r, c] => Ok([*r, *c]),
        _ => bail!("Gemm operands must be 2-D, got {s:?}"),
    }
}

/// MatMul with NumPy semantics: 1-D operands promoted, batch dimensions broadcast (their
/// gradients summed back).
pub(super) fn matmul(c: &mut RuleCtx) -> Grads {
    operands(c, matmul_of)
}

fn matmul_of(c: &RuleCtx, a: &[f32], b: &[f32]) -> Grads {
    let (sa, sb) = (c.in_shape(0)?.to_vec(), c.in_shape(1)?.to_vec());
    let a_shape = if sa.len() == 1 { vec![1, sa[0]] } else { sa };
    let b_shape = if sb.len() == 1 { vec![sb[0], 1] } else { sb };
    if a_shape.len() < 2 || b_shape.len() < 2 {
        bail!("MatMul of scalars");
    }
    let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let n = b_shape[b_shape.len() - 1];
    let dy = c.dy()?;
    let (want_a, want_b) = (c.wants(0), c.wants(1));
    if b_shape.len() == 2 {
        // A's batches fold into its rows: one GEMM per gradient.
        let rows = a.len() / k.max(1);
        let (am, bm) = (
            kern(MatRef::row_major(a, rows, k))?,
            kern(MatRef::row_major(b, k, n))?,
        );
        let g = kern(MatRef::row_major(&dy, rows, n))?;
        let da = want_a.then(|| product(c, g, bm.t(), 1.0)).transpose()?;
        let db = want_b.then(|| product(c, am.t(), g, 1.0)).transpose()?;
        return Ok(vec![da, db]);
    }
    let batch_a = &a_shape[..a_shape.len() - 2];
    let batch_b = &b_shape[..b_shape.len() - 2];
    let batch = crate::kernels::binary::broadcast_shape(batch_a, batch_b)
        .map_err(|e| crate::error::ExecError::msg(e.to_string()))?;
    let ia = batch_index(&batch, batch_a)?;
    let ib = batch_index(&batch, batch_b)?;
    // Gradient buffers only for the operands that want one.
    let buffer = |wanted: bool, len: usize| if wanted { c.zeros(len) } else { Vec::new() };
    let (mut da, mut db) = (buffer(want_a, a.len()), buffer(want_b, b.len()));
    let (sa, sb, sy) = (m * k, k * n, m * n);
    let one_to_one = |idx: &[usize], len: usize| {
        idx.len() == len && idx.iter().enumerate().all(|(i, &j)| i == j)
    };
    let (a_own, b_own) = (
        one_to_one(&ia, a.len() / sa.max(1)),
        one_to_one(&ib, b.len() / sb.max(1)),
    );
    if want_a {
        batch_products(&mut da, sa, a_own, &ia, |i, threads, out, beta| {
            let g = mat(&dy[i * sy..(i + 1) * sy], m, n)?;
            let bb = mat(&b[ib[i] * sb..(ib[i] + 1) * sb], k, n)?;
            kern(gemm_with(
                threads,
                g,
                bb.t(),
                out,
                1.0,
                beta,
                &Epilogue::NONE,
            ))
        })?;
    }
    if want_b {
        batch_products(&mut db, sb, b_own, &ib, |i, threads, out, beta| {
            let g = mat(&dy[i * sy..(i + 1) * sy], m, n)?;
            let ab = mat(&a[ia[i] * sa..(ia[i] + 1) * sa], m, k)?;
            kern(gemm_with(
                threads,
                ab.t(),
                g,
                out,
                1.0,
                beta,
                &Epilogue::NONE,
            ))
        })?;
    }
    Ok(vec![want_a.then_some(da), want_b.then_some(db)])
}

/// `x` as a row-major `rows x cols` matrix.
/// Writes batch `i`'s gradient product into `grad`'s batch `idx[i]` (batches of `size`
/// elements): when every batch has its own slot, all at once in parallel (beta 0, one
/// thread each); else one after another, summing into shared slots (beta 1).
fn batch_products(
    grad: &mut [f32],
    size: usize,
    own: bool,
    idx: &[usize],
    product: impl Fn(usize, Threads, &mut [f32], f32) -> Result<()> + Sync,
) -> Result<()> {
    if own {
        grad.par_chunks_mut(size.max(1))
            .enumerate()
            .try_for_each(|(i, out)| product(i, Threads::One, out, 0.0))
    } else {
        idx.iter().enumerate().try_for_each(|(i, &j)| {
            product(
                i,
                Threads::current(),
                &mut grad[j * size..(j + 1) * size],
                1.0,
            )
        })
    }
}

fn mat(x: &[f32], rows: usize, cols: usize) -> Result<MatRef<'_>> {
    kern(MatRef::row_major(x, rows, cols))
}

/// For each batch of the broadcast `batch` shape, the index of the batch of an operand
/// whose batch dimensions are `own` (NumPy broadcasting).
fn batch_index(batch: &[usize], own: &[usize]) -> Result<Vec<usize>> {
    let total: usize = batch.iter().product();
    let mut idx = vec![0usize; total];
    let ids: Vec<f32> = (0..own.iter().product::<usize>())
        .map(|i| i as f32)
        .collect();
    let expanded = super::elementwise::expand(&ids, own, batch)?;
    for (o, v) in idx.iter_mut().zip(expanded.iter()) {
        *o = *v as usize;
    }
    Ok(idx)
}

/// Conv (1-D and 2-D, groups, strides, pads, dilations): input and weight gradients on the
/// convolution kernels, the bias gradient as the sum of the output gradient.
pub(super) fn conv(c: &mut RuleCtx) -> Grads {
    let x_shape = c.in_shape(0)?;
    let w_shape = c.in_shape(1)?;
    let shape = Window::of(c.node, x_shape, &w_shape[2..])?.conv_shape(x_shape, w_shape, c.node)?;
    if [shape.out_h(), shape.out_w()] != spatial2(c.out_shape(0)?)? {
        bail!(
            "the output shape {:?} disagrees with the attributes",
            c.out_shape(0)?
        );
    }
    let dy = c.dy()?;
    if let Some(p) = row_product_plane(&shape) {
        return row_product_conv(c, &shape, p, &dy);
    }
    let mut grads = vec![None, None, None];
    if c.wants(0) {
        // Both kernels overwrite their outputs.
        let mut dx = c.for_overwrite(x_shape.iter().product());
        let w = c.input(1)?;
        kern(w.with_f32(|w| conv2d_backward_input(&shape, &dy, w, &mut dx))?)?;
        grads[0] = Some(dx);
    }
    if c.wants(1) || c.wants(2) {
        let mut dw = c.for_overwrite(w_shape.iter().product());
        let mut db = vec![0.0; shape.c_out];
        let want_bias = c.wants(2);
        let x = c.input(0)?;
        kern(x.with_f32(|x| {
            conv2d_backward_weight(
                &shape,
                x,
                &dy,
                &mut dw,
                want_bias.then_some(db.as_mut_slice()),
            )
        })?)?;
        grads[1] = c.wants(1).then_some(dw);
        grads[2] = want_bias.then_some(db);
    }
    Ok(grads)
}

/// The gradients of a convolution that is a product of rows ([`row_product_plane`], plane
/// `p`): `y = x · wᵀ + b` over rows `x` `n·p x c_in`, `w` `c_out x c_in`, so `dx = dy · w`,
/// `dw = dyᵀ · x` and `db` the column sums of `dy`.
fn row_product_conv(c: &RuleCtx, s: &Conv2dShape, p: usize, dy: &[f32]) -> Grads {
    let (rows, c_in, c_out) = (s.n * p, s.c_in, s.c_out);
    let dy_rows = kern(swap_inner(dy, s.n, c_out, p))?;
    let g = kern(MatRef::row_major(&dy_rows, rows, c_out))?;
    let mut grads = vec![None, None, None];
    if c.wants(0) {
        let w = c.input(1)?;
        let dx = w.with_f32(|w| product(c, g, kern(MatRef::row_major(w, c_out, c_in))?, 1.0))??;
        grads[0] = Some(match kern(swap_inner(&dx, s.n, p, c_in))? {
            Cow::Borrowed(_) => dx,
            Cow::Owned(planes) => {
                c.give(dx);
                planes
            }
        });
    }
    if c.wants(1) {
        let x = c.input(0)?;
        let dw = x.with_f32(|x| {
            let x_rows = kern(swap_inner(x, s.n, c_in, p))?;
            product(c, g.t(), kern(MatRef::row_major(&x_rows, rows, c_in))?, 1.0)
        })??;
        grads[1] = Some(dw);
    }
    if c.wants(2) {
        grads[2] = Some(reduce_to(
            Cow::Borrowed(&dy_rows),
            &[rows, c_out],
            &[c_out],
        )?);
    }
    Ok(grads)
}

/// The spatial dimensions of an NCHW (or NCW, as H = 1) shape.
pub(super) fn spatial2(s: &[usize]) -> Result<[usize; 2]> {
    match s {
        [_, _, w] => Ok([1, *w]),
        [_, _, h, w] => Ok([*h, *w]),
        _ => bail!(
            "only 1-D and 2-D windows have gradients, got a rank-{} tensor",
            s.len()
        ),
    }
}
