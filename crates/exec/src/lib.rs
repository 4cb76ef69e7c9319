//! whittle's executor: runs ONNX graphs of the IR on candle-core, forward and backward.
//!
//! [`Executor`] prepares a model once (operators resolved, initializers decoded) and runs
//! it with [`Executor::run`]; [`RunOptions`] adds training mode, kept intermediates and a
//! capture hook. Values are [`Value`]s: an exact ONNX element type beside a candle tensor.

pub mod backward;
pub mod conformance;
pub mod error;
pub mod executor;
pub mod kernels;
pub mod ops;
pub mod plan;
pub mod pool;
pub mod value;

pub use error::{ExecError, Result};
pub use executor::{feed_samples, model_inputs, Executor, InputSpec, RunOptions};
pub use ops::Registry;
pub use value::Value;
