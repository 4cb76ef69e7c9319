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
    #[error("{context}: {}", message(cause))]
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

/// The error and its causes in one line, each cause once: a cause whose text the message
/// already holds (an I/O error that its wrapper prints too) is not repeated.
pub fn message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if message.contains(&cause) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io)
            .context("model.onnx: No such file")
            .context("loading model.onnx");
        assert_eq!(message(&e), "loading model.onnx: model.onnx: No such file");
    }

    #[test]
    fn a_layer_error_holds_its_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = std::result::Result::<(), _>::Err(
            anyhow::Error::new(io).context("m.onnx: No such file"),
        )
        .context(|| "loading m.onnx".to_string())
        .unwrap_err();
        assert_eq!(e.to_string(), "loading m.onnx: m.onnx: No such file");
    }
}
