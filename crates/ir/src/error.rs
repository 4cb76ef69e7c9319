//! Errors of the IR layer.

use std::path::PathBuf;

/// Everything that can go wrong while loading, saving, editing or checking a model.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf message.
    #[error("{path}: not a valid ONNX model ({source})")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    /// A model is structurally wrong (dangling input, cycle, bad tensor, ...).
    #[error("{0}")]
    Invalid(String),
    /// A tensor's data does not match its declared type and shape.
    #[error("tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    /// A node attribute is missing or has the wrong type.
    #[error("node '{node}' ({op}): attribute '{attr}' {reason}")]
    BadAttribute {
        node: String,
        op: String,
        attr: String,
        reason: String,
    },
}

/// Result alias of the IR layer.
pub type Result<T> = std::result::Result<T, IrError>;

impl IrError {
    /// Shorthand for [`IrError::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        IrError::Invalid(msg.into())
    }

    /// Shorthand for [`IrError::BadTensor`].
    pub fn bad_tensor(name: &str, reason: impl Into<String>) -> Self {
        IrError::BadTensor {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
