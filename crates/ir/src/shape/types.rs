//! The public type of a value ([`TensorType`], made of [`Dim`]s), its display form and
//! its conversions from and to ONNX `ValueInfoProto` / `TypeProto`.

use std::fmt;

use crate::dtype::DataType;
use crate::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Known(usize),
    /// A named size (`dim_param`), equal wherever the same name appears.
    Symbol(String),
    /// Nothing is known about the size.
    Unknown,
}

/// The inferred type of a value: element type and dimensions, each possibly unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorType {
    /// Element type (`None`: unknown).
    pub dtype: Option<DataType>,
    /// Dimensions (`None`: unknown rank).
    pub dims: Option<Vec<Dim>>,
}

impl TensorType {
    /// A fully known type.
    pub fn known(dtype: DataType, dims: &[usize]) -> Self {
        TensorType {
            dtype: Some(dtype),
            dims: Some(fixed(dims)),
        }
    }

    /// Rank, when known.
    pub fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    /// The dimensions when every one of them is a known number.
    pub fn known_dims(&self) -> Option<Vec<usize>> {
        known(self.dims.as_deref()?)
    }

    /// The type of a `ValueInfoProto` (non-tensor types are unknown; a `dim_param` of
    /// `?` is an unknown size, not a symbol).
    pub fn from_value_info(vi: &ValueInfoProto) -> Self {
        let Some(type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return TensorType::default();
        };
        let dims = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                    // Some exporters (Paddle) write "?" for every unknown size.
                    Some(dimension::Value::DimParam(p)) if !p.is_empty() && p != "?" => {
                        Dim::Symbol(p.clone())
                    }
                    _ => Dim::Unknown,
                })
                .collect()
        });
        TensorType {
            dtype: DataType::from_code(t.elem_type),
            dims,
        }
    }

    /// A `ValueInfoProto` declaring `name` with this type.
    pub fn to_value_info(&self, name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(self.to_type_proto()),
            ..Default::default()
        }
    }

    /// This type as a `TypeProto` (unknown element type is written as 0, UNDEFINED).
    pub fn to_type_proto(&self) -> TypeProto {
        let shape = self.dims.as_ref().map(|dims| TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dimension {
                    value: match d {
                        Dim::Known(n) => Some(dimension::Value::DimValue(*n as i64)),
                        Dim::Symbol(s) => Some(dimension::Value::DimParam(s.clone())),
                        Dim::Unknown => None,
                    },
                    denotation: String::new(),
                })
                .collect(),
        });
        TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: self.dtype.map_or(0, DataType::code),
                shape,
            })),
            denotation: String::new(),
        }
    }

    /// Fills what this type leaves unknown from `other` (element type, rank, single dims).
    pub(super) fn fill_from(&mut self, other: &TensorType) {
        self.dtype = self.dtype.or(other.dtype);
        match (&mut self.dims, &other.dims) {
            (None, Some(theirs)) => self.dims = Some(theirs.clone()),
            (Some(mine), Some(theirs)) if mine.len() == theirs.len() => {
                for (m, t) in mine.iter_mut().zip(theirs) {
                    if *m == Dim::Unknown {
                        *m = t.clone();
                    }
                }
            }
            _ => {}
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// Formats like `float[N,1,28,28]`; `?` marks an unknown type or dimension, `[*]` an
/// unknown rank.
impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.dims {
            None => f.write_str("[*]"),
            Some(dims) => {
                let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
                write!(f, "[{}]", parts.join(","))
            }
        }
    }
}

/// Known dimensions of the given sizes.
pub(super) fn fixed(dims: &[usize]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

/// The dimensions when every one is a known number.
pub(super) fn known(dims: &[Dim]) -> Option<Vec<usize>> {
    dims.iter()
        .map(|d| match d {
            Dim::Known(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DataType::{Float, Int64};
    use crate::shape::test_util::parse_dims;

    #[test]
    fn display_and_value_info() {
        let ty = TensorType {
            dtype: Some(Float),
            dims: Some(parse_dims("N,1,?,28")),
        };
        assert_eq!(ty.to_string(), "float[N,1,?,28]");
        assert_eq!(TensorType::known(Int64, &[]).to_string(), "int64[]");
        assert_eq!(TensorType::default().to_string(), "?[*]");
        let written = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Float.code(),
                    shape: Some(TensorShapeProto {
                        dim: ["?", "N"]
                            .map(|p| Dimension {
                                value: Some(dimension::Value::DimParam(p.into())),
                                denotation: String::new(),
                            })
                            .to_vec(),
                    }),
                })),
                denotation: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(
            TensorType::from_value_info(&written).to_string(),
            "float[?,N]"
        );
    }
}
