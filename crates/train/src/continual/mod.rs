//! Continual learning: a model trained on a sequence of tasks ([`whittle_data::scenario`])
//! with a strategy against forgetting, measured by the accuracy matrix after every task.
//!
//! - [`buffer`]: the uint8 replay buffer (reservoir or class-balanced).
//! - [`augment`]: random flips and shifts of replayed images.
//! - [`objective`]: the loss of one step (cross-entropy, DER++'s stored logits, LwF's
//!   distillation) and task-IL logit masking.
//! - [`ewc`]: EWC's diagonal Fisher penalty.
//! - [`eval`]: accuracy per task, class-IL and task-IL.
//! - [`ncm`]: the nearest-class-mean head (`ncm`).
//! - [`metrics`]: average accuracy, forgetting, backward and forward transfer, mean and
//!   standard deviation over seeds.
//! - [`run()`]: the task loop, on the trainer's step machinery ([`crate::step::Backward`]:
//!   the graph-level backward, derived once per task), with a [`TaskHook`] through which
//!   LoRA adapters and compression during training plug in.

pub mod augment;
pub mod buffer;
pub mod eval;
pub mod ewc;
pub mod metrics;
pub mod ncm;
pub mod objective;
mod run;

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use whittle_data::Dataset;
use whittle_exec::Executor;
use whittle_ir::Model;

use crate::bail;
use crate::error::{Result, TrainError};
use crate::optim::{OptimizerConfig, OptimizerKind};
use crate::progress::Progress;
use crate::schedule::Schedule;

pub use buffer::{BufferPolicy, ReplayBuffer};
pub use eval::task_accuracies;
pub use ncm::Ncm;
pub use run::{run, ContinualRun, RunMetrics};

/// How the model is kept from forgetting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Plain training on each task in turn (the lower bound).
    Finetune,
    /// Training once on all tasks' data together (the upper bound; one row of accuracies).
    Joint,
    /// Experience replay: each batch is joined by samples from the replay buffer.
    Er,
    /// DER++ (Buzzega et al., 2020): replay plus matching the logits stored with replayed
    /// samples.
    Derpp,
    /// Learning without Forgetting (Li and Hoiem, 2016): distillation of the previous
    /// model's scores for the old classes on the new task's data.
    Lwf,
    /// Elastic weight consolidation (Kirkpatrick et al., 2017) with a diagonal Fisher.
    Ewc,
}

impl Strategy {
    /// Every strategy, in the order the CLI lists them.
    pub const ALL: [Strategy; 6] = [
        Strategy::Finetune,
        Strategy::Joint,
        Strategy::Er,
        Strategy::Derpp,
        Strategy::Lwf,
        Strategy::Ewc,
    ];

    /// The strategy's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Finetune => "finetune",
            Strategy::Joint => "joint",
            Strategy::Er => "er",
            Strategy::Derpp => "derpp",
            Strategy::Lwf => "lwf",
            Strategy::Ewc => "ewc",
        }
    }

    /// Whether the strategy replays samples from the buffer.
    pub fn replays(self) -> bool {
        matches!(self, Strategy::Er | Strategy::Derpp)
    }
}

impl FromStr for Strategy {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match Strategy::ALL.into_iter().find(|k| k.name() == s) {
            Some(k) => Ok(k),
            None => bail!("unknown --strategy '{s}': use finetune, joint, er, derpp, lwf or ewc"),
        }
    }
}

