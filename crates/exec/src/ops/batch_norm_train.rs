//! Training-mode BatchNormalization as one fused CPU kernel with an analytic backward.
//!
//! Written with candle's tensor ops, a training BatchNormalization is a dozen broadcasts and
//! strided reductions over `(N, H, W)`, and its backward sums gradients over the same axes
//! again; profiling `zoo:cnn` training put those at about half of the step time. Here the
//! input is viewed as `[N, C, S]` and each channel is one pass for the statistics, one for
//! the output and, in backward, one for the two gradient sums and one for `dx`:
//! `dx = γ·σ⁻¹/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`, `dγ = Σ(dy·x̂)`, `dβ = Σdy` with `M = N·S`.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, WithDType};

use crate::error::Result;

/// Per-channel batch statistics of a contiguous `[N, C, S]` tensor: mean and population
/// variance, accumulated in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMoments {
    /// Mean of each channel.
    pub mean: Vec<f64>,
    /// Population variance of each channel.
    pub var: Vec<f64>,
}

/// `[N, C, S]` view of a tensor of rank >= 2.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    s: usize,
}

impl Geometry {
    fn of(dims: &[usize]) -> Self {
        Geometry {
            n: dims.first().copied().unwrap_or(1),
            c: dims.get(1).copied().unwrap_or(1),
            s: dims.iter().skip(2).product(),
        }
    }

    /// The contiguous runs of channel `ch`: one slice range per batch item.
    fn runs(&self, ch: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.n).map(move |i| {
            let start = (i * self.c + ch) * self.s;
            start..start + self.s
        })
    }

    fn count(&self) -> f64 {
        (self.n * self.s).max(1) as f64
    }
}

fn moments<T: WithDType>(x: &[T], g: Geometry) -> ChannelMoments {
    let (mut mean, mut var) = (vec![0.0; g.c], vec![0.0; g.c]);
    for ch in 0..g.c {
        let sum: f64 = g.runs(ch).flat_map(|r| &x[r]).map(|v| v.to_f64()).sum();
        let m = sum / g.count();
        let sq: f64 = g
            .runs(ch)
            .flat_map(|r| &x[r])
            .map(|v| (v.to_f64() - m).powi(2))
            .sum();
        mean[ch] = m;
        var[ch] = sq / g.count();
    }
    ChannelMoments { mean, var }
}

/// The fused op. Its forward measures the batch statistics and keeps them (shared with the
/// caller, who reads them for the running averages) for backward.
#[derive(Clone)]
struct BatchNormTrain(Arc<State>);

struct State {
    eps: f64,
    moments: OnceLock<ChannelMoments>,
}

impl State {
    fn moments(&self) -> candle_core::Result<&ChannelMoments> {
        self.moments
            .get()
            .ok_or_else(|| candle_core::Error::Msg("BatchNormalization ran no forward".into()))
    }

    fn inv_std(&self, m: &ChannelMoments, ch: usize) -> f64 {
        1.0 / (m.var[ch] + self.eps).sqrt()
    }

