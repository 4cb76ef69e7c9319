//! Elementwise math of one input: `Abs`, `Exp`, trigonometry, rounding, `IsNaN`, `Cast`, ...
//!
//! Float math stays in candle so it is differentiable. Functions candle lacks (inverse
//! trigonometry, hyperbolic functions) run on the host through [`HostMap`], a candle
//! custom op that carries its derivative. Integer math runs on the host in i64.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, WithDType};
use whittle_ir::{DataType, NodeAttrs};

use super::util::{int_value, is_unsigned, require_float};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::{ExecError, Result};
use crate::value::Value;

/// A candle function of one tensor.
pub(super) type TensorFn = fn(&Tensor) -> candle_core::Result<Tensor>;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Abs", |c| {
        numeric(c, Tensor::abs, |x, u| if u { x } else { x.wrapping_abs() })
    });
    r.add("Neg", |c| numeric(c, Tensor::neg, |x, _| x.wrapping_neg()));
    r.add("Sign", |c| {
        numeric(c, Tensor::sign, |x, u| {
            if u {
                (x != 0) as i64
            } else {
                x.signum()
            }
        })
    });
    r.add("BitwiseNot", bitwise_not);
    r.add("Exp", |c| float(c, Tensor::exp));
    r.add("Log", |c| float(c, Tensor::log));
    r.add("Sqrt", |c| float(c, Tensor::sqrt));
    r.add("Reciprocal", |c| float(c, Tensor::recip));
    r.add("Floor", |c| float(c, Tensor::floor));
    r.add("Ceil", |c| float(c, ceil));
    r.add("Round", |c| float(c, round_half_even));
    r.add("Sin", |c| float(c, Tensor::sin));
    r.add("Cos", |c| float(c, Tensor::cos));
    r.add("Tan", |c| float(c, |t| t.sin()?.div(&t.cos()?)));
    r.add("Erf", |c| float(c, super::erf::erf));
    r.add("Asin", |c| host(c, &ASIN));
    r.add("Acos", |c| host(c, &ACOS));
    r.add("Atan", |c| host(c, &ATAN));
    r.add("Sinh", |c| host(c, &SINH));
    r.add("Cosh", |c| host(c, &COSH));
    r.add("Asinh", |c| host(c, &ASINH));
    r.add("Acosh", |c| host(c, &ACOSH));
    r.add("Atanh", |c| host(c, &ATANH));
    r.add("IsNaN", is_nan);
    r.add("IsInf", is_inf);
    r.add("Cast", cast);
    r.add("CastLike", cast_like);
    r.add("Identity", |c| Ok(vec![c.input(0)?.clone()]));
}

/// Applies `f(x, unsigned)` to every element of an integer value, keeping its type.
fn map_int(v: &Value, f: fn(i64, bool) -> i64) -> Result<Value> {
    let unsigned = is_unsigned(v.dtype());
    let out = v
        .to_i64_vec()?
        .into_iter()
        .map(|x| f(x, unsigned))
        .collect();
    int_value(out, v.shape(), v.dtype(), v)
}

/// A float-only op: candle `f` on input 0, same type out.
fn float(c: &OpCtx, f: TensorFn) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    Ok(vec![x.with_tensor(f(x.tensor())?)?])
}

/// An op on floats (candle `f`) and integers (host `int`, exact).
pub(super) fn numeric(c: &OpCtx, f: TensorFn, int: fn(i64, bool) -> i64) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    if x.dtype().is_float() {
        return Ok(vec![x.with_tensor(f(x.tensor())?)?]);
    }
    if !x.dtype().is_integer() {
        bail!("expects a numeric tensor, got {}", x.dtype());
    }
    Ok(vec![map_int(x, int)?])
}

fn bitwise_not(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    if !x.dtype().is_integer() {
        bail!("expects an integer tensor, got {}", x.dtype());
    }
    Ok(vec![map_int(x, |v, _| !v)?])
}

/// `ceil(x) = -floor(-x)`, which (unlike candle's ceil) has a backward pass.
fn ceil(t: &Tensor) -> candle_core::Result<Tensor> {
    t.neg()?.floor()?.neg()
}

/// Rounds halves to the nearest even integer (candle rounds them away from zero).
fn round_half_even(t: &Tensor) -> candle_core::Result<Tensor> {
    let is_half = t.sub(&t.floor()?)?.eq(0.5)?;
    let even = t.affine(0.5, 0.0)?.round()?.affine(2.0, 0.0)?;
    is_half.where_cond(&even, &t.round()?)
}

fn is_nan(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    Ok(vec![Value::new(
        x.tensor().ne(x.tensor())?,
        DataType::Bool,
    )?])
}

fn is_inf(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    let t = x.tensor();
    let pos = c.node.int_or("detect_positive", 1)? != 0;
    let neg = c.node.int_or("detect_negative", 1)? != 0;
    let mask = match (pos, neg) {
        (true, true) => t.abs()?.eq(f64::INFINITY)?,
        (true, false) => t.eq(f64::INFINITY)?,
        (false, true) => t.eq(f64::NEG_INFINITY)?,
        (false, false) => t.zeros_like()?.to_dtype(DType::U8)?,
    };
    Ok(vec![Value::new(mask, DataType::Bool)?])
}

/// `Value::cast` to `to`; string targets are reported as unsupported (float8 and other
/// types the executor cannot hold fail in `Value::cast`).
fn cast_to(c: &OpCtx, x: &Value, to: DataType) -> Result<Vec<Value>> {
    if to == DataType::String {
        return Err(ExecError::Unsupported {
            node: c.node.name.clone(),
            op: format!("{} to STRING", c.node.op_type),
            domain: c.node.domain.clone(),
        });
    }
    Ok(vec![x.cast(to)?])
}

