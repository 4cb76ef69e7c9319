//! whittle's ONNX-faithful intermediate representation.
//!
//! A [`Model`] holds the ONNX protobuf message exactly as read ([`proto`]), so whatever
//! goes in as ONNX comes out as ONNX. Around it: exact host tensors ([`TensorData`]),
//! typed attribute access ([`NodeAttrs`]), graph queries and edits ([`GraphEdit`]),
//! structural validation ([`validate()`]) and shape/type inference ([`shape`]).

pub mod attr;
pub mod cost;
pub mod dtype;
pub mod error;
pub mod files;
pub mod graph;
pub mod memory;
pub mod model;
pub mod numeric;
pub mod proto;
pub mod seed;
pub mod shape;
pub mod tensor;
pub mod validate;

pub use attr::NodeAttrs;
pub use dtype::DataType;
pub use error::{IrError, Result};
pub use graph::GraphEdit;
pub use model::{ExternalData, Model};
pub use shape::{Dim, TensorType};
pub use tensor::{Element, TensorData};
pub use validate::validate;
