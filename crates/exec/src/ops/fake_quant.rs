//! Fake quantization for quantization-aware training: `ai.whittle.FakeQuantize`, a
//! whittle-private operator that exists only in training graphs (export replaces it with
//! QuantizeLinear/DequantizeLinear pairs).
//!
//! Inputs: `x` (float), optional `scale` (scalar or 1-D along `axis`), optional integer
//! `zero_point` (same shape as `scale`, default 0). Attributes: `qmin`, `qmax` (integer
//! range), `axis` (per-channel axis; absent for per tensor), `grad_scale` (LSQ gradient
//! scale of `scale`, default 1).
//!
//! Forward: `y = s * clamp(round_half_even(x / s), qmin - z, qmax - z)`, which equals
//! `DequantizeLinear(QuantizeLinear(x))`. It is written as `s * (c + (round(c) - c).detach())`
//! with `c = clamp(x / s, qmin - z, qmax - z)`, so autograd gives the straight-through
//! estimator for `x` (gradient 1 inside the range, 0 outside) and the LSQ gradient for `s`
//! (`round(c) - c` inside, the clamp bound outside).
//!
//! Without a `scale` input the scale is symmetric min/max of `x` per channel (or per
//! tensor), `2 max|x| / (qmax - qmin)`, recomputed on every run and held constant for the
//! gradient: the weight observer of quantization-aware training.

use candle_core::{DType, Tensor};
use whittle_ir::NodeAttrs;

use super::util::require_float;
use super::{normalize_axis, OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// The domain of whittle's training-only operators.
pub const DOMAIN: &str = "ai.whittle";

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add_in(DOMAIN, "FakeQuantize", fake_quantize);
}

fn fake_quantize(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    let xt = x.tensor().to_dtype(DType::F32)?;
    let (qmin, qmax) = (c.node.int_or("qmin", 0)?, c.node.int_or("qmax", 255)?);
    if qmin >= qmax {
        bail!("qmin {qmin} must be below qmax {qmax}");
    }
    let axis = match c.node.int("axis")? {
        Some(a) => Some(normalize_axis(a, x.rank())?),
        None => None,
    };
    let scale = match c.opt_input(1) {
        Some(s) => s.tensor().to_dtype(DType::F32)?,
        None => minmax_scale(&xt, axis, qmax - qmin)?,
    };
    let zero = match c.opt_input(2) {
        Some(z) => z.float_tensor()?.to_dtype(DType::F32)?,
        None => scale.zeros_like()?.detach(),
    };
    let shape = param_shape(x.shape(), axis, scale.elem_count())?;
    let grad_scale = f64::from(c.node.float_or("grad_scale", 1.0)?);
    let s = lsq_scaled(&scale.reshape(shape.as_slice())?, grad_scale)?;
    let z = zero.reshape(shape.as_slice())?.detach();
    let lo = z.neg()?.affine(1.0, qmin as f64)?;
    let hi = z.neg()?.affine(1.0, qmax as f64)?;
    let clamped = xt
        .broadcast_div(&s)?
        .broadcast_maximum(&lo)?
        .broadcast_minimum(&hi)?;
    let rounded = round_half_even(&clamped.detach())?;
    let q = (&clamped + (rounded - clamped.detach())?)?;
    let y = q.broadcast_mul(&s)?.to_dtype(x.tensor().dtype())?;
    Ok(vec![x.with_tensor(y)?])
}

/// The shape a scale of `n` values takes to broadcast against `dims` (per channel along
/// `axis`, or per tensor).
fn param_shape(dims: &[usize], axis: Option<usize>, n: usize) -> Result<Vec<usize>> {
    match axis {
        Some(a) if dims[a] == n => {
            let mut shape = vec![1; dims.len()];
            shape[a] = n;
            Ok(shape)
        }
        Some(a) => bail!("{n} scales for axis {a} of a tensor of shape {dims:?}"),
        None if n == 1 => Ok(vec![]),
        None => bail!("{n} scales without an axis attribute"),
    }
}

/// `s` with its gradient multiplied by `g` (the forward value is unchanged).
fn lsq_scaled(s: &Tensor, g: f64) -> Result<Tensor> {
    if g == 1.0 {
        return Ok(s.clone());
    }
    let scaled = s.affine(g, 0.0)?;
    Ok((&scaled + (s - &scaled)?.detach())?)
}

/// Rounds half to even, like QuantizeLinear (candle's `round` rounds half away from
/// zero): adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to the
/// nearest integer, ties to even, under IEEE arithmetic. Callers pass clamped values.
fn round_half_even(t: &Tensor) -> Result<Tensor> {
    const MAGIC: f64 = 12_582_912.0;
    Ok(t.affine(1.0, MAGIC)?.affine(1.0, -MAGIC)?)
}

