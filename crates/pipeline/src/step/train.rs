//! The `train` step (also `finetune`: both train the weights the model comes with) and what
//! every training step shares: the trainer's settings as a recipe writes them
//! ([`Training`]), labelled training data, and the trainer's events sent to the pipeline's
//! [`Observer`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use whittle_data::{Dataset, Split};
use whittle_exec::model_inputs;
use whittle_ir::Model;
use whittle_passes::prune::finetune::{apply_to_params, mask_tensors, zero_masks};
use whittle_train::trainer::describe_epoch;
use whittle_train::{
    split_validation, Monitor, OptimizerConfig, OptimizerKind, Progress, Schedule, TrainConfig,
    TrainEvent, TrainReport, Trainer,
};

use crate::error::{Context, PipelineError, Result};
use crate::eval::Evaluator;
use crate::observer::{Event, Level, Observer};
use crate::source::DataSource;
use crate::step::{Ctx, Step, StepReport};

/// The trainer's settings as a recipe (or `whittle train`) gives them; every field has the
/// default of `whittle train`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Training {
    /// Epochs.
    pub epochs: usize,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// sgd | adam | adamw.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay (decoupled for adamw).
    pub weight_decay: f64,
    /// The learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Clip gradients to this global L2 norm.
    pub clip_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step.
    pub accumulate: usize,
    /// Initializers not to train: globs, or regexes prefixed with `re:`.
    pub freeze: Vec<String>,
    /// Early stopping: epochs without improvement of `monitor` (needs validation data).
    pub patience: Option<usize>,
    /// What early stopping watches: val-accuracy | val-loss.
    pub monitor: Monitor,
    /// Seed of shuffling, the validation split and dropout (None: the pipeline's seed).
    pub seed: Option<u64>,
    /// Gradient checkpointing: recompute activations in this many graph segments.
    pub recompute_segments: Option<usize>,
    /// Augmentation: pad training images by this many pixels, then crop back at random.
    pub crop_padding: usize,
    /// Augmentation: mirror training images left-right at random.
    pub horizontal_flip: bool,
    /// With validation data, end with the weights of the best epoch.
    pub restore_best: bool,
}

impl Default for Training {
    fn default() -> Self {
        let d = TrainConfig::default();
        Training {
            epochs: d.epochs,
            batch_size: d.batch_size,
            optimizer: d.optimizer.kind,
            lr: d.lr,
            momentum: d.optimizer.momentum,
            nesterov: d.optimizer.nesterov,
            weight_decay: d.optimizer.weight_decay,
            lr_schedule: LrSchedule::default(),
            label_smoothing: d.label_smoothing,
            clip_grad_norm: d.clip_grad_norm,
            accumulate: d.accumulate,
            freeze: d.freeze,
            patience: d.patience,
            monitor: d.monitor,
            seed: None,
            recompute_segments: d.recompute_segments,
            crop_padding: d.crop_padding,
            horizontal_flip: d.horizontal_flip,
            restore_best: d.restore_best,
        }
    }
}

/// The shapes of learning-rate schedules (the trainer's [`Schedule`] kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// The peak rate throughout.
    Constant,
    /// Decays by `gamma` every `step_size` steps.
    Step,
    /// Polynomial decay to `min_lr`.
    Polynomial,
    /// Linear warmup, then cosine decay to `min_lr`.
    #[serde(alias = "warmup_cosine", alias = "cosine")]
    WarmupCosine,
    /// Linear warmup, then exponential decay by `gamma` per step.
    #[serde(alias = "warmup_exponential")]
    WarmupExponential,
    /// Linear warmup, then decay by `gamma` every `step_size` steps.
    #[serde(alias = "warmup_step")]
    WarmupStep,
    /// The one-cycle policy.
    #[serde(alias = "one_cycle")]
    OneCycle,
}

/// A learning-rate schedule and its parameters; what a kind does not use must be left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    /// The shape (`type` in the YAML training layout).
    #[serde(alias = "type")]
    pub kind: ScheduleKind,
    /// Warmup in optimizer steps (warmup-* kinds).
    pub warmup_steps: Option<usize>,
    /// Warmup in epochs, instead of `warmup_steps`.
    pub warmup_epochs: Option<f64>,
    /// Steps between decays (step, warmup-step) [one epoch].
    pub step_size: Option<usize>,
    /// Decay factor (step, warmup-step: per decay [0.1]; warmup-exponential: per step [0.99]).
    pub gamma: Option<f64>,
    /// Final rate (warmup-cosine, polynomial, one-cycle) [0 / from final_div_factor].
    pub min_lr: Option<f64>,
    /// Polynomial exponent [1].
    pub power: Option<f64>,
    /// One-cycle: initial rate = lr / div_factor [25].
    pub div_factor: Option<f64>,
    /// One-cycle: fraction of steps rising [0.3].
    pub pct_start: Option<f64>,
    /// One-cycle: final rate = initial / final_div_factor [1e4].
    pub final_div_factor: Option<f64>,
}

