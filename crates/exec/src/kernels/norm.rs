//! Normalisation kernels. Row-wise over the last axis: Softmax, LogSoftmax (max-subtracted,
//! so large logits do not overflow) and LayerNormalization; rows run in parallel. Per
//! channel: training-mode BatchNormalization (batch statistics) and its gradients; channels
//! and runs run in parallel.

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

/// Softmax (LogSoftmax with `log`) of `x`, seen as `[outer, cols, inner]`, over its middle
/// axis: over rows when `inner` is 1, else down the columns of each `[cols, inner]` block,
/// every pass a vectorised loop over `inner` contiguous elements (YOLOv8n's DFL Softmax
/// over axis 1 of `[1, 16, 4, 2100]`: rows of 16 through a transposed copy and back were
/// 1.7% of its run).
pub fn softmax_axis(x: &[f32], cols: usize, inner: usize, log: bool, y: &mut [f32]) -> Result<()> {
    match (inner, log) {
        (1, false) => softmax(x, cols, y),
        (1, true) => log_softmax(x, cols, y),
        _ => for_rows("softmax", x, cols * inner, y, |xb, yb| {
            dispatch(
                #[inline(always)]
                || softmax_columns(xb, inner, log, yb),
            )
        }),
    }
}

/// [`softmax_axis`] of one `[cols, inner]` block: the same max-subtracted sums as the rows.
#[inline(always)]
fn softmax_columns(x: &[f32], inner: usize, log: bool, y: &mut [f32]) {
    let mut m = vec![f32::NEG_INFINITY; inner];
    for xr in x.chunks_exact(inner) {
        for (mv, xv) in m.iter_mut().zip(xr) {
            *mv = mv.max(*xv);
        }
    }
    let mut sum = vec![0f32; inner];
    for (xr, yr) in x.chunks_exact(inner).zip(y.chunks_exact_mut(inner)) {
        for ((yv, xv), (mv, sv)) in yr.iter_mut().zip(xr).zip(m.iter().zip(sum.iter_mut())) {
            *yv = exp_f32(xv - mv);
            *sv += *yv;
        }
    }
    if log {
        // y = x - (max + ln(sum)).
        for (mv, sv) in m.iter_mut().zip(&sum) {
            *mv += sv.ln();
        }
        for (xr, yr) in x.chunks_exact(inner).zip(y.chunks_exact_mut(inner)) {
            for ((yv, xv), shift) in yr.iter_mut().zip(xr).zip(&m) {
                *yv = xv - shift;
            }
        }
    } else {
        sum.iter_mut().for_each(|sv| *sv = 1.0 / *sv);
        for yr in y.chunks_exact_mut(inner) {
            for (yv, inv) in yr.iter_mut().zip(&sum) {
                *yv *= inv;
            }
        }
    }
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

/// The layout of a BatchNormalization input `[N, C, S...]`: `n` items of `c` channels, each
/// channel of an item one contiguous run of `s` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelGeometry {
    /// Batch items.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Values per channel and item (the product of the spatial dimensions).
    pub s: usize,
}

impl ChannelGeometry {
    /// The geometry of an input of `shape` (rank 1 is one item of `shape[0]` channels).
    pub fn of(shape: &[usize]) -> Self {
        ChannelGeometry {
            n: shape.first().copied().unwrap_or(1),
            c: shape.get(1).copied().unwrap_or(1),
            s: shape.iter().skip(2).product(),
        }
    }

    fn len(&self) -> usize {
        self.n * self.c * self.s
    }

    /// Values each channel's statistics are taken over (`n·s`, at least 1).
    fn count(&self) -> f64 {
        (self.n * self.s).max(1) as f64
    }