    fn forward<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T], g: Geometry) -> Vec<T> {
        let m = self.moments.get_or_init(|| moments(x, g));
        let mut y = vec![T::zero(); x.len()];
        for ch in 0..g.c {
            let a = gamma[ch].to_f64() * self.inv_std(m, ch);
            let b = beta[ch].to_f64() - m.mean[ch] * a;
            for r in g.runs(ch) {
                for (out, v) in y[r.clone()].iter_mut().zip(&x[r]) {
                    *out = T::from_f64(v.to_f64() * a + b);
                }
            }
        }
        y
    }

    /// `(dx, dγ, dβ)` for the output gradient `dy`.
    fn backward<T: WithDType>(
        &self,
        x: &[T],
        gamma: &[T],
        dy: &[T],
        g: Geometry,
    ) -> candle_core::Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let moments = self.moments()?;
        let mut dx = vec![T::zero(); x.len()];
        let (mut dgamma, mut dbeta) = (vec![T::zero(); g.c], vec![T::zero(); g.c]);
        for ch in 0..g.c {
            let (mean, inv) = (moments.mean[ch], self.inv_std(moments, ch));
            let (mut sum_dy, mut sum_dy_xhat) = (0.0, 0.0);
            for r in g.runs(ch) {
                for (d, v) in dy[r.clone()].iter().zip(&x[r]) {
                    sum_dy += d.to_f64();
                    sum_dy_xhat += d.to_f64() * (v.to_f64() - mean) * inv;
                }
            }
            let m = g.count();
            let k = gamma[ch].to_f64() * inv / m;
            for r in g.runs(ch) {
                for ((out, d), v) in dx[r.clone()].iter_mut().zip(&dy[r.clone()]).zip(&x[r]) {
                    let xhat = (v.to_f64() - mean) * inv;
                    *out = T::from_f64(k * (m * d.to_f64() - sum_dy - xhat * sum_dy_xhat));
                }
            }
            dgamma[ch] = T::from_f64(sum_dy_xhat);
            dbeta[ch] = T::from_f64(sum_dy);
        }
        Ok((dx, dgamma, dbeta))
    }
}

/// The contiguous elements of `layout` in `v`.
fn slice<'a, T>(v: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused BatchNormalization expects contiguous tensors");
    };
    v.get(start..end)
        .ok_or_else(|| candle_core::Error::Msg("layout exceeds its storage".into()))
}

/// The elements of a tensor as a host vector of `T`.
fn host<T: WithDType>(t: &Tensor) -> candle_core::Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        gamma: &CpuStorage,
        lg: &Layout,
        beta: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::of(lx.dims());
        let y = match (x, gamma, beta) {
            (CpuStorage::F32(x), CpuStorage::F32(ga), CpuStorage::F32(b)) => CpuStorage::F32(
                self.0
                    .forward(slice(x, lx)?, slice(ga, lg)?, slice(b, lb)?, g),
            ),
            (CpuStorage::F64(x), CpuStorage::F64(ga), CpuStorage::F64(b)) => CpuStorage::F64(
                self.0
                    .forward(slice(x, lx)?, slice(ga, lg)?, slice(b, lb)?, g),
            ),
            _ => candle_core::bail!("fused BatchNormalization expects f32 or f64 operands"),
        };
        Ok((y, lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::of(x.dims());
        let (dx, dgamma, dbeta) = match x.dtype() {
            DType::F32 => {
                let (a, b, c) = self
                    .0
                    .backward::<f32>(&host(x)?, &host(gamma)?, &host(dy)?, g)?;
                (
                    Tensor::from_vec(a, x.shape(), x.device())?,
                    Tensor::from_vec(b, gamma.shape(), x.device())?,
                    Tensor::from_vec(c, gamma.shape(), x.device())?,
                )
            }
            DType::F64 => {
                let (a, b, c) = self
                    .0
                    .backward::<f64>(&host(x)?, &host(gamma)?, &host(dy)?, g)?;
                (
                    Tensor::from_vec(a, x.shape(), x.device())?,
                    Tensor::from_vec(b, gamma.shape(), x.device())?,
                    Tensor::from_vec(c, gamma.shape(), x.device())?,
                )
            }
            other => candle_core::bail!("fused BatchNormalization does not take {other:?}"),
        };
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Whether the fused kernel serves `x`: an f32 or f64 tensor of rank >= 2 on the CPU.
pub fn fused_applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.rank() >= 2
}

/// Training-mode BatchNormalization of `x` `[N, C, ...]` with per-channel `gamma`, `beta`
/// (`[C]`, any float dtype): the normalised output (differentiable in all three) and the
/// batch statistics. Call only where [`fused_applies`].
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, ChannelMoments)> {
    let x = x.contiguous()?;
    let dt = x.dtype();
    let flat = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(dt)?.flatten_all()?.contiguous()?) };
    let op = BatchNormTrain(Arc::new(State {
        eps,
        moments: OnceLock::new(),
    }));
    let y = x.apply_op3(&flat(gamma)?, &flat(beta)?, op.clone())?;
    Ok((y, op.0.moments()?.clone()))
}
