//! Errors of training.

/// Everything that can stop training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting, the data or the model does not allow training; the message names the
    /// option, tensor or node at fault.
    #[error("{0}")]
    Invalid(String),
    /// Reading or editing the IR failed.
    #[error(transparent)]
    Ir(#[from] whittle_ir::IrError),
    /// Running the model failed.
    #[error(transparent)]
    Exec(#[from] whittle_exec::ExecError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// Loading data failed.
    #[error(transparent)]
    Data(#[from] whittle_data::DataError),
    /// Reading or writing a checkpoint failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result of training operations.
pub type Result<T> = std::result::Result<T, TrainError>;

/// Returns early with a [`TrainError::Invalid`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::TrainError::Invalid(format!($($arg)*)))
    };
}