impl Default for LrSchedule {
    /// Cosine decay to 0 without warmup, as the trainer's default.
    fn default() -> Self {
        LrSchedule {
            kind: ScheduleKind::WarmupCosine,
            warmup_steps: None,
            warmup_epochs: None,
            step_size: None,
            gamma: None,
            min_lr: None,
            power: None,
            div_factor: None,
            pct_start: None,
            final_div_factor: None,
        }
    }
}

impl LrSchedule {
    /// The trainer's schedule for `steps_per_epoch` optimizer steps per epoch.
    pub fn schedule(&self, steps_per_epoch: usize) -> Result<Schedule> {
        let invalid = |reason: &str| PipelineError::invalid("lr_schedule", reason);
        let warmup = match (self.warmup_steps, self.warmup_epochs) {
            (Some(_), Some(_)) => {
                return Err(invalid("give warmup_steps or warmup_epochs, not both"))
            }
            (Some(w), None) => w,
            (None, Some(e)) if e >= 0.0 => (e * steps_per_epoch as f64).round() as usize,
            (None, Some(e)) => {
                return Err(invalid(&format!("warmup_epochs {e} must not be negative")))
            }
            (None, None) => 0,
        };
        let step_size = self.step_size.unwrap_or(steps_per_epoch);
        let min_lr = self.min_lr.unwrap_or(0.0);
        Ok(match self.kind {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Step => Schedule::Step {
                step_size,
                gamma: self.gamma.unwrap_or(0.1),
            },
            ScheduleKind::Polynomial => Schedule::Polynomial {
                power: self.power.unwrap_or(1.0),
                end_lr: min_lr,
            },
            ScheduleKind::WarmupCosine => Schedule::WarmupCosine { warmup, min_lr },
            ScheduleKind::WarmupExponential => Schedule::WarmupExponential {
                warmup,
                gamma: self.gamma.unwrap_or(0.99),
            },
            ScheduleKind::WarmupStep => Schedule::WarmupStep {
                warmup,
                step_size,
                gamma: self.gamma.unwrap_or(0.1),
            },
            ScheduleKind::OneCycle => Schedule::OneCycle {
                div_factor: self.div_factor.unwrap_or(25.0),
                pct_start: self.pct_start.unwrap_or(0.3),
                final_div_factor: self.final_div_factor.unwrap_or(1e4),
                min_lr: self.min_lr,
            },
        })
    }
}

impl Training {
    /// The trainer's configuration for `samples` training samples; `seed` is used when
    /// the settings name none. Events go to no one until [`observed`] connects them.
    pub fn config(&self, samples: usize, seed: u64) -> Result<TrainConfig> {
        let d = TrainConfig::default();
        let per_epoch = steps_per_epoch(samples, self.batch_size, self.accumulate);
        Ok(TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: OptimizerConfig {
                kind: self.optimizer,
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
                ..d.optimizer
            },
            lr: self.lr,
            schedule: self.lr_schedule.schedule(per_epoch)?,
            label_smoothing: self.label_smoothing,
            clip_grad_norm: self.clip_grad_norm,
            accumulate: self.accumulate,
            freeze: self.freeze.clone(),
            patience: self.patience,
            monitor: self.monitor,
            seed: self.seed.unwrap_or(seed),
            recompute_segments: self.recompute_segments,
            crop_padding: self.crop_padding,
            horizontal_flip: self.horizontal_flip,
            restore_best: self.restore_best,
            ..d
        })
    }
}

/// Optimizer steps in one epoch of `samples` (at least 1).
pub fn steps_per_epoch(samples: usize, batch_size: usize, accumulate: usize) -> usize {
    samples
        .div_ceil(batch_size.max(1))
        .div_ceil(accumulate.max(1))
        .max(1)
}

/// The training split of the dataset `spec` (its first `limit` samples when given),
/// whose SPEC is checked against `model`'s input when there is a model; `role` names the
/// data in errors.
/// Values that are not finite are refused.
pub fn load_training(
    spec: &str,
    role: &str,
    model: Option<&Model>,
    limit: Option<usize>,
) -> Result<Dataset> {
    if let Some(model) = model {
        DataSource::new(spec)
            .with_role(role)
            .check_inputs(&model_inputs(model))?;
    }
    let data = whittle_data::load(spec, Split::Train, limit)
        .context(|| format!("loading {role} {spec}"))?;
    // Values first: the trainer's preflight then checks the samples against the model.
    whittle_train::finite::check_dataset(&data, "training").context(|| format!("{role} {spec}"))?;
    Ok(data)
}

