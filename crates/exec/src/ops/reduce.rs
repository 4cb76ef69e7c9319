//! Reductions (`ReduceSum`, `ReduceMean`, ...), `ArgMax`/`ArgMin` and `TopK`.
//!
//! Float reductions run as candle ops (differentiable); integer reductions run exactly
//! on the host in i64, wrapping like C. Index-producing ops compute on the host.

use std::cmp::Ordering;

use candle_core::{DType, Tensor};
use whittle_ir::{DataType, NodeAttrs};

use super::{normalize_axis, OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("ReduceSum", |c| reduce(c, Kind::Sum));
    r.add("ReduceMean", |c| reduce(c, Kind::Mean));
    r.add("ReduceMax", |c| reduce(c, Kind::Max));
    r.add("ReduceMin", |c| reduce(c, Kind::Min));
    r.add("ReduceProd", |c| reduce(c, Kind::Prod));
    r.add("ReduceL1", |c| reduce(c, Kind::L1));
    r.add("ReduceL2", |c| reduce(c, Kind::L2));
    r.add("ReduceLogSum", |c| reduce(c, Kind::LogSum));
    r.add("ReduceLogSumExp", |c| reduce(c, Kind::LogSumExp));
    r.add("ReduceSumSquare", |c| reduce(c, Kind::SumSquare));
    r.add("ArgMax", |c| arg_extreme(c, Ordering::Greater));
    r.add("ArgMin", |c| arg_extreme(c, Ordering::Less));
    r.add("TopK", top_k);
}

/// Which reduction a `Reduce*` operator computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Sum of the elements.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Largest element.
    Max,
    /// Smallest element.
    Min,
    /// Product of the elements.
    Prod,
    /// Sum of absolute values.
    L1,
    /// Euclidean norm.
    L2,
    /// Natural log of the sum.
    LogSum,
    /// Natural log of the sum of exponentials.
    LogSumExp,
    /// Sum of squares.
    SumSquare,
}

fn reduce(c: &OpCtx, kind: Kind) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    // ReduceSum took `axes` as an input from opset 13, the others from opset 18.
    let axes_as_input = c.opset >= if kind == Kind::Sum { 13 } else { 18 };
    let axes = if axes_as_input {
        c.opt_input(1).map(Value::to_i64_vec).transpose()?
    } else {
        c.node.ints("axes")?
    };
    let keepdims = c.node.int_or("keepdims", 1)? != 0;
    let noop = c.node.int_or("noop_with_empty_axes", 0)? != 0;
    let axes = match axes {
        Some(a) if !a.is_empty() => a,
        _ if noop => return Ok(vec![x.clone()]),
        _ => (0..x.rank() as i64).collect(),
    };
    Ok(vec![reduce_value(x, &axes, keepdims, kind)?])
}

/// Reduces `x` over `axes` (may be negative; duplicates are ignored).
pub fn reduce_value(x: &Value, axes: &[i64], keepdims: bool, kind: Kind) -> Result<Value> {
    let rank = x.rank();
    let mut axes = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    let empty = axes.iter().any(|&a| x.shape()[a] == 0);
    let kept = if x.dtype().is_float() && kind != Kind::Prod && !empty {
        float_reduce(x.tensor(), &axes, kind)?
    } else {
        host_reduce(x, &axes, kind)?
    };
    let out = if keepdims {
        kept
    } else {
        let dims: Vec<usize> = (0..rank)
            .filter(|a| !axes.contains(a))
            .map(|a| x.shape()[a])
            .collect();
        kept.reshape(dims)?
    };
    Value::new(out, x.dtype())
}

/// Candle reduction keeping the reduced dims (as size 1). Half types accumulate in f32.
fn float_reduce(t: &Tensor, axes: &[usize], kind: Kind) -> Result<Tensor> {
    let dtype = t.dtype();
    let t = if matches!(dtype, DType::F16 | DType::BF16) {
        t.to_dtype(DType::F32)?
    } else {
        t.clone()
    };
    let out = match kind {
        Kind::Sum => t.sum_keepdim(axes)?,
        Kind::Mean => t.mean_keepdim(axes)?,
        Kind::Max => fold_axes(&t, axes, Tensor::max_keepdim)?,
        Kind::Min => fold_axes(&t, axes, Tensor::min_keepdim)?,
        Kind::L1 => t.abs()?.sum_keepdim(axes)?,
        Kind::L2 => t.sqr()?.sum_keepdim(axes)?.sqrt()?,
        Kind::LogSum => t.sum_keepdim(axes)?.log()?,
        Kind::SumSquare => t.sqr()?.sum_keepdim(axes)?,
        Kind::LogSumExp => {
            // Shift by the (constant) maximum for stability; infinite maxima shift by 0.
            let m = fold_axes(&t.detach(), axes, Tensor::max_keepdim)?;
            let finite = m.abs()?.lt(f64::INFINITY)?;
            let m = finite.where_cond(&m, &m.zeros_like()?)?;
            let s = t.broadcast_sub(&m)?.exp()?.sum_keepdim(axes)?.log()?;
            s.broadcast_add(&m)?
        }
        Kind::Prod => bail!("ReduceProd runs on the host"),
    };
    Ok(out.to_dtype(dtype)?)
}

