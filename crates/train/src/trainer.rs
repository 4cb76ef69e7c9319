//! The trainer: epochs of mini-batches through the executor in training mode, with the
//! optimizer, LR schedule, gradient clipping and accumulation, frozen parameters,
//! BatchNormalization running statistics, early stopping, checkpoints and resume.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whittle_data::{Augment, Dataset, Loader, LoaderOptions};
use whittle_exec::pool::on_pool;
use whittle_exec::{Executor, Value};
use whittle_ir::memory::human_bytes;
use whittle_ir::{Model, TensorData};

use crate::bail;
use crate::checkpoint::{self, TrainState};
use crate::error::{Result, TrainError};
use crate::finite;
use crate::loss::cross_entropy;
use crate::memory::{self, MemoryEstimate};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::params::{select_trainable, NamePattern};
use crate::preflight;
use crate::progress::{Progress, TrainEvent};
use crate::schedule::{LrSchedule, Schedule};
use crate::step::{
    segment_bounds, Backward, GradientPath, LossFn, LossInput, PassOptions, PassResult,
};

/// What early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// Validation loss (lower is better).
    ValLoss,
}

/// Settings of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Epochs in the whole run (a resumed run continues up to this many).
    pub epochs: usize,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Optimizer settings.
    pub optimizer: OptimizerConfig,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning-rate schedule over all optimizer steps.
    pub schedule: Schedule,
    /// Label smoothing of the default cross-entropy loss.
    pub label_smoothing: f64,
    /// Clip gradients to this global L2 norm.
    pub clip_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step.
    pub accumulate: usize,
    /// Initializers not to train: globs, or regexes prefixed with `re:`.
    pub freeze: Vec<String>,
    /// Stop after this many epochs without improvement of `monitor` (needs validation data).
    pub patience: Option<usize>,
    /// What early stopping watches.
    pub monitor: Monitor,
    /// Write a checkpoint here after every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    /// Seed of shuffling and dropout.
    pub seed: u64,
    /// What the run trains on, as its user named it (the CLI records `--model`, `--data`
    /// and `--limit`); saved in checkpoints, and resuming with another value is refused.
    pub identity: BTreeMap<String, String>,
    /// Gradient checkpointing: recompute activations in this many graph segments.
    pub recompute_segments: Option<usize>,
    /// Augmentation: pad each training image by this many pixels and crop back at a random
    /// offset (0: off).
    pub crop_padding: usize,
    /// Augmentation: mirror training images left-right with probability 1/2.
    pub horizontal_flip: bool,
    /// Where the run's events go: its settings, every batch and epoch (nowhere by
    /// default; the trainer never prints).
    #[serde(skip)]
    pub progress: Progress,
    /// At the end of a run with validation data, put back the weights of the epoch with
    /// the best monitored value (kept in memory; a resumed run restores only from epochs
    /// it trained itself).
    pub restore_best: bool,
}

impl Default for TrainConfig {
    /// What a PyTorch or Keras user expects to work on a fresh model: AdamW at lr 0.003
    /// decaying along a cosine to 0, batches of 32 (Keras's default), one epoch.
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch_size: 32,
            optimizer: OptimizerConfig::default(),
            lr: 3e-3,
            schedule: Schedule::WarmupCosine {
                warmup: 0,
                min_lr: 0.0,
            },
            label_smoothing: 0.0,
            clip_grad_norm: None,
            accumulate: 1,
            freeze: Vec::new(),
            patience: None,
            monitor: Monitor::ValAccuracy,
            checkpoint_dir: None,
            seed: 0,
            identity: BTreeMap::new(),
            recompute_segments: None,
            crop_padding: 0,
            horizontal_flip: false,
            progress: Progress::default(),
            restore_best: true,
        }
    }
}

/// Figures of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy (from the training-mode outputs), when outputs are class scores.
    pub accuracy: Option<f64>,
    /// Validation loss (plain cross-entropy).
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Training throughput.
    pub images_per_sec: f64,
}

