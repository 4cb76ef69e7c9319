//! Host tensors: exact bytes of any ONNX element type, converted to and from `TensorProto`.

use std::path::{Component, Path, PathBuf};

use half::{bf16, f16};
use prost::bytes::Bytes;

use crate::dtype::DataType;
use crate::error::{IrError, Result};
use crate::proto::{tensor_proto::DataLocation, StringStringEntryProto, TensorProto};

/// The elements of a [`TensorData`].
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// Little-endian bytes, as ONNX `raw_data` lays them out (4-bit types packed two per byte);
    /// shared with the `TensorProto` it was read from or written to, not copied.
    Bytes(Bytes),
    /// One byte string per element (`STRING` tensors).
    Strings(Vec<Vec<u8>>),
}

/// A dense tensor held on the host with its exact ONNX element type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    dtype: DataType,
    dims: Vec<usize>,
    storage: Storage,
}

/// A Rust scalar type that maps one-to-one onto an ONNX element type.
pub trait Element: Copy + Send + Sync + 'static {
    /// The ONNX element type.
    const DTYPE: DataType;
    /// Appends the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one value from exactly `size()` little-endian bytes.
    fn get(bytes: &[u8]) -> Self;
    /// The value as f64 (lossless for all but 64-bit integers beyond 2^53).
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($t:ty, $dt:ident, $n:expr, |$v:ident| $to:expr) => {
        impl Element for $t {
            const DTYPE: DataType = DataType::$dt;
            #[inline]
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Self {
                let mut b = [0u8; $n];
                b.copy_from_slice(&bytes[..$n]);
                <$t>::from_le_bytes(b)
            }
            #[inline]
            fn to_f64(self) -> f64 {
                let $v = self;
                $to
            }
        }
    };
}

element!(f32, Float, 4, |v| v as f64);
element!(f64, Double, 8, |v| v);
element!(u8, Uint8, 1, |v| v as f64);
element!(i8, Int8, 1, |v| v as f64);
element!(u16, Uint16, 2, |v| v as f64);
element!(i16, Int16, 2, |v| v as f64);
element!(i32, Int32, 4, |v| v as f64);
element!(u32, Uint32, 4, |v| v as f64);
element!(i64, Int64, 8, |v| v as f64);
element!(u64, Uint64, 8, |v| v as f64);
element!(f16, Float16, 2, |v| v.to_f64());
element!(bf16, Bfloat16, 2, |v| v.to_f64());

