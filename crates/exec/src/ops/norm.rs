//! Normalisations: `BatchNormalization` (inference and training statistics),
//! `InstanceNormalization`, `LayerNormalization`, `GroupNormalization`, `LRN`,
//! `MeanVarianceNormalization` and `LpNormalization`, all as differentiable candle ops.

use candle_core::{DType, Tensor};
use whittle_ir::NodeAttrs;

use super::batch_norm_train::{batch_norm_train, fused_applies};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("BatchNormalization", batch_norm);
    r.add("InstanceNormalization", instance_norm);
    r.add("LayerNormalization", layer_norm);
    r.add("GroupNormalization", group_norm);
    r.add("LRN", lrn);
    r.add("MeanVarianceNormalization", mvn);
    r.add("LpNormalization", lp_norm);
}

/// Mean and population variance over `dims`, kept as size-1 axes.
fn moments(x: &Tensor, dims: &[usize]) -> Result<(Tensor, Tensor)> {
    let mean = x.mean_keepdim(dims)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(dims)?;
    Ok((mean, var))
}

/// `1 / sqrt(var + eps)`.
fn inv_std(var: &Tensor, eps: f64) -> Result<Tensor> {
    Ok((var + eps)?.sqrt()?.recip()?)
}

/// A per-channel vector `[C]` shaped `[1, C, 1, ...]` for a rank-`rank` input, in `dt`.
fn per_channel(v: &Tensor, rank: usize, dt: DType) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[1] = v.elem_count();
    Ok(v.to_dtype(dt)?.reshape(shape)?)
}

/// The float input and epsilon every normalisation reads.
fn float_input<'a>(c: &'a OpCtx, min_rank: usize) -> Result<(&'a Value, f64)> {
    let x = c.input(0)?;
    if !x.dtype().is_float() {
        bail!("expects a float input, got {}", x.dtype());
    }
    if x.rank() < min_rank {
        bail!("expects rank >= {min_rank}, got {:?}", x.shape());
    }
    Ok((x, c.node.float_or("epsilon", 1e-5)? as f64))
}

/// Checks that a per-channel parameter has `n` elements.
fn check_len(v: &Value, n: usize, what: &str) -> Result<()> {
    if v.numel() != n {
        bail!("{what} has {} elements, expected {n}", v.numel());
    }
    Ok(())
}

/// `y = x * a + b` with per-channel `a = scale / sqrt(var + eps)`, `b = bias - mean * a`.
fn affine_per_channel(
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (rank, dt) = (x.rank(), x.dtype());
    let a = (per_channel(scale, rank, dt)? * inv_std(&per_channel(var, rank, dt)?, eps)?)?;
    let b = (per_channel(bias, rank, dt)? - (per_channel(mean, rank, dt)? * &a)?)?;
    Ok(x.broadcast_mul(&a)?.broadcast_add(&b)?)
}

fn batch_norm(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, eps) = float_input(c, 2)?;
    let channels = x.shape()[1];
    let (scale, bias, mean, var) = (c.input(1)?, c.input(2)?, c.input(3)?, c.input(4)?);
    for (v, what) in [
        (scale, "scale"),
        (bias, "B"),
        (mean, "input_mean"),
        (var, "input_var"),
    ] {
        check_len(v, channels, what)?;
    }
    let training = c.training || (c.opset >= 14 && c.node.int_or("training_mode", 0)? != 0);
    let t = x.tensor();
    if !training {
        let y = affine_per_channel(
            t,
            scale.tensor(),
            bias.tensor(),
            mean.tensor(),
            var.tensor(),
            eps,
        )?;
        let mut outs = vec![x.with_tensor(y)?, mean.clone(), var.clone()];
        outs.truncate(c.node.output.len().max(1));
        return Ok(outs);
    }
    let (y, bm, bv) = if fused_applies(t) {
        let (y, m) = batch_norm_train(t, scale.tensor(), bias.tensor(), eps)?;
        let stat = |v: Vec<f64>| Tensor::from_vec(v, channels, t.device())?.to_dtype(t.dtype());
        (y, stat(m.mean)?, stat(m.var)?)
    } else {
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let (bm, bv) = moments(t, &dims)?;
        let (bm, bv) = (bm.flatten_all()?, bv.flatten_all()?);
        let y = affine_per_channel(t, scale.tensor(), bias.tensor(), &bm, &bv, eps)?;
        (y, bm, bv)
    };
    let momentum = c.node.float_or("momentum", 0.9)? as f64;
    let running = |old: &Value, new: &Tensor| -> Result<Value> {
        let old = old.tensor().to_dtype(new.dtype())?;
        let t = ((old * momentum)? + (new * (1.0 - momentum))?)?;
        Value::new(t, mean.dtype())
    };
    let outs = vec![
        x.with_tensor(y)?,
        running(mean, &bm)?,
        running(var, &bv)?,
        Value::new(bm, mean.dtype())?,
        Value::new(bv, var.dtype())?,
    ];
    // All five are returned: the executor hands the running statistics to the trainer
    // even when the node does not name them, and binds only the named outputs.
    Ok(outs)
}

