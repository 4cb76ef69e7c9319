//! Tensor layout and creation: reshaping, transposition, concatenation, slicing, padding,
//! broadcasting and constant-building operators.
//!
//! Layout operators work on the stored tensor of any element type and rewrap the result
//! with the input's ONNX type. Data moves through candle ops (`reshape`, `permute`,
//! `narrow`, `cat`, `index_select`, `broadcast_as`, `where_cond`) so float paths stay
//! differentiable; only index computation happens on the host.

use candle_core::{DType, Tensor};
use whittle_ir::proto::NodeProto;
use whittle_ir::tensor::checked_numel;
use whittle_ir::{DataType, NodeAttrs, TensorData};

use super::util::{
    broadcast_shape, broadcast_to, check_size, data_axis, from_f64, i64_value, index_tensor,
    same_type,
};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::{ExecError, Result};
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Reshape", reshape);
    r.add("Flatten", flatten);
    r.add("Squeeze", squeeze);
    r.add("Unsqueeze", unsqueeze);
    r.add("Transpose", transpose);
    r.add("Concat", concat);
    r.add("Split", split);
    r.add("Slice", slice);
    r.add("Expand", expand);
    r.add("Tile", tile);
    r.add("Shape", shape);
    r.add("Size", size);
    r.add("ConstantOfShape", constant_of_shape);
    r.add("Constant", constant);
    r.add("Range", range);
    r.add("EyeLike", eye_like);
    r.add("Trilu", trilu);
    r.add("DepthToSpace", depth_to_space);
    r.add("SpaceToDepth", space_to_depth);
    r.add("Pad", pad);
}

/// Converts a list of dimensions, refusing negative ones.
fn to_dims(v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| match usize::try_from(d) {
            Ok(d) => Ok(d),
            Err(_) => bail!("dimension {d} is negative"),
        })
        .collect()
}

/// An int list read from input `i` from opset `since` on, and from attribute `name` before.
fn ints_arg(c: &OpCtx, i: usize, name: &str, since: i64) -> Result<Option<Vec<i64>>> {
    if c.opset >= since {
        c.opt_input(i).map(Value::to_i64_vec).transpose()
    } else {
        Ok(c.node.ints(name)?)
    }
}

/// Normalises distinct axes into `0..rank`.
fn distinct_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = data_axis(a, rank)?;
        if out.contains(&a) {
            bail!("axis {a} is listed twice");
        }
        out.push(a);
    }
    Ok(out)
}

/// The single scalar of `v`.
fn scalar_tensor(v: &Value) -> Result<Tensor> {
    if v.numel() != 1 {
        bail!("expected a single value, got shape {:?}", v.shape());
    }
    Ok(v.tensor().flatten_all()?.reshape(())?)
}

fn reshape(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let spec = if c.opset >= 5 {
        c.input(1)?.to_i64_vec()?
    } else {
        c.node.ints("shape")?.unwrap_or_default()
    };
    let dims = reshape_dims(x.shape(), &spec, c.node.int_or("allowzero", 0)? == 1)?;
    same_type(x.tensor().reshape(dims)?, x)
}

/// Target dimensions of `Reshape`: 0 copies the input dimension (unless `allowzero`),
/// one -1 is inferred from the element count.
pub(super) fn reshape_dims(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let mut infer = None;
    let mut dims = Vec::with_capacity(spec.len());
    for (i, &s) in spec.iter().enumerate() {
        dims.push(match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            -1 => bail!("shape {spec:?} has more than one -1"),
            0 if !allowzero => match input.get(i) {
                Some(&d) => d,
                None => bail!("shape {spec:?} copies dimension {i}, which the input lacks"),
            },
            s if s < 0 => bail!("shape {spec:?} has an invalid dimension {s}"),
            s => s as usize,
        });
    }
    let total: usize = input.iter().product();
    let known = checked_numel(&dims);
    if let Some(i) = infer {
        match known {
            Some(k) if k > 0 && total.is_multiple_of(k) => dims[i] = total / k,
            _ => bail!("cannot infer the -1 of shape {spec:?} for input shape {input:?}"),
        }
    } else if known != Some(total) {
        bail!("cannot reshape {input:?} to {spec:?}");
    }
    Ok(dims)
}