fn fold_axes(
    t: &Tensor,
    axes: &[usize],
    op: fn(&Tensor, usize) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let mut acc = t.clone();
    for &a in axes {
        acc = op(&acc, a)?;
    }
    Ok(acc)
}

/// Exact host reduction: i64 (wrapping) for integers, f64 for floats. Keeps reduced dims.
fn host_reduce(x: &Value, axes: &[usize], kind: Kind) -> Result<Tensor> {
    let (grouped, _, n) = axes_last(x.tensor(), axes)?;
    let mut dims = x.shape().to_vec();
    axes.iter().for_each(|&a| dims[a] = 1);
    let count = dims.iter().product();
    let device = x.tensor().device();
    if x.dtype().is_float() {
        let v: Vec<f64> = grouped.to_dtype(DType::F64)?.to_vec1()?;
        let out: Vec<f64> = rows(&v, n, count).map(|r| reduce_f64(r, kind)).collect();
        return Ok(Tensor::from_vec(out, dims, device)?);
    }
    let (lo, hi) = x.dtype().int_range().unwrap_or((0, 0));
    let v: Vec<i64> = grouped.to_dtype(DType::I64)?.to_vec1()?;
    let out: Vec<i64> = rows(&v, n, count)
        .map(|r| reduce_i64(r, kind, (lo as i64, hi.min(i64::MAX as i128) as i64)))
        .collect();
    Ok(Tensor::from_vec(out, dims, device)?)
}

/// `count` consecutive rows of `n` elements each (`n` may be 0).
fn rows<T>(v: &[T], n: usize, count: usize) -> impl Iterator<Item = &[T]> {
    (0..count).map(move |i| &v[i * n..(i + 1) * n])
}

/// Reduction of one row in f64 (empty rows give the identity of the reduction).
pub fn reduce_f64(r: &[f64], kind: Kind) -> f64 {
    let sum = |f: fn(f64) -> f64| r.iter().map(|&v| f(v)).sum::<f64>();
    match kind {
        Kind::Sum => sum(|v| v),
        Kind::Mean => sum(|v| v) / r.len() as f64,
        Kind::Max => r.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Kind::Min => r.iter().copied().fold(f64::INFINITY, f64::min),
        Kind::Prod => r.iter().product(),
        Kind::L1 => sum(f64::abs),
        Kind::L2 => sum(|v| v * v).sqrt(),
        Kind::LogSum => sum(|v| v).ln(),
        Kind::LogSumExp => {
            let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let m = if m.is_finite() { m } else { 0.0 };
            r.iter().map(|&v| (v - m).exp()).sum::<f64>().ln() + m
        }
        Kind::SumSquare => sum(|v| v * v),
    }
}

/// Exact reduction of one integer row; `range` bounds Max/Min of an empty row.
fn reduce_i64(r: &[i64], kind: Kind, range: (i64, i64)) -> i64 {
    let sum = |f: fn(i64) -> i64| r.iter().fold(0i64, |a, &v| a.wrapping_add(f(v)));
    match kind {
        Kind::Sum => sum(|v| v),
        Kind::Prod => r.iter().fold(1i64, |a, &v| a.wrapping_mul(v)),
        Kind::Max => r.iter().copied().max().unwrap_or(range.0),
        Kind::Min => r.iter().copied().min().unwrap_or(range.1),
        Kind::L1 => sum(i64::wrapping_abs),
        Kind::SumSquare => sum(|v| v.wrapping_mul(v)),
        Kind::Mean if !r.is_empty() => sum(|v| v) / r.len() as i64,
        _ => {
            let f: Vec<f64> = r.iter().map(|&v| v as f64).collect();
            let v = reduce_f64(&f, kind);
            if v.is_finite() {
                v.trunc() as i64
            } else {
                0
            }
        }
    }
}

/// `t` permuted so that `axes` come last, contiguous and flattened, with the
/// permutation and the number of elements per reduced row.
fn axes_last(t: &Tensor, axes: &[usize]) -> Result<(Tensor, Vec<usize>, usize)> {
    let rank = t.rank();
    let mut perm: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    perm.extend_from_slice(axes);
    let n = axes.iter().map(|&a| t.dims()[a]).product();
    let p = if rank == 0 {
        t.clone()
    } else {
        t.permute(perm.clone())?
    };
    Ok((p.contiguous()?.flatten_all()?, perm, n))
}