fn instance_norm(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, eps) = float_input(c, 3)?;
    let (scale, bias) = (c.input(1)?, c.input(2)?);
    check_len(scale, x.shape()[1], "scale")?;
    check_len(bias, x.shape()[1], "B")?;
    let t = x.tensor();
    let dims: Vec<usize> = (2..x.rank()).collect();
    let (mean, var) = moments(t, &dims)?;
    let normed = t
        .broadcast_sub(&mean)?
        .broadcast_mul(&inv_std(&var, eps)?)?;
    let (rank, dt) = (x.rank(), t.dtype());
    let y = normed
        .broadcast_mul(&per_channel(scale.tensor(), rank, dt)?)?
        .broadcast_add(&per_channel(bias.tensor(), rank, dt)?)?;
    Ok(vec![x.with_tensor(y)?])
}

/// The dtype statistics are computed in: `stash_type` 1 (default) lifts 16-bit floats to f32.
fn stash_dtype(c: &OpCtx, dt: DType) -> Result<DType> {
    let stash = c.node.int_or("stash_type", 1)?;
    Ok(match (stash, dt) {
        (1, DType::F16 | DType::BF16) => DType::F32,
        _ => dt,
    })
}

fn layer_norm(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, eps) = float_input(c, 1)?;
    let axis = c.axis(c.node.int_or("axis", -1)?, x.rank())?;
    let t = x.tensor();
    let stash = stash_dtype(c, t.dtype())?;
    let dims: Vec<usize> = (axis..x.rank()).collect();
    let ts = t.to_dtype(stash)?;
    let (mean, var) = moments(&ts, &dims)?;
    let inv = inv_std(&var, eps)?;
    let normed = ts
        .broadcast_sub(&mean)?
        .broadcast_mul(&inv)?
        .to_dtype(t.dtype())?;
    let mut y = normed.broadcast_mul(c.input(1)?.tensor())?;
    if let Some(b) = c.opt_input(2) {
        y = y.broadcast_add(b.tensor())?;
    }
    if y.dims() != t.dims() {
        bail!("Scale/B do not broadcast to the input shape {:?}", t.dims());
    }
    let mut outs = vec![
        x.with_tensor(y)?,
        Value::from_float(mean)?,
        Value::from_float(inv)?,
    ];
    outs.truncate(c.node.output.len().max(1));
    Ok(outs)
}

fn group_norm(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, eps) = float_input(c, 2)?;
    let groups = c.node.int_or("num_groups", 0)?;
    let (n, ch) = (x.shape()[0], x.shape()[1]);
    if groups < 1 || ch % groups as usize != 0 {
        bail!("num_groups {groups} must be positive and divide {ch} channels");
    }
    let g = groups as usize;
    let t = x.tensor();
    let stash = stash_dtype(c, t.dtype())?;
    let grouped = t.to_dtype(stash)?.reshape((n, g, ()))?;
    let (mean, var) = moments(&grouped, &[2])?;
    let normed = grouped
        .broadcast_sub(&mean)?
        .broadcast_mul(&inv_std(&var, eps)?)?
        .to_dtype(t.dtype())?
        .reshape(t.dims())?;
    let param = |i: usize, what: &str| -> Result<Tensor> {
        let v = c.input(i)?;
        // Opset 18 gives one value per group, opset 21 one per channel.
        let per_ch = if v.numel() == g && g != ch {
            v.tensor()
                .reshape((g, 1))?
                .broadcast_as((g, ch / g))?
                .flatten_all()?
        } else {
            check_len(v, ch, what)?;
            v.tensor().clone()
        };
        per_channel(&per_ch, x.rank(), t.dtype())
    };
    let y = normed
        .broadcast_mul(&param(1, "scale")?)?
        .broadcast_add(&param(2, "bias")?)?;
    Ok(vec![x.with_tensor(y)?])
}

fn lrn(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, _) = float_input(c, 3)?;
    let size = c.node.int_or("size", 0)?;
    if !(1..=1 << 16).contains(&size) {
        bail!("size must be positive, got {size}");
    }
    let size = size as usize;
    let alpha = c.node.float_or("alpha", 1e-4)? as f64;
    let beta = c.node.float_or("beta", 0.75)? as f64;
    let bias = c.node.float_or("bias", 1.0)? as f64;
    let t = x.tensor();
    let channels = x.shape()[1];
    let before = (size - 1) / 2;
    let sq = t.sqr()?.pad_with_zeros(1, before, size - 1 - before)?;
    let mut sum = sq.narrow(1, 0, channels)?;
    for j in 1..size {
        sum = (sum + sq.narrow(1, j, channels)?)?;
    }
    let denom = sum.affine(alpha / size as f64, bias)?.powf(beta)?;
    Ok(vec![x.with_tensor((t / denom)?)?])
}