fn cast(c: &OpCtx) -> Result<Vec<Value>> {
    let Some(code) = c.node.int("to")? else {
        bail!("attribute 'to' is required");
    };
    let Some(to) = i32::try_from(code).ok().and_then(DataType::from_code) else {
        bail!("'to' = {code} is not an ONNX element type");
    };
    cast_to(c, c.input(0)?, to)
}

fn cast_like(c: &OpCtx) -> Result<Vec<Value>> {
    cast_to(c, c.input(0)?, c.input(1)?.dtype())
}

fn host(c: &OpCtx, op: &'static HostMap) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    Ok(vec![x.with_tensor(x.tensor().contiguous()?.apply_op1(op)?)?])
}

/// A float function computed on the host in f64, with its derivative as candle ops
/// (`grad(x, y)` is dy/dx given input `x` and output `y`).
pub(super) struct HostMap {
    name: &'static str,
    f: fn(f64) -> f64,
    grad: fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
}

/// `f` over the elements of a contiguous layout ([`host`] makes inputs contiguous).
fn map_slice<T: WithDType>(
    v: &[T],
    layout: &Layout,
    f: fn(f64) -> f64,
) -> candle_core::Result<Vec<T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("host map expects a contiguous tensor");
    };
    let Some(v) = v.get(start..end) else {
        candle_core::bail!("layout exceeds its storage");
    };
    Ok(v.iter().map(|&x| T::from_f64(f(x.to_f64()))).collect())
}

impl CustomOp1 for &'static HostMap {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let f = self.f;
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(map_slice(v, layout, f)?),
            CpuStorage::F64(v) => CpuStorage::F64(map_slice(v, layout, f)?),
            CpuStorage::F16(v) => CpuStorage::F16(map_slice(v, layout, f)?),
            CpuStorage::BF16(v) => CpuStorage::BF16(map_slice(v, layout, f)?),
            _ => candle_core::bail!("{} expects floats", self.name),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.mul(&(self.grad)(arg, res)?)?))
    }
}

/// `1 / sqrt(sx2 * x² + k)`: the form of the inverse functions' derivatives.
fn inv_sqrt_quad(x: &Tensor, sx2: f64, k: f64) -> candle_core::Result<Tensor> {
    x.sqr()?.affine(sx2, k)?.sqrt()?.recip()
}

static ASIN: HostMap = HostMap {
    name: "asin",
    f: f64::asin,
    grad: |x, _| inv_sqrt_quad(x, -1.0, 1.0),
};
static ACOS: HostMap = HostMap {
    name: "acos",
    f: f64::acos,
    grad: |x, _| inv_sqrt_quad(x, -1.0, 1.0)?.neg(),
};
static ATAN: HostMap = HostMap {
    name: "atan",
    f: f64::atan,
    grad: |x, _| x.sqr()?.affine(1.0, 1.0)?.recip(),
};
static SINH: HostMap = HostMap {
    name: "sinh",
    f: f64::sinh,
    grad: |_, y| y.sqr()?.affine(1.0, 1.0)?.sqrt(),
};
static COSH: HostMap = HostMap {
    name: "cosh",
    f: f64::cosh,
    grad: |x, y| y.sqr()?.affine(1.0, -1.0)?.sqrt()?.mul(&x.sign()?),
};
static ASINH: HostMap = HostMap {
    name: "asinh",
    f: f64::asinh,
    grad: |x, _| inv_sqrt_quad(x, 1.0, 1.0),
};
static ACOSH: HostMap = HostMap {
    name: "acosh",
    f: f64::acosh,
    grad: |x, _| inv_sqrt_quad(x, 1.0, -1.0),
};
static ATANH: HostMap = HostMap {
    name: "atanh",
    f: f64::atanh,
    grad: |x, _| x.sqr()?.affine(-1.0, 1.0)?.recip(),
};

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use whittle_ir::TensorData;

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn round_goes_to_even_on_halves() {
        let t = f32s(&[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6, -2.6]);
        let r = round_half_even(&t).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(r, vec![0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 2.0, 3.0, -3.0]);
    }

    #[test]
    fn ceil_rounds_up() {
        let r = ceil(&f32s(&[-1.5, 1.2, 2.0]))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(r, vec![-1.0, 2.0, 2.0]);
    }

    #[test]
    fn integer_ops_wrap_and_respect_unsignedness() {
        let data = TensorData::from_slice(vec![3], &[i8::MIN, -3, 5]).unwrap();
        let v = Value::try_from(&data).unwrap();
        let abs = map_int(&v, |x, u| if u { x } else { x.wrapping_abs() }).unwrap();
        assert_eq!(
            abs.to_data().unwrap().to_vec::<i8>().unwrap(),
            vec![i8::MIN, 3, 5]
        );
        let data = TensorData::from_slice(vec![2], &[0u8, 5]).unwrap();
        let v = Value::try_from(&data).unwrap();
        let not = map_int(&v, |x, _| !x).unwrap();
        assert_eq!(
            not.to_data().unwrap().to_vec::<u8>().unwrap(),
            vec![255, 250]
        );
    }

    #[test]
    fn host_map_computes_value_and_gradient() {
        let x = Var::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
        let y = x.as_tensor().apply_op1(&ATAN).unwrap();
        let got = y.to_vec1::<f64>().unwrap();
        assert!((got[1] - std::f64::consts::FRAC_PI_4).abs() < 1e-12 && got[0] == 0.0);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(g, vec![1.0, 0.5]);
    }
}