impl Element for bool {
    const DTYPE: DataType = DataType::Bool;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn get(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
}

/// Number of elements of a shape, or an error when it overflows.
pub fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl TensorData {
    /// A tensor from raw little-endian bytes; fails when the length does not match the shape.
    pub fn from_bytes(dtype: DataType, dims: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_shared(dtype, dims, bytes.into())
    }

    /// [`TensorData::from_bytes`] of bytes shared with their owner (a `TensorProto`'s
    /// `raw_data`), not copied.
    fn from_shared(dtype: DataType, dims: Vec<usize>, bytes: Bytes) -> Result<Self> {
        let numel = checked_numel(&dims)
            .ok_or_else(|| IrError::bad_tensor("", format!("shape {dims:?} overflows")))?;
        let want = dtype
            .storage_bytes(numel)
            .ok_or_else(|| IrError::bad_tensor("", format!("{dtype} has no byte layout")))?;
        if bytes.len() != want {
            return Err(IrError::bad_tensor(
                "",
                format!(
                    "{} bytes for {dtype} shape {dims:?} (expected {want})",
                    bytes.len()
                ),
            ));
        }
        Ok(TensorData {
            dtype,
            dims,
            storage: Storage::Bytes(bytes),
        })
    }

    /// A tensor of typed values; fails when `values.len()` does not match the shape.
    pub fn from_slice<T: Element>(dims: Vec<usize>, values: &[T]) -> Result<Self> {
        let mut bytes = Vec::with_capacity(values.len() * T::DTYPE.size().unwrap_or(1));
        for v in values {
            v.put(&mut bytes);
        }
        Self::from_bytes(T::DTYPE, dims, bytes)
    }

    /// A STRING tensor.
    pub fn from_strings(dims: Vec<usize>, values: Vec<Vec<u8>>) -> Result<Self> {
        if checked_numel(&dims) != Some(values.len()) {
            return Err(IrError::bad_tensor(
                "",
                format!("{} strings for shape {dims:?}", values.len()),
            ));
        }
        Ok(TensorData {
            dtype: DataType::String,
            dims,
            storage: Storage::Strings(values),
        })
    }

    /// A scalar (rank-0) tensor.
    pub fn scalar<T: Element>(value: T) -> Self {
        Self::from_slice(vec![], &[value]).expect("one value fills a scalar")
    }

    /// Element type.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// Shape.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The stored elements.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Raw little-endian bytes (`None` for STRING tensors).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::Bytes(b) => Some(b),
            Storage::Strings(_) => None,
        }
    }

    /// Size of the element data in bytes (strings: sum of their lengths).
    pub fn byte_len(&self) -> usize {
        match &self.storage {
            Storage::Bytes(b) => b.len(),
            Storage::Strings(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// The same data with another shape of equal element count.
    pub fn reshaped(mut self, dims: Vec<usize>) -> Result<Self> {
        if checked_numel(&dims) != Some(self.numel()) {
            return Err(IrError::bad_tensor(
                "",
                format!("cannot reshape {:?} to {dims:?}", self.dims),
            ));
        }
        self.dims = dims;
        Ok(self)
    }

    /// The elements as `T`, which must be exactly this tensor's element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let bytes = self
            .bytes()
            .filter(|_| T::DTYPE == self.dtype)
            .ok_or_else(|| {
                IrError::bad_tensor("", format!("is {}, not {}", self.dtype, T::DTYPE))
            })?;
        let size = T::DTYPE.size().unwrap_or(1);
        Ok(bytes.chunks_exact(size).map(T::get).collect())
    }

    /// Every element converted to f64 (any numeric or bool type).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.convert(|v| v, |v| v as f64)
    }

    /// Every element converted to i64 (floats truncate toward zero).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        self.convert(|v| v as i64, |v| v as i64)
    }

    fn convert<O>(&self, from_f: impl Fn(f64) -> O, from_i: impl Fn(i128) -> O) -> Result<Vec<O>> {
        use DataType::*;
        let bytes = self
            .bytes()
            .ok_or_else(|| IrError::bad_tensor("", "STRING tensor has no numeric value"))?;
        let ints = |size: usize, f: &dyn Fn(&[u8]) -> i128| -> Vec<O> {
            bytes.chunks_exact(size).map(|c| from_i(f(c))).collect()
        };
        let floats = |size: usize, f: &dyn Fn(&[u8]) -> f64| -> Vec<O> {
            bytes.chunks_exact(size).map(|c| from_f(f(c))).collect()
        };
        Ok(match self.dtype {
            Float => floats(4, &|c| f32::get(c) as f64),
            Double => floats(8, &|c| f64::get(c)),
            Float16 => floats(2, &|c| f16::get(c).to_f64()),
            Bfloat16 => floats(2, &|c| bf16::get(c).to_f64()),
            Uint8 | Bool => ints(1, &|c| c[0] as i128),
            Int8 => ints(1, &|c| c[0] as i8 as i128),
            Uint16 => ints(2, &|c| u16::get(c) as i128),
            Int16 => ints(2, &|c| i16::get(c) as i128),
            Int32 => ints(4, &|c| i32::get(c) as i128),
            Uint32 => ints(4, &|c| u32::get(c) as i128),
            Int64 => ints(8, &|c| i64::get(c) as i128),
            Uint64 => ints(8, &|c| u64::get(c) as i128),
            Int4 | Uint4 => unpack_nibbles(bytes, self.numel(), self.dtype == Int4)
                .into_iter()
                .map(|v| from_i(v as i128))
                .collect(),
            other => {
                return Err(IrError::bad_tensor(
                    "",
                    format!("{other} values cannot be converted"),
                ))
            }
        })
    }

    /// Decodes a `TensorProto`; external data is read relative to `base_dir`.
    pub fn from_proto(proto: &TensorProto, base_dir: Option<&Path>) -> Result<Self> {
        let name = proto.name.as_str();
        let fail = |reason: String| IrError::bad_tensor(name, reason);
        let dtype = DataType::from_code(proto.data_type)
            .ok_or_else(|| fail(format!("unknown data_type {}", proto.data_type)))?;
        let dims = proto
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| fail(format!("negative dimension {d}"))))
            .collect::<Result<Vec<_>>>()?;
        let numel =
            checked_numel(&dims).ok_or_else(|| fail(format!("shape {dims:?} overflows")))?;
        if dtype == DataType::String {
            return TensorData::from_strings(dims, proto.string_data.clone())
                .map_err(|e| fail(e.to_string()));
        }
        let bytes = if proto.data_location == DataLocation::External as i32 {
            read_external(proto, base_dir)?.into()
        } else if !proto.raw_data.is_empty() {
            proto.raw_data.clone()
        } else {
            typed_field_bytes(proto, dtype).into()
        };
        // Writers may omit the data of an all-zero-sized tensor.
        if numel == 0 && bytes.is_empty() {
            return TensorData::from_bytes(dtype, dims, vec![]);
        }
        TensorData::from_shared(dtype, dims, bytes).map_err(|e| match e {
            IrError::BadTensor { reason, .. } => fail(reason),
            other => other,
        })
    }

    /// Decodes a serialised `TensorProto` (a `.pb` file of the ONNX test suite).
    pub fn decode(bytes: &[u8], base_dir: Option<&Path>) -> Result<(String, Self)> {
        use prost::Message;
        let proto =
            TensorProto::decode(bytes).map_err(|e| IrError::bad_tensor("", e.to_string()))?;
        let data = Self::from_proto(&proto, base_dir)?;
        Ok((proto.name, data))
    }

    /// Encodes as a `TensorProto` named `name` with inline `raw_data`.
    pub fn to_proto(&self, name: &str) -> TensorProto {
        let mut proto = TensorProto {
            name: name.to_string(),
            data_type: self.dtype.code(),
            dims: self.dims.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        };
        match &self.storage {
            Storage::Bytes(b) => proto.raw_data = b.clone(),
            Storage::Strings(s) => proto.string_data = s.clone(),
        }
        proto
    }
}