/// Samples per evaluation run of [`TestSet`].
const EVAL_BATCH: usize = 256;

/// Labelled test data on which training steps measure top-1 accuracy (the pipeline's
/// [`Evaluator`]).
pub struct TestSet {
    evaluator: Evaluator,
    samples: usize,
}

impl TestSet {
    /// The test split of dataset `spec` (its first `limit` samples when given), checked
    /// against `model`'s input; `role` names the data in errors.
    pub fn load(spec: &str, role: &str, model: &Model, limit: Option<usize>) -> Result<Self> {
        let data =
            DataSource::new(spec)
                .with_role(role)
                .load(&model_inputs(model), Split::Test, limit)?;
        Ok(TestSet {
            samples: data.len(),
            evaluator: Evaluator::new().with_labelled(data, EVAL_BATCH),
        })
    }

    /// The number of test samples.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Top-1 accuracy of `model`.
    pub fn accuracy(&self, ctx: &Ctx<'_>, model: &Model) -> Result<f64> {
        let metrics = self.evaluator.evaluate(ctx, model)?;
        metrics
            .top1
            .ok_or_else(|| PipelineError::invalid("the test data", "no accuracy was measured"))
    }
}

/// `train` / `finetune`: trains the model's weights on labelled data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStep {
    /// The dataset SPEC (its training split).
    pub data: String,
    /// Use only the first N samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Hold out this fraction of the data for validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// Write a checkpoint after every epoch into this folder (a relative path lies in the
    /// pipeline's work folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue the run saved in this checkpoint folder (relative: in the work folder)
    /// instead of starting from the model's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<PathBuf>,
    /// The trainer's settings.
    #[serde(default)]
    pub training: Training,
    /// Keep the zeros of the model's Conv/Gemm/MatMul weights at zero (fine-tuning a pruned
    /// model: its sparsity pattern survives, as the prune step's own fine-tune keeps it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_zeros: bool,
    /// What a checkpoint records so that resuming another run is refused; by default the
    /// dataset and limit. A caller naming its inputs otherwise (the CLI's flags) sets it.
    #[serde(skip)]
    pub identity: BTreeMap<String, String>,
    /// How errors name the data (empty: "train `data`"; the CLI names its flag).
    #[serde(skip)]
    pub data_role: String,
}

/// What a `train` step did.
#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    /// The trainer's report.
    #[serde(flatten)]
    pub report: TrainReport,
    /// Validation accuracy of the last epoch, with validation data.
    pub final_accuracy: Option<f64>,
}

impl TrainStep {
    /// A step training on the training split of `data`, with default settings.
    pub fn new(data: impl Into<String>) -> Self {
        TrainStep {
            data: data.into(),
            limit: None,
            val_fraction: None,
            checkpoint_dir: None,
            resume: None,
            training: Training::default(),
            keep_zeros: false,
            identity: BTreeMap::new(),
            data_role: String::new(),
        }
    }

    /// Trains `model`, or with [`TrainStep::resume`] the checkpoint's model (`model` may
    /// then be None).
    pub fn train(&self, ctx: &mut Ctx<'_>, model: Option<Model>) -> Result<(Model, TrainOutcome)> {
        let role = match self.data_role.as_str() {
            "" => "train `data`",
            role => role,
        };
        let data = load_training(&self.data, role, model.as_ref(), self.limit)?;
        let seed = self.training.seed.unwrap_or(ctx.seed);
        let (train, val) = match self.val_fraction {
            Some(f) => {
                let (t, v) =
                    split_validation(&data, f, seed).context(|| format!("val_fraction {f}"))?;
                (t, Some(v))
            }
            None => (data, None),
        };
        let mut config = self.training.config(train.len(), ctx.seed)?;
        config.checkpoint_dir = self.checkpoint_dir.as_deref().map(|d| in_work_dir(ctx, d));
        config.identity = if self.identity.is_empty() {
            self.default_identity()
        } else {
            self.identity.clone()
        };
        let resume = self.resume.as_deref().map(|d| in_work_dir(ctx, d));
        let (model, report) = observed(ctx.observer, config, |config| {
            let trainer = match (&resume, model) {
                (Some(dir), _) => Trainer::resume(dir, config)
                    .context(|| format!("resuming from {}", dir.display()))?,
                (None, Some(model)) => {
                    Trainer::new(&model, config).context(|| "training".into())?
                }
                (None, None) => {
                    return Err(PipelineError::invalid(
                        "train",
                        "no model to train: give a model or a checkpoint to resume",
                    ))
                }
            };
            let mut trainer = if self.keep_zeros {
                keeping_zeros(trainer)?
            } else {
                trainer
            };
            let report = trainer
                .fit(&train, val.as_ref())
                .context(|| format!("training on {}", self.data))?;
            Ok((
                trainer.model().context(|| "exporting the model".into())?,
                report,
            ))
        })?;
        let final_accuracy = report.epochs.last().and_then(|e| e.val_accuracy);
        Ok((
            model,
            TrainOutcome {
                report,
                final_accuracy,
            },
        ))
    }

