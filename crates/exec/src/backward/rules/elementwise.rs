//! Rules of the elementwise operators: broadcasting Add/Sub/Mul/Div (gradients summed back
//! over the broadcast axes) and the activations, from their input or their output.

use std::borrow::Cow;

use rayon::prelude::*;
use whittle_ir::NodeAttrs;

use super::{kern, RuleCtx};
use crate::bail;
use crate::error::Result;
use crate::kernels::activation::{erf_f32, exp_f32};
use crate::kernels::binary::{binary, BinaryOp};
use crate::kernels::dispatch;
use crate::value::Value;

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// Elements per rayon task of the elementwise maps.
const CHUNK: usize = 16 * 1024;

/// Calls `f(out_offset, in_offset, in_step, len)` for `count` runs of the last axis of
/// `out_shape` from run `first` on, where `in_shape` (NumPy-broadcast to `out_shape`) is read
/// at `in_offset + k * in_step` for element `out_offset + k` of the run.
fn for_each_run(
    out_shape: &[usize],
    in_shape: &[usize],
    first: usize,
    count: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) -> Result<()> {
    let rank = out_shape.len();
    if in_shape.len() > rank {
        bail!("shape {in_shape:?} does not broadcast to {out_shape:?}");
    }
    let pad = rank - in_shape.len();
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for d in (0..in_shape.len()).rev() {
        let (i, o) = (in_shape[d], out_shape[pad + d]);
        if i != o && i != 1 {
            bail!("shape {in_shape:?} does not broadcast to {out_shape:?}");
        }
        strides[pad + d] = if i == 1 { 0 } else { s };
        s *= i;
    }
    let total: usize = out_shape.iter().product();
    if rank == 0 {
        if first == 0 && count > 0 {
            f(0, 0, 0, total);
        }
        return Ok(());
    }
    let inner = out_shape[rank - 1];
    if total == 0 || inner == 0 {
        return Ok(());
    }
    // The index of run `first` along each outer axis, and its offset in the input.
    let (mut index, mut base) = (vec![0usize; rank - 1], 0usize);
    let mut rest = first;
    for d in (0..rank - 1).rev() {
        index[d] = rest % out_shape[d];
        rest /= out_shape[d];
        base += index[d] * strides[d];
    }
    let end = first.saturating_add(count).min(total / inner);
    for out in (first * inner..end * inner).step_by(inner) {
        f(out, base, strides[rank - 1], inner);
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            base += strides[d];
            if index[d] < out_shape[d] {
                break;
            }
            base -= strides[d] * index[d];
            index[d] = 0;
        }
    }
    Ok(())
}

/// `x` of `x_shape` broadcast to `out_shape` (borrowed when the shapes hold as many elements).
pub(super) fn expand<'a>(
    x: &'a [f32],
    x_shape: &[usize],
    out_shape: &[usize],
) -> Result<Cow<'a, [f32]>> {
    if x.len() != x_shape.iter().product::<usize>() {
        bail!("{} values do not fill shape {x_shape:?}", x.len());
    }
    let total: usize = out_shape.iter().product();
    if x.len() == total {
        return Ok(Cow::Borrowed(x));
    }
    let mut out = vec![0.0; total];
    for_each_run(
        out_shape,
        x_shape,
        0,
        usize::MAX,
        |o, i, step, len| match step {
            0 => out[o..o + len].fill(x[i]),
            1 => out[o..o + len].copy_from_slice(&x[i..i + len]),
            _ => (0..len).for_each(|k| out[o + k] = x[i + k * step]),
        },
    )?;
    Ok(Cow::Owned(out))
}

