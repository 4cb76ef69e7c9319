//! Typed access to node attributes, with errors that name the node.

use crate::error::{IrError, Result};
use crate::proto::{AttributeProto, AttributeType, GraphProto, NodeProto, TensorProto};

/// Typed attribute getters on a node. Each `_or` variant returns the default when absent
/// and an error naming the node when present with the wrong type.
pub trait NodeAttrs {
    /// The raw attribute, if present.
    fn attr(&self, name: &str) -> Option<&AttributeProto>;
    /// Error for attribute `name` of this node.
    fn attr_error(&self, name: &str, reason: &str) -> IrError;
    /// An INT attribute.
    fn int(&self, name: &str) -> Result<Option<i64>>;
    /// A FLOAT attribute.
    fn float(&self, name: &str) -> Result<Option<f32>>;
    /// An INTS attribute.
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>>;
    /// A FLOATS attribute.
    fn floats(&self, name: &str) -> Result<Option<Vec<f32>>>;
    /// A STRING attribute, decoded as UTF-8.
    fn string(&self, name: &str) -> Result<Option<String>>;
    /// A STRINGS attribute, decoded as UTF-8.
    fn strings(&self, name: &str) -> Result<Option<Vec<String>>>;
    /// A TENSOR attribute.
    fn tensor(&self, name: &str) -> Result<Option<&TensorProto>>;
    /// A GRAPH attribute.
    fn graph(&self, name: &str) -> Result<Option<&GraphProto>>;

    /// INT attribute or `default`.
    fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }
    /// FLOAT attribute or `default`.
    fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }
    /// STRING attribute or `default`.
    fn string_or(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }
}

/// The type an attribute declares, inferring it from the populated field for old writers.
pub fn attr_type(a: &AttributeProto) -> AttributeType {
    if let Ok(t) = AttributeType::try_from(a.r#type) {
        if t != AttributeType::Undefined {
            return t;
        }
    }
    if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.s.is_empty() {
        AttributeType::String
    } else if a.f != 0.0 {
        AttributeType::Float
    } else {
        AttributeType::Int
    }
}

impl NodeAttrs for NodeProto {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name == name)
    }

    fn attr_error(&self, name: &str, reason: &str) -> IrError {
        IrError::BadAttribute {
            node: self.name.clone(),
            op: self.op_type.clone(),
            attr: name.to_string(),
            reason: reason.to_string(),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>> {
        typed(self, name, AttributeType::Int, |a| a.i)
    }

    fn float(&self, name: &str) -> Result<Option<f32>> {
        typed(self, name, AttributeType::Float, |a| a.f)
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        typed(self, name, AttributeType::Ints, |a| a.ints.clone())
    }

    fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        typed(self, name, AttributeType::Floats, |a| a.floats.clone())
    }

    fn string(&self, name: &str) -> Result<Option<String>> {
        typed(self, name, AttributeType::String, |a| a.s.clone())?
            .map(|s| String::from_utf8(s).map_err(|_| self.attr_error(name, "is not UTF-8")))
            .transpose()
    }

    fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        typed(self, name, AttributeType::Strings, |a| a.strings.clone())?
            .map(|v| {
                v.into_iter()
                    .map(|s| {
                        String::from_utf8(s).map_err(|_| self.attr_error(name, "is not UTF-8"))
                    })
                    .collect()
            })
            .transpose()
    }

    fn tensor(&self, name: &str) -> Result<Option<&TensorProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.attr_error(name, "is not a tensor"))
            }
        }
    }

    fn graph(&self, name: &str) -> Result<Option<&GraphProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                a.g.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.attr_error(name, "is not a graph"))
            }
        }
    }
}

fn typed<T>(
    node: &NodeProto,
    name: &str,
    want: AttributeType,
    get: impl Fn(&AttributeProto) -> T,
) -> Result<Option<T>> {
    match node.attr(name) {
        None => Ok(None),
        Some(a) if !a.ref_attr_name.is_empty() => Err(node.attr_error(
            name,
            "refers to a function attribute, which only functions may use",
        )),
        Some(a) => {
            let got = attr_type(a);
            if got == want {
                Ok(Some(get(a)))
            } else {
                Err(node.attr_error(name, &format!("is {got:?}, expected {want:?}")))
            }
        }
    }
}

/// Builders for attributes, used by passes that create nodes.
pub mod make {
    use super::*;

    /// An INT attribute.
    pub fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i: v,
            ..Default::default()
        }
    }
    /// A FLOAT attribute.
    pub fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Float as i32,
            f: v,
            ..Default::default()
        }
    }
    /// An INTS attribute.
    pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }
    /// A STRING attribute.
    pub fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::String as i32,
            s: v.as_bytes().to_vec(),
            ..Default::default()
        }
    }
    /// A TENSOR attribute.
    pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Tensor as i32,
            t: Some(t),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_check_types_and_name_the_node() {
        let node = NodeProto {
            name: "conv1".into(),
            op_type: "Conv".into(),
            attribute: vec![make::ints("strides", &[2, 2]), make::int("group", 1)],
            ..Default::default()
        };
        assert_eq!(node.ints("strides").unwrap(), Some(vec![2, 2]));
        assert_eq!(node.int_or("group", 7).unwrap(), 1);
        assert_eq!(node.int_or("missing", 7).unwrap(), 7);
        let err = node.int("strides").unwrap_err().to_string();
        assert!(err.contains("conv1") && err.contains("strides"), "{err}");
    }
}