fn arg_extreme(c: &OpCtx, want: Ordering) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let axis = c.node.int_or("axis", 0)?;
    let keepdims = c.node.int_or("keepdims", 1)? != 0;
    let last = c.node.int_or("select_last_index", 0)? != 0;
    Ok(vec![arg_value(x, axis, keepdims, last, want)?])
}

/// Index of the max (`want` = Greater) or min (`Less`) along `axis`, as int64.
pub fn arg_value(
    x: &Value,
    axis: i64,
    keepdims: bool,
    last: bool,
    want: Ordering,
) -> Result<Value> {
    let axis = axis_of(x, axis)?;
    if x.shape()[axis] == 0 {
        bail!("cannot take the arg extreme of an empty axis");
    }
    let (rows, _, n) = axes_last(x.tensor(), &[axis])?;
    let idx: Vec<i64> = if x.dtype().is_float() {
        let v: Vec<f64> = rows.to_dtype(DType::F64)?.to_vec1()?;
        v.chunks(n)
            .map(|r| best_index(r, f64::total_cmp, want, last))
            .collect()
    } else {
        let v: Vec<i64> = rows.to_dtype(DType::I64)?.to_vec1()?;
        v.chunks(n)
            .map(|r| best_index(r, i64::cmp, want, last))
            .collect()
    };
    let mut dims = x.shape().to_vec();
    if keepdims {
        dims[axis] = 1;
    } else {
        dims.remove(axis);
    }
    let t = Tensor::from_vec(idx, dims, x.tensor().device())?;
    Value::new(t, DataType::Int64)
}

/// `axis` normalised for a tensor of rank at least 1.
fn axis_of(x: &Value, axis: i64) -> Result<usize> {
    if x.rank() == 0 {
        bail!("expects a tensor of rank at least 1");
    }
    normalize_axis(axis, x.rank())
}

/// First (or last, with `last`) index whose element compares `want` against all others.
fn best_index<T>(row: &[T], cmp: impl Fn(&T, &T) -> Ordering, want: Ordering, last: bool) -> i64 {
    let mut best = 0;
    for i in 1..row.len() {
        let o = cmp(&row[i], &row[best]);
        if o == want || (last && o == Ordering::Equal) {
            best = i;
        }
    }
    best as i64
}

fn top_k(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let k = if c.opset >= 10 {
        match c.input(1)?.to_i64_vec()?.as_slice() {
            [k] => *k,
            _ => bail!("K must hold exactly one value"),
        }
    } else {
        match c.node.int("k")? {
            Some(k) => k,
            None => bail!("attribute 'k' is required"),
        }
    };
    let axis = c.node.int_or("axis", -1)?;
    let largest = c.node.int_or("largest", 1)? != 0;
    let (values, indices) = top_k_value(x, k, axis, largest)?;
    Ok(vec![values, indices])
}

/// The `k` largest (or smallest) elements along `axis`, sorted, and their int64 indices.
/// Equal elements keep their original order (lower index first).
pub fn top_k_value(x: &Value, k: i64, axis: i64, largest: bool) -> Result<(Value, Value)> {
    let axis = axis_of(x, axis)?;
    let n = x.shape()[axis];
    if k < 0 || k as usize > n {
        bail!("K = {k} is out of range for an axis of {n} elements");
    }
    let k = k as usize;
    let (rows, perm, _) = axes_last(x.tensor(), &[axis])?;
    let idx: Vec<i64> = if x.dtype().is_float() {
        let v: Vec<f64> = rows.to_dtype(DType::F64)?.to_vec1()?;
        top_rows(&v, n, k, largest, f64::total_cmp)
    } else {
        let v: Vec<i64> = rows.to_dtype(DType::I64)?.to_vec1()?;
        top_rows(&v, n, k, largest, i64::cmp)
    };
    let mut pdims: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    pdims[perm.len() - 1] = k;
    let mut inverse = vec![0; perm.len()];
    perm.iter().enumerate().for_each(|(i, &p)| inverse[p] = i);
    let idx = Tensor::from_vec(idx, pdims, x.tensor().device())?
        .permute(inverse)?
        .contiguous()?;
    let values = x.tensor().contiguous()?.gather(&idx, axis)?;
    Ok((
        Value::new(values, x.dtype())?,
        Value::new(idx, DataType::Int64)?,
    ))
}