fn flatten(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let rank = x.rank() as i64;
    let axis = c.node.int_or("axis", 1)?;
    let a = if axis < 0 { axis + rank } else { axis };
    if !(0..=rank).contains(&a) {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    let (outer, inner) = x.shape().split_at(a as usize);
    let dims = (
        outer.iter().product::<usize>(),
        inner.iter().product::<usize>(),
    );
    same_type(x.tensor().reshape(dims)?, x)
}

fn squeeze(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let dims = x.shape();
    let drop = match ints_arg(c, 1, "axes", 13)? {
        Some(axes) => distinct_axes(&axes, dims.len())?,
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
    };
    if let Some(&a) = drop.iter().find(|&&a| dims[a] != 1) {
        bail!("cannot squeeze axis {a} of size {}", dims[a]);
    }
    let out: Vec<usize> = (0..dims.len())
        .filter(|i| !drop.contains(i))
        .map(|i| dims[i])
        .collect();
    same_type(x.tensor().reshape(out)?, x)
}

fn unsqueeze(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let Some(axes) = ints_arg(c, 1, "axes", 13)? else {
        bail!("axes are required");
    };
    let rank = x.rank() + axes.len();
    let axes = distinct_axes(&axes, rank)?;
    let mut src = x.shape().iter();
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    same_type(x.tensor().reshape(dims)?, x)
}

fn transpose(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let rank = x.rank();
    let perm = match c.node.ints("perm")? {
        Some(p) => {
            let p = distinct_axes(&p, rank)?;
            if p.len() != rank {
                bail!("perm {p:?} does not match rank {rank}");
            }
            p
        }
        None => (0..rank).rev().collect(),
    };
    same_type(x.tensor().permute(perm)?.contiguous()?, x)
}

fn concat(c: &OpCtx) -> Result<Vec<Value>> {
    let first = c.input(0)?;
    let axis = data_axis(c.node.int_or("axis", 0)?, first.rank())?;
    let mut parts = Vec::with_capacity(c.num_inputs());
    for i in 0..c.num_inputs() {
        let v = c.input(i)?;
        if v.dtype() != first.dtype() || v.rank() != first.rank() {
            bail!(
                "input #{i} ({} {:?}) does not match input #0",
                v.dtype(),
                v.shape()
            );
        }
        parts.push(v.tensor().clone());
    }
    same_type(Tensor::cat(&parts, axis)?, first)
}

fn split(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let axis = data_axis(c.node.int_or("axis", 0)?, x.rank())?;
    let dim = x.shape()[axis];
    let sizes = match ints_arg(c, 1, "split", 13)? {
        Some(s) => to_dims(&s)?,
        None => {
            let n = match c.node.int("num_outputs")? {
                Some(n) if c.opset >= 18 => to_dims(&[n])?[0],
                _ => c.node.output.len(),
            };
            even_split(dim, n)?
        }
    };
    if sizes.iter().sum::<usize>() != dim {
        bail!("split sizes {sizes:?} do not add up to dimension {dim}");
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for len in sizes {
        out.push(Value::new(x.tensor().narrow(axis, start, len)?, x.dtype())?);
        start += len;
    }
    Ok(out)
}

/// Sizes of `n` chunks of `dim`: ceil(dim / n) each, the last one taking the remainder.
fn even_split(dim: usize, n: usize) -> Result<Vec<usize>> {
    if n == 0 {
        bail!("cannot split into zero outputs");
    }
    let chunk = dim.div_ceil(n);
    Ok((0..n)
        .map(|k| chunk.min(dim.saturating_sub(k * chunk)))
        .collect())
}

fn slice(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let (starts, ends, axes, steps) = if c.opset >= 10 {
        let opt = |i| c.opt_input(i).map(Value::to_i64_vec).transpose();
        (
            c.input(1)?.to_i64_vec()?,
            c.input(2)?.to_i64_vec()?,
            opt(3)?,
            opt(4)?,
        )
    } else {
        let req = |name| match c.node.ints(name) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(ExecError::msg(format!("attribute '{name}' is required"))),
            Err(e) => Err(e.into()),
        };
        (req("starts")?, req("ends")?, c.node.ints("axes")?, None)
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        bail!("starts, ends, axes and steps differ in length");
    }
    let axes = distinct_axes(&axes, x.rank())?;
    let mut t = x.tensor().clone();
    for k in 0..n {
        let range = slice_range(x.shape()[axes[k]], starts[k], ends[k], steps[k])?;
        t = take_range(&t, axes[k], range)?;
    }
    same_type(t, x)
}

/// First index, step and element count of an ONNX slice along an axis of length `n`,
/// with negative indices counted from the end and out-of-range ones clamped.
pub(crate) fn slice_range(n: usize, start: i64, end: i64, step: i64) -> Result<(i64, i64, usize)> {
    if step == 0 {
        bail!("slice step is zero");
    }
    let n = n as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (lo, hi) = if step > 0 { (0, n) } else { (-1, n - 1) };
    let (s, e) = (norm(start).clamp(lo, hi), norm(end).clamp(lo, hi));
    let span = if step > 0 { e - s } else { s - e } as i128;
    let count = if span > 0 {
        (span - 1) / (step as i128).abs() + 1
    } else {
        0
    };
    Ok((s, step, count as usize))
}

/// Elements `start, start + step, ...` (`count` of them) of `t` along `axis`.
fn take_range(t: &Tensor, axis: usize, (start, step, count): (i64, i64, usize)) -> Result<Tensor> {
    if count == 0 {
        return Ok(t.narrow(axis, 0, 0)?);
    }
    if step == 1 {
        return Ok(t.narrow(axis, start as usize, count)?);
    }
    let ix = (0..count as i64).map(|i| start + i * step).collect();
    // index_select reads contiguous tensors only (a Split output is a strided view).
    Ok(t.contiguous()?
        .index_select(&index_tensor(ix, t.device())?, axis)?)
}

fn expand(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let target = to_dims(&c.input(1)?.to_i64_vec()?)?;
    let dims = broadcast_shape(x.shape(), &target)?;
    check_size(&dims, x.tensor().dtype())?;
    same_type(broadcast_to(x.tensor(), &dims)?, x)
}

fn tile(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let repeats = to_dims(&c.input(1)?.to_i64_vec()?)?;
    if repeats.len() != x.rank() {
        bail!("repeats {repeats:?} do not match rank {}", x.rank());
    }
    let dims: Option<Vec<usize>> = x
        .shape()
        .iter()
        .zip(&repeats)
        .map(|(d, r)| d.checked_mul(*r))
        .collect();
    match dims {
        Some(dims) => check_size(&dims, x.tensor().dtype())?,
        None => bail!("repeats {repeats:?} give a too large output"),
    }
    let mut t = x.tensor().clone();
    for (axis, (&n, &r)) in x.shape().iter().zip(&repeats).enumerate() {
        if r != 1 {
            let ix = (0..(n * r) as i64).map(|i| i % n as i64).collect();
            t = t.index_select(&index_tensor(ix, t.device())?, axis)?;
        }
    }
    same_type(t, x)
}

fn shape(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    Ok(vec![i64_value(shape_dims(c.node, x.shape())?, x)?])
}

/// The value of `Shape` `node` (its `start`..`end`, clamped as the spec says) of an input
/// with dimensions `dims`.
pub(crate) fn shape_dims(node: &NodeProto, dims: &[usize]) -> Result<Vec<i64>> {
    let rank = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(node.int_or("start", 0)?);
    let end = clamp(node.int_or("end", rank)?).max(start);
    Ok(dims[start..end].iter().map(|&d| d as i64).collect())
}

fn size(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let t = Tensor::new(x.numel() as i64, x.tensor().device())?;
    Ok(vec![Value::new(t, DataType::Int64)?])
}

fn constant_of_shape(c: &OpCtx) -> Result<Vec<Value>> {
    let dims = to_dims(&c.input(0)?.to_i64_vec()?)?;
    let device = c.exec.device();
    let value = match c.node.tensor("value")? {
        Some(t) => Value::from_data(&TensorData::from_proto(t, None)?, device)?,
        None => Value::f32(Tensor::new(0f32, device)?)?,
    };
    check_size(&dims, value.tensor().dtype())?;
    let t = broadcast_to(&scalar_tensor(&value)?, &dims)?;
    same_type(t, &value)
}

fn constant(c: &OpCtx) -> Result<Vec<Value>> {
    let (n, device) = (c.node, c.exec.device());
    let value = if let Some(t) = n.tensor("value")? {
        Value::from_data(&TensorData::from_proto(t, None)?, device)?
    } else if let Some(f) = n.float("value_float")? {
        Value::f32(Tensor::new(f, device)?)?
    } else if let Some(f) = n.floats("value_floats")? {
        Value::f32(Tensor::new(f, device)?)?
    } else if let Some(i) = n.int("value_int")? {
        Value::new(Tensor::new(i, device)?, DataType::Int64)?
    } else if let Some(i) = n.ints("value_ints")? {
        Value::new(Tensor::new(i, device)?, DataType::Int64)?
    } else {
        // value_string(s) and sparse_value: string and sparse tensors are not supported.
        return Err(ExecError::Unsupported {
            node: n.name.clone(),
            op: "Constant (string or sparse value)".into(),
            domain: n.domain.clone(),
        });
    };
    Ok(vec![value])
}

fn range(c: &OpCtx) -> Result<Vec<Value>> {
    let (start, limit, delta) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let dt = start.dtype();
    if limit.dtype() != dt || delta.dtype() != dt {
        bail!("start, limit and delta must have the same type");
    }
    if dt.is_float() {
        let [s, l, d] = [start, limit, delta].map(|v| v.to_f64_vec().map(|v| v.first().copied()));
        let (Some(s), Some(l), Some(d)) = (s?, l?, d?) else {
            bail!("start, limit and delta must be scalars");
        };
        let n = range_len(((l - s) / d).ceil(), DType::F64)?;
        let v = (0..n).map(|i| s + i as f64 * d).collect();
        return Ok(vec![from_f64(v, &[n], dt, start)?]);
    }
    let [s, l, d] = [start, limit, delta].map(|v| v.to_i64_vec().map(|v| v.first().copied()));
    let (Some(s), Some(l), Some(d)) = (s?, l?, d?) else {
        bail!("start, limit and delta must be scalars");
    };
    if d == 0 {
        bail!("delta is zero");
    }
    let (span, d128) = (l as i128 - s as i128, d as i128);
    let ceil = span.div_euclid(d128) + i128::from(d > 0 && span.rem_euclid(d128) > 0);
    let n = range_len(ceil as f64, DType::I64)?;
    let v: Vec<i64> = (0..n as i64)
        .map(|i| s.wrapping_add(i.wrapping_mul(d)))
        .collect();
    Ok(vec![Value::new(
        index_tensor(v, start.tensor().device())?,
        dt,
    )?])
}

/// The element count of `Range` from its (unclamped) real count, checked against the
/// memory available for values built as `dtype`.
fn range_len(n: f64, dtype: DType) -> Result<usize> {
    if n.is_nan() {
        bail!("range of {n} elements is invalid");
    }
    // Saturates: a count past usize::MAX fails the size check.
    let len = n.max(0.0) as usize;
    check_size(&[len], dtype)?;
    Ok(len)
}

fn eye_like(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let &[rows, cols] = x.shape() else {
        bail!("expects a 2-D input, got shape {:?}", x.shape());
    };
    let k = c.node.int_or("k", 0)?;
    let dt = match c.node.int("dtype")? {
        Some(code) => match DataType::from_code(code as i32) {
            Some(dt) => dt,
            None => bail!("unknown dtype {code}"),
        },
        None => x.dtype(),
    };
    let mut v = vec![0.0; rows * cols];
    for (i, row) in v.chunks_mut(cols.max(1)).enumerate() {
        if let Some(cell) = usize::try_from(i as i64 + k)
            .ok()
            .and_then(|j| row.get_mut(j))
        {
            *cell = 1.0;
        }
    }
    Ok(vec![from_f64(v, &[rows, cols], dt, x)?])
}

fn trilu(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let rank = x.rank();
    if rank < 2 {
        bail!("expects rank >= 2, got {rank}");
    }
    let k = match c.opt_input(1) {
        Some(k) => k.to_i64_vec()?.first().copied().unwrap_or(0),
        None => 0,
    };
    let upper = c.node.int_or("upper", 1)? == 1;
    let (rows, cols) = (x.shape()[rank - 2], x.shape()[rank - 1]);
    let mask: Vec<u8> = (0..rows * cols)
        .map(|p| {
            let d = (p % cols) as i64 - (p / cols) as i64;
            u8::from(if upper { d >= k } else { d <= k })
        })
        .collect();
    let mask =
        Tensor::from_vec(mask, (rows, cols), x.tensor().device())?.broadcast_as(x.shape())?;
    same_type(mask.where_cond(x.tensor(), &x.tensor().zeros_like()?)?, x)
}

/// Largest block size of `DepthToSpace`/`SpaceToDepth` (keeps size arithmetic in range).
const MAX_BLOCK: i64 = 1 << 16;

/// `[n, c, h, w]` of a 4-D input and the positive block size.
fn nchw_block(c: &OpCtx, x: &Value) -> Result<([usize; 4], usize)> {
    let &[n, ch, h, w] = x.shape() else {
        bail!("expects a 4-D input, got shape {:?}", x.shape());
    };
    let b = c.node.int_or("blocksize", 0)?;
    if !(1..=MAX_BLOCK).contains(&b) {
        bail!("blocksize must be in 1..={MAX_BLOCK}, got {b}");
    }
    Ok(([n, ch, h, w], b as usize))
}

/// Reshapes `x` to `split`, permutes by `perm`, and reshapes to `out`.
fn regroup(x: &Value, split: &[usize], perm: &[usize], out: &[usize]) -> Result<Vec<Value>> {
    let t = x.tensor().reshape(split)?.permute(perm)?.reshape(out)?;
    same_type(t, x)
}

fn depth_to_space(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let ([n, ch, h, w], b) = nchw_block(c, x)?;
    if ch % (b * b) != 0 {
        bail!("channels {ch} are not divisible by blocksize² {}", b * b);
    }
    let oc = ch / (b * b);
    let out = [n, oc, h * b, w * b];
    if c.node.string_or("mode", "DCR")? == "CRD" {
        regroup(x, &[n, oc, b, b, h, w], &[0, 1, 4, 2, 5, 3], &out)
    } else {
        regroup(x, &[n, b, b, oc, h, w], &[0, 3, 4, 1, 5, 2], &out)
    }
}

fn space_to_depth(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let ([n, ch, h, w], b) = nchw_block(c, x)?;
    if h % b != 0 || w % b != 0 {
        bail!("spatial size {h}x{w} is not divisible by blocksize {b}");
    }
    let split = [n, ch, h / b, b, w / b, b];
    regroup(
        x,
        &split,
        &[0, 3, 5, 1, 2, 4],
        &[n, ch * b * b, h / b, w / b],
    )
}

/// How `Pad` fills the border.
#[derive(Clone, Copy, PartialEq, Debug)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl PadMode {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => bail!("unknown pad mode '{other}'"),
        })
    }

    /// The source position for position `i` (relative to the data start) of an axis of length `n > 0`.
    fn source(self, i: i64, n: i64) -> i64 {
        match self {
            PadMode::Edge | PadMode::Constant => i.clamp(0, n - 1),
            PadMode::Wrap => i.rem_euclid(n),
            PadMode::Reflect if n == 1 => 0,
            PadMode::Reflect => {
                let m = i.rem_euclid(2 * (n - 1));
                if m >= n {
                    2 * (n - 1) - m
                } else {
                    m
                }
            }
        }
    }
}

