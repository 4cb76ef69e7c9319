//! Errors of the executor.

use whittle_ir::IrError;

/// What can go wrong while preparing or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The model uses an operator whittle does not implement.
    #[error("node '{node}': operator '{op}' (domain '{domain}') is not supported by whittle")]
    Unsupported {
        node: String,
        op: String,
        domain: String,
    },
    /// A kind of value the executor cannot hold: an element type such as float8, string or
    /// complex, or a sequence, map or optional value. `what` names it; a run turns it into
    /// [`ExecError::Unsupported`] naming the node.
    #[error("{what} is not supported by the executor")]
    UnsupportedType { what: String },
    /// An operator failed; `node` and `op` say where.
    #[error("node '{node}' ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    /// A caller-supplied input is missing or does not match the graph's declaration.
    #[error("input '{name}': {reason}")]
    Input { name: String, reason: String },
    /// An error of the IR (bad tensor data, bad attribute, invalid graph).
    #[error(transparent)]
    Ir(#[from] IrError),
    /// Any other failure, described by its message.
    #[error("{0}")]
    Msg(String),
}

/// Result alias of the executor.
pub type Result<T> = std::result::Result<T, ExecError>;

impl ExecError {
    /// An error described by `msg`.
    pub fn msg(msg: impl Into<String>) -> Self {
        ExecError::Msg(msg.into())
    }
}

impl From<candle_core::Error> for ExecError {
    fn from(e: candle_core::Error) -> Self {
        // candle errors carry a backtrace-sized context; the first line says what happened.
        let text = e.to_string();
        ExecError::Msg(text.lines().next().unwrap_or("tensor error").to_string())
    }
}

/// Returns early with an [`ExecError::Msg`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::ExecError::Msg(format!($($arg)*)))
    };
}