/// Symmetric min/max scale `2 max|x| / levels` per channel along `axis` (or per tensor),
/// 1 where a channel is all zeros; no gradient flows through it.
pub(crate) fn minmax_scale(x: &Tensor, axis: Option<usize>, levels: i64) -> Result<Tensor> {
    let x = x.detach();
    let abs = match axis {
        Some(a) => {
            let moved = x.transpose(0, a)?.contiguous()?;
            let n = moved.dim(0)?;
            moved.reshape((n, ()))?.abs()?.max(1)?
        }
        None => x.abs()?.flatten_all()?.max(0)?.reshape(1)?,
    };
    let amax: Vec<f32> = abs.to_vec1()?;
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| {
            let s = (a - -a) / levels as f32;
            if s.is_finite() && s > f32::MIN_POSITIVE {
                s
            } else {
                1.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(scales, abs.dims(), x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Executor;
    use candle_core::{Device, Var};
    use std::collections::HashMap;
    use whittle_ir::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    use whittle_ir::{attr::make, shape::TensorType, DataType, Model};

    /// A graph `y = FakeQuantize(x, s, z)` with `x` of shape `dims`.
    fn model(dims: &[usize], attrs: Vec<whittle_ir::proto::AttributeProto>) -> Model {
        let io = |n: &str| TensorType::known(DataType::Float, dims).to_value_info(n);
        let node = NodeProto {
            op_type: "FakeQuantize".into(),
            domain: DOMAIN.into(),
            input: vec!["x".into(), "s".into()],
            output: vec!["y".into()],
            attribute: attrs,
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![node],
            input: vec![
                io("x"),
                TensorType::known(DataType::Float, &[1]).to_value_info("s"),
            ],
            output: vec![io("y")],
            ..Default::default()
        };
        let opset = |d: &str, v| OperatorSetIdProto {
            domain: d.into(),
            version: v,
        };
        Model::new(ModelProto {
            ir_version: 8,
            opset_import: vec![opset("", 13), opset(DOMAIN, 1)],
            graph: Some(graph),
            ..Default::default()
        })
    }

    /// Runs the graph in training mode; returns y and the gradients of sum(y) for x and s.
    fn run(x: &[f32], s: f32, attrs: Vec<whittle_ir::proto::AttributeProto>) -> [Vec<f32>; 3] {
        let exec = Executor::new(&model(&[x.len()], attrs)).unwrap();
        let xv = Var::new(x, &Device::Cpu).unwrap();
        let sv = Var::new(&[s], &Device::Cpu).unwrap();
        let feed = HashMap::from([
            ("x".to_string(), Value::f32(xv.as_tensor().clone()).unwrap()),
            ("s".to_string(), Value::f32(sv.as_tensor().clone()).unwrap()),
        ]);
        let opts = crate::RunOptions {
            training: true,
            ..Default::default()
        };
        let y = exec.run_with(feed, opts).unwrap().remove("y").unwrap();
        let grads = y.tensor().sum_all().unwrap().backward().unwrap();
        let g = |v: &Var| grads.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        [y.tensor().to_vec1().unwrap(), g(&xv), g(&sv)]
    }

    fn range(qmin: i64, qmax: i64) -> Vec<whittle_ir::proto::AttributeProto> {
        vec![make::int("qmin", qmin), make::int("qmax", qmax)]
    }

    #[test]
    fn straight_through_gradient_is_one_inside_the_range_and_zero_outside() {
        // Scale 0.1, int range [-10, 10]: representable [-1, 1].
        let [y, gx, _] = run(&[0.26, -3.0, 0.94, 1.5, 0.25], 0.1, range(-10, 10));
        let want = [0.3, -1.0, 0.9, 1.0, 0.2]; // 2.5 rounds half to even: 2.
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        assert_eq!(gx, vec![1.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn lsq_scale_gradient_matches_hand_computation() {
        // d y / d s: round(x/s) - x/s inside, the clamp bound outside.
        // x/s = 2.6 -> 3 - 2.6 = 0.4; -30 -> -10; 9.4 -> 9 - 9.4 = -0.4; total -10.
        let [_, _, gs] = run(&[0.26, -3.0, 0.94], 0.1, range(-10, 10));
        assert!((gs[0] - -10.0).abs() < 1e-4, "{gs:?}");
        let mut attrs = range(-10, 10);
        attrs.push(make::float("grad_scale", 0.5));
        let [_, _, half] = run(&[0.26, -3.0, 0.94], 0.1, attrs);
        assert!((half[0] - -5.0).abs() < 1e-4, "{half:?}");
    }

    #[test]
    fn rounding_is_half_to_even() {
        let x = Tensor::new(
            &[0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4999, -127.5, 126.6],
            &Device::Cpu,
        )
        .unwrap();
        let r: Vec<f32> = round_half_even(&x).unwrap().to_vec1().unwrap();
        assert_eq!(r, vec![0.0, 2.0, 2.0, 0.0, -2.0, 2.0, -128.0, 127.0]);
    }

    #[test]
    fn minmax_scale_is_per_channel_symmetric() {
        let x = Tensor::new(&[[1.0f32, -2.0], [0.0, 0.0], [0.5, 0.25]], &Device::Cpu).unwrap();
        let s: Vec<f32> = minmax_scale(&x, Some(0), 254).unwrap().to_vec1().unwrap();
        assert_eq!(s, vec![4.0 / 254.0, 1.0, 1.0 / 254.0]);
        let t: Vec<f32> = minmax_scale(&x, None, 254).unwrap().to_vec1().unwrap();
        assert_eq!(t, vec![4.0 / 254.0]);
    }
}
