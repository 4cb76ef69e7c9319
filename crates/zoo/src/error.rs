//! Errors of the model zoo.

/// What can go wrong while building a zoo model.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// The name is not one of the zoo's models.
    #[error("unknown model '{name}'; the zoo has: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The zoo's names, comma-separated.
        known: String,
    },
    /// An option is unknown, repeated or has a value that cannot be used.
    #[error("{model}: {message}")]
    BadOption {
        /// The model the option was given to.
        model: String,
        /// What is wrong, naming the option.
        message: String,
    },
    /// The options describe a network that cannot be built (e.g. an input too small).
    #[error("{0}")]
    Build(String),
    /// The IR rejected a tensor or the finished graph.
    #[error(transparent)]
    Ir(#[from] whittle_ir::IrError),
}

/// Result alias of the zoo.
pub type Result<T> = std::result::Result<T, ZooError>;

/// Returns early with a [`ZooError::Build`] made from a format string.
macro_rules! build_bail {
    ($($arg:tt)*) => {
        return Err($crate::error::ZooError::Build(format!($($arg)*)))
    };
}
pub(crate) use build_bail;
