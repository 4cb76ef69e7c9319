//! Pruning: zero (or remove) weights so the model gets sparse, keep it sparse while it is
//! fine-tuned, and report how sparse each layer ended.
//!
//! A method is a [`Pruner`]: a one-shot function from a model and a target sparsity to
//! the pruned model and the masks fine-tuning must keep. The schedule drivers in
//! [`driver`] (one-shot, iterative, gradual) work with any pruner.
//!
//! Unstructured methods ([`Unstructured`]): per-layer magnitude, one global magnitude
//! threshold, a seeded random baseline and N:M (e.g. 2:4) along the reduction dimension.
//! They prune the weight initializers of Conv, Gemm and MatMul nodes ([`layers`]); biases
//! and normalisation parameters are never pruned.
//!
//! Structured channel pruning ([`channel`]) removes whole channels, found as coupled groups
//! by a dependency graph, so the model gets fewer parameters and MACs; its pruner returns
//! no masks, since nothing is left to keep at zero.
//!
//! ```no_run
//! # fn main() -> whittle_passes::Result<()> {
//! use whittle_passes::prune::{driver, Method, Unstructured};
//! let model = whittle_ir::Model::load("model.onnx")?;
//! let pruner = Unstructured::new(Method::Magnitude, Vec::new())?;
//! let pruned = driver::oneshot(&pruner, &model, 0.5, None)?;
//! pruned.model.save("sparse.onnx", &Default::default())?;
//! # Ok(()) }
//! ```

pub mod channel;
pub mod driver;
pub mod finetune;
pub mod layers;
pub mod magnitude;
pub mod mask;
pub mod nm;
pub mod report;
pub mod schedule;
pub mod unstructured;

pub use driver::FineTune;
pub use layers::{prunable_layers, LayerWeights, PrunableLayer};
pub use mask::Mask;
pub use report::{gzip_size, LayerSparsity, SparsityReport};
pub use schedule::{Curve, GradualSchedule};
pub use unstructured::{Method, Unstructured};

use whittle_ir::Model;

use crate::Result;

/// The result of pruning a model once.
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The pruned model.
    pub model: Model,
    /// Which weights must stay zero while fine-tuning (empty when nothing needs masking,
    /// e.g. after channels were removed from the graph).
    pub masks: Vec<Mask>,
    /// Remarks for the user (e.g. layers a global threshold pruned almost entirely).
    pub notes: Vec<String>,
}

impl<P: Pruner + ?Sized> Pruner for &P {
    fn prune(&self, model: &Model, sparsity: f64) -> Result<Pruned> {
        (**self).prune(model, sparsity)
    }

    fn fixed_sparsity(&self) -> bool {
        (**self).fixed_sparsity()
    }
}

/// A pruning method: prunes a model to a target sparsity in one shot.
pub trait Pruner {
    /// `model` pruned to `sparsity` (fraction of prunable weights set to zero or removed,
    /// in [0, 1)); methods with a fixed sparsity (N:M) ignore it.
    fn prune(&self, model: &Model, sparsity: f64) -> Result<Pruned>;

    /// Whether the method sets its own sparsity (N:M), so that iterative and gradual
    /// schedules do not apply.
    fn fixed_sparsity(&self) -> bool {
        false
    }
}