fn pad(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let rank = x.rank();
    let mode = PadMode::parse(&c.node.string_or("mode", "constant")?)?;
    let (pads, fill, axes) = if c.opset >= 11 {
        let fill = match c.opt_input(2) {
            Some(v) if v.numel() > 0 => scalar_tensor(&v.cast(x.dtype())?)?,
            _ => Tensor::zeros((), x.tensor().dtype(), x.tensor().device())?,
        };
        let axes = c.opt_input(3).map(Value::to_i64_vec).transpose()?;
        (c.input(1)?.to_i64_vec()?, fill, axes)
    } else {
        let name = if c.opset < 2 { "paddings" } else { "pads" };
        let Some(pads) = c.node.ints(name)? else {
            bail!("attribute '{name}' is required");
        };
        let value = c.node.float_or("value", 0.0)? as f64;
        let fill = from_f64(vec![value], &[], x.dtype(), x)?.into_tensor();
        (pads, fill, None)
    };
    let axes = match axes {
        Some(a) => distinct_axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        bail!("pads {pads:?} do not match {} axes", axes.len());
    }
    let mut t = x.tensor().clone();
    for (k, &axis) in axes.iter().enumerate() {
        let (before, after) = (pads[k], pads[k + axes.len()]);
        if before != 0 || after != 0 {
            t = pad_axis(&t, axis, before, after, mode, &fill)?;
        }
    }
    same_type(t, x)
}