/// Result of [`Trainer::fit`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Every epoch of the run (including those before a resume).
    pub epochs: Vec<EpochReport>,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
    /// Epoch with the best monitored validation value.
    pub best_epoch: Option<usize>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Names of the trained initializers.
    pub trainable: Vec<String>,
    /// Number of trained values.
    pub trainable_parameters: usize,
    /// Peak-memory estimate made before training.
    pub memory: MemoryEstimate,
    /// Which backward computed the gradients.
    pub gradient_path: GradientPath,
}

/// Loss and accuracy on a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy, 0..1.
    pub accuracy: f64,
}

/// Where training stands when a step hook runs (after an optimizer step).
pub struct StepContext<'a> {
    /// 0-based epoch being trained.
    pub epoch: usize,
    /// Optimizer steps taken, this one included.
    pub step: u64,
    /// Optimizer steps of the whole run.
    pub total_steps: u64,
    /// The executor holding the updated weights (trainable parameters are `params()`,
    /// which a hook may overwrite, e.g. to re-apply pruning masks).
    pub exec: &'a Executor,
}

/// A function run after every optimizer step (pruning masks, gradual schedules, ...).
pub type StepHook = Box<dyn FnMut(&StepContext) -> Result<()>>;

/// Trains one model. Build with [`Trainer::new`] (or [`Trainer::resume`]), optionally set
/// a custom loss with [`Trainer::with_loss`], then [`Trainer::fit`] and [`Trainer::model`].
pub struct Trainer {
    model: Model,
    exec: Executor,
    config: TrainConfig,
    optimizer: Optimizer,
    trainable: Vec<String>,
    input: String,
    output: String,
    loss: Option<LossFn>,
    step_hooks: Vec<StepHook>,
    best_model: Option<Model>,
    state: TrainState,
    /// The epoch of the last checkpoint in `config.checkpoint_dir`, if one is there.
    saved_epoch: Option<usize>,
    /// The backward of `exec`, derived on the first pass.
    backward: Backward,
}

impl Trainer {
    /// Prepares `model` for training with `config`; fails on invalid settings or a model
    /// with nothing to train.
    pub fn new(model: &Model, config: TrainConfig) -> Result<Self> {
        check_config(&config)?;
        let freeze = config
            .freeze
            .iter()
            .map(|p| NamePattern::new(p))
            .collect::<Result<Vec<_>>>()?;
        let trainable = select_trainable(model, &freeze)?;
        let mut exec = Executor::new(model)?;
        exec.set_trainable(&trainable)?;
        let inputs = exec.inputs();
        let [input] = inputs.as_slice() else {
            bail!(
                "training needs a model with one input, this one has {}",
                inputs.len()
            );
        };
        let input = input.name.clone();
        let output = exec.output_names().first().cloned().unwrap_or_default();
        let state = TrainState {
            optimizer: Some(config.optimizer.clone()),
            identity: config.identity.clone(),
            ..TrainState::default()
        };
        Ok(Trainer {
            model: model.clone(),
            exec,
            optimizer: Optimizer::new(config.optimizer.clone())?,
            config,
            trainable,
            input,
            output,
            loss: None,
            step_hooks: Vec::new(),
            best_model: None,
            state,
            saved_epoch: None,
            backward: Backward::default(),
        })
    }

    /// Continues the run saved in checkpoint directory `dir` with `config` (the same
    /// settings and seed reproduce the uninterrupted run exactly). Refuses other optimizer
    /// settings or another [`TrainConfig::identity`] value than the checkpoint's.
    pub fn resume(dir: &Path, config: TrainConfig) -> Result<Self> {
        let (model, optimizer, state) = checkpoint::load(dir)?;
        check_same_run(dir, &state, &config)?;
        let same_dir = |d: &PathBuf| d.canonicalize().ok() == dir.canonicalize().ok();
        let saved = config.checkpoint_dir.as_ref().is_some_and(same_dir);
        let mut trainer = Trainer::new(&model, config)?;
        trainer.optimizer.load_state(optimizer, state.step)?;
        trainer.saved_epoch = saved.then_some(state.epoch);
        // What this run does not name (e.g. a --model left out) stays as recorded.
        let mut identity = state.identity.clone();
        identity.append(&mut trainer.state.identity);
        trainer.state = TrainState {
            optimizer: trainer.state.optimizer.take(),
            identity,
            ..state
        };
        Ok(trainer)
    }