    /// The runs of channel `ch`, one per batch item.
    fn runs(&self, ch: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.n).map(move |i| (i * self.c + ch) * self.s..(i * self.c + ch + 1) * self.s)
    }

    fn check(&self, kernel: &'static str, what: &str, len: usize) -> Result<()> {
        check_len(kernel, what, self.len(), len)
    }

    /// Values per batch item (`c·s`, one contiguous row).
    fn row(&self) -> usize {
        self.c * self.s
    }

    /// Whether the planes are small enough (1-15 values) to work on whole item rows with
    /// per-position accumulators and coefficients instead of run by run.
    fn small_planes(&self) -> bool {
        self.row() > 0 && self.s < SMALL_PLANE
    }

    /// `v(channel)` repeated over each channel's `s` positions: a per-position `[c·s]` row.
    fn expand(&self, v: impl Fn(usize) -> f32) -> Vec<f32> {
        (0..self.c)
            .flat_map(|k| std::iter::repeat_n(v(k), self.s))
            .collect()
    }
}

/// Planes of fewer values than this (1x1 to 3x3 after downsampling) run over whole item rows:
/// at mobilenetv3-small's 1- and 4-value planes, a call per run of 1-4 values cost ~4 ns per
/// element.
const SMALL_PLANE: usize = 16;

/// One training-mode BatchNormalization's batch statistics, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchMoments {
    /// Mean over the batch and spatial positions.
    pub mean: Vec<f32>,
    /// Biased variance (divided by `n·s`).
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f32>,
}

/// `f(channel)` for every channel, in parallel over channels when the input is large.
fn per_channel<T: Send>(g: ChannelGeometry, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if rayon::current_num_threads() > 1 && g.len() > PAR_CHUNK {
        (0..g.c).into_par_iter().map(f).collect()
    } else {
        (0..g.c).map(f).collect()
    }
}

/// `f(index, piece)` for every piece of `len` values of `out`, in parallel over blocks of
/// pieces when `out` is large.
fn per_piece(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if len == 0 {
        return;
    }
    let run = |(r, o): (usize, &mut [f32])| {
        dispatch(
            #[inline(always)]
            || f(r, o),
        )
    };
    if rayon::current_num_threads() > 1 && out.len() > PAR_CHUNK {
        out.par_chunks_mut(len)
            .enumerate()
            .with_min_len((PAR_CHUNK / len).max(1))
            .for_each(run);
    } else {
        out.chunks_mut(len).enumerate().for_each(run);
    }
}

/// `f(channel, run start, run)` for every run of `out` (laid out as `g`).
fn per_run(g: ChannelGeometry, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    per_piece(
        out,
        g.s,
        #[inline(always)]
        |r, o| f(r % g.c, r * g.s, o),
    );
}

/// `f(row start, row)` for every batch item's `[c·s]` row of `out` (laid out as `g`).
fn per_item(g: ChannelGeometry, out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    per_piece(
        out,
        g.row(),
        #[inline(always)]
        |i, o| f(i * g.row(), o),
    );
}

/// Small planes: `width` per-channel sums, each the f64 sum over the batch items of
/// `width` per-position accumulators that `f(row start, acc)` adds one item's row into
/// (`acc` holds `width` rows of `c·s`). The items are summed in blocks (in parallel when the
/// input is large) whose number depends on the size only, so the result does not depend on
/// the thread count: an even number when several, which two threads share equally (three
/// blocks left one thread a third of the work idle).
fn item_sums(
    g: ChannelGeometry,
    width: usize,
    f: impl Fn(usize, &mut [f64]) + Sync,
) -> Vec<Vec<f64>> {
    let row = g.row();
    let blocks = match g.len().div_ceil(PAR_CHUNK) {
        0 | 1 => 1,
        b => b.next_multiple_of(2),
    }
    .min(g.n.max(1));
    let per_block = g.n.div_ceil(blocks).max(1);
    let block = |b: usize| {
        let mut acc = vec![0f64; width * row];
        dispatch(
            #[inline(always)]
            || {
                for i in b * per_block..((b + 1) * per_block).min(g.n) {
                    f(i * row, &mut acc);
                }
            },
        );
        acc
    };
    let parts: Vec<Vec<f64>> = if rayon::current_num_threads() > 1 && blocks > 1 {
        (0..blocks).into_par_iter().map(block).collect()
    } else {
        (0..blocks).map(block).collect()
    };
    let mut total = vec![0f64; width * row];
    for part in &parts {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
    }
    total
        .chunks(row)
        .map(|acc| acc.chunks(g.s).map(|p| p.iter().sum()).collect())
        .collect()
}