/// Pads (or crops, for negative amounts) `t` along `axis`.
fn pad_axis(
    t: &Tensor,
    axis: usize,
    before: i64,
    after: i64,
    mode: PadMode,
    fill: &Tensor,
) -> Result<Tensor> {
    let n = t.dims()[axis] as i64;
    let len = n.saturating_add(before).saturating_add(after);
    if len < 0 {
        bail!("pads {before}, {after} remove more than the {n} elements of axis {axis}");
    }
    let mut dims = t.dims().to_vec();
    dims[axis] = len as usize;
    check_size(&dims, t.dtype())?;
    if mode == PadMode::Constant {
        let lo = (-before).clamp(0, n);
        let kept = (n - lo - (-after).max(0)).max(0) as usize;
        let core = t.narrow(axis, lo as usize, kept)?;
        let mut block = |size: i64| -> Result<Tensor> {
            dims[axis] = size.max(0) as usize;
            Ok(fill.broadcast_as(dims.as_slice())?.contiguous()?)
        };
        return Ok(Tensor::cat(&[block(before)?, core, block(after)?], axis)?);
    }
    if n == 0 && len > 0 {
        bail!("cannot pad an empty axis in this mode");
    }
    let ix = (0..len).map(|i| mode.source(i - before, n)).collect();
    Ok(t.index_select(&index_tensor(ix, t.device())?, axis)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(v: &Value) -> Vec<i64> {
        v.to_i64_vec().unwrap()
    }

    #[test]
    fn reshape_copies_zeros_and_infers_minus_one() {
        assert_eq!(
            reshape_dims(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(
            reshape_dims(&[2, 3, 4], &[4, 0, -1], false).unwrap(),
            vec![4, 3, 2]
        );
        assert_eq!(reshape_dims(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
        assert_eq!(reshape_dims(&[2, 3], &[-1], false).unwrap(), vec![6]);
    }

    #[test]
    fn reshape_rejects_bad_specs() {
        assert!(reshape_dims(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[5], false).is_err());
        assert!(reshape_dims(&[2, 3], &[0, 0, 0], false).is_err());
        assert!(reshape_dims(&[2, 3], &[-2, 3], false).is_err());
        assert!(reshape_dims(&[0, 3], &[0, -1], true).is_err());
        assert!(reshape_dims(&[6], &[i64::MAX, i64::MAX], false).is_err());
    }

    #[test]
    fn slice_range_clamps_and_steps() {
        assert_eq!(slice_range(10, 0, 3, 1).unwrap(), (0, 1, 3));
        assert_eq!(slice_range(10, -3, i64::MAX, 1).unwrap(), (7, 1, 3));
        assert_eq!(slice_range(10, 1, 1000, 3).unwrap(), (1, 3, 3));
        assert_eq!(
            slice_range(10, i64::MAX, i64::MIN, -1).unwrap(),
            (9, -1, 10)
        );
        assert_eq!(slice_range(10, 8, 2, -2).unwrap(), (8, -2, 3));
        assert_eq!(slice_range(10, 5, 2, 1).unwrap(), (5, 1, 0));
        assert_eq!(slice_range(10, 1000, 1001, 1).unwrap(), (10, 1, 0));
        assert_eq!(slice_range(4, 0, 4, i64::MAX).unwrap(), (0, i64::MAX, 1));
        assert!(slice_range(4, 0, 4, 0).is_err());
    }

    #[test]
    fn take_range_reverses_and_strides() {
        let t = Tensor::arange(0i64, 10, &Device::Cpu).unwrap();
        let r = |range| {
            let t = take_range(&t, 0, range).unwrap();
            values(&Value::new(t, DataType::Int64).unwrap())
        };
        assert_eq!(
            r(slice_range(10, -1, i64::MIN, -3).unwrap()),
            vec![9, 6, 3, 0]
        );
        assert_eq!(r(slice_range(10, 2, 5, 1).unwrap()), vec![2, 3, 4]);
        assert!(r(slice_range(10, 3, 1, 1).unwrap()).is_empty());
    }

    #[test]
    fn pad_modes_map_borders() {
        let t = Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap();
        let fill = Tensor::new(0i64, &Device::Cpu).unwrap();
        let p = |mode, b, a| {
            let t = pad_axis(&t, 0, b, a, mode, &fill).unwrap();
            t.to_vec1::<i64>().unwrap()
        };
        assert_eq!(p(PadMode::Reflect, 2, 2), vec![3, 2, 1, 2, 3, 2, 1]);
        assert_eq!(p(PadMode::Edge, 2, 1), vec![1, 1, 1, 2, 3, 3]);
        assert_eq!(p(PadMode::Wrap, 2, 2), vec![2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(p(PadMode::Constant, 1, -1), vec![0, 1, 2]);
        assert_eq!(p(PadMode::Constant, -2, 1), vec![3, 0]);
        assert!(pad_axis(&t, 0, -3, -1, PadMode::Constant, &fill).is_err());
    }

    #[test]
    fn even_split_leaves_a_short_last_chunk() {
        assert_eq!(even_split(7, 3).unwrap(), vec![3, 3, 1]);
        assert_eq!(even_split(6, 3).unwrap(), vec![2, 2, 2]);
        assert!(even_split(6, 0).is_err());
    }
}