    /// Replaces the default loss (cross-entropy with label smoothing on the first output),
    /// e.g. to add a distillation term.
    pub fn with_loss(mut self, loss: impl FnMut(&LossInput) -> Result<Tensor> + 'static) -> Self {
        self.loss = Some(Box::new(loss));
        self
    }

    /// Adds a function run after every optimizer step, in the order added.
    pub fn with_step_hook(
        mut self,
        hook: impl FnMut(&StepContext) -> Result<()> + 'static,
    ) -> Self {
        self.step_hooks.push(Box::new(hook));
        self
    }

    /// The executor (current weights; trainable parameters are its `params()`).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Names of the trained initializers.
    pub fn trainable(&self) -> &[String] {
        &self.trainable
    }

    /// Epochs completed so far.
    pub fn epochs_done(&self) -> usize {
        self.state.epoch
    }

    /// The model with the current weights and statistics.
    pub fn model(&self) -> Result<Model> {
        Ok(self.exec.export(&self.model)?)
    }

    /// Trains on `train` for the configured epochs, validating on `val` after each.
    pub fn fit(&mut self, train: &Dataset, val: Option<&Dataset>) -> Result<TrainReport> {
        self.fit_until(train, val, self.config.epochs)
    }

    /// Like [`Trainer::fit`] but stops once `epoch` epochs (at most the configured number)
    /// are done; the schedule still spans the configured epochs, so a later call (or a
    /// resume from a checkpoint) continues the same run.
    pub fn fit_until(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        epoch: usize,
    ) -> Result<TrainReport> {
        let last = epoch.min(self.config.epochs);
        if self.config.patience.is_some() && val.is_none() {
            bail!("early stopping (`patience`) needs validation data (`val_fraction`)");
        }
        let loader = Loader::new(train, self.loader_options(train)?);
        let per_epoch = loader.batches_per_epoch().div_ceil(self.config.accumulate);
        let schedule = LrSchedule::new(
            self.config.lr,
            per_epoch * self.config.epochs,
            self.config.schedule.clone(),
        )?;
        preflight::check_data(&self.exec, &self.input, &self.output, train, val)?;
        let bounds = self.segment_bounds();
        let rows: Vec<usize> = (0..train.len().min(self.config.batch_size)).collect();
        let (images, labels) = train.gather(&rows)?;
        let sample = self.batch_inputs(&images)?;
        let memory = memory::estimate(&self.exec, &sample, self.state_copies(), bounds.as_deref())?;
        let mut loss = self.loss_fn();
        let reached =
            preflight::check_gradients(&self.exec, sample, &labels, bounds.as_deref(), &mut loss);
        self.loss = Some(loss);
        reached?;
        let gradient_path = self.backward.path(&self.exec, bounds.as_deref());
        self.config.progress.send(TrainEvent::Started {
            settings: format!("{}\ngradients: {gradient_path}", describe_run(&self.config)),
            memory: describe_memory(&memory),
        });
        let mut stopped_early = false;
        while self.state.epoch < last && !stopped_early {
            let report = self.epoch(&loader, &schedule, bounds.as_deref(), val)?;
            stopped_early = self.track_best(&report)?;
            self.state.history.push(report);
            if let Some(dir) = self.config.checkpoint_dir.clone() {
                let state = self.optimizer.state_tensors()?;
                checkpoint::save(&dir, &self.model()?, &state, &self.state)?;
                self.saved_epoch = Some(self.state.epoch);
            }
        }
        let run_over = stopped_early || self.state.epoch == self.config.epochs;
        if run_over && self.config.restore_best {
            self.restore_best()?;
        }
        Ok(TrainReport {
            epochs: self.state.history.clone(),
            stopped_early,
            best_epoch: self.state.best.map(|_| self.state.best_epoch),
            steps: self.state.step,
            trainable: self.trainable.clone(),
            trainable_parameters: self.exec.params().values().map(|v| v.elem_count()).sum(),
            memory,
            gradient_path,
        })
    }