/// `dy` of `out_shape` summed over the axes along which `in_shape` was broadcast. Large
/// gradients are summed in parallel: each block of [`REDUCE_BLOCK`] output elements into its
/// own partial sum, the partials then added in block order, so the result depends on the
/// shapes only (not on the thread count).
pub(super) fn reduce_to(
    dy: Cow<[f32]>,
    out_shape: &[usize],
    in_shape: &[usize],
) -> Result<Vec<f32>> {
    let n: usize = in_shape.iter().product();
    if n == dy.len() {
        return Ok(match dy {
            Cow::Owned(v) => v,
            Cow::Borrowed(v) => copy(v),
        });
    }
    let runs = |out: &mut [f32], first: usize, count: usize| {
        for_each_run(out_shape, in_shape, first, count, |o, i, step, len| {
            let d = &dy[o..o + len];
            match step {
                0 => out[i] += d.iter().sum::<f32>(),
                1 => out[i..i + len].iter_mut().zip(d).for_each(|(v, d)| *v += d),
                _ => (0..len).for_each(|k| out[i + k * step] += d[k]),
            }
        })
    };
    let inner = out_shape.last().copied().unwrap_or(1).max(1);
    let total_runs = dy.len() / inner;
    let per_block = (REDUCE_BLOCK / inner).max(1);
    let blocks = total_runs.div_ceil(per_block);
    if blocks <= 1 || n > REDUCE_BLOCK {
        let mut out = vec![0.0; n];
        runs(&mut out, 0, total_runs)?;
        return Ok(out);
    }
    let partials = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut part = vec![0.0; n];
            let first = b * per_block;
            runs(&mut part, first, per_block.min(total_runs - first))?;
            Ok(part)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parts = partials.into_iter();
    let mut out = parts.next().unwrap_or_else(|| vec![0.0; n]);
    for part in parts {
        out.iter_mut().zip(&part).for_each(|(o, p)| *o += p);
    }
    Ok(out)
}

/// Output elements per partial sum of [`reduce_to`] (and the largest reduced gradient summed
/// in parallel: beyond it the partials would cost more than they save).
const REDUCE_BLOCK: usize = 64 * 1024;

/// A copy of `v`, in parallel chunks.
fn copy(v: &[f32]) -> Vec<f32> {
    let mut out = crate::kernels::zeros(v.len());
    out.par_chunks_mut(CHUNK)
        .zip(v.par_chunks(CHUNK))
        .for_each(|(o, v)| o.copy_from_slice(v));
    out
}

/// `a = f(a, b)` elementwise, in place, in parallel chunks compiled for the CPU's vector
/// width (`f` is inlined into them: the gradient sums and activation rules ran as SSE2
/// loops, about 7% of a 2-thread zoo:mobilenetv3-small step).
pub(in crate::backward) fn zip_apply(a: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| {
            dispatch(
                #[inline(always)]
                || {
                    for (a, b) in a.iter_mut().zip(b) {
                        *a = f(*a, *b);
                    }
                },
            )
        });
}

/// Add and Sub: the output gradient summed to each operand's shape (negated for Sub's second).
pub(super) fn add_sub(c: &mut RuleCtx) -> Grads {
    let out = c.out_shape(0)?;
    let dy = c.dy()?;
    (0..2)
        .map(|i| {
            if !c.wants(i) {
                return Ok(None);
            }
            let mut g = reduce_to(Cow::Borrowed(&dy), out, c.in_shape(i)?)?;
            if i == 1 && c.node.op_type == "Sub" {
                g.iter_mut().for_each(|v| *v = -*v);
            }
            Ok(Some(g))
        })
        .collect()
}

/// Mul (`da = dy·b`, `db = dy·a`) and Div (`da = dy/b`, `db = -(dy/b)·a/b`), summed to
/// shape; the products broadcast on the kernels (no operand is expanded).
pub(super) fn mul_div(c: &mut RuleCtx) -> Grads {
    let out = c.out_shape(0)?.to_vec();
    let dy = c.dy()?;
    let (a, b) = (c.input(0)?, c.input(1)?);
    let (sa, sb) = (c.in_shape(0)?, c.in_shape(1)?);
    // `dy op v` over the output's shape, `v` of shape `sv` broadcast.
    let times = |op: BinaryOp, d: &[f32], v: &Value, sv: &[usize]| -> Result<Vec<f32>> {
        let mut g = crate::kernels::zeros(d.len());
        kern(v.with_f32(|v| binary(op, d, &out, v, sv, &mut g))?)?;
        Ok(g)
    };
    let mut grads = vec![None, None];
    if c.node.op_type == "Div" {
        let q = times(BinaryOp::Div, &dy, &b, sb)?;
        if c.wants(1) {
            let mut g = times(BinaryOp::Mul, &q, &a, sa)?;
            g = times(BinaryOp::Div, &g, &b, sb)?;
            g.par_chunks_mut(CHUNK)
                .for_each(|g| g.iter_mut().for_each(|v| *v = -*v));
            grads[1] = Some(reduce_to(Cow::Owned(g), &out, sb)?);
        }
        if c.wants(0) {
            grads[0] = Some(reduce_to(Cow::Owned(q), &out, sa)?);
        }
    } else {
        // Each operand's gradient: `dy` times the other, summed to the operand's shape (one
        // dot product per plane when the operand is a scale broadcast over trailing axes).
        let grad = |other: &Value, so: &[usize], own: &[usize]| -> Result<Vec<f32>> {
            match trailing_planes(&out, own) {
                Some((plane, row)) if so == out.as_slice() => {
                    kern(other.with_f32(|o| Ok(plane_dots(&dy, o, plane, row)))?)
                }
                _ => reduce_to(Cow::Owned(times(BinaryOp::Mul, &dy, other, so)?), &out, own),
            }
        };
        if c.wants(0) {
            grads[0] = Some(grad(&b, sb, sa)?);
        }
        if c.wants(1) {
            grads[1] = Some(grad(&a, sa, sb)?);
        }
    }
    Ok(grads)
}

