//! Broadcasting binary and variadic operators: arithmetic, comparison, logic, `Where`.

use candle_core::{DType, Tensor};
use whittle_ir::{DataType, NodeAttrs};

use super::util::{broadcast_output, broadcast_to, map2_f64, map2_i64, same_dtype};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Add", |c| {
        arith(c, Tensor::broadcast_add, i64::wrapping_add)
    });
    r.add("Sub", |c| {
        arith(c, Tensor::broadcast_sub, i64::wrapping_sub)
    });
    r.add("Mul", |c| {
        arith(c, Tensor::broadcast_mul, i64::wrapping_mul)
    });
    r.add("Div", div);
    r.add("Pow", pow);
    r.add("Mod", modulo);
    r.add("Max", |c| variadic(c, Tensor::broadcast_maximum));
    r.add("Min", |c| variadic(c, Tensor::broadcast_minimum));
    r.add("Sum", |c| variadic(c, Tensor::broadcast_add));
    r.add("Mean", mean);
    r.add("Equal", |c| compare(c, Tensor::broadcast_eq));
    r.add("Less", |c| compare(c, Tensor::broadcast_lt));
    r.add("LessOrEqual", |c| compare(c, Tensor::broadcast_le));
    r.add("Greater", |c| compare(c, Tensor::broadcast_gt));
    r.add("GreaterOrEqual", |c| compare(c, Tensor::broadcast_ge));
    r.add("And", |c| logic(c, |a, b| a & b));
    r.add("Or", |c| logic(c, |a, b| a | b));
    r.add("Xor", |c| logic(c, |a, b| a ^ b));
    r.add("Not", not);
    r.add("Where", where_op);
    r.add("BitShift", bitshift);
    r.add("BitwiseAnd", |c| bitwise(c, |a, b| a & b));
    r.add("BitwiseOr", |c| bitwise(c, |a, b| a | b));
    r.add("BitwiseXor", |c| bitwise(c, |a, b| a ^ b));
}

type TensorOp = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// `op(a, b)` in candle, once the broadcast output's bytes are known to fit in memory.
fn checked(op: TensorOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    broadcast_output(&[a.dims(), b.dims()], a.dtype())?;
    Ok(op(a, b)?)
}

/// Float math runs in candle (differentiable); integer math wraps like C, in i64.
fn arith(c: &OpCtx, op: TensorOp, int_op: fn(i64, i64) -> i64) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    if dt.is_float() {
        return Ok(vec![Value::new(checked(op, a.tensor(), b.tensor())?, dt)?]);
    }
    Ok(vec![map2_i64(a, b, dt, move |x, y| Ok(int_op(x, y)))?])
}

fn div(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    if dt.is_float() {
        let t = checked(Tensor::broadcast_div, a.tensor(), b.tensor())?;
        return Ok(vec![Value::new(t, dt)?]);
    }
    Ok(vec![map2_i64(a, b, dt, |x, y| {
        if y == 0 {
            bail!("integer division by zero");
        }
        Ok(x.wrapping_div(y))
    })?])
}

fn pow(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    // A scalar exponent stays in candle so the op is differentiable.
    if a.dtype().is_float() && b.numel() == 1 {
        let e = b.to_f64_vec()?[0];
        let t = match e {
            1.0 => a.tensor().clone(),
            2.0 => a.tensor().sqr()?,
            0.5 => a.tensor().sqrt()?,
            _ => a.tensor().powf(e)?,
        };
        let target = a.shape().to_vec();
        let shape = broadcast_output(&[a.shape(), b.shape()], t.dtype())?;
        let t = if shape != target {
            broadcast_to(&t, &shape)?
        } else {
            t
        };
        return Ok(vec![Value::new(t, a.dtype())?]);
    }
    if matches!(a.dtype(), DataType::Float | DataType::Double) && a.dtype() == b.dtype() {
        return Ok(vec![differentiable_pow(a, b)?]);
    }
    if a.dtype().is_float() || b.dtype().is_float() {
        return Ok(vec![map2_f64(a, b, a.dtype(), f64::powf)?]);
    }
    Ok(vec![map2_i64(a, b, a.dtype(), |x, y| {
        Ok(if y < 0 {
            0
        } else {
            x.wrapping_pow(y.min(u32::MAX as i64) as u32)
        })
    })?])
}