    fn loader_options(&self, train: &Dataset) -> Result<LoaderOptions> {
        let fixed = preflight::fixed_batch(&self.exec, &self.input);
        if let Some(b) = fixed.filter(|&b| b != self.config.batch_size) {
            bail!(
                "the model's input '{}' has a fixed batch size of {b}: use `batch_size` {b}",
                self.input
            );
        }
        if fixed.is_some() && train.len() < self.config.batch_size {
            bail!(
                "{} training samples do not fill one batch of {}",
                train.len(),
                self.config.batch_size
            );
        }
        Ok(LoaderOptions {
            batch_size: self.config.batch_size,
            shuffle: true,
            seed: self.config.seed,
            drop_last: fixed.is_some(),
            augment: Augment {
                crop_padding: self.config.crop_padding,
                horizontal_flip: self.config.horizontal_flip,
            },
            ..LoaderOptions::default()
        })
    }

    fn segment_bounds(&self) -> Option<Vec<usize>> {
        let n = self.exec.run_order().len();
        self.config.recompute_segments.map(|k| segment_bounds(n, k))
    }

    fn state_copies(&self) -> u64 {
        match self.config.optimizer.kind {
            OptimizerKind::Sgd => (self.config.optimizer.momentum > 0.0) as u64,
            OptimizerKind::Adam | OptimizerKind::AdamW => 2,
        }
    }

    fn batch_inputs(&self, images: &TensorData) -> Result<HashMap<String, Value>> {
        Ok(HashMap::from([(
            self.input.clone(),
            Value::try_from(images)?,
        )]))
    }

    fn loss_fn(&mut self) -> LossFn {
        match self.loss.take() {
            Some(f) => f,
            None => {
                let (output, smoothing) = (self.output.clone(), self.config.label_smoothing);
                Box::new(move |x: &LossInput| {
                    let Some(scores) = x.outputs.get(&output) else {
                        bail!("the model did not produce its output '{output}'");
                    };
                    cross_entropy(scores.tensor(), x.labels, smoothing)
                })
            }
        }
    }

    /// One epoch: micro-batches grouped into optimizer steps.
    fn epoch(
        &mut self,
        loader: &Loader,
        schedule: &LrSchedule,
        bounds: Option<&[usize]>,
        val: Option<&Dataset>,
    ) -> Result<EpochReport> {
        let epoch = self.state.epoch;
        let batches = loader.batches_per_epoch();
        let progress = self.config.progress.clone();
        progress.send(TrainEvent::EpochStarted {
            epoch: epoch + 1,
            epochs: self.config.epochs,
            batches,
        });
        let start = Instant::now();
        let mut loss = self.loss_fn();
        let mut totals = Totals::default();
        let mut group = Group::default();
        let mut lr = schedule.lr(self.state.step as usize);
        for (i, batch) in loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let mut stats = HashMap::new();
            let pass = self.backward.pass(
                &self.exec,
                self.batch_inputs(&batch.inputs)?,
                &batch.labels,
                &mut loss,
                PassOptions {
                    seed: self.config.seed
                        ^ ((epoch * batches + i) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                    segments: bounds,
                    running_stats: Some(&mut stats),
                },
            )?;
            if !pass.loss.is_finite() {
                return Err(self.diverged(epoch, i, format!("the loss is {}", pass.loss)));
            }
            for (name, v) in stats {
                if !finite::is_finite(v.tensor())? {
                    let what = format!("the BatchNormalization statistic '{name}' is not finite");
                    return Err(self.diverged(epoch, i, what));
                }
                self.exec.set_initializer(&name, v)?;
            }
            totals.add(&pass, &batch.labels, &self.output)?;
            group.add(pass.grads)?;
            if group.len == self.config.accumulate || i + 1 == batches {
                lr = schedule.lr(self.state.step as usize);
                let grads = group.take_mean(self.config.clip_grad_norm)?;
                let (optimizer, params) = (&mut self.optimizer, self.exec.params());
                // On the pool, as the passes: the update and the check fork in parallel.
                let bad = on_pool(|| {
                    optimizer.step(params, &grads, lr)?;
                    non_finite_parameter(params)
                })?;
                self.state.step += 1;
                if let Some(name) = bad {
                    let what = format!("the parameter '{name}' is not finite after the update");
                    return Err(self.diverged(epoch, i, what));
                }
                let context = StepContext {
                    epoch,
                    step: self.state.step,
                    total_steps: schedule.total_steps as u64,
                    exec: &self.exec,
                };
                for hook in &mut self.step_hooks {
                    hook(&context)?;
                }
            }
            progress.send(TrainEvent::Batch {
                done: i + 1,
                loss: totals.mean_loss(),
            });
        }
        self.loss = Some(loss);
        let seconds = start.elapsed().as_secs_f64().max(1e-9);
        let eval = val.map(|v| self.evaluate(v)).transpose()?;
        self.state.epoch += 1;
        let report = EpochReport {
            epoch: self.state.epoch,
            loss: totals.mean_loss(),
            accuracy: totals.accuracy(),
            val_loss: eval.map(|e| e.loss),
            val_accuracy: eval.map(|e| e.accuracy),
            lr,
            images_per_sec: totals.samples as f64 / seconds,
        };
        progress.send(TrainEvent::EpochEnded {
            report: report.clone(),
            epochs: self.config.epochs,
        });
        Ok(report)
    }

