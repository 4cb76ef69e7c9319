//! Errors of the passes.

/// Everything that can stop a pass.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The model is not one the pass can transform, or an option is out of range; the
    /// message names the node, tensor or option at fault.
    #[error("{0}")]
    Invalid(String),
    /// Reading or editing the IR failed.
    #[error(transparent)]
    Ir(#[from] whittle_ir::IrError),
    /// Running the model (calibration, verification, fine-tuning) failed.
    #[error(transparent)]
    Exec(#[from] whittle_exec::ExecError),
    /// Loading data failed.
    #[error(transparent)]
    Data(#[from] whittle_data::DataError),
    /// Fine-tuning (pruning masks kept through training) failed.
    #[error(transparent)]
    Train(#[from] whittle_train::TrainError),
}

/// Result of a pass.
pub type Result<T> = std::result::Result<T, PassError>;

/// Returns early with a [`PassError::Invalid`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::PassError::Invalid(format!($($arg)*)))
    };
}
