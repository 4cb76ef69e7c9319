//! Steps: each technique as `Step::run(&mut Ctx, Model) -> (Model, StepReport)`.

use std::path::PathBuf;

use serde::Serialize;
use whittle_ir::Model;

use crate::observer::Observer;
use crate::Result;

/// What every step may use besides its model: where progress goes and shared settings.
pub struct Ctx<'o> {
    /// Receives progress and log lines.
    pub observer: &'o dyn Observer,
    /// Threads for the executor and ONNX Runtime (None: one per core).
    pub threads: Option<usize>,
    /// Seed of every random choice (data order, synthetic inputs, initialisation).
    pub seed: u64,
    /// Folder for intermediate files (checkpoints), if the caller gives one.
    pub work_dir: Option<PathBuf>,
}

impl<'o> Ctx<'o> {
    /// A context reporting to `observer`, seed 0, default threads, no work folder.
    pub fn new(observer: &'o dyn Observer) -> Self {
        Ctx {
            observer,
            threads: None,
            seed: 0,
            work_dir: None,
        }
    }
}

/// What a step did: its name, its own report as JSON, and lines for a human.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// The step's kind ("quantize", "prune", ...).
    pub step: String,
    /// The step's own report (the technique's report struct, serialized).
    pub details: serde_json::Value,
}

/// One technique with its configuration.
pub trait Step {
    /// The step's kind, as recipes name it.
    fn name(&self) -> &'static str;
    /// Runs the step on `model`.
    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)>;
}