    /// The error ending a run whose values stopped being finite in `batch` of `epoch`
    /// (both 0-based), saying what to change and which checkpoint is left.
    fn diverged(&self, epoch: usize, batch: usize, what: String) -> TrainError {
        let kept = match (&self.config.checkpoint_dir, self.saved_epoch) {
            (Some(dir), Some(done)) => {
                format!("; the checkpoint in {} keeps epoch {done}", dir.display())
            }
            (Some(dir), None) => format!("; no checkpoint was written to {}", dir.display()),
            (None, _) => String::new(),
        };
        TrainError::Invalid(format!(
            "training diverged in epoch {}, batch {} (optimizer step {}): {what}; lower `lr` (now {:e}) or clip gradients with `clip_grad_norm`{kept}",
            epoch + 1,
            batch + 1,
            self.state.step,
            self.config.lr
        ))
    }

    /// Records the epoch's monitored value (and, for `restore_best`, the weights of a new
    /// best); true when patience has run out.
    fn track_best(&mut self, report: &EpochReport) -> Result<bool> {
        let value = match self.config.monitor {
            Monitor::ValAccuracy => report.val_accuracy,
            Monitor::ValLoss => report.val_loss.map(|l| -l),
        };
        let Some(value) = value else {
            return Ok(false);
        };
        if self.state.best.is_none_or(|b| value > b) {
            self.state.best = Some(value);
            self.state.best_epoch = report.epoch;
            self.state.bad_epochs = 0;
            if self.config.restore_best {
                self.best_model = Some(self.model()?);
            }
        } else {
            self.state.bad_epochs += 1;
        }
        Ok(self
            .config
            .patience
            .is_some_and(|p| self.state.bad_epochs >= p))
    }

    /// Puts back the weights and statistics recorded at the best epoch, if any were kept
    /// and a later epoch changed them.
    fn restore_best(&mut self) -> Result<()> {
        let Some(best) = self.best_model.take() else {
            return Ok(());
        };
        if self.state.best_epoch == self.state.epoch {
            return Ok(());
        }
        for init in &best.graph().initializer {
            let value = Value::try_from(&TensorData::from_proto(init, None)?)?;
            match self.exec.params().get(&init.name) {
                Some(var) => var.set(value.tensor())?,
                None => self.exec.set_initializer(&init.name, value)?,
            }
        }
        self.config.progress.send(TrainEvent::RestoredBest {
            epoch: self.state.best_epoch,
        });
        Ok(())
    }

    /// Cross-entropy and top-1 accuracy of the current weights (inference mode) on `data`.
    pub fn evaluate(&self, data: &Dataset) -> Result<Evaluation> {
        let (mut loss, mut correct) = (0.0, 0usize);
        for start in (0..data.len()).step_by(self.config.batch_size.max(1)) {
            let end = (start + self.config.batch_size).min(data.len());
            let (images, labels) = data.batch(start, end)?;
            let out = self.exec.run(self.batch_inputs(&images)?)?;
            let Some(scores) = out.get(&self.output) else {
                bail!("the model did not produce its output '{}'", self.output);
            };
            loss += cross_entropy(scores.tensor(), labels, 0.0)?.to_scalar::<f32>()? as f64
                * labels.len() as f64;
            correct += count_correct(scores.tensor(), labels)?;
        }
        let n = data.len().max(1) as f64;
        Ok(Evaluation {
            loss: loss / n,
            accuracy: correct as f64 / n,
        })
    }
}