/// When `sv` keeps the leading axes of `out` and is 1 on the others (a squeeze-and-excitation
/// scale `[n, c, 1, 1]` of `[n, c, h, w]`): the size of the planes it is broadcast over and
/// their rows' length (`out`'s last axis), if a plane holds several values.
fn trailing_planes(out: &[usize], sv: &[usize]) -> Option<(usize, usize)> {
    if sv.len() != out.len() {
        return None;
    }
    let kept = sv.iter().rposition(|&d| d != 1).map_or(0, |k| k + 1);
    let plane: usize = out[kept..].iter().product();
    (sv[..kept] == out[..kept] && plane > 1).then(|| (plane, out[out.len() - 1]))
}

/// `Σ dy·x` over each plane of `plane` values, row by row (rows of `row` values) as
/// [`reduce_to`] sums the products, in parallel blocks of planes: no product tensor and no
/// call per row (mobilenetv3-small's SE scales on 2x2 planes ran one per two values).
fn plane_dots(dy: &[f32], x: &[f32], plane: usize, row: usize) -> Vec<f32> {
    let mut out = vec![0.0; dy.len() / plane];
    let per = (CHUNK / plane).max(1);
    out.par_chunks_mut(per).enumerate().for_each(|(b, o)| {
        dispatch(
            #[inline(always)]
            || {
                for (k, v) in o.iter_mut().enumerate() {
                    let at = (b * per + k) * plane;
                    let (d, xs) = (&dy[at..at + plane], &x[at..at + plane]);
                    *v = d.chunks(row).zip(xs.chunks(row)).fold(0.0, |acc, (d, xs)| {
                        acc + d.iter().zip(xs).map(|(d, x)| d * x).sum::<f32>()
                    });
                }
            },
        )
    });
    out
}

/// Relu, Sigmoid, Tanh and Exp, whose derivatives are functions of their output. The output
/// gradient is taken and overwritten in place with the input's, reading the kept output (no
/// copy).
pub(super) fn from_output(c: &mut RuleCtx) -> Grads {
    let y = c.output(0)?;
    let mut dx = c.take_dy()?;
    let node = c.node;
    y.with_f32(|y| {
        in_place(&mut dx, y, &node.op_type, |dx, y, op| {
            match op {
                "Relu" => zip_apply(
                    dx,
                    y,
                    #[inline(always)]
                    |d, y| if y > 0.0 { d } else { 0.0 },
                ),
                "Sigmoid" => zip_apply(
                    dx,
                    y,
                    #[inline(always)]
                    |d, y| d * y * (1.0 - y),
                ),
                "Tanh" => zip_apply(
                    dx,
                    y,
                    #[inline(always)]
                    |d, y| d * (1.0 - y * y),
                ),
                "Exp" => zip_apply(
                    dx,
                    y,
                    #[inline(always)]
                    |d, y| d * y,
                ),
                other => bail!("no output-based rule for {other}"),
            }
            Ok(())
        })
    })??;
    Ok(vec![Some(dx)])
}