/// `a^b` for float tensors: the value is the exact host power (negative bases with integer
/// exponents included), and the gradients are those of `exp(b·ln|a|)`: `b·a^b/a` for the
/// base and `a^b·ln|a|` for the exponent (ln|a| where the true derivative is undefined).
fn differentiable_pow(a: &Value, b: &Value) -> Result<Value> {
    let power = map2_f64(a, b, a.dtype(), f64::powf)?;
    let p = power.tensor().detach();
    let log_base = a.tensor().abs()?.maximum(1e-30)?.log()?;
    let exponent = b.tensor().broadcast_mul(&log_base)?;
    let zero_valued = (&exponent - exponent.detach())?;
    let t = (&p + p.broadcast_mul(&zero_valued)?)?;
    Value::new(t, a.dtype())
}

fn modulo(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    let fmod = c.node.int_or("fmod", 0)? == 1;
    if dt.is_float() {
        if !fmod {
            bail!("fmod must be 1 for float inputs");
        }
        return Ok(vec![map2_f64(a, b, dt, |x, y| x % y)?]);
    }
    Ok(vec![map2_i64(a, b, dt, move |x, y| {
        if y == 0 {
            bail!("integer modulo by zero");
        }
        // fmod=1 takes the dividend's sign (C); fmod=0 the divisor's (Python).
        let r = x.wrapping_rem(y);
        Ok(if !fmod && r != 0 && ((r < 0) != (y < 0)) {
            r + y
        } else {
            r
        })
    })?])
}

fn variadic(c: &OpCtx, op: TensorOp) -> Result<Vec<Value>> {
    let first = c.input(0)?;
    let mut acc = first.tensor().clone();
    for i in 1..c.num_inputs() {
        let v = c.input(i)?;
        same_dtype(first, v)?;
        acc = checked(op, &acc, v.tensor())?;
    }
    Ok(vec![Value::new(acc, first.dtype())?])
}

fn mean(c: &OpCtx) -> Result<Vec<Value>> {
    let sum = variadic(c, Tensor::broadcast_add)?.remove(0);
    let n = c.num_inputs() as f64;
    let t = (sum.tensor() / n)?;
    Ok(vec![Value::new(t, sum.dtype())?])
}

fn compare(c: &OpCtx, op: TensorOp) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    same_dtype(a, b)?;
    Ok(vec![Value::new(
        checked(op, a.tensor(), b.tensor())?,
        DataType::Bool,
    )?])
}

fn logic(c: &OpCtx, f: fn(u8, u8) -> u8) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    if a.dtype() != DataType::Bool || b.dtype() != DataType::Bool {
        bail!("expects bool inputs");
    }
    Ok(vec![map2_i64(a, b, DataType::Bool, move |x, y| {
        Ok(f(x as u8, y as u8) as i64)
    })?])
}

fn not(c: &OpCtx) -> Result<Vec<Value>> {
    let a = c.input(0)?;
    let zero = a.tensor().zeros_like()?;
    Ok(vec![Value::new(a.tensor().eq(&zero)?, DataType::Bool)?])
}

fn where_op(c: &OpCtx) -> Result<Vec<Value>> {
    let (cond, x, y) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let dt = same_dtype(x, y)?;
    let shape = broadcast_output(&[cond.shape(), x.shape(), y.shape()], x.tensor().dtype())?;
    let cond = broadcast_to(&cond.tensor().to_dtype(DType::U8)?, &shape)?;
    let t = cond.where_cond(
        &broadcast_to(x.tensor(), &shape)?,
        &broadcast_to(y.tensor(), &shape)?,
    )?;
    Ok(vec![Value::new(t, dt)?])
}

fn bitshift(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    let bits = dt.size().unwrap_or(8) as i64 * 8;
    let left = c.node.string_or("direction", "")? == "LEFT";
    Ok(vec![map2_i64(a, b, dt, move |x, s| {
        let u = x as u64;
        Ok(if s >= bits || s < 0 {
            0
        } else if left {
            (u << s) as i64
        } else {
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            ((u & mask) >> s) as i64
        })
    })?])
}

fn bitwise(c: &OpCtx, f: fn(i64, i64) -> i64) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let dt = same_dtype(a, b)?;
    Ok(vec![map2_i64(a, b, dt, move |x, y| Ok(f(x, y)))?])
}
