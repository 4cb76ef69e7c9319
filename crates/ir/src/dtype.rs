//! ONNX element types (`TensorProto.DataType`).

use std::fmt;

/// An ONNX tensor element type, numbered as in onnx.proto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum DataType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Uint16 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    String = 8,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    Uint32 = 12,
    Uint64 = 13,
    Complex64 = 14,
    Complex128 = 15,
    Bfloat16 = 16,
    Float8E4M3FN = 17,
    Float8E4M3FNUZ = 18,
    Float8E5M2 = 19,
    Float8E5M2FNUZ = 20,
    Uint4 = 21,
    Int4 = 22,
    Float4E2M1 = 23,
}

impl DataType {
    /// All element types, in onnx.proto order.
    pub const ALL: [DataType; 23] = [
        DataType::Float,
        DataType::Uint8,
        DataType::Int8,
        DataType::Uint16,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::String,
        DataType::Bool,
        DataType::Float16,
        DataType::Double,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Complex64,
        DataType::Complex128,
        DataType::Bfloat16,
        DataType::Float8E4M3FN,
        DataType::Float8E4M3FNUZ,
        DataType::Float8E5M2,
        DataType::Float8E5M2FNUZ,
        DataType::Uint4,
        DataType::Int4,
        DataType::Float4E2M1,
    ];

    /// The type with onnx.proto number `code`, if there is one.
    pub fn from_code(code: i32) -> Option<DataType> {
        DataType::ALL.iter().copied().find(|d| *d as i32 == code)
    }

    /// The onnx.proto number of this type.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Bytes per element, or `None` for strings and sub-byte types.
    pub fn size(self) -> Option<usize> {
        use DataType::*;
        match self {
            Uint8 | Int8 | Bool | Float8E4M3FN | Float8E4M3FNUZ | Float8E5M2 | Float8E5M2FNUZ => {
                Some(1)
            }
            Uint16 | Int16 | Float16 | Bfloat16 => Some(2),
            Float | Int32 | Uint32 => Some(4),
            Double | Int64 | Uint64 | Complex64 => Some(8),
            Complex128 => Some(16),
            String | Uint4 | Int4 | Float4E2M1 => None,
        }
    }

    /// Bytes needed to store `n` elements of this type in `raw_data` (None for strings).
    pub fn storage_bytes(self, n: usize) -> Option<usize> {
        match self {
            DataType::Uint4 | DataType::Int4 | DataType::Float4E2M1 => Some(n.div_ceil(2)),
            _ => self.size().and_then(|s| n.checked_mul(s)),
        }
    }

    /// True for the IEEE-like floating types whitle computes with (f16, bf16, f32, f64).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16
        )
    }

    /// True for signed and unsigned integer types of 8 bits or more.
    pub fn is_integer(self) -> bool {
        use DataType::*;
        matches!(
            self,
            Uint8 | Int8 | Uint16 | Int16 | Int32 | Int64 | Uint32 | Uint64
        )
    }

    /// Smallest and largest value of an integer type as `i128` (`None` otherwise).
    pub fn int_range(self) -> Option<(i128, i128)> {
        use DataType::*;
        Some(match self {
            Uint8 => (0, u8::MAX as i128),
            Int8 => (i8::MIN as i128, i8::MAX as i128),
            Uint16 => (0, u16::MAX as i128),
            Int16 => (i16::MIN as i128, i16::MAX as i128),
            Int32 => (i32::MIN as i128, i32::MAX as i128),
            Uint32 => (0, u32::MAX as i128),
            Int64 => (i64::MIN as i128, i64::MAX as i128),
            Uint64 => (0, u64::MAX as i128),
            Int4 => (-8, 7),
            Uint4 => (0, 15),
            Bool => (0, 1),
            _ => return None,
        })
    }

    /// The name onnx.proto gives this type (e.g. `FLOAT`, `INT8`).
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Float => "FLOAT",
            Uint8 => "UINT8",
            Int8 => "INT8",
            Uint16 => "UINT16",
            Int16 => "INT16",
            Int32 => "INT32",
            Int64 => "INT64",
            String => "STRING",
            Bool => "BOOL",
            Float16 => "FLOAT16",
            Double => "DOUBLE",
            Uint32 => "UINT32",
            Uint64 => "UINT64",
            Complex64 => "COMPLEX64",
            Complex128 => "COMPLEX128",
            Bfloat16 => "BFLOAT16",
            Float8E4M3FN => "FLOAT8E4M3FN",
            Float8E4M3FNUZ => "FLOAT8E4M3FNUZ",
            Float8E5M2 => "FLOAT8E5M2",
            Float8E5M2FNUZ => "FLOAT8E5M2FNUZ",
            Uint4 => "UINT4",
            Int4 => "INT4",
            Float4E2M1 => "FLOAT4E2M1",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name().to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_code(d.code()), Some(d));
        }
        assert_eq!(DataType::from_code(0), None);
        assert_eq!(DataType::from_code(99), None);
    }

    #[test]
    fn storage_of_sub_byte_types_is_packed() {
        assert_eq!(DataType::Int4.storage_bytes(5), Some(3));
        assert_eq!(DataType::Float.storage_bytes(5), Some(20));
        assert_eq!(DataType::String.storage_bytes(5), None);
    }
}
