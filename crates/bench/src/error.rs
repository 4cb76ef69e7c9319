//! Errors of profiling and benchmarking.

/// Everything that can stop a profile or a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option or an input shape is not usable; the message names the option or input.
    #[error("{0}")]
    Invalid(String),
    /// Reading the model or inferring its shapes failed.
    #[error(transparent)]
    Ir(#[from] whittle_ir::IrError),
    /// whittle's executor failed.
    #[error(transparent)]
    Exec(#[from] whittle_exec::ExecError),
    /// ONNX Runtime could not be found, loaded or run.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

impl From<ort::Error> for BenchError {
    fn from(e: ort::Error) -> Self {
        BenchError::Ort(e.to_string())
    }
}

/// Result of profiling and benchmarking.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Returns early with a [`BenchError::Invalid`] built from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::BenchError::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;