/// Splits off a seeded random `fraction` of `data` for validation: `(train, val)`.
pub fn split_validation(data: &Dataset, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        bail!("`val_fraction` {fraction} must be in (0, 1)");
    }
    let order = Loader::new(
        data,
        LoaderOptions {
            shuffle: true,
            seed,
            ..Default::default()
        },
    )
    .order(u64::MAX);
    let n_val = (data.len() as f64 * fraction).round() as usize;
    if n_val == 0 || n_val == data.len() {
        bail!(
            "`val_fraction` {fraction} of {} samples leaves an empty training or validation set",
            data.len()
        );
    }
    let part = |rows: &[usize]| -> Result<Dataset> {
        let (images, labels) = data.gather(rows)?;
        Ok(Dataset::new(images, labels, data.num_classes)?)
    };
    Ok((part(&order[n_val..])?, part(&order[..n_val])?))
}

/// Refuses to resume `state` (read from `dir`) with other optimizer settings or another
/// identity value than the run that wrote it.
fn check_same_run(dir: &Path, state: &TrainState, config: &TrainConfig) -> Result<()> {
    let refuse = |what: &str, then: &str, now: &str| {
        TrainError::Invalid(format!(
            "the checkpoint in {} was trained with {what} {then}, this run gives {now}: resume with the same {what}, or start a new run",
            dir.display()
        ))
    };
    for (key, now) in &config.identity {
        if let Some(then) = state.identity.get(key).filter(|then| *then != now) {
            return Err(refuse(key, then, now));
        }
    }
    if let Some(then) = state.optimizer.as_ref().filter(|o| **o != config.optimizer) {
        let now = config.optimizer.to_string();
        return Err(refuse("`optimizer`", &then.to_string(), &now));
    }
    Ok(())
}

fn check_config(c: &TrainConfig) -> Result<()> {
    if c.epochs == 0 {
        bail!("`epochs` must be at least 1");
    }
    if c.batch_size == 0 {
        bail!("`batch_size` must be at least 1");
    }
    if c.accumulate == 0 {
        bail!("`accumulate` must be at least 1");
    }
    if let Some(n) = c.clip_grad_norm.filter(|n| n.is_nan() || *n <= 0.0) {
        bail!("`clip_grad_norm` {n} must be positive");
    }
    if c.patience == Some(0) {
        bail!("`patience` must be at least 1");
    }
    if c.recompute_segments == Some(0) {
        bail!("gradient checkpointing needs at least 1 segment");
    }
    if !(0.0..1.0).contains(&c.label_smoothing) {
        bail!("`label_smoothing` {} must be in [0, 1)", c.label_smoothing);
    }
    c.optimizer.validate()
}

/// Number of rows of `[N, C]` scores whose top-1 class is the label, with the one tie rule
/// ([`whittle_ir::numeric::top1_correct`]: the first maximum).
fn count_correct(scores: &Tensor, labels: &[i64]) -> Result<usize> {
    let classes = scores.dims().last().copied().unwrap_or(1);
    let flat = scores
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(whittle_ir::numeric::top1_correct(&flat, classes, labels))
}

/// Running loss and accuracy of an epoch.
#[derive(Default)]
struct Totals {
    loss: f64,
    samples: usize,
    correct: Option<usize>,
}

impl Totals {
    fn add(&mut self, pass: &PassResult, labels: &[i64], output: &str) -> Result<()> {
        let scores = pass
            .outputs
            .get(output)
            .filter(|s| s.rank() == 2 && s.shape()[0] == labels.len());
        self.correct = match scores {
            Some(s) if self.samples == 0 || self.correct.is_some() => {
                Some(self.correct.unwrap_or(0) + count_correct(s.tensor(), labels)?)
            }
            _ => None,
        };
        self.loss += pass.loss * labels.len() as f64;
        self.samples += labels.len();
        Ok(())
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.samples.max(1) as f64
    }

