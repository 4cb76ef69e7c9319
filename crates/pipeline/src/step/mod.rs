//! Steps: each technique as `Step::run(&mut Ctx, Model) -> (Model, StepReport)`, and
//! [`StepConfig`], the serde enum of every step's configuration that recipes list.

pub mod continual;
pub mod distill;
pub mod evaluate;
pub mod factorize;
pub mod fp16;
pub mod int4;
pub mod optimize;
pub mod prune;
pub mod qat;
pub mod quantize;
pub mod train;
pub mod verify;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
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
    /// Folder for intermediate files (checkpoints, models timed in ONNX Runtime), if the
    /// caller gives one; else the system's temporary folder.
    pub work_dir: Option<PathBuf>,
    /// The model the previous step started from: what a `verify` step compares against
    /// (None before the first step has run).
    pub reference: Option<Model>,
}

impl<'o> Ctx<'o> {
    /// A context reporting to `observer`, seed 0, default threads, no work folder, no
    /// reference model.
    pub fn new(observer: &'o dyn Observer) -> Self {
        Ctx {
            observer,
            threads: None,
            seed: 0,
            work_dir: None,
            reference: None,
        }
    }

    /// The folder for intermediate files: [`Ctx::work_dir`], else the temporary folder.
    pub fn scratch_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// What a step did: its name, its own report as JSON, and lines for a human.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    /// The step's kind ("quantize", "prune", ...).
    pub step: String,
    /// The step's own report (the technique's report struct, serialized).
    pub details: serde_json::Value,
    /// A few lines saying what the step did, for a terminal.
    #[serde(default)]
    pub summary: Vec<String>,
}

impl StepReport {
    /// A report of step `step` with `details` (any serializable report) and `summary`.
    pub fn new(step: &str, details: &impl Serialize, summary: Vec<String>) -> Result<Self> {
        let details = serde_json::to_value(details).map_err(|e| {
            crate::PipelineError::invalid(format!("the {step} step's report"), e.to_string())
        })?;
        Ok(StepReport {
            step: step.to_string(),
            details,
            summary,
        })
    }
}

/// One technique with its configuration.
pub trait Step {
    /// The step's kind, as recipes name it.
    fn name(&self) -> &'static str;
    /// Runs the step on `model`.
    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)>;
    /// The data sources the step reads (dataset SPECs): part of its result's cache key.
    fn data_specs(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Model files the step reads besides its input (a teacher): their contents are part of
    /// its cache key.
    fn model_files(&self) -> Vec<&std::path::Path> {
        Vec::new()
    }
    /// Whether the step reads [`Ctx::reference`] (its cache key then holds the reference).
    fn uses_reference(&self) -> bool {
        false
    }
}

/// Every step's configuration, tagged by `step = "NAME"` in a recipe; unknown keys are
/// refused, missing ones take the CLI's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepConfig {
    /// Lossless graph optimization.
    Optimize(optimize::Optimize),
    /// INT8 post-training quantization (static or dynamic).
    Quantize(quantize::Quantize),
    /// Half-precision floats.
    Fp16(fp16::Fp16),
    /// 4-bit weight-only quantization.
    Int4(int4::Int4),
    /// Outputs compared with the previous step's input model.
    Verify(verify::Verify),
    /// Measurements of the model, which passes on unchanged.
    Evaluate(evaluate::Evaluate),
    /// Training on labelled data (`finetune` is the same step).
    #[serde(alias = "finetune")]
    Train(train::TrainStep),
    /// Weight or channel pruning, with optional fine-tuning.
    Prune(prune::PruneStep),
    /// Quantization-aware training, exported as a QDQ model.
    Qat(qat::Qat),
    /// Knowledge distillation of a teacher into the model.
    Distill(distill::Distill),
    /// Low-rank factorization of weights by truncated SVD.
    Factorize(factorize::Factorize),
    /// Continual learning over a scenario's tasks, with LoRA and compression.
    Continual(continual::ContinualStep),
}

impl StepConfig {
    /// The configured step.
    pub fn step(&self) -> &dyn Step {
        match self {
            StepConfig::Optimize(s) => s,
            StepConfig::Quantize(s) => s,
            StepConfig::Fp16(s) => s,
            StepConfig::Int4(s) => s,
            StepConfig::Verify(s) => s,
            StepConfig::Evaluate(s) => s,
            StepConfig::Train(s) => s,
            StepConfig::Prune(s) => s,
            StepConfig::Qat(s) => s,
            StepConfig::Distill(s) => s,
            StepConfig::Factorize(s) => s,
            StepConfig::Continual(s) => s,
        }
    }
}
