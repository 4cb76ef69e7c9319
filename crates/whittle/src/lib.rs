//! whittle makes ONNX models smaller and faster and measures what that costs: quantization,
//! pruning, distillation, low-rank factorization, graph optimization and training, in Rust.
//!
//! This crate is the one dependency a Rust program needs. [`prelude`] brings what a
//! compression workflow uses; each layer is also reachable as a module ([`ir`], [`exec`],
//! [`data`], [`passes`], [`train`], [`zoo`], [`bench`], [`pipeline`]).
//!
//! Load LeNet5, quantize it to INT8 with 256 MNIST calibration images, measure it and save it:
//!
//! ```
//! use whittle::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let assets = std::env::var("WHITTLE_ASSETS").map(std::path::PathBuf::from).unwrap_or_else(
//! #     |_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/whittle-assets"));
//! # let lenet5 = assets.join("models/mnist_lenet5.onnx").display().to_string();
//! # let mnist = format!("mnist:{}", assets.join("mnist").display());
//! # let out = std::env::temp_dir().join(format!("whittle-doctest-{}.onnx", std::process::id()));
//! let model = ModelSource::parse(&lenet5).load()?;
//! let observer = SilentObserver;
//! let mut ctx = Ctx::new(&observer);
//!
//! let quantize = Quantize {
//!     calib_data: Some(mnist.clone()),
//!     calib_samples: Some(256),
//!     ..Quantize::default()
//! };
//! let (int8, _report) = quantize.run(&mut ctx, model.clone())?;
//!
//! let inputs = model_inputs(&model);
//! let test = DataSource::new(&mnist).load(&inputs, Split::Test, Some(1000))?;
//! let metrics = Evaluator::new().with_labelled(test, 100).with_cost();
//! let (before, after) = (metrics.evaluate(&ctx, &model)?, metrics.evaluate(&ctx, &int8)?);
//! assert!(after.size_bytes < before.size_bytes);
//! assert!(after.top1.unwrap() > before.top1.unwrap() - 0.01);
//!
//! int8.save(&out, &ExternalData::Auto)?;
//! # std::fs::remove_file(&out).ok();
//! # Ok(())
//! # }
//! ```

pub use whittle_bench as bench;
pub use whittle_data as data;
pub use whittle_exec as exec;
pub use whittle_ir as ir;
pub use whittle_passes as passes;
pub use whittle_pipeline as pipeline;
pub use whittle_train as train;
pub use whittle_zoo as zoo;

pub use whittle_pipeline::{PipelineError as Error, Result};

/// What a compression workflow uses: models and data, steps and their configurations, the
/// evaluator, recipes and the report.
pub mod prelude {
    pub use whittle_data::Split;
    pub use whittle_exec::model_inputs;
    pub use whittle_ir::{ExternalData, Model};
    pub use whittle_pipeline::eval::{Evaluator, Metrics};
    pub use whittle_pipeline::step::fp16::Fp16;
    pub use whittle_pipeline::step::int4::Int4;
    pub use whittle_pipeline::step::optimize::Optimize;
    pub use whittle_pipeline::step::prune::PruneStep;
    pub use whittle_pipeline::step::quantize::Quantize;
    pub use whittle_pipeline::step::train::TrainStep;
    pub use whittle_pipeline::step::verify::Verify;
    pub use whittle_pipeline::step::StepConfig;
    pub use whittle_pipeline::{
        Ctx, DataSource, Event, ModelSource, Observer, SilentObserver, Step, StepReport,
    };
}
