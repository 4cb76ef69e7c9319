//! The executor's tensor value: an exact ONNX element type beside a candle tensor.
//!
//! candle-core has no int8, int16, uint16, uint64 or bool dtypes. A [`Value`] keeps the
//! ONNX type as a tag and stores the elements in the narrowest candle dtype that holds
//! every value exactly (see [`storage_dtype`]), converting at the boundary without loss.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use whittle_ir::{DataType, TensorData};

use crate::bail;
use crate::error::{ExecError, Result};

/// The candle dtype that stores elements of an ONNX type exactly.
///
/// bool and uint8 use `U8`; every other integer type uses `I64` (uint64 values above
/// `i64::MAX` keep their bit pattern); floats map to their candle twin.
pub fn storage_dtype(dtype: DataType) -> Result<DType> {
    use DataType::*;
    Ok(match dtype {
        Float => DType::F32,
        Double => DType::F64,
        Float16 => DType::F16,
        Bfloat16 => DType::BF16,
        Bool | Uint8 => DType::U8,
        Int8 | Int16 | Uint16 | Int32 | Uint32 | Int64 | Uint64 | Int4 | Uint4 => DType::I64,
        other => return Err(unsupported_type(other)),
    })
}

/// The error for values of element type `dtype`, which the executor cannot hold.
fn unsupported_type(dtype: DataType) -> ExecError {
    ExecError::UnsupportedType {
        what: format!("element type {dtype}"),
    }
}

/// A tensor flowing through the executor.
#[derive(Clone, Debug)]
pub struct Value {
    dtype: DataType,
    tensor: Tensor,
}

impl Value {
    /// Wraps a candle tensor as ONNX type `dtype`, converting to its storage dtype.
    /// Integer values outside `dtype`'s range wrap around, as in C.
    pub fn new(tensor: Tensor, dtype: DataType) -> Result<Self> {
        let storage = storage_dtype(dtype)?;
        let tensor = if tensor.dtype() == storage {
            tensor
        } else {
            tensor.to_dtype(storage)?
        };
        let v = Value { dtype, tensor };
        if matches!(
            dtype,
            DataType::Int8
                | DataType::Int16
                | DataType::Uint16
                | DataType::Int32
                | DataType::Uint32
        ) {
            return v.wrapped();
        }
        Ok(v)
    }

    /// A float32 value.
    pub fn f32(tensor: Tensor) -> Result<Self> {
        Self::new(tensor, DataType::Float)
    }

    /// Wraps a float tensor, keeping its candle dtype as the ONNX type.
    pub fn from_float(tensor: Tensor) -> Result<Self> {
        let dtype = match tensor.dtype() {
            DType::F32 => DataType::Float,
            DType::F64 => DataType::Double,
            DType::F16 => DataType::Float16,
            DType::BF16 => DataType::Bfloat16,
            other => bail!("{other:?} is not a float dtype"),
        };
        Ok(Value { dtype, tensor })
    }

    /// A value from host data, on `device`.
    pub fn from_data(data: &TensorData, device: &Device) -> Result<Self> {
        use DataType::*;
        let dims = data.dims().to_vec();
        let tensor = match data.dtype() {
            Float => Tensor::from_vec(data.to_vec::<f32>()?, dims, device)?,
            Double => Tensor::from_vec(data.to_vec::<f64>()?, dims, device)?,
            Float16 => Tensor::from_vec(data.to_vec::<f16>()?, dims, device)?,
            Bfloat16 => Tensor::from_vec(data.to_vec::<bf16>()?, dims, device)?,
            Bool | Uint8 => Tensor::from_vec(
                data.bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                dims,
                device,
            )?,
            Uint64 => {
                let v: Vec<i64> = data
                    .to_vec::<u64>()?
                    .into_iter()
                    .map(|x| x as i64)
                    .collect();
                Tensor::from_vec(v, dims, device)?
            }
            Int8 | Int16 | Uint16 | Int32 | Uint32 | Int64 | Int4 | Uint4 => {
                Tensor::from_vec(data.to_i64_vec()?, dims, device)?
            }
            other => return Err(unsupported_type(other)),
        };
        Ok(Value {
            dtype: data.dtype(),
            tensor,
        })
    }