/// Unpacks 4-bit values (low nibble first), sign-extending when `signed`.
pub fn unpack_nibbles(bytes: &[u8], numel: usize, signed: bool) -> Vec<i8> {
    (0..numel)
        .map(|i| {
            let nib = (bytes[i / 2] >> ((i % 2) * 4)) & 0x0f;
            if signed && nib & 0x08 != 0 {
                (nib | 0xf0) as i8
            } else {
                nib as i8
            }
        })
        .collect()
}

/// Packs 4-bit values two per byte, low nibble first.
pub fn pack_nibbles(values: &[i8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|p| (p[0] as u8 & 0x0f) | (p.get(1).map_or(0, |&v| v as u8 & 0x0f) << 4))
        .collect()
}

fn typed_field_bytes(proto: &TensorProto, dtype: DataType) -> Vec<u8> {
    use DataType::*;
    let mut out = Vec::new();
    match dtype {
        Float | Complex64 => proto.float_data.iter().for_each(|v| v.put(&mut out)),
        Double | Complex128 => proto.double_data.iter().for_each(|v| v.put(&mut out)),
        Int64 => proto.int64_data.iter().for_each(|v| v.put(&mut out)),
        Uint32 => proto
            .uint64_data
            .iter()
            .for_each(|&v| (v as u32).put(&mut out)),
        Uint64 => proto.uint64_data.iter().for_each(|v| v.put(&mut out)),
        Int32 => proto.int32_data.iter().for_each(|v| v.put(&mut out)),
        Int16 => proto
            .int32_data
            .iter()
            .for_each(|&v| (v as i16).put(&mut out)),
        Uint16 | Float16 | Bfloat16 => proto
            .int32_data
            .iter()
            .for_each(|&v| (v as u16).put(&mut out)),
        Int8 | Uint8 | Bool | Float8E4M3FN | Float8E4M3FNUZ | Float8E5M2 | Float8E5M2FNUZ
        | Int4 | Uint4 | Float4E2M1 => proto.int32_data.iter().for_each(|&v| out.push(v as u8)),
        String => {}
    }
    out
}

