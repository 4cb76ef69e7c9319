//! The continual-learning form, turned into a one-step recipe (`step = "continual"`, the
//! keys of docs/RECIPES.md) that runs through the same job path as the compress form.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use whittle_pipeline::step::continual::lr_schedule;

use crate::api::ApiError;
use crate::fields::{self, bad};

/// The continual-learning form's fields.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContinualForm {
    /// An ONNX file under an allowed folder, or `zoo:NAME[:opts]`.
    pub model: String,
    /// The dataset SPEC the tasks are split from.
    pub data: String,
    /// `class-il`, `task-il` or `domain-il`.
    #[serde(default = "default_scenario")]
    pub scenario: String,
    /// Tasks; none: as many as the classes fill. Of a `domain-il` scenario (needed): its
    /// pixel permutations.
    #[serde(default)]
    pub tasks: Option<usize>,
    /// `finetune`, `joint`, `er`, `derpp`, `lwf` or `ewc`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// ER-ACE's asymmetric cross-entropy (replay strategies).
    #[serde(default)]
    pub ace: bool,
    /// Score with nearest class means (iCaRL): after each task the head becomes the class
    /// means of the buffer's and the task's features (not with `compress_during`).
    #[serde(default)]
    pub ncm: bool,
    /// Random flips and 2-pixel shifts of replayed images (replay strategies).
    #[serde(default)]
    pub replay_augment: bool,
    /// The learning rate within each task: `constant`, or `cosine` (down to 0 by the task's
    /// end).
    #[serde(default = "default_lr_schedule")]
    pub lr_schedule: String,
    /// Replay-buffer size (samples).
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// Epochs of training on each task.
    #[serde(default = "default_epochs")]
    pub epochs_per_task: usize,
    /// One run per seed; figures are averaged over them.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Training samples to use (before splitting); none: all.
    #[serde(default)]
    pub train_samples: Option<usize>,
    /// Test samples to use (before splitting); none: all.
    #[serde(default)]
    pub test_samples: Option<usize>,
    /// Compressed variants of the final model: `fp16`, `int8`.
    #[serde(default)]
    pub quantize: Vec<String>,
    /// Magnitude-pruning sparsity of a compressed variant, in (0, 1); none: no pruning.
    #[serde(default)]
    pub prune: Option<f64>,
    /// Also compress while learning (pruning rising task by task, QAT on the last task),
    /// measured beside the variants compressed after the last task.
    #[serde(default)]
    pub compress_during: bool,
}

fn default_scenario() -> String {
    "class-il".into()
}

fn default_strategy() -> String {
    "er".into()
}

fn default_lr_schedule() -> String {
    "constant".into()
}

fn default_buffer() -> usize {
    500
}

fn default_epochs() -> usize {
    1
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// The scenario whose tasks are pixel permutations of the whole dataset.
const DOMAIN_IL: &str = "domain-il";

impl ContinualForm {
    /// The one-step recipe the form describes; the final model is measured on the test
    /// samples with ONNX Runtime latency, like the compress form's.
    pub fn recipe(&self) -> Result<Value, ApiError> {
        fields::model(&self.model)?;
        fields::data("data", &self.data)?;
        fields::epochs("epochs_per_task", self.epochs_per_task, 1)?;
        if self.seeds.is_empty() {
            return Err(bad("seeds", "give at least one seed"));
        }
        if let Some(p) = self
            .prune
            .filter(|p| !(p.is_finite() && *p > 0.0 && *p < 1.0))
        {
            return Err(bad("prune", format!("{p} is not in (0, 1)")));
        }
        fields::samples("train_samples", self.train_samples)?;
        fields::samples("test_samples", self.test_samples)?;
        let schedule = lr_schedule("lr_schedule", &self.lr_schedule)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut step = json!({
            "step": "continual",
            "data": self.data,
            "scenario": self.scenario,
            "seeds": self.seeds,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "training": { "strategy": self.strategy, "buffer": self.buffer,
                          "epochs_per_task": self.epochs_per_task, "ace": self.ace, "ncm": self.ncm,
                          "replay_augment": self.replay_augment, "schedule": schedule },
        });
        match (self.scenario == DOMAIN_IL, self.tasks) {
            (true, None) => {
                return Err(bad(
                    "tasks",
                    "a domain-il scenario needs the number of tasks (pixel permutations)",
                ))
            }
            (true, Some(tasks)) => step["permutations"] = tasks.into(),
            (false, Some(tasks)) => step["tasks"] = tasks.into(),
            (false, None) => {}
        }
        if !self.quantize.is_empty() || self.prune.is_some() {
            step["compress"] = json!({ "quantize": self.quantize, "prune": self.prune,
                                       "during": self.compress_during });
        } else if self.compress_during {
            return Err(bad(
                "compress_during",
                "choose what to compress: INT8, FP16 or a pruning sparsity",
            ));
        }
        let mut evaluate = json!({ "data": self.data, "latency": true });
        if let Some(n) = self.test_samples {
            evaluate["samples"] = n.into();
        }
        Ok(json!({
            "model": self.model,
            "seed": self.seeds[0],
            "evaluate": evaluate,
            "steps": [step],
        }))
    }
}