    /// Copies the value back to host data of its exact ONNX type.
    pub fn to_data(&self) -> Result<TensorData> {
        use DataType::*;
        let dims = self.shape().to_vec();
        let flat = self.tensor.flatten_all()?;
        let ints = || flat.to_vec1::<i64>();
        // Floats and bytes are copied once, from the tensor's storage into the bytes.
        Ok(match self.dtype {
            Float => self.with_slice::<f32, _>(|s| TensorData::from_slice(dims, s))??,
            Double => self.with_slice::<f64, _>(|s| TensorData::from_slice(dims, s))??,
            Float16 => self.with_slice::<f16, _>(|s| TensorData::from_slice(dims, s))??,
            Bfloat16 => self.with_slice::<bf16, _>(|s| TensorData::from_slice(dims, s))??,
            Uint8 | Bool => {
                self.with_slice::<u8, _>(|s| TensorData::from_bytes(self.dtype, dims, s.to_vec()))??
            }
            Int8 => {
                TensorData::from_slice(dims, &ints()?.iter().map(|&v| v as i8).collect::<Vec<_>>())?
            }
            Int16 => TensorData::from_slice(
                dims,
                &ints()?.iter().map(|&v| v as i16).collect::<Vec<_>>(),
            )?,
            Uint16 => TensorData::from_slice(
                dims,
                &ints()?.iter().map(|&v| v as u16).collect::<Vec<_>>(),
            )?,
            Int32 => TensorData::from_slice(
                dims,
                &ints()?.iter().map(|&v| v as i32).collect::<Vec<_>>(),
            )?,
            Uint32 => TensorData::from_slice(
                dims,
                &ints()?.iter().map(|&v| v as u32).collect::<Vec<_>>(),
            )?,
            Int64 => TensorData::from_slice(dims, &ints()?)?,
            Uint64 => TensorData::from_slice(
                dims,
                &ints()?.iter().map(|&v| v as u64).collect::<Vec<_>>(),
            )?,
            Int4 | Uint4 => {
                let v: Vec<i8> = ints()?.iter().map(|&v| v as i8).collect();
                TensorData::from_bytes(self.dtype, dims, whittle_ir::tensor::pack_nibbles(&v))?
            }
            other => return Err(unsupported_type(other)),
        })
    }

    /// The ONNX element type.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// The underlying candle tensor (in [`storage_dtype`] of [`Value::dtype`]).
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Consumes the value, returning the candle tensor.
    pub fn into_tensor(self) -> Tensor {
        self.tensor
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        self.tensor.dims()
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.tensor.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.tensor.elem_count()
    }

    /// A tensor with the same ONNX type but different elements (already in storage dtype).
    pub fn with_tensor(&self, tensor: Tensor) -> Result<Self> {
        Value::new(tensor, self.dtype)
    }