/// `Σ (a - shift)·b` over a run, in 16 lanes (vectorises).
#[inline(always)]
fn shifted_dot(a: &[f32], shift: f32, b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - shift) * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += (x - shift) * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The batch statistics of `x` (laid out as `g`) for a BatchNormalization with `eps`: two
/// passes (mean, then the squared deviations). Each run is summed in f32 lanes and the runs
/// in f64; small planes are summed per position in f64 over the items (`item_sums`).
pub fn batch_moments(g: ChannelGeometry, x: &[f32], eps: f32) -> Result<BatchMoments> {
    g.check("batch_norm", "input", x.len())?;
    let (mean, var): (Vec<f32>, Vec<f32>) = if g.small_planes() {
        let row = g.row();
        let sums = item_sums(
            g,
            1,
            #[inline(always)]
            |at, acc| {
                for (a, v) in acc.iter_mut().zip(&x[at..at + row]) {
                    *a += *v as f64;
                }
            },
        );
        let mean: Vec<f32> = sums[0].iter().map(|s| (s / g.count()) as f32).collect();
        let means = g.expand(|k| mean[k]);
        let sq = item_sums(
            g,
            1,
            #[inline(always)]
            |at, acc| {
                for ((a, v), m) in acc.iter_mut().zip(&x[at..at + row]).zip(&means) {
                    *a += ((v - m) * (v - m)) as f64;
                }
            },
        );
        let var = sq[0].iter().map(|s| (s / g.count()) as f32).collect();
        (mean, var)
    } else {
        per_channel(g, |k| {
            dispatch(
                #[inline(always)]
                || {
                    let sum: f64 = g.runs(k).map(|r| lane_sum(&x[r]) as f64).sum();
                    let mean = (sum / g.count()) as f32;
                    let sq: f64 = g
                        .runs(k)
                        .map(|r| shifted_dot(&x[r.clone()], mean, &x[r]) as f64)
                        .sum();
                    (mean, (sq / g.count()) as f32)
                },
            )
        })
        .into_iter()
        .unzip()
    };
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Ok(BatchMoments { mean, var, inv_std })
}

/// Training-mode BatchNormalization: `y = (x - mean)·inv_std·gamma + beta` per channel with
/// the batch's statistics, which it answers.
pub fn batch_norm_train(
    g: ChannelGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
) -> Result<BatchMoments> {
    let m = batch_moments(g, x, eps)?;
    batch_norm_apply(g, x, gamma, beta, &m, y)?;
    Ok(m)
}

/// The statistics of a batch whose items were split into parts, from each part's moments
/// (taken with [`batch_moments`]) and item count, as one [`batch_moments`] call over the
/// whole batch would answer them up to rounding (the parts' means and squared deviations
/// combined in f64, Chan et al.'s pairwise update).
pub fn combine_moments(parts: &[(usize, &BatchMoments)], eps: f32) -> Result<BatchMoments> {
    let c = parts.first().map_or(0, |(_, m)| m.mean.len());
    if let Some((_, m)) = parts
        .iter()
        .find(|(_, m)| m.mean.len() != c || m.var.len() != c)
    {
        return Err(error(
            "batch_norm",
            format!("a part has {} channels, the first {c}", m.mean.len()),
        ));
    }
    let total: usize = parts.iter().map(|(n, _)| n).sum();
    let count = total.max(1) as f64;
    let mean: Vec<f64> = (0..c)
        .map(|k| {
            parts
                .iter()
                .map(|(n, m)| *n as f64 * m.mean[k] as f64)
                .sum::<f64>()
                / count
        })
        .collect();
    let var: Vec<f32> = (0..c)
        .map(|k| {
            let sq: f64 = parts
                .iter()
                .map(|(n, m)| {
                    let d = m.mean[k] as f64 - mean[k];
                    *n as f64 * (m.var[k] as f64 + d * d)
                })
                .sum();
            (sq / count) as f32
        })
        .collect();
    Ok(BatchMoments {
        mean: mean.iter().map(|&v| v as f32).collect(),
        inv_std: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
        var,
    })
}