    fn default_identity(&self) -> BTreeMap<String, String> {
        let limit = self.limit.map_or("none".to_string(), |l| l.to_string());
        BTreeMap::from([
            ("data".to_string(), self.data.clone()),
            ("limit".to_string(), limit),
        ])
    }
}

/// `trainer` with a step hook that multiplies every weight that has zeros now by its 0/1
/// mask after each optimizer step.
fn keeping_zeros(trainer: Trainer) -> Result<Trainer> {
    let model = trainer.model().context(|| "reading the weights".into())?;
    let masks = zero_masks(&model).context(|| "finding the zeros to keep".into())?;
    let tensors = mask_tensors(&masks, trainer.executor().device())
        .context(|| "masking the weights".into())?;
    Ok(trainer.with_step_hook(move |c| apply_to_params(c.exec, &tensors)))
}

impl Step for TrainStep {
    fn name(&self) -> &'static str {
        "train"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (model, outcome) = self.train(ctx, Some(model))?;
        let summary = vec![outcome.describe()];
        Ok((model, StepReport::new(self.name(), &outcome, summary)?))
    }

    fn data_specs(&self) -> Vec<&str> {
        vec![&self.data]
    }
}

impl TrainOutcome {
    /// One line: parameters trained, epochs, steps, early stop.
    pub fn describe(&self) -> String {
        let r = &self.report;
        format!(
            "trained {} parameters for {} epochs ({} steps){}",
            r.trainable_parameters,
            r.epochs.len(),
            r.steps,
            if r.stopped_early {
                ", stopped early"
            } else {
                ""
            }
        )
    }
}

/// `path`, inside the context's work folder when it is relative and there is one.
pub(crate) fn in_work_dir(ctx: &Ctx<'_>, path: &Path) -> PathBuf {
    match &ctx.work_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Runs `work` with `config`, whose trainer events reach `observer` as they happen: the
/// work runs on a scoped thread while this one hands its events on (the trainer's
/// [`Progress`] outlives any borrowed observer, so events travel through a channel).
pub fn observed<T: Send>(
    observer: &dyn Observer,
    mut config: TrainConfig,
    work: impl FnOnce(TrainConfig) -> Result<T> + Send,
) -> Result<T> {
    let (sender, events) = mpsc::channel::<Event>();
    config.progress = Progress::new(move |e| {
        for event in pipeline_events(e) {
            // The receiver lives until the work has ended.
            let _ = sender.send(event);
        }
    });
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("whittle-train".into())
            .stack_size(WORKER_STACK)
            .spawn_scoped(scope, move || work(config))
            .context(|| "starting the training thread".into())?;
        for event in events {
            observer.event(&event);
        }
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Stack of the training thread (the main thread's usual size).
const WORKER_STACK: usize = 8 << 20;

/// The pipeline events of one trainer event.
fn pipeline_events(event: &TrainEvent) -> Vec<Event> {
    let info = |message: String| Event::Log {
        level: Level::Info,
        message,
    };
    match event {
        TrainEvent::Started { settings, memory } => {
            vec![info(settings.clone()), info(memory.clone())]
        }
        TrainEvent::EpochStarted {
            epoch,
            epochs,
            batches,
        } => vec![Event::Begin {
            task: format!("epoch {epoch}/{epochs}"),
            total: Some(*batches as u64),
        }],
        TrainEvent::Batch { done, loss } => vec![Event::Progress {
            done: *done as u64,
            message: Some(format!("loss {loss:.4}")),
        }],
        TrainEvent::EpochEnded { report, epochs } => {
            vec![Event::End, info(describe_epoch(report, *epochs))]
        }
        TrainEvent::RestoredBest { epoch } => vec![info(format!(
            "restored the weights of epoch {epoch} (best validation value)"
        ))],
    }
}
