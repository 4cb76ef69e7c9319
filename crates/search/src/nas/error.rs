//! Errors of the architecture search: what was refused, or what failed and where.

use whittle_pipeline::PipelineError;

/// What went wrong in a search.
#[derive(Debug, thiserror::Error)]
pub enum NasError {
    /// A setting or input that cannot work, with what to do instead.
    #[error("{0}")]
    Refused(String),
    /// A failure of a lower layer, with what was being done.
    #[error("{context}: {source}")]
    At {
        /// What was being done (naming the candidate or file).
        context: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pipeline step or measurement failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Results of the search.
pub type Result<T> = std::result::Result<T, NasError>;

/// Adds what was being done to any error.
pub trait At<T> {
    /// The error, with `context()` naming what was being done.
    fn at(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> At<T> for std::result::Result<T, E> {
    fn at(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| NasError::At {
            context: context(),
            source: Box::new(e),
        })
    }
}