    /// Every element as i64 (floats truncate). For shape-like inputs.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(self
            .tensor
            .flatten_all()?
            .to_dtype(if self.dtype.is_float() {
                DType::F64
            } else {
                DType::I64
            })?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?)
    }

    /// Every element as f64.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.tensor.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
    }

    /// All elements as f32, in row-major order (rounded where the dtype is wider).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(self.tensor.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    }

    /// Calls `f` with all elements as f32 in row-major order: borrowed from the tensor's
    /// storage when it is a contiguous f32 CPU tensor, else converted like
    /// [`Value::to_f32_vec`].
    pub fn with_f32<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        self.with_slice(f)
    }

    /// Calls `f` with all elements as `T` in row-major order: borrowed from the tensor's
    /// storage when it is a contiguous CPU tensor of `T`, else converted (candle's
    /// `to_dtype`).
    pub fn with_slice<T: candle_core::WithDType, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        {
            let (storage, layout) = self.tensor.storage_and_layout();
            if let (candle_core::Storage::Cpu(cpu), Some((a, b))) =
                (&*storage, layout.contiguous_offsets())
            {
                if let Ok(data) = cpu.as_slice::<T>() {
                    return Ok(f(&data[a..b]));
                }
            }
        }
        let converted = self.tensor.flatten_all()?.to_dtype(T::DTYPE)?;
        Ok(f(&converted.to_vec1::<T>()?))
    }

    /// The tensor in a float dtype for arithmetic: floats as they are, integers as f64
    /// (exact up to 2^53) or f32 when `prefer_f32`.
    pub fn float_tensor(&self) -> Result<Tensor> {
        Ok(if self.dtype.is_float() {
            self.tensor.clone()
        } else {
            self.tensor.to_dtype(DType::F64)?
        })
    }

    /// Converts to another ONNX type with ONNX `Cast` semantics (floats to integers
    /// truncate toward zero; integers wrap; anything non-zero becomes `true`).
    pub fn cast(&self, to: DataType) -> Result<Self> {
        if to == self.dtype {
            return Ok(self.clone());
        }
        let storage = storage_dtype(to)?;
        if to == DataType::Bool {
            let zero = self.tensor.zeros_like()?;
            return Value::new(self.tensor.ne(&zero)?, DataType::Bool);
        }
        if self.dtype.is_float() && !to.is_float() {
            // Truncate toward zero first; NaN/inf become 0 like the reference runtime's C cast.
            let t = self.tensor.to_dtype(DType::F64)?;
            let v: Vec<i64> = t
                .flatten_all()?
                .to_vec1::<f64>()?
                .into_iter()
                .map(|x| {
                    if x.is_finite() {
                        x.trunc() as i128 as i64
                    } else {
                        0
                    }
                })
                .collect();
            let t = Tensor::from_vec(v, self.shape(), self.tensor.device())?;
            return Value::new(t, to);
        }
        if storage == DType::U8 && self.tensor.dtype() != DType::U8 {
            // Wrap to 0..=255 before narrowing, since candle saturates.
            let v: Vec<u8> = self.to_i64_vec()?.into_iter().map(|x| x as u8).collect();
            let t = Tensor::from_vec(v, self.shape(), self.tensor.device())?;
            return Value::new(t, to);
        }
        Value::new(self.tensor.to_dtype(storage)?, to)
    }

    /// Reduces integer values into the range of this value's type, wrapping like C.
    fn wrapped(self) -> Result<Self> {
        let (lo, hi) = self.dtype.int_range().expect("integer type");
        let span = hi - lo + 1;
        let v = self.tensor.flatten_all()?.to_vec1::<i64>()?;
        if v.iter().all(|&x| (x as i128) >= lo && (x as i128) <= hi) {
            return Ok(self);
        }
        let w: Vec<i64> = v
            .into_iter()
            .map(|x| ((x as i128 - lo).rem_euclid(span) + lo) as i64)
            .collect();
        let tensor = Tensor::from_vec(w, self.tensor.dims(), self.tensor.device())?;
        Ok(Value {
            dtype: self.dtype,
            tensor,
        })
    }
}

impl TryFrom<&TensorData> for Value {
    type Error = ExecError;
    fn try_from(data: &TensorData) -> Result<Self> {
        Value::from_data(data, &Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_type_round_trips_exactly() {
        let cases: Vec<TensorData> = vec![
            TensorData::from_slice(vec![3], &[i8::MIN, 0, i8::MAX]).unwrap(),
            TensorData::from_slice(vec![3], &[0u16, 1, u16::MAX]).unwrap(),
            TensorData::from_slice(vec![3], &[i16::MIN, -1, i16::MAX]).unwrap(),
            TensorData::from_slice(vec![3], &[0u32, 7, u32::MAX]).unwrap(),
            TensorData::from_slice(vec![3], &[0u64, 1 << 63, u64::MAX]).unwrap(),
            TensorData::from_slice(vec![3], &[true, false, true]).unwrap(),
            TensorData::from_slice(vec![2], &[f16::from_f32(1.5), f16::MAX]).unwrap(),
        ];
        for data in cases {
            let v = Value::try_from(&data).unwrap();
            assert_eq!(v.to_data().unwrap(), data, "{}", data.dtype());
        }
    }

    #[test]
    fn cast_follows_onnx_semantics() {
        let data = TensorData::from_slice(vec![4], &[-1.7f32, 2.9, 300.0, 0.0]).unwrap();
        let v = Value::try_from(&data).unwrap();
        let as_i8 = v.cast(DataType::Int8).unwrap().to_data().unwrap();
        assert_eq!(as_i8.to_vec::<i8>().unwrap(), vec![-1, 2, 44, 0]);
        let as_bool = v.cast(DataType::Bool).unwrap().to_data().unwrap();
        assert_eq!(
            as_bool.to_vec::<bool>().unwrap(),
            vec![true, true, true, false]
        );
    }
}