/// Checks that an external-data location stays inside the model's folder.
pub fn check_relative_location(location: &str) -> std::result::Result<(), String> {
    let path = Path::new(location);
    if location.is_empty() || path.is_absolute() {
        return Err(format!(
            "external data location '{location}' must be a relative path"
        ));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location '{location}' leaves the model's folder"
        ));
    }
    Ok(())
}

/// The real path of external data file `location` under the model's folder `base`:
/// symbolic links are resolved before the containment check, so a link cannot point outside
/// the folder, and only a regular file is accepted (opening a FIFO or a device would block
/// or read without end).
fn resolve_external(base: &Path, location: &str) -> Result<PathBuf> {
    let joined = base.join(location);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IrError::Io { path, source }
    };
    let folder = std::fs::canonicalize(if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    })
    .map_err(io(base))?;
    let real = std::fs::canonicalize(&joined).map_err(io(&joined))?;
    if !real.starts_with(&folder) {
        return Err(IrError::invalid(format!(
            "external data location '{location}' resolves to {}, outside the model's folder {}",
            real.display(),
            folder.display()
        )));
    }
    let kind = std::fs::metadata(&real).map_err(io(&real))?.file_type();
    if !kind.is_file() {
        return Err(IrError::invalid(format!(
            "external data location '{location}' is not a regular file"
        )));
    }
    Ok(real)
}

fn external_entry<'a>(entries: &'a [StringStringEntryProto], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

fn read_external(proto: &TensorProto, base_dir: Option<&Path>) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |reason: String| IrError::bad_tensor(&proto.name, reason);
    let location = external_entry(&proto.external_data, "location")
        .ok_or_else(|| fail("external data without a location".into()))?;
    check_relative_location(location).map_err(fail)?;
    let parse = |key: &str| -> Result<Option<u64>> {
        external_entry(&proto.external_data, key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| fail(format!("external data {key} '{v}' is not a number")))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;
    let base = base_dir.ok_or_else(|| fail("external data needs the model's folder".into()))?;
    let path = resolve_external(base, location).map_err(|e| match e {
        IrError::Invalid(reason) => fail(reason),
        other => other,
    })?;
    let io = |source| IrError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(fail(format!(
            "external data [{offset}, {offset}+{length}) is outside {} ({size} bytes)",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; length as usize];
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_keeps_values() {
        let t = TensorData::from_slice(vec![2, 2], &[1.5f32, -2.0, 0.0, 7.25]).unwrap();
        let back = TensorData::from_proto(&t.to_proto("w"), None).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.5, -2.0, 0.0, 7.25]);
    }

    #[test]
    fn typed_fields_decode_like_raw_data() {
        let proto = TensorProto {
            name: "x".into(),
            data_type: DataType::Int8.code(),
            dims: vec![3],
            int32_data: vec![-1, 5, 127],
            ..Default::default()
        };
        let t = TensorData::from_proto(&proto, None).unwrap();
        assert_eq!(t.to_vec::<i8>().unwrap(), vec![-1, 5, 127]);
        assert_eq!(t.to_i64_vec().unwrap(), vec![-1, 5, 127]);
    }

    #[test]
    fn wrong_byte_count_is_an_error_naming_the_tensor() {
        let proto = TensorProto {
            name: "w".into(),
            data_type: DataType::Float.code(),
            dims: vec![4],
            raw_data: vec![0; 12].into(),
            ..Default::default()
        };
        let err = TensorData::from_proto(&proto, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tensor 'w'") && err.contains("expected 16"),
            "{err}"
        );
    }

    #[test]
    fn nibbles_pack_and_unpack() {
        let v = [-8i8, 7, 3, -1, 0];
        let packed = pack_nibbles(&v);
        assert_eq!(packed.len(), 3);
        assert_eq!(unpack_nibbles(&packed, 5, true), v.to_vec());
    }

    #[test]
    fn external_locations_must_stay_inside() {
        assert!(check_relative_location("w.bin").is_ok());
        assert!(check_relative_location("/etc/passwd").is_err());
        assert!(check_relative_location("../w.bin").is_err());
        assert!(check_relative_location("a/../../w.bin").is_err());
    }
}
