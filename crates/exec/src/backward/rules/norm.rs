//! Rules of the normalisations: BatchNormalization in training mode (batch statistics
//! recomputed from the kept input), LayerNormalization and Softmax.

use std::borrow::Cow;

use rayon::prelude::*;
use whittle_ir::NodeAttrs;

use super::elementwise::{expand, reduce_to};
use super::{kern, RuleCtx};
use crate::bail;
use crate::error::Result;
use crate::kernels::norm::{batch_moments, batch_norm_train_backward, ChannelGeometry};

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// Training-mode BatchNormalization over `[N, C, S]` on its kernel, with the batch
/// statistics its forward kernel kept (recomputed from the kept input otherwise).
pub(super) fn batch_norm(c: &mut RuleCtx) -> Grads {
    let g = ChannelGeometry::of(c.in_shape(0)?);
    let eps = c.node.float_or("epsilon", 1e-5)?;
    let x = c.input(0)?;
    let gamma = c.input(1)?.to_f32_vec()?;
    let dy = c.dy()?;
    // The kernel writes every element of dx.
    let mut dx = c.wants(0).then(|| c.for_overwrite(g.n * g.c * g.s));
    let kept = c.node.output.first().and_then(|o| c.rec.batch_moments(o));
    let (dgamma, dbeta) = x.with_f32(|xd| {
        let recomputed;
        let m = match kept {
            Some(m) => m,
            None => {
                recomputed = kern(batch_moments(g, xd, eps))?;
                &recomputed
            }
        };
        kern(batch_norm_train_backward(
            g,
            xd,
            &dy,
            &gamma,
            m,
            dx.as_deref_mut(),
        ))
    })??;
    let mut grads = vec![None; c.node.input.len().max(3)];
    grads[0] = dx;
    grads[1] = c.wants(1).then_some(dgamma);
    grads[2] = c.wants(2).then_some(dbeta);
    grads.truncate(c.node.input.len());
    Ok(grads)
}

/// LayerNormalization over the axes from `axis` on, with `Scale` and optional `B`.
pub(super) fn layer_norm(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?;
    let axis = crate::ops::normalize_axis(c.node.int_or("axis", -1)?, shape.len())?;
    let eps = c.node.float_or("epsilon", 1e-5)?;
    let cols: usize = shape[axis..].iter().product();
    let scale_raw = c.input(1)?.to_f32_vec()?;
    let scale = expand(&scale_raw, c.in_shape(1)?, &shape[axis..])?;
    let dy = c.dy()?;
    let mut dx = c.zeros(dy.len());
    if cols == 0 {
        return Ok(vec![Some(dx), None, None]);
    }
    // x borrowed from its tensor (a copy would be a serial pass over it).
    let (dscale, dbias) = c
        .input(0)?
        .with_f32(|x| layer_norm_rows(x, &dy, &scale, cols, eps, &mut dx))?;
    // Scale's and bias's gradients summed down to their own shapes.
    let param = |i: usize, g: Vec<f32>| -> Result<Option<Vec<f32>>> {
        if !c.wants(i) {
            return Ok(None);
        }
        Ok(Some(reduce_to(
            Cow::Owned(g),
            &shape[axis..],
            c.in_shape(i)?,
        )?))
    };
    Ok(vec![
        c.wants(0).then_some(dx),
        param(1, dscale)?,
        param(2, dbias)?,
    ])
}

/// LayerNormalization's backward over rows of `cols`: `dx` of each row, and the sums over
/// the rows of `dy·x̂` and `dy` (the scale's and bias's gradients over the normalized axes).
fn layer_norm_rows(
    x: &[f32],
    dy: &[f32],
    scale: &[f32],
    cols: usize,
    eps: f32,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    dx.par_chunks_mut(cols)
        .enumerate()
        .fold(
            || (vec![0.0f32; cols], vec![0.0f32; cols]),
            |(mut ds, mut db), (row, out)| {
                let xr = &x[row * cols..(row + 1) * cols];
                let gr = &dy[row * cols..(row + 1) * cols];
                let mean = xr.iter().sum::<f32>() / cols as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
                let inv = 1.0 / (var + eps).sqrt();
                let (mut sg, mut sgx) = (0.0f32, 0.0f32);
                for j in 0..cols {
                    let xhat = (xr[j] - mean) * inv;
                    let g = gr[j] * scale[j];
                    sg += g;
                    sgx += g * xhat;
                    ds[j] += gr[j] * xhat;
                    db[j] += gr[j];
                }
                let (mg, mgx) = (sg / cols as f32, sgx / cols as f32);
                for j in 0..cols {
                    let xhat = (xr[j] - mean) * inv;
                    out[j] = inv * (gr[j] * scale[j] - mg - xhat * mgx);
                }
                (ds, db)
            },
        )
        .reduce(
            || (vec![0.0; cols], vec![0.0; cols]),
            |(mut a, mut b), (c2, d2)| {
                a.iter_mut().zip(&c2).for_each(|(x, y)| *x += y);
                b.iter_mut().zip(&d2).for_each(|(x, y)| *x += y);
                (a, b)
            },
        )
}

/// Softmax: `dx = y ⊙ (dy − Σ_axis dy⊙y)` over its axis (opset 13+) or over the axes from
/// `axis` on (earlier opsets, which flatten to 2-D).
pub(super) fn softmax(c: &mut RuleCtx) -> Grads {
    let shape = c.out_shape(0)?;
    let (default, single) = if c.opset >= 13 {
        (-1, true)
    } else {
        (1, false)
    };
    let axis = crate::ops::normalize_axis(c.node.int_or("axis", default)?, shape.len())?;
    let (len, inner) = if single {
        (shape[axis], shape[axis + 1..].iter().product::<usize>())
    } else {
        (shape[axis..].iter().product(), 1)
    };
    if len == 0 || inner == 0 {
        bail!("Softmax over an empty axis");
    }
    let dy = c.dy()?;
    let mut dx = c.zeros(dy.len());
    // y borrowed from its tensor (a copy would be a serial pass over it).
    c.output(0)?.with_f32(|y| {
        dx.par_chunks_mut(len * inner)
            .enumerate()
            .for_each(|(o, out)| {
                let base = o * len * inner;
                for i in 0..inner {
                    let at = |k: usize| base + k * inner + i;
                    let dot: f32 = (0..len).map(|k| dy[at(k)] * y[at(k)]).sum();
                    for k in 0..len {
                        out[k * inner + i] = y[at(k)] * (dy[at(k)] - dot);
                    }
                }
            })
    })?;
    Ok(vec![Some(dx)])
}