fn mvn(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, _) = float_input(c, 1)?;
    let axes = match c.node.ints("axes")? {
        Some(a) => a
            .iter()
            .map(|&a| c.axis(a, x.rank()))
            .collect::<Result<Vec<_>>>()?,
        None => vec![0, 2, 3],
    };
    if axes.iter().any(|&a| a >= x.rank()) {
        bail!("axes {axes:?} out of range for rank {}", x.rank());
    }
    let t = x.tensor();
    let mean = t.mean_keepdim(axes.as_slice())?;
    let var = (t.sqr()?.mean_keepdim(axes.as_slice())? - mean.sqr()?)?;
    let y = t
        .broadcast_sub(&mean)?
        .broadcast_div(&(var.sqrt()? + 1e-9)?)?;
    Ok(vec![x.with_tensor(y)?])
}

fn lp_norm(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, _) = float_input(c, 1)?;
    let axis = c.axis(c.node.int_or("axis", -1)?, x.rank())?;
    let t = x.tensor();
    let norm = match c.node.int_or("p", 2)? {
        1 => t.abs()?.sum_keepdim(axis)?,
        2 => t.sqr()?.sum_keepdim(axis)?.sqrt()?,
        p => bail!("p must be 1 or 2, got {p}"),
    };
    // A zero norm means an all-zero slice, which stays zero.
    let safe = norm.eq(0.0)?.where_cond(&norm.ones_like()?, &norm)?;
    Ok(vec![x.with_tensor(t.broadcast_div(&safe)?)?])
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use whittle_ir::attr::make;

    use super::*;
    use crate::ops::conv::tests::{arange, flat, ones, run_node};

    fn value(v: &[f32], shape: &[usize]) -> Value {
        let t = Tensor::new(v, &Device::Cpu).unwrap();
        Value::f32(t.reshape(shape).unwrap()).unwrap()
    }

    #[test]
    fn batch_norm_affine_matches_the_formula() {
        // y = scale * (x - mean) / sqrt(var + eps) + bias, per channel.
        let x = value(&[1.0, 2.0, 3.0, 4.0], &[1, 2, 2]);
        let v = |a: f32, b: f32| value(&[a, b], &[2]).into_tensor();
        let y = affine_per_channel(
            x.tensor(),
            &v(2.0, 1.0),
            &v(0.5, -1.0),
            &v(1.0, 3.0),
            &v(4.0, 0.25),
            0.0,
        )
        .unwrap();
        assert_eq!(flat(&Value::f32(y).unwrap()), [0.5, 1.5, -1.0, 1.0]);
    }

    #[test]
    fn batch_norm_training_updates_running_statistics() {
        let attrs = vec![make::int("training_mode", 1), make::float("epsilon", 0.0)];
        let x = value(&[1.0, 3.0], &[2, 1]);
        let (one, zero) = (ones(&[1]), value(&[0.0], &[1]));
        let y = run_node(
            "BatchNormalization",
            attrs,
            vec![x, one.clone(), zero.clone(), zero, one],
            3,
        )
        .unwrap();
        assert_eq!(flat(&y[0]), [-1.0, 1.0]);
        assert!((flat(&y[1])[0] - 0.2).abs() < 1e-6);
        assert!((flat(&y[2])[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_returns_mean_and_inverse_std() {
        let attrs = vec![make::float("epsilon", 0.0)];
        let x = value(&[1.0, 3.0, 0.0, 4.0], &[2, 2]);
        let y = run_node("LayerNormalization", attrs, vec![x, ones(&[2])], 3).unwrap();
        assert_eq!(flat(&y[0]), [-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(y[1].shape(), &[2, 1]);
        assert_eq!(flat(&y[1]), [2.0, 2.0]);
        assert_eq!(flat(&y[2]), [1.0, 0.5]);
    }

    #[test]
    fn group_norm_accepts_per_group_scales() {
        let attrs = vec![make::int("num_groups", 2), make::float("epsilon", 0.0)];
        let scale = value(&[1.0, 2.0], &[2]);
        let bias = value(&[0.0, 0.0], &[2]);
        let y = run_node(
            "GroupNormalization",
            attrs,
            vec![arange(&[1, 4, 1]), scale, bias],
            1,
        )
        .unwrap();
        assert_eq!(flat(&y[0]), [-1.0, 1.0, -2.0, 2.0]);
    }

    #[test]
    fn lp_normalization_keeps_zero_rows() {
        let x = value(&[3.0, 4.0, 0.0, 0.0], &[2, 2]);
        let y = run_node("LpNormalization", vec![], vec![x], 1).unwrap();
        assert_eq!(flat(&y[0]), [0.6, 0.8, 0.0, 0.0]);
    }
}
