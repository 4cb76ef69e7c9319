//! Row-wise kernels over the last axis: Softmax, LogSoftmax (max-subtracted, so large
//! logits do not overflow) and LayerNormalization; rows run in parallel.

use super::activation::exp_f32;
use super::{check_len, dispatch, error, lane_sum, Result, PAR_CHUNK};
use rayon::prelude::*;

/// Runs `f(x_row, y_row)` over the rows of `cols` elements, parallel over blocks
/// of rows when the input is large.
fn for_rows(
    kernel: &'static str,
    x: &[f32],
    cols: usize,
    y: &mut [f32],
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) -> Result<()> {
    check_len(kernel, "output", x.len(), y.len())?;
    if cols == 0 {
        return Ok(());
    }
    if !x.len().is_multiple_of(cols) {
        return Err(error(
            kernel,
            format!("input of {} elements is not whole rows of {cols}", x.len()),
        ));
    }
    let rows_per_task = (PAR_CHUNK / cols).max(1);
    let block = |xs: &[f32], ys: &mut [f32]| {
        for (xr, yr) in xs.chunks(cols).zip(ys.chunks_mut(cols)) {
            f(xr, yr);
        }
    };
    if rayon::current_num_threads() > 1 && x.len() > PAR_CHUNK {
        x.par_chunks(rows_per_task * cols)
            .zip(y.par_chunks_mut(rows_per_task * cols))
            .for_each(|(xs, ys)| block(xs, ys));
    } else {
        block(x, y);
    }
    Ok(())
}

/// Maximum of a row in 16 independent lanes (vectorises; a plain fold does not).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    tail.iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Writes `y = e^(x - max)` and answers the sum of `y`.
#[inline(always)]
fn shifted_exp(x: &[f32], y: &mut [f32]) -> (f32, f32) {
    let m = row_max(x);
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv = exp_f32(xv - m);
    }
    (m, lane_sum(y))
}

/// Softmax over the last axis: rows of `cols` elements of `x` into `y`.
pub fn softmax(x: &[f32], cols: usize, y: &mut [f32]) -> Result<()> {
    for_rows("softmax", x, cols, y, |xr, yr| {
        dispatch(
            #[inline(always)]
            || {
                let (_, sum) = shifted_exp(xr, yr);
                let inv = 1.0 / sum;
                yr.iter_mut().for_each(|v| *v *= inv);
            },
        )
    })
}

/// LogSoftmax over the last axis: `x - max - ln(sum(e^(x - max)))`.
pub fn log_softmax(x: &[f32], cols: usize, y: &mut [f32]) -> Result<()> {
    for_rows("log_softmax", x, cols, y, |xr, yr| {
        dispatch(
            #[inline(always)]
            || {
                let (m, sum) = shifted_exp(xr, yr);
                let shift = m + sum.ln();
                for (yv, xv) in yr.iter_mut().zip(xr) {
                    *yv = xv - shift;
                }
            },
        )
    })
}

/// LayerNormalization over the last `cols` elements of each row:
/// `y = (x - mean) / sqrt(var + eps) * scale + bias` (`scale` and `bias` have `cols`
/// values). `stats`, when given, receives each row's mean and `1 / sqrt(var + eps)` (ONNX's
/// optional outputs, and what the backward pass needs).
pub fn layer_norm(
    x: &[f32],
    cols: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    stats: Option<(&mut [f32], &mut [f32])>,
) -> Result<()> {
    check_len("layer_norm", "scale", cols, scale.len())?;
    if let Some(b) = bias {
        check_len("layer_norm", "bias", cols, b.len())?;
    }
    check_len("layer_norm", "output", x.len(), y.len())?;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(error(
            "layer_norm",
            format!("input of {} elements is not whole rows of {cols}", x.len()),
        ));
    }
    let rows = x.len() / cols;
    let (mut own_mean, mut own_inv);
    let (means, inv_stds) = match stats {
        Some((m, i)) => {
            check_len("layer_norm", "mean output", rows, m.len())?;
            check_len("layer_norm", "inverse std output", rows, i.len())?;
            (m, i)
        }
        None => {
            own_mean = vec![0.0; rows];
            own_inv = vec![0.0; rows];
            (own_mean.as_mut_slice(), own_inv.as_mut_slice())
        }
    };
    let row = |xr: &[f32], yr: &mut [f32], mean_out: &mut f32, inv_out: &mut f32| {
        dispatch(
            #[inline(always)]
            || {
                let mean = lane_sum(xr) / cols as f32;
                for (yv, xv) in yr.iter_mut().zip(xr) {
                    *yv = xv - mean;
                }
                let mut acc = [0f32; 16];
                let chunks = yr.chunks_exact(16);
                let tail: f32 = chunks.remainder().iter().map(|d| d * d).sum();
                for c in chunks {
                    for (a, d) in acc.iter_mut().zip(c) {
                        *a += d * d;
                    }
                }
                let var = (acc.iter().sum::<f32>() + tail) / cols as f32;
                let inv_std = 1.0 / (var + eps).sqrt();
                match bias {
                    Some(b) => {
                        for ((yv, s), b) in yr.iter_mut().zip(scale).zip(b) {
                            *yv = *yv * inv_std * s + b;
                        }
                    }
                    None => {
                        for (yv, s) in yr.iter_mut().zip(scale) {
                            *yv *= inv_std * s;
                        }
                    }
                }
                *mean_out = mean;
                *inv_out = inv_std;
            },
        )
    };
    if rayon::current_num_threads() > 1 && x.len() > PAR_CHUNK {
        x.par_chunks(cols)
            .zip(y.par_chunks_mut(cols))
            .zip(means.par_iter_mut().zip(inv_stds.par_iter_mut()))
            .with_min_len((PAR_CHUNK / cols).max(1))
            .for_each(|((xr, yr), (m, i))| row(xr, yr, m, i));
    } else {
        x.chunks(cols)
            .zip(y.chunks_mut(cols))
            .zip(means.iter_mut().zip(inv_stds.iter_mut()))
            .for_each(|((xr, yr), (m, i))| row(xr, yr, m, i));
    }
    Ok(())
}
