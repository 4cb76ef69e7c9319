//! The pipeline's error type.

/// An error of a pipeline step, source or recipe. Messages name the value and the reason
/// (the model file, the dataset spec, the recipe key), never a CLI flag.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A configuration value is invalid; `what` names it.
    #[error("{what}: {reason}")]
    Invalid {
        /// The value at fault (a recipe key, a step option, a source).
        what: String,
        /// Why it is refused.
        reason: String,
    },
    /// A refusal worded as one sentence that names the value at fault.
    #[error("{0}")]
    Refused(String),
    /// An error from a lower layer, with what the pipeline was doing. The message holds
    /// the lower layer's error and its causes, so it is not also given as the `source` (a
    /// printer of the chain would repeat them).
    #[error("{context}: {cause:#}")]
    Layer {
        /// What was being done (the step, the file).
        context: String,
        /// The lower layer's error.
        cause: anyhow::Error,
    },
}

impl PipelineError {
    /// An invalid value named by `what`.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        PipelineError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Returns a [`PipelineError::Refused`] with a `format!` message.
#[macro_export]
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::PipelineError::Refused(format!($($arg)*)))
    };
}

/// Attaches what the pipeline was doing to a lower layer's error.
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| PipelineError::Layer {
            context: context(),
            cause: e.into(),
        })
    }
}

/// The pipeline's result type.
pub type Result<T> = std::result::Result<T, PipelineError>;
