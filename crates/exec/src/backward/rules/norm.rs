//! Rules of the normalisations: BatchNormalization in training mode (batch statistics
//! recomputed from the kept input), LayerNormalization and Softmax.

use std::borrow::Cow;

use rayon::prelude::*;
use whittle_ir::NodeAttrs;

use super::elementwise::{expand, reduce_to};
use super::RuleCtx;
use crate::bail;
use crate::error::Result;

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// Per-channel sums of one BatchNormalization backward.
struct ChannelSums {
    mean: f64,
    inv_std: f64,
    /// `Σ dy`.
    dy: f64,
    /// `Σ dy·x̂`.
    dy_xhat: f64,
}

/// Training-mode BatchNormalization over `[N, C, S]`:
/// `dx = γ·σ⁻¹/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`, `dγ = Σ(dy·x̂)`, `dβ = Σdy` with `M = N·S`.
pub(super) fn batch_norm(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?;
    let (n, ch) = (
        shape.first().copied().unwrap_or(1),
        shape.get(1).copied().unwrap_or(1),
    );
    let s: usize = shape.iter().skip(2).product();
    let eps = c.node.float_or("epsilon", 1e-5)? as f64;
    let x = c.input(0)?.to_f32_vec()?;
    let gamma = c.input(1)?.to_f32_vec()?;
    let dy = c.dy()?;
    let m = (n * s).max(1) as f64;
    let runs = |k: usize| (0..n).map(move |i| (i * ch + k) * s..(i * ch + k + 1) * s);
    let sums: Vec<ChannelSums> = (0..ch)
        .into_par_iter()
        .map(|k| {
            let mean = runs(k).flat_map(|r| &x[r]).map(|&v| v as f64).sum::<f64>() / m;
            let var = runs(k)
                .flat_map(|r| &x[r])
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / m;
            let inv_std = 1.0 / (var + eps).sqrt();
            let (mut sdy, mut sdyx) = (0.0, 0.0);
            for r in runs(k) {
                for (&g, &v) in dy[r.clone()].iter().zip(&x[r]) {
                    sdy += g as f64;
                    sdyx += g as f64 * (v as f64 - mean) * inv_std;
                }
            }
            ChannelSums {
                mean,
                inv_std,
                dy: sdy,
                dy_xhat: sdyx,
            }
        })
        .collect();
    let mut grads = vec![None; c.node.input.len()];
    if c.wants(0) {
        let mut dx = vec![0.0; x.len()];
        if s > 0 {
            dx.par_chunks_mut(s).enumerate().for_each(|(run, out)| {
                let k = run % ch;
                let t = &sums[k];
                let scale = gamma[k] as f64 * t.inv_std / m;
                let start = run * s;
                for (j, o) in out.iter_mut().enumerate() {
                    let xhat = (x[start + j] as f64 - t.mean) * t.inv_std;
                    *o = (scale * (m * dy[start + j] as f64 - t.dy - xhat * t.dy_xhat)) as f32;
                }
            });
        }
        grads[0] = Some(dx);
    }
    if c.wants(1) {
        grads[1] = Some(sums.iter().map(|t| t.dy_xhat as f32).collect());
    }
    if c.wants(2) {
        grads[2] = Some(sums.iter().map(|t| t.dy as f32).collect());
    }
    Ok(grads)
}

/// LayerNormalization over the axes from `axis` on, with `Scale` and optional `B`.
pub(super) fn layer_norm(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?;
    let axis = crate::ops::normalize_axis(c.node.int_or("axis", -1)?, shape.len())?;
    let eps = c.node.float_or("epsilon", 1e-5)?;
    let cols: usize = shape[axis..].iter().product();
    let x = c.input(0)?.to_f32_vec()?;
    let scale_raw = c.input(1)?.to_f32_vec()?;
    let scale = expand(&scale_raw, c.in_shape(1)?, &shape[axis..])?;
    let dy = c.dy()?;
    if cols == 0 {
        return Ok(vec![Some(vec![0.0; x.len()]), None, None]);
    }
    let mut dx = vec![0.0; x.len()];
    let (dscale, dbias) = dx
        .par_chunks_mut(cols)
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
        );
    let mut grads = vec![None, None, None];
    grads[0] = c.wants(0).then_some(dx);
    if c.wants(1) {
        grads[1] = Some(reduce_to(
            Cow::Owned(dscale),
            &shape[axis..],
            c.in_shape(1)?,
        )?);
    }
    if c.wants(2) {
        grads[2] = Some(reduce_to(
            Cow::Owned(dbias),
            &shape[axis..],
            c.in_shape(2)?,
        )?);
    }
    Ok(grads)
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
    let y = c.output(0)?.to_f32_vec()?;
    let dy = c.dy()?;
    let mut dx = vec![0.0; y.len()];
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
        });
    Ok(vec![Some(dx)])
}