/// `y = (x - mean)·inv_std·gamma + beta` per channel with the statistics `m` (a training-mode
/// BatchNormalization's output once its batch statistics are known).
pub fn batch_norm_apply(
    g: ChannelGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    m: &BatchMoments,
    y: &mut [f32],
) -> Result<()> {
    g.check("batch_norm", "input", x.len())?;
    g.check("batch_norm", "output", y.len())?;
    for (what, v) in [
        ("scale", gamma),
        ("B", beta),
        ("mean", &m.mean),
        ("inverse std", &m.inv_std),
    ] {
        check_len("batch_norm", what, g.c, v.len())?;
    }
    // y = x·a + b per channel.
    let a = |k: usize| gamma[k] * m.inv_std[k];
    let b = |k: usize| beta[k] - m.mean[k] * a(k);
    if g.small_planes() {
        let (a, b) = (g.expand(a), g.expand(b));
        per_item(g, y, |at, yr| {
            for ((yv, xv), (a, b)) in yr.iter_mut().zip(&x[at..]).zip(a.iter().zip(&b)) {
                *yv = xv * a + b;
            }
        });
    } else {
        per_run(g, y, |k, at, yr| {
            let (a, b) = (a(k), b(k));
            for (yv, xv) in yr.iter_mut().zip(&x[at..]) {
                *yv = xv * a + b;
            }
        });
    }
    Ok(())
}

/// Gradients of a training-mode BatchNormalization from the output gradient `dy`, with the
/// forward's statistics `m`: writes `dx` when given
/// (`γ·σ⁻¹·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)`, `M = n·s`) and answers `(dγ, dβ)` =
/// `(Σ dy·x̂, Σ dy)` per channel.
pub fn batch_norm_train_backward(
    g: ChannelGeometry,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    m: &BatchMoments,
    dx: Option<&mut [f32]>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let sums = batch_norm_backward_sums(g, x, dy, m)?;
    if let Some(dx) = dx {
        batch_norm_backward_apply(g, x, dy, gamma, m, &sums, dx)?;
    }
    Ok(sums.param_grads(m))
}

/// The per-channel sums `(Σdy, Σdy·(x − mean))` a training-mode BatchNormalization's
/// gradients need, over `count` values per channel: of the whole batch, or of a part of it
/// ([`BackwardSums::add`] joins the parts').
#[derive(Clone, Debug, PartialEq)]
pub struct BackwardSums {
    /// `(Σdy, Σdy·(x − mean))` per channel.
    pub per_channel: Vec<(f64, f64)>,
    /// Values summed per channel (items times spatial positions).
    pub count: f64,
}

impl BackwardSums {
    /// Adds another part's sums (over the same channels) into these.
    pub fn add(&mut self, other: &BackwardSums) -> Result<()> {
        check_len(
            "batch_norm_backward",
            "sums",
            self.per_channel.len(),
            other.per_channel.len(),
        )?;
        for (s, o) in self.per_channel.iter_mut().zip(&other.per_channel) {
            s.0 += o.0;
            s.1 += o.1;
        }
        self.count += other.count;
        Ok(())
    }

    /// `(dγ, dβ)` = `(Σ dy·x̂, Σ dy)` per channel, from the whole batch's sums.
    pub fn param_grads(&self, m: &BatchMoments) -> (Vec<f32>, Vec<f32>) {
        self.per_channel
            .iter()
            .zip(&m.inv_std)
            .map(|(&(sdy, sdx), &inv)| ((sdx * inv as f64) as f32, sdy as f32))
            .unzip()
    }
}