fn top_rows<T>(
    v: &[T],
    n: usize,
    k: usize,
    largest: bool,
    cmp: fn(&T, &T) -> Ordering,
) -> Vec<i64> {
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(v.len() / n * k);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for row in v.chunks(n) {
        order.clear();
        order.extend(0..n);
        // Stable sort: ties keep the lower index first.
        order.sort_by(|&a, &b| {
            let o = cmp(&row[a], &row[b]);
            if largest {
                o.reverse()
            } else {
                o
            }
        });
        out.extend(order[..k].iter().map(|&i| i as i64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn f32v(v: &[f32], shape: &[usize]) -> Value {
        Value::f32(Tensor::from_slice(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn i64v(v: &[i64], shape: &[usize], dt: DataType) -> Value {
        Value::new(Tensor::from_slice(v, shape, &Device::Cpu).unwrap(), dt).unwrap()
    }

    fn f32s(v: &Value) -> Vec<f32> {
        v.tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    const X: [f32; 6] = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];

    #[test]
    fn float_reductions_match_hand_values() {
        let x = f32v(&X, &[2, 3]);
        let r = |axes: &[i64], keep, kind| reduce_value(&x, axes, keep, kind).unwrap();
        assert_eq!(f32s(&r(&[1], false, Kind::Sum)), vec![2.0, 3.0]);
        assert_eq!(r(&[1], true, Kind::Sum).shape(), &[2, 1]);
        assert_eq!(f32s(&r(&[0], false, Kind::Max)), vec![4.0, 5.0, 3.0]);
        assert_eq!(f32s(&r(&[-1, 0], false, Kind::Min)), vec![-6.0]);
        assert_eq!(f32s(&r(&[1], false, Kind::Prod)), vec![-6.0, -120.0]);
        assert_eq!(f32s(&r(&[1], false, Kind::L1)), vec![6.0, 15.0]);
        assert_eq!(
            f32s(&r(&[0], false, Kind::SumSquare)),
            vec![17.0, 29.0, 45.0]
        );
        assert_eq!(f32s(&r(&[0], false, Kind::Mean)), vec![2.5, 1.5, -1.5]);
        let l2 = f32s(&r(&[0], false, Kind::L2))[0];
        assert!((l2 - 17f32.sqrt()).abs() < 1e-6);
        let lse = f32s(&r(&[0], false, Kind::LogSumExp))[0];
        assert!((lse - (1f32.exp() + 4f32.exp()).ln()).abs() < 1e-5);
    }

    #[test]
    fn integer_reductions_are_exact() {
        let x = i64v(&[i64::MAX, 1, -3, 4], &[2, 2], DataType::Int64);
        let sum = reduce_value(&x, &[0], false, Kind::Sum).unwrap();
        assert_eq!(sum.to_i64_vec().unwrap(), vec![i64::MAX - 3, 5]);
        let mean = reduce_value(&x, &[0, 1], true, Kind::Mean).unwrap();
        assert_eq!(mean.shape(), &[1, 1]);
        let x = i64v(&[-7, 2], &[2], DataType::Int32);
        let mean = reduce_value(&x, &[0], false, Kind::Mean).unwrap();
        assert_eq!(mean.to_i64_vec().unwrap(), vec![-2]);
        assert_eq!(mean.dtype(), DataType::Int32);
    }

    #[test]
    fn empty_reduction_gives_identity() {
        let x = f32v(&[], &[0, 2]);
        let s = reduce_value(&x, &[0], false, Kind::Sum).unwrap();
        assert_eq!(f32s(&s), vec![0.0, 0.0]);
        let m = reduce_value(&x, &[0], false, Kind::Max).unwrap();
        assert_eq!(f32s(&m), vec![f32::NEG_INFINITY; 2]);
    }

    #[test]
    fn argmax_argmin_select_first_or_last() {
        let x = f32v(&[2.0, 5.0, 5.0, 1.0, 1.0, 0.0], &[2, 3]);
        let first = arg_value(&x, 1, false, false, Ordering::Greater).unwrap();
        assert_eq!(first.to_i64_vec().unwrap(), vec![1, 0]);
        let last = arg_value(&x, 1, true, true, Ordering::Greater).unwrap();
        assert_eq!(last.to_i64_vec().unwrap(), vec![2, 1]);
        assert_eq!(last.shape(), &[2, 1]);
        let min = arg_value(&x, 0, false, false, Ordering::Less).unwrap();
        assert_eq!(min.to_i64_vec().unwrap(), vec![1, 1, 1]);
    }

    #[test]
    fn top_k_sorts_and_keeps_ties_in_order() {
        let x = f32v(&[1.0, 3.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0], &[2, 4]);
        let (v, i) = top_k_value(&x, 2, -1, true).unwrap();
        assert_eq!(f32s(&v), vec![3.0, 3.0, 9.0, 8.0]);
        assert_eq!(i.to_i64_vec().unwrap(), vec![1, 2, 1, 2]);
        let (v, i) = top_k_value(&x, 1, 0, false).unwrap();
        assert_eq!(f32s(&v), vec![0.0, 3.0, 3.0, 2.0]);
        assert_eq!(i.to_i64_vec().unwrap(), vec![1, 0, 0, 0]);
        assert!(top_k_value(&x, 5, 1, true).is_err());
    }
}
