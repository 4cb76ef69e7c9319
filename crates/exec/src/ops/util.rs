//! Helpers shared by operator families: size limits, broadcasting, host-side element maps,
//! integer value builders, index arithmetic and dtype checks.

use candle_core::{DType, Device, Tensor};
use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::DataType;

use super::normalize_axis;
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Tensors up to this many bytes are built without reading how much memory is available.
const SMALL_BYTES: u128 = 64 << 20;

/// Fails before an operator allocates a tensor of `dims` with `dtype` elements, sized by an
/// attribute or an input, when its bytes overflow or exceed the memory available
/// ([`whittle_ir::memory::ensure_fits`]: `MemAvailable`, capped by `WHITTLE_MEMORY_LIMIT`).
pub fn check_size(dims: &[usize], dtype: DType) -> Result<()> {
    let bytes = tensor_bytes(dims, dtype.size_in_bytes());
    if bytes.is_some_and(|b| b <= SMALL_BYTES) {
        return Ok(());
    }
    Ok(ensure_fits(bytes, &format!("a tensor of shape {dims:?}"))?)
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// Broadcast of any number of shapes.
pub fn broadcast_shapes<'a>(shapes: impl IntoIterator<Item = &'a [usize]>) -> Result<Vec<usize>> {
    shapes
        .into_iter()
        .try_fold(Vec::new(), |acc, s| broadcast_shape(&acc, s))
}

/// The broadcast shape of `shapes`, checked with [`check_size`] for elements of `dtype`
/// when it is larger than every input (`[N, 1] + [1, M]`): elementwise operators call it
/// before they allocate their output.
pub fn broadcast_output(shapes: &[&[usize]], dtype: DType) -> Result<Vec<usize>> {
    let out = broadcast_shapes(shapes.iter().copied())?;
    if shapes.iter().all(|s| *s != out.as_slice()) {
        check_size(&out, dtype)?;
    }
    Ok(out)
}

/// `t` broadcast (and materialised contiguous) to `shape`.
pub fn broadcast_to(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.dims() == shape {
        return Ok(t.clone());
    }
    Ok(t.broadcast_as(shape)?.contiguous()?)
}

/// Fails unless both values have the same ONNX type (as ONNX type constraints require).
pub fn same_dtype(a: &Value, b: &Value) -> Result<DataType> {
    if a.dtype() != b.dtype() {
        bail!("input types differ: {} and {}", a.dtype(), b.dtype());
    }
    Ok(a.dtype())
}

/// Fails unless the value has a float type.
pub fn require_float(v: &Value) -> Result<()> {
    if !v.dtype().is_float() {
        bail!("expects a float tensor, got {}", v.dtype());
    }
    Ok(())
}

/// Applies `f` elementwise (in f64) to two broadcast values; the result has type `out`.
pub fn map2_f64(a: &Value, b: &Value, out: DataType, f: impl Fn(f64, f64) -> f64) -> Result<Value> {
    let shape = broadcast_output(&[a.shape(), b.shape()], DType::F64)?;
    let x = host_f64(a, &shape)?;
    let y = host_f64(b, &shape)?;
    let v: Vec<f64> = x.iter().zip(&y).map(|(&p, &q)| f(p, q)).collect();
    from_f64(v, &shape, out, a)
}

/// Applies `f` elementwise (in i64) to two broadcast integer values; the result has type `out`.
pub fn map2_i64(
    a: &Value,
    b: &Value,
    out: DataType,
    f: impl Fn(i64, i64) -> Result<i64>,
) -> Result<Value> {
    let shape = broadcast_output(&[a.shape(), b.shape()], DType::I64)?;
    let x = host_i64(a, &shape)?;
    let y = host_i64(b, &shape)?;
    let v = x
        .iter()
        .zip(&y)
        .map(|(&p, &q)| f(p, q))
        .collect::<Result<Vec<i64>>>()?;
    let t = Tensor::from_vec(v, shape, a.tensor().device())?;
    Value::new(t, out)
}

/// Applies `f` elementwise in f64 to one value, keeping its type.
pub fn map_f64(a: &Value, f: impl Fn(f64) -> f64) -> Result<Value> {
    let v: Vec<f64> = a.to_f64_vec()?.into_iter().map(f).collect();
    from_f64(v, a.shape(), a.dtype(), a)
}

fn host_f64(v: &Value, shape: &[usize]) -> Result<Vec<f64>> {
    Ok(broadcast_to(&v.tensor().to_dtype(DType::F64)?, shape)?
        .flatten_all()?
        .to_vec1()?)
}

fn host_i64(v: &Value, shape: &[usize]) -> Result<Vec<i64>> {
    Ok(broadcast_to(&v.tensor().to_dtype(DType::I64)?, shape)?
        .flatten_all()?
        .to_vec1()?)
}

/// A value of type `out` from f64 data (integers are converted with ONNX Cast rules).
pub fn from_f64(v: Vec<f64>, shape: &[usize], out: DataType, like: &Value) -> Result<Value> {
    let t = Tensor::from_vec(v, shape, like.tensor().device())?;
    let f = Value::new(t, DataType::Double)?;
    f.cast(out)
}

/// A 1-D i64 value.
pub fn i64_value(v: Vec<i64>, like: &Value) -> Result<Value> {
    let n = v.len();
    Value::new(
        Tensor::from_vec(v, n, like.tensor().device())?,
        DataType::Int64,
    )
}

/// True for unsigned integer types (whose uint64 values may not fit an i64).
pub fn is_unsigned(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 | DataType::Uint4
    )
}

/// An integer (or bool) value of type `dtype` from i64 elements, wrapping into its range.
pub fn int_value(v: Vec<i64>, shape: &[usize], dtype: DataType, like: &Value) -> Result<Value> {
    let device = like.tensor().device();
    let t = if crate::value::storage_dtype(dtype)? == DType::U8 {
        // candle saturates when narrowing to u8; wrap like C instead.
        let bytes: Vec<u8> = v.into_iter().map(|x| x as u8).collect();
        Tensor::from_vec(bytes, shape, device)?
    } else {
        Tensor::from_vec(v, shape, device)?
    };
    Value::new(t, dtype)
}

/// Wraps `t` with the ONNX type of `like` as the operator's single output.
pub fn same_type(t: Tensor, like: &Value) -> Result<Vec<Value>> {
    Ok(vec![Value::new(t, like.dtype())?])
}

/// A 1-D i64 index tensor for `index_select`.
pub fn index_tensor(ix: Vec<i64>, device: &Device) -> Result<Tensor> {
    let n = ix.len();
    Ok(Tensor::from_vec(ix, n, device)?)
}

/// An index into `0..n`, counting from the end when negative.
pub fn wrap_index(i: i64, n: usize) -> Result<usize> {
    let w = if i < 0 { i + n as i64 } else { i };
    if w < 0 || w >= n as i64 {
        bail!("index {i} is out of bounds for a dimension of size {n}");
    }
    Ok(w as usize)
}

/// An axis of a tensor of rank `rank`, normalised into `0..rank` (a scalar has none).
pub fn data_axis(axis: i64, rank: usize) -> Result<usize> {
    if rank == 0 {
        bail!("axis {axis} is out of range for a scalar");
    }
    normalize_axis(axis, rank)
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}