/// The [`BackwardSums`] of `x` and `dy` (laid out as `g`; the whole batch or a part of it)
/// with the whole batch's statistics `m`.
pub fn batch_norm_backward_sums(
    g: ChannelGeometry,
    x: &[f32],
    dy: &[f32],
    m: &BatchMoments,
) -> Result<BackwardSums> {
    g.check("batch_norm_backward", "input", x.len())?;
    g.check("batch_norm_backward", "output gradient", dy.len())?;
    check_len("batch_norm_backward", "mean", g.c, m.mean.len())?;
    let per_channel = if g.small_planes() {
        let (row, means) = (g.row(), g.expand(|k| m.mean[k]));
        let s = item_sums(
            g,
            2,
            #[inline(always)]
            |at, acc| {
                let (sdy, sdx) = acc.split_at_mut(row);
                let (d, xs) = (&dy[at..at + row], &x[at..at + row]);
                for ((sdy, sdx), ((d, v), mu)) in
                    sdy.iter_mut().zip(sdx).zip(d.iter().zip(xs).zip(&means))
                {
                    *sdy += *d as f64;
                    *sdx += ((v - mu) * d) as f64;
                }
            },
        );
        s[0].iter().copied().zip(s[1].iter().copied()).collect()
    } else {
        per_channel(g, |k| {
            dispatch(
                #[inline(always)]
                || {
                    g.runs(k).fold((0f64, 0f64), |(sdy, sdx), r| {
                        let d = &dy[r.clone()];
                        (
                            sdy + lane_sum(d) as f64,
                            sdx + shifted_dot(&x[r], m.mean[k], d) as f64,
                        )
                    })
                },
            )
        })
    };
    Ok(BackwardSums {
        per_channel,
        count: g.count(),
    })
}

