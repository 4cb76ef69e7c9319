//! The rule of whittle's fake quantization (`ai.whittle.FakeQuantize`, see
//! [`crate::ops::fake_quant`]): the straight-through estimator for `x` and the LSQ gradient
//! for a learned `scale`, exactly as candle's tape differentiates the operator's forward.
//!
//! With `v = x / s` and `q = round(clamp(v, qmin - z, qmax - z))` the forward is `y = s·q`.
//! `x` gets `dy·w` and `s` gets `grad_scale · Σ dy·(q - w·v)` over its channel, where `w` is
//! 1 inside the range, 0 outside, and ½ on a bound (the tape splits a tie of its
//! maximum/minimum evenly). Without a `scale` input the scale is the min/max observer's,
//! recomputed from `x` and held constant, so only `x` has a gradient; the zero point never
//! has one.

use whittle_ir::NodeAttrs;

use super::RuleCtx;
use crate::bail;
use crate::error::Result;
use crate::ops::fake_quant::minmax_scale;
use crate::ops::normalize_axis;

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// The share of a gradient that passes `max(a, b)` to `a` (candle's tape: ½ on a tie).
fn passes_max(a: f32, b: f32) -> f32 {
    if a > b {
        1.0
    } else if a == b {
        0.5
    } else {
        0.0
    }
}

/// FakeQuantize: the straight-through gradient of `x` and the LSQ gradient of `scale`.
pub(super) fn fake_quantize(c: &mut RuleCtx) -> Grads {
    let x = c.input(0)?;
    let dims = x.shape().to_vec();
    let (qmin, qmax) = (c.node.int_or("qmin", 0)?, c.node.int_or("qmax", 255)?);
    if qmin >= qmax {
        bail!("qmin {qmin} must be below qmax {qmax}");
    }
    // Elements of one channel run in blocks of `inner`; per tensor, one channel.
    let (inner, channels) = match c.node.int("axis")? {
        Some(a) => {
            let a = normalize_axis(a, dims.len())?;
            (dims[a + 1..].iter().product::<usize>(), dims[a])
        }
        None => (1, 1),
    };
    let learned = c.opt_input(1)?;
    let mut scale = match &learned {
        Some(s) => s.to_f32_vec()?,
        None => {
            let axis = c.node.int("axis")?;
            let axis = axis.map(|a| normalize_axis(a, dims.len())).transpose()?;
            let xt = x.tensor().to_dtype(candle_core::DType::F32)?;
            minmax_scale(&xt, axis, qmax - qmin)?.to_vec1()?
        }
    };
    let zero = match c.opt_input(2)? {
        Some(z) => z.to_f32_vec()?,
        None => vec![0.0; scale.len()],
    };
    if scale.len() != channels || zero.len() != channels {
        bail!(
            "{} scales and {} zero points for {channels} channels of {dims:?}",
            scale.len(),
            zero.len()
        );
    }
    // The forward divides by `s·g + (s - s·g)` (LSQ's gradient scaling), which may differ
    // from `s` in its last bit: use the same value so that `q` rounds the same way.
    let grad_scale = c.node.float_or("grad_scale", 1.0)?;
    if grad_scale != 1.0 {
        for s in &mut scale {
            let scaled = *s * grad_scale;
            *s = scaled + (*s - scaled);
        }
    }
    let want_scale = learned.is_some() && c.wants(1);
    let dy = c.dy()?;
    let xs = x.to_f32_vec()?;
    let mut dx = vec![0.0f32; xs.len()];
    let mut ds = vec![0.0f64; channels];
    for (e, (&xv, &g)) in xs.iter().zip(dy.iter()).enumerate() {
        let ch = (e / inner.max(1)) % channels;
        let (s, z) = (scale[ch], zero[ch]);
        let (lo, hi) = (qmin as f32 - z, qmax as f32 - z);
        let v = xv / s;
        let above = v.max(lo);
        let w = passes_max(v, lo) * passes_max(hi, above);
        dx[e] = g * w;
        if want_scale {
            let q = above.min(hi).round_ties_even();
            ds[ch] += f64::from(g * (q - w * v));
        }
    }
    let ds = want_scale.then(|| {
        ds.iter()
            .map(|&d| (d * f64::from(grad_scale)) as f32)
            .collect()
    });
    Ok(vec![c.wants(0).then_some(dx), ds])
}