/// LeakyRelu, HardSigmoid, HardSwish, Erf and Gelu, whose derivatives read their input; in
/// place like [`from_output`], reading the kept input.
pub(super) fn from_input(c: &mut RuleCtx) -> Grads {
    let x = c.input(0)?;
    let mut dx = c.take_dy()?;
    let node = c.node;
    x.with_f32(|x| {
        in_place(&mut dx, x, &node.op_type, |dx, x, op| {
            match op {
                "LeakyRelu" => {
                    let alpha = node.float_or("alpha", 0.01)?;
                    zip_apply(
                        dx,
                        x,
                        #[inline(always)]
                        move |d, x| if x < 0.0 { alpha * d } else { d },
                    )
                }
                "HardSigmoid" => {
                    let alpha = node.float_or("alpha", 0.2)?;
                    let beta = node.float_or("beta", 0.5)?;
                    zip_apply(
                        dx,
                        x,
                        #[inline(always)]
                        move |d, x| {
                            let v = alpha * x + beta;
                            if v > 0.0 && v < 1.0 {
                                alpha * d
                            } else {
                                0.0
                            }
                        },
                    )
                }
                "HardSwish" => zip_apply(
                    dx,
                    x,
                    #[inline(always)]
                    |d, x| {
                        if x >= 3.0 {
                            d
                        } else if x > -3.0 {
                            d * (2.0 * x + 3.0) / 6.0
                        } else {
                            0.0
                        }
                    },
                ),
                "Erf" => zip_apply(
                    dx,
                    x,
                    #[inline(always)]
                    |d, x| d * std::f32::consts::FRAC_2_SQRT_PI * exp_f32(-x * x),
                ),
                "Gelu" if node.string_or("approximate", "none")? == "tanh" => zip_apply(
                    dx,
                    x,
                    #[inline(always)]
                    |d, x| {
                        let k = (2.0 / std::f32::consts::PI).sqrt();
                        let t = (k * (x + 0.044_715 * x * x * x)).tanh();
                        let du = k * (1.0 + 3.0 * 0.044_715 * x * x);
                        d * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
                    },
                ),
                "Gelu" => zip_apply(
                    dx,
                    x,
                    #[inline(always)]
                    |d, x| {
                        let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
                        let pdf = exp_f32(-0.5 * x * x) / (2.0 * std::f32::consts::PI).sqrt();
                        d * (cdf + x * pdf)
                    },
                ),
                other => bail!("no input-based rule for {other}"),
            }
            Ok(())
        })
    })??;
    Ok(vec![Some(dx)])
}

/// Runs `f(dx, v, op)` after checking that the kept value `v` has as many elements as the
/// gradient `dx`.
fn in_place(
    dx: &mut [f32],
    v: &[f32],
    op: &str,
    f: impl FnOnce(&mut [f32], &[f32], &str) -> Result<()>,
) -> Result<()> {
    if dx.len() != v.len() {
        bail!(
            "{op} gradient of {} elements for a value of {}",
            dx.len(),
            v.len()
        );
    }
    f(dx, v, op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_to_sums_broadcast_axes() {
        // [2, 3] summed to [3] and to [2, 1].
        let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let cols = reduce_to(Cow::Borrowed(&dy), &[2, 3], &[3]).unwrap();
        assert_eq!(cols, vec![5.0, 7.0, 9.0]);
        let rows = reduce_to(Cow::Borrowed(&dy), &[2, 3], &[2, 1]).unwrap();
        assert_eq!(rows, vec![6.0, 15.0]);
        let all = reduce_to(Cow::Borrowed(&dy), &[2, 3], &[]).unwrap();
        assert_eq!(all, vec![21.0]);
    }

    #[test]
    fn reduce_to_sums_large_gradients_in_blocks() {
        // [B, T, C] summed to a bias [C] and to a position table [1, T, C]: more than one
        // block of partial sums, each equal to the serial sum (integers: exact in f32).
        let (b, t, c) = (64, 65, 48);
        let dy: Vec<f32> = (0..b * t * c).map(|i| (i % 7) as f32).collect();
        assert!(dy.len() > 2 * REDUCE_BLOCK);
        let bias = reduce_to(Cow::Borrowed(&dy), &[b, t, c], &[c]).unwrap();
        let table = reduce_to(Cow::Borrowed(&dy), &[b, t, c], &[1, t, c]).unwrap();
        for j in 0..c {
            let want: f32 = (0..b * t).map(|r| dy[r * c + j]).sum();
            assert_eq!(bias[j], want, "bias {j}");
        }
        for j in 0..t * c {
            let want: f32 = (0..b).map(|r| dy[r * t * c + j]).sum();
            assert_eq!(table[j], want, "table {j}");
        }
    }

    #[test]
    fn expand_repeats_along_broadcast_axes() {
        let x = [1.0, 2.0];
        let e = expand(&x, &[2, 1], &[2, 3]).unwrap();
        assert_eq!(&*e, &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert!(expand(&x, &[3], &[2, 3]).is_err());
    }
}