/// Writes a training-mode BatchNormalization's input gradient
/// `dx = γ·σ⁻¹·(dy − Σdy/M − x̂·Σ(dy·x̂)/M)` for `x` and `dy` (laid out as `g`, the whole
/// batch or a part of it) from the whole batch's statistics `m` and sums `sums` (`M` their
/// count).
pub fn batch_norm_backward_apply(
    g: ChannelGeometry,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    m: &BatchMoments,
    sums: &BackwardSums,
    dx: &mut [f32],
) -> Result<()> {
    g.check("batch_norm_backward", "input", x.len())?;
    g.check("batch_norm_backward", "output gradient", dy.len())?;
    g.check("batch_norm_backward", "input gradient", dx.len())?;
    check_len("batch_norm_backward", "scale", g.c, gamma.len())?;
    check_len("batch_norm_backward", "mean", g.c, m.mean.len())?;
    check_len("batch_norm_backward", "inverse std", g.c, m.inv_std.len())?;
    check_len("batch_norm_backward", "sums", g.c, sums.per_channel.len())?;
    let count = sums.count;
    // dx = a·dy + b·(x − mean) + c
    let coef: Vec<(f32, f32, f32)> = sums
        .per_channel
        .iter()
        .enumerate()
        .map(|(k, &(sdy, sdx))| {
            let inv = m.inv_std[k] as f64;
            let a = gamma[k] as f64 * inv;
            (
                a as f32,
                (-a * inv * inv * sdx / count) as f32,
                (-a * sdy / count) as f32,
            )
        })
        .collect();
    let at = |o: &mut f32, d: f32, xv: f32, (a, b, c): (f32, f32, f32), mean: f32| {
        *o = a * d + b * (xv - mean) + c;
    };
    if g.small_planes() {
        let (mean, a) = (g.expand(|k| m.mean[k]), g.expand(|k| coef[k].0));
        let (b, c) = (g.expand(|k| coef[k].1), g.expand(|k| coef[k].2));
        per_item(g, dx, |start, out| {
            let row = out.len();
            let (d, xs) = (&dy[start..start + row], &x[start..start + row]);
            let coefs = a.iter().zip(&b).zip(c.iter().zip(&mean));
            for ((o, (d, xv)), ((a, b), (c, mu))) in out.iter_mut().zip(d.iter().zip(xs)).zip(coefs)
            {
                at(o, *d, *xv, (*a, *b, *c), *mu);
            }
        });
    } else {
        per_run(g, dx, |k, start, out| {
            for ((o, d), xv) in out.iter_mut().zip(&dy[start..]).zip(&x[start..]) {
                at(o, *d, *xv, coef[k], m.mean[k]);
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in roughly [-2, 3) with a per-channel offset (a non-zero mean).
    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 1000) as f32 / 400.0 - 2.0 + (i % 3) as f32 * 0.5
            })
            .collect()
    }

    /// f64 reference: moments, `y`, `dx`, `dγ`, `dβ`.
    #[allow(clippy::type_complexity)]
    fn reference(
        g: ChannelGeometry,
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let m = g.count();
        let (mut mean, mut var) = (vec![0.0; g.c], vec![0.0; g.c]);
        let (mut dgamma, mut dbeta) = (vec![0.0; g.c], vec![0.0; g.c]);
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        for k in 0..g.c {
            let vals = || g.runs(k).flatten();
            mean[k] = vals().map(|i| x[i] as f64).sum::<f64>() / m;
            var[k] = vals().map(|i| (x[i] as f64 - mean[k]).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var[k] + eps).sqrt();
            let xhat = |i: usize| (x[i] as f64 - mean[k]) * inv;
            dbeta[k] = vals().map(|i| dy[i] as f64).sum();
            dgamma[k] = vals().map(|i| dy[i] as f64 * xhat(i)).sum();
            for i in vals() {
                y[i] = xhat(i) * gamma[k] as f64 + beta[k] as f64;
                dx[i] =
                    gamma[k] as f64 * inv / m * (m * dy[i] as f64 - dbeta[k] - xhat(i) * dgamma[k]);
            }
        }
        (mean, var, y, dx, dgamma, dbeta)
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a as f64 - b).abs() <= 2e-5 * scale,
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    #[test]
    fn softmax_over_a_middle_axis_matches_f64_under_one_and_two_threads() {
        // [outer, cols, inner]: YOLOv8n's DFL shape, and a batched one large enough to split.
        for (outer, cols, inner) in [(1usize, 16usize, 8400usize), (6, 5, 700), (2, 3, 1)] {
            let mut x = data(outer * cols * inner, cols as u32);
            // Large logits (no overflow after the max subtraction) and a -inf.
            let ninf = inner.min(x.len() - 1);
            x[0] = 5000.0;
            x[ninf] = f32::NEG_INFINITY;
            let at = |o: usize, c: usize, i: usize| (o * cols + c) * inner + i;
            let (mut sm, mut lsm) = (vec![0f64; x.len()], vec![0f64; x.len()]);
            for o in 0..outer {
                for i in 0..inner {
                    let m = (0..cols)
                        .map(|c| x[at(o, c, i)] as f64)
                        .fold(f64::MIN, f64::max);
                    let sum: f64 = (0..cols).map(|c| (x[at(o, c, i)] as f64 - m).exp()).sum();
                    for c in 0..cols {
                        let v = x[at(o, c, i)] as f64 - m;
                        sm[at(o, c, i)] = v.exp() / sum;
                        lsm[at(o, c, i)] = v - sum.ln();
                    }
                }
            }
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![0.0; x.len()];
                pool.install(|| softmax_axis(&x, cols, inner, false, &mut y))
                    .unwrap();
                close(&y, &sm, "softmax");
                pool.install(|| softmax_axis(&x, cols, inner, true, &mut y))
                    .unwrap();
                // The -inf input stays -inf; the rest within 2e-5 of the largest magnitude.
                let finite: Vec<usize> = (0..x.len()).filter(|&i| lsm[i].is_finite()).collect();
                assert_eq!(y[ninf], f32::NEG_INFINITY);
                let pick = |v: &[f32]| finite.iter().map(|&i| v[i]).collect::<Vec<_>>();
                let want: Vec<f64> = finite.iter().map(|&i| lsm[i]).collect();
                close(&pick(&y), &want, "log_softmax");
            }
        }
    }

    #[test]
    fn batch_norm_train_and_backward_match_f64_under_one_and_two_threads() {
        for dims in [
            [2usize, 3, 5, 7],
            [64, 4, 16, 16],
            [3, 2, 1, 1],
            [5, 70, 1, 1],
            [64, 96, 2, 2],
            // Three blocks' worth of small planes, summed as four.
            [48, 200, 2, 2],
        ] {
            let g = ChannelGeometry::of(&dims);
            let len = g.len();
            let (x, dy) = (data(len, 1), data(len, 2));
            let (gamma, beta) = (data(g.c, 3), data(g.c, 4));
            let want = reference(g, &x, &dy, &gamma, &beta, 1e-5);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut y = vec![0.0; len];
                    let m = batch_norm_train(g, &x, &gamma, &beta, 1e-5, &mut y).unwrap();
                    close(&m.mean, &want.0, "mean");
                    close(&m.var, &want.1, "var");
                    close(&y, &want.2, "y");
                    let mut dx = vec![0.0; len];
                    let (dgamma, dbeta) =
                        batch_norm_train_backward(g, &x, &dy, &gamma, &m, Some(&mut dx)).unwrap();
                    close(&dx, &want.3, "dx");
                    close(&dgamma, &want.4, "dgamma");
                    close(&dbeta, &want.5, "dbeta");
                });
            }
        }
    }

    /// The batch split into uneven parts of items: the parts' moments combined, each part's
    /// output and input gradient from the whole batch's statistics and summed gradient
    /// sums, equal the f64 reference over the whole batch.
    #[test]
    fn batch_norm_in_parts_of_the_batch_matches_f64() {
        for (dims, cuts) in [([13usize, 6, 5, 5], [0, 5, 13]), ([9, 40, 2, 2], [0, 1, 9])] {
            let g = ChannelGeometry::of(&dims);
            let (x, dy) = (data(g.len(), 5), data(g.len(), 6));
            let (gamma, beta) = (data(g.c, 7), data(g.c, 8));
            let want = reference(g, &x, &dy, &gamma, &beta, 1e-5);
            let parts: Vec<(ChannelGeometry, std::ops::Range<usize>)> = cuts
                .windows(2)
                .map(|w| {
                    let part = ChannelGeometry {
                        n: w[1] - w[0],
                        ..g
                    };
                    (part, w[0] * g.row()..w[1] * g.row())
                })
                .collect();
            let moments: Vec<(usize, BatchMoments)> = parts
                .iter()
                .map(|(pg, r)| {
                    (
                        pg.n * pg.s,
                        batch_moments(*pg, &x[r.clone()], 1e-5).unwrap(),
                    )
                })
                .collect();
            let refs: Vec<(usize, &BatchMoments)> = moments.iter().map(|(n, m)| (*n, m)).collect();
            let m = combine_moments(&refs, 1e-5).unwrap();
            close(&m.mean, &want.0, "mean");
            close(&m.var, &want.1, "var");
            let (mut y, mut dx) = (vec![0.0; g.len()], vec![0.0; g.len()]);
            let mut total: Option<BackwardSums> = None;
            for (pg, r) in &parts {
                let (xs, ds) = (&x[r.clone()], &dy[r.clone()]);
                batch_norm_apply(*pg, xs, &gamma, &beta, &m, &mut y[r.clone()]).unwrap();
                let sums = batch_norm_backward_sums(*pg, xs, ds, &m).unwrap();
                match total.as_mut() {
                    Some(t) => t.add(&sums).unwrap(),
                    None => total = Some(sums),
                }
            }
            let total = total.unwrap();
            for (pg, r) in &parts {
                let (xs, ds) = (&x[r.clone()], &dy[r.clone()]);
                batch_norm_backward_apply(*pg, xs, ds, &gamma, &m, &total, &mut dx[r.clone()])
                    .unwrap();
            }
            let (dgamma, dbeta) = total.param_grads(&m);
            close(&y, &want.2, "y");
            close(&dx, &want.3, "dx");
            close(&dgamma, &want.4, "dgamma");
            close(&dbeta, &want.5, "dbeta");
        }
    }

    #[test]
    fn batch_norm_refuses_lengths_that_do_not_fit_the_shape() {
        let g = ChannelGeometry::of(&[2, 3, 4]);
        let mut y = vec![0.0; 24];
        let err = batch_norm_train(g, &[0.0; 23], &[1.0; 3], &[0.0; 3], 1e-5, &mut y).unwrap_err();
        assert_eq!(err.kernel, "batch_norm");
        assert!(err.message.contains("23"), "{}", err.message);
        let err = batch_norm_train(g, &[0.0; 24], &[1.0; 2], &[0.0; 3], 1e-5, &mut y).unwrap_err();
        assert!(err.message.starts_with("scale"), "{}", err.message);
    }
}
