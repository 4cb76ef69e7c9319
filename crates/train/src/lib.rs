//! Training of ONNX graphs through whittle's executor: losses, optimizers, learning-rate
//! schedules and the trainer loop that fine-tuning, QAT and distillation share.
//!
//! ```no_run
//! # fn main() -> whittle_train::Result<()> {
//! use whittle_train::{TrainConfig, Trainer};
//! let model = whittle_ir::Model::load("model.onnx")?;
//! let data = whittle_data::load("mnist:DIR", whittle_data::Split::Train, Some(2000))?;
//! let mut trainer = Trainer::new(&model, TrainConfig { epochs: 2, ..Default::default() })?;
//! let report = trainer.fit(&data, None)?;
//! trainer.model()?.save("out.onnx", &Default::default())?;
//! # let _ = report; Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod continual;
pub mod distill;
pub mod error;
pub mod finite;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod params;
pub mod preflight;
pub mod progress;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use error::{Result, TrainError};
pub use optim::{Optimizer, OptimizerConfig, OptimizerKind};
pub use progress::{Progress, TrainEvent};
pub use schedule::{LrSchedule, Schedule};
pub use step::{LossFn, LossInput};
pub use trainer::{
    split_validation, EpochReport, Evaluation, Monitor, StepContext, StepHook, TrainConfig,
    TrainReport, Trainer,
};
