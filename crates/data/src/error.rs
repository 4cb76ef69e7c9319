//! Errors of the data layer.

use std::path::PathBuf;

/// Everything that can go wrong while reading files or building a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Opening, reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are malformed (truncated, bad magic, size mismatch, ...).
    #[error("{file}: {reason}")]
    Format {
        /// The file (or in-memory source) at fault.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A dataset spec is malformed or names data that cannot be used.
    #[error("dataset '{spec}': {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Data that cannot form a dataset (count mismatch, label out of range, empty, ...).
    #[error("{0}")]
    Invalid(String),
    /// A tensor could not be built or converted.
    #[error(transparent)]
    Tensor(#[from] whittle_ir::IrError),
}

/// Result alias of the data layer.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// Shorthand for [`DataError::Format`].
    pub fn format(file: &str, reason: impl Into<String>) -> Self {
        DataError::Format {
            file: file.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DataError::Spec`].
    pub fn spec(spec: &str, reason: impl Into<String>) -> Self {
        DataError::Spec {
            spec: spec.to_string(),
            reason: reason.into(),
        }
    }
}