/// Settings of a continual-learning run (defaults: the reference protocol, SGD at lr 0.1,
/// batches of 10 plus 128 replayed samples, one epoch per task, a reservoir of 500).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinualConfig {
    /// The strategy.
    pub strategy: Strategy,
    /// Replay buffer capacity in samples (ER, DER++).
    pub buffer: usize,
    /// Which samples the buffer keeps.
    pub buffer_policy: BufferPolicy,
    /// Epochs over each task's training data.
    pub epochs_per_task: usize,
    /// New samples per step.
    pub batch_size: usize,
    /// Replayed samples per step (DER++ draws this many twice: logits and labels).
    pub replay_batch: usize,
    /// Learning rate: constant, or the peak of `schedule`.
    pub lr: f64,
    /// The learning rate's course within each task, restarted at every task (the
    /// reference protocol: [`Schedule::Constant`]).
    pub schedule: Schedule,
    /// Optimizer (fresh at each task).
    pub optimizer: OptimizerConfig,
    /// ER-ACE's asymmetric cross-entropy (ER and DER++): new samples are scored among
    /// the classes of their batch only, replayed samples among all classes, so that a new
    /// task's samples do not push down the old classes' scores (a class-IL win).
    pub ace: bool,
    /// Score with nearest class means instead of the trained head ([`ncm::ncm_head`]):
    /// after each task the head's weights become the mean penultimate features of the
    /// replay buffer and that task's training data, per class, by Euclidean distance or
    /// cosine similarity; or, hybrid, the trained head's scores plus a multiple of the
    /// cosine similarity to each mean. Training still uses the trained head; the scored
    /// (and returned) model has the mean head.
    pub ncm: Ncm,
    /// ER and DER++: flip every replayed image left to right at random and shift it by
    /// up to two pixels ([`augment::Augment`]; image samples `[C, H, W]` only).
    pub replay_augment: bool,
    /// DER++: weight of the stored-logit MSE term.
    pub alpha: f64,
    /// DER++: weight of the replayed-label cross-entropy term.
    pub beta: f64,
    /// LwF: weight of the distillation term.
    pub lwf_alpha: f64,
    /// LwF: distillation temperature.
    pub temperature: f64,
    /// EWC: strength of the penalty.
    pub ewc_lambda: f64,
    /// EWC: samples of each task whose gradients estimate the Fisher.
    pub fisher_samples: usize,
    /// Seed of data order, buffer choices and dropout.
    pub seed: u64,
    /// Where batch and task events go (nowhere by default).
    #[serde(skip)]
    pub progress: Progress,
}

impl Default for ContinualConfig {
    fn default() -> Self {
        ContinualConfig {
            strategy: Strategy::Er,
            buffer: 500,
            buffer_policy: BufferPolicy::Reservoir,
            epochs_per_task: 1,
            batch_size: 10,
            replay_batch: 128,
            lr: 0.1,
            schedule: Schedule::Constant,
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Sgd,
                ..OptimizerConfig::default()
            },
            ace: false,
            ncm: Ncm::Off,
            replay_augment: false,
            alpha: 0.3,
            beta: 0.5,
            lwf_alpha: 1.0,
            temperature: 2.0,
            ewc_lambda: 100.0,
            fisher_samples: 500,
            seed: 0,
            progress: Progress::default(),
        }
    }
}

impl ContinualConfig {
    /// Checks the settings; the error names the option at fault.
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &str, v: usize| {
            if v == 0 {
                bail!("{what} must be at least 1");
            }
            Ok(())
        };
        positive("--epochs-per-task", self.epochs_per_task)?;
        positive("--batch-size", self.batch_size)?;
        if self.strategy.replays() {
            if self.buffer == 0 {
                bail!(
                    "--strategy {} replays samples: --buffer must be at least 1",
                    self.strategy.name()
                );
            }
            positive("--replay-batch", self.replay_batch)?;
        }
        for (what, v) in [("--lr", self.lr), ("--temperature", self.temperature)] {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{what} {v} must be positive");
            }
        }
        for (what, v) in [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("lwf_alpha", self.lwf_alpha),
            ("ewc_lambda", self.ewc_lambda),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("{what} {v} must be non-negative");
            }
        }
        self.optimizer.validate()
    }
}

/// What a [`TaskHook`] sees of the task about to train: the data a continual learner has
/// at that moment (the task's own training data and the replay buffer), nothing earlier.
pub struct TaskStart<'a> {
    /// The task's index in training order (0-based).
    pub task: usize,
    /// Tasks of the run (1 for joint training).
    pub tasks: usize,
    /// The task's training data.
    pub train: &'a Dataset,
    /// The replay buffer as the earlier tasks left it (ER, DER++).
    pub buffer: Option<&'a ReplayBuffer>,
    /// Classes of the label space.
    pub num_classes: usize,
}

impl TaskStart<'_> {
    /// Whether this is the run's last task.
    pub fn is_last(&self) -> bool {
        self.task + 1 == self.tasks
    }
}

/// Changes a run makes around each task: LoRA adapters added before a task and merged
/// after it, pruning masks re-applied after every step, compression at the end.
pub trait TaskHook: Send {
    /// Before the task `start` describes: the model to train, and `freeze` patterns (the
    /// trainer's syntax) naming initializers not to train (empty: train all).
    fn begin_task(&mut self, start: &TaskStart<'_>, model: Model) -> Result<(Model, Vec<String>)> {
        let _ = start;
        Ok((model, Vec::new()))
    }

    /// After every optimizer step, on the executor holding the updated weights.
    fn after_step(&mut self, exec: &Executor) -> Result<()> {
        let _ = exec;
        Ok(())
    }

    /// After task `task`: the model the task ends with (before it is evaluated).
    fn end_task(&mut self, task: usize, model: Model) -> Result<Model> {
        let _ = task;
        Ok(model)
    }
}

/// A hook that changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl TaskHook for NoHook {}