    fn accuracy(&self) -> Option<f64> {
        self.correct.map(|c| c as f64 / self.samples.max(1) as f64)
    }
}

/// The first of `params` (by name) holding a NaN or infinity (the parameters are read in
/// parallel).
fn non_finite_parameter(params: &HashMap<String, Var>) -> Result<Option<String>> {
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    let finite = names
        .par_iter()
        .map(|name| finite::is_finite(params[*name].as_tensor()))
        .collect::<Result<Vec<bool>>>()?;
    Ok(names
        .into_iter()
        .zip(finite)
        .find(|(_, ok)| !ok)
        .map(|(name, _)| name.clone()))
}

/// Gradients summed over the micro-batches of one optimizer step.
#[derive(Default)]
struct Group {
    sum: HashMap<String, Tensor>,
    len: usize,
}

impl Group {
    fn add(&mut self, grads: HashMap<String, Tensor>) -> Result<()> {
        for (name, g) in grads {
            let total = match self.sum.remove(&name) {
                Some(old) => (old + g)?,
                None => g,
            };
            self.sum.insert(name, total);
        }
        self.len += 1;
        Ok(())
    }

    /// The mean gradient of the group (clipped to a global norm), leaving the group empty.
    fn take_mean(&mut self, clip: Option<f64>) -> Result<HashMap<String, Tensor>> {
        let n = std::mem::take(&mut self.len).max(1) as f64;
        // One micro-batch (no accumulation) is its own mean: no division pass.
        let mut grads = std::mem::take(&mut self.sum)
            .into_iter()
            .map(|(k, g)| Ok((k, if n == 1.0 { g } else { (g / n)? })))
            .collect::<Result<HashMap<_, _>>>()?;
        if let Some(max) = clip {
            clip_global_norm(&mut grads, max)?;
        }
        Ok(grads)
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_global_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut names: Vec<String> = grads.keys().cloned().collect();
    names.sort();
    let mut total = 0.0;
    for name in &names {
        let g = grads[name].to_dtype(candle_core::DType::F64)?;
        total += g.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// The run's settings as one line: optimizer, learning rate and schedule, batch, epochs.
pub fn describe_run(c: &TrainConfig) -> String {
    let schedule = serde_json::to_value(&c.schedule)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_string))
        .unwrap_or_default();
    let accumulate = match c.accumulate {
        1 => String::new(),
        k => format!(" x {k} accumulated"),
    };
    format!(
        "training: {}, lr {:e} ({schedule}), batch {}{accumulate}, {} epochs, seed {}",
        c.optimizer, c.lr, c.batch_size, c.epochs, c.seed
    )
}

/// The memory estimate as one line.
pub fn describe_memory(m: &MemoryEstimate) -> String {
    let recompute = match m.checkpointed_activations {
        Some(c) => format!(", {} with gradient checkpointing", human_bytes(c)),
        None => String::new(),
    };
    format!(
        "memory estimate: peak {} ({} parameters, {}; gradients {}, optimizer state {}, activations {}{recompute})",
        human_bytes(m.peak),
        m.parameter_count,
        human_bytes(m.parameters),
        human_bytes(m.gradients),
        human_bytes(m.optimizer_state),
        human_bytes(m.activations),
    )
}

/// The per-epoch line: loss, accuracies, LR and throughput.
pub fn describe_epoch(r: &EpochReport, epochs: usize) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    format!(
        "epoch {}/{epochs}  loss {:.4}  acc {}  val_loss {}  val_acc {}  lr {:.3e}  {:.0} img/s",
        r.epoch,
        r.loss,
        pct(r.accuracy),
        r.val_loss.map_or("-".to_string(), |v| format!("{v:.4}")),
        pct(r.val_accuracy),
        r.lr,
        r.images_per_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_takes_the_first_maximum_on_a_tie() {
        let scores = Tensor::new(
            &[[0.4f32, 0.4, 0.2], [0.1, 0.3, 0.3]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(count_correct(&scores, &[0, 1]).unwrap(), 2);
        assert_eq!(count_correct(&scores, &[1, 2]).unwrap(), 0);
    }
}
