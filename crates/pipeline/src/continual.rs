//! Continual learning as the CLI, recipes and the UI run it: the scenario built from a data
//! source, one run of [`whittle_train::continual`] per seed (and the fine-tune and joint
//! baselines beside the chosen strategy), the figures averaged over seeds, and the report
//! section ([`crate::report::continual`]).

use serde::{Deserialize, Serialize};
use whittle_data::scenario::{Scenario, ScenarioKind};
use whittle_data::Split;
use whittle_exec::model_inputs;
use whittle_ir::Model;
use whittle_train::continual::metrics::{matrix_mean_std, MeanStd};
use whittle_train::continual::{self, ContinualConfig, ContinualRun, NoHook, Strategy, TaskHook};
use whittle_train::TrainConfig;

use crate::continual_compress::{
    compress_runs, CompressConfig, CompressDuring, CompressedMetrics, LoraHook,
};
use crate::error::{Context, PipelineError};
use crate::source::DataSource;
use crate::step::train::observed;
use crate::step::Ctx;
use crate::Result;

/// What a continual-learning run does (recipe keys; the CLI's flags with `-` as `_`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinualSpec {
    /// The dataset SPEC (`fashion-mnist:DIR`, `mnist:DIR`, ...).
    pub data: String,
    /// `class-il`, `task-il` or `domain-il`.
    pub scenario: String,
    /// Tasks of a split scenario (default: as many as the classes fill).
    pub tasks: Option<usize>,
    /// Classes per task of a split scenario.
    pub classes_per_task: usize,
    /// Training order of the tasks (a permutation of `0..tasks`).
    pub task_order: Option<Vec<usize>>,
    /// Tasks of a domain-il scenario (pixel permutations).
    pub permutations: Option<usize>,
    /// Use at most this many training samples (before splitting).
    pub train_samples: Option<usize>,
    /// Use at most this many test samples (before splitting).
    pub test_samples: Option<usize>,
    /// One run per seed; figures are averaged over them.
    pub seeds: Vec<u64>,
    /// Also run the fine-tune and joint baselines (when the strategy is neither).
    pub baselines: bool,
    /// The training settings (the seed is replaced by each of `seeds`).
    pub training: ContinualConfig,
    /// LoRA adapters of this rank on every layer but the head, per task: only adapters
    /// and the head train, and they are merged after each task.
    pub lora_rank: Option<usize>,
    /// The adapters' scale is `lora_alpha / lora_rank` (default: the rank, scale 1).
    pub lora_alpha: Option<f64>,
    /// Compression of each seed's final model, calibrated and recovered on the replay
    /// buffer and the last task only.
    pub compress: CompressConfig,
}

impl Default for ContinualSpec {
    fn default() -> Self {
        ContinualSpec {
            data: String::new(),
            scenario: "class-il".into(),
            tasks: None,
            classes_per_task: 2,
            task_order: None,
            permutations: None,
            train_samples: None,
            test_samples: None,
            seeds: vec![0],
            baselines: true,
            training: ContinualConfig::default(),
            lora_rank: None,
            lora_alpha: None,
            compress: CompressConfig::default(),
        }
    }
}

/// A figure averaged over seeds: `name` is the mean, `name_std` (several seeds only) the
/// sample standard deviation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean R matrix over seeds.
    pub r_matrix: Vec<Vec<f64>>,
    /// Its standard deviation, element-wise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_matrix_std: Option<Vec<Vec<f64>>>,
    /// Mean task-IL R matrix (class-IL runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_il_matrix: Option<Vec<Vec<f64>>>,
    /// Average final accuracy.
    pub average_accuracy: f64,
    /// Its standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_accuracy_std: Option<f64>,
    /// Forgetting.
    pub forgetting: f64,
    /// Its standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_std: Option<f64>,
    /// Backward transfer.
    pub bwt: f64,
    /// Its standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bwt_std: Option<f64>,
    /// Average final task-IL accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_il_accuracy: Option<f64>,
    /// Its standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_il_accuracy_std: Option<f64>,
    /// Forward transfer (task-IL scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwt: Option<f64>,
    /// Its standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwt_std: Option<f64>,
    /// Mean wall time of one run, seconds.
    pub seconds: f64,
}

/// One seed's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// Its R matrix.
    pub r_matrix: Vec<Vec<f64>>,
    /// Its task-IL R matrix (class-IL runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_il_matrix: Option<Vec<Vec<f64>>>,
    /// Average final accuracy.
    pub average_accuracy: f64,
    /// Forgetting.
    pub forgetting: f64,
    /// Backward transfer.
    pub bwt: f64,
    /// Average final task-IL accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_il_accuracy: Option<f64>,
    /// Forward transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwt: Option<f64>,
    /// Trained values per task.
    pub trainable_parameters: Vec<usize>,
    /// Optimizer steps.
    pub steps: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl SeedRun {
    fn of(seed: u64, run: &ContinualRun) -> Self {
        let m = run.metrics();
        SeedRun {
            seed,
            r_matrix: run.r_matrix.clone(),
            task_il_matrix: run.task_il_matrix.clone(),
            average_accuracy: m.average_accuracy,
            forgetting: m.forgetting,
            bwt: m.bwt,
            task_il_accuracy: m.task_il_accuracy,
            fwt: m.fwt,
            trainable_parameters: run.trainable_per_task.clone(),
            steps: run.steps,
            seconds: run.seconds,
        }
    }
}

/// Everything a continual-learning run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContinualReport {
    /// `class-il`, `task-il` or `domain-il`.
    pub scenario: String,
    /// The strategy.
    pub strategy: String,
    /// The classes of each task, in training order.
    pub tasks: Vec<Vec<i64>>,
    /// The strategy's figures over seeds.
    #[serde(flatten)]
    pub summary: Summary,
    /// Each seed's run.
    pub seeds: Vec<SeedRun>,
    /// The baselines run beside the strategy (`finetune`, `joint`), same seeds.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub baselines: std::collections::BTreeMap<String, Summary>,
    /// The final models compressed (`fp32`, `fp16`, `int8`, `pruned`, `pruned_int8`),
    /// averaged over seeds.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub compressed: std::collections::BTreeMap<String, CompressedMetrics>,
}

impl ContinualSpec {
    /// Checks the settings before any data is read.
    pub fn validate(&self) -> Result<()> {
        let kind = self.kind()?;
        if self.seeds.is_empty() {
            return Err(PipelineError::invalid("`seeds`", "give at least one seed"));
        }
        if kind == ScenarioKind::DomainIl && self.permutations.is_none() {
            return Err(PipelineError::invalid(
                "`permutations`",
                "a domain-il scenario needs the number of pixel permutations (tasks)",
            ));
        }
        if kind != ScenarioKind::DomainIl && self.permutations.is_some() {
            return Err(PipelineError::invalid(
                "`permutations`",
                format!(
                    "only a domain-il scenario permutes pixels, not {}",
                    kind.name()
                ),
            ));
        }
        if self.lora_rank == Some(0) {
            return Err(PipelineError::invalid("`lora_rank`", "must be at least 1"));
        }
        if self.lora_rank.is_some() && self.compress.during {
            return Err(PipelineError::invalid(
                "`compress.during`",
                "LoRA adapters merge into the weights after each task and would fill the pruned zeros: \
                 compress during training without `lora_rank`, or compress after the run",
            ));
        }
        if self.training.ncm.is_on() && self.compress.during {
            return Err(PipelineError::invalid(
                "`compress.during`",
                "the nearest-class-mean head (`ncm`) is computed from a float model, and compressing \
                 during training ends with a quantized or pruned head: compress after the run with `ncm`",
            ));
        }
        self.compress.validate()?;
        self.training
            .validate()
            .context(|| "the continual-learning settings".into())
    }

    fn kind(&self) -> Result<ScenarioKind> {
        self.scenario.parse().context(|| "`scenario`".into())
    }

    /// Loads the data for `model` and cuts it into the scenario's tasks.
    pub fn scenario(&self, model: &Model) -> Result<Scenario> {
        let kind = self.kind()?;
        let source = DataSource::new(self.data.clone());
        let inputs = model_inputs(model);
        let train = source.load(&inputs, Split::Train, self.train_samples)?;
        let test = source.load(&inputs, Split::Test, self.test_samples)?;
        let built = match self.permutations {
            Some(k) => Scenario::permuted(&train, &test, k, self.training.seed),
            None => Scenario::split(
                kind,
                &train,
                &test,
                self.classes_per_task,
                self.tasks,
                self.task_order.as_deref(),
            ),
        };
        built.context(|| format!("the {} scenario of {}", kind.name(), self.data))
    }
}

/// Runs `spec` on `model` (one run per seed, the baselines beside), with `hook` around
/// every task of the strategy's runs, and with `compress.during` the same runs again
/// compressed during training; returns the first seed's final model (compressed during
/// training when asked) and the report.
pub fn run_continual(
    ctx: &mut Ctx<'_>,
    model: Model,
    spec: &ContinualSpec,
    hook: &mut dyn TaskHook,
) -> Result<(Model, ContinualReport, Vec<ContinualRun>)> {
    spec.validate()?;
    let scenario = spec.scenario(&model)?;
    let strategy = spec.training.strategy;
    let mut lora = spec.lora_rank.map(|rank| {
        let alpha = spec.lora_alpha.unwrap_or(rank as f64);
        LoraHook::new(rank, alpha, spec.training.seed)
    });
    let hook: &mut dyn TaskHook = match &mut lora {
        Some(lora) => lora,
        None => hook,
    };
    let runs = runs_of(ctx, &model, &scenario, spec, strategy, hook)?;
    let during = match spec.compress.during {
        true => {
            let mut during = CompressDuring::new(&spec.compress)?;
            runs_of(ctx, &model, &scenario, spec, strategy, &mut during)?
        }
        false => Vec::new(),
    };
    let compressed = compress_runs(
        ctx,
        &runs,
        &during,
        &scenario,
        &spec.compress,
        spec.training.ncm,
    )?;
    let mut baselines = std::collections::BTreeMap::new();
    if spec.baselines {
        for base in [Strategy::Finetune, Strategy::Joint] {
            if base != strategy {
                let done = runs_of(ctx, &model, &scenario, spec, base, &mut NoHook)?;
                baselines.insert(base.name().to_string(), summarize(&done));
            }
        }
    }
    let report = ContinualReport {
        scenario: scenario.kind.name().to_string(),
        strategy: strategy.name().to_string(),
        tasks: scenario.tasks.iter().map(|t| t.classes.clone()).collect(),
        summary: summarize(&runs),
        seeds: spec
            .seeds
            .iter()
            .zip(&runs)
            .map(|(&s, r)| SeedRun::of(s, r))
            .collect(),
        baselines,
        compressed,
    };
    let first = during.first().unwrap_or(&runs[0]).model.clone();
    Ok((first, report, runs))
}

/// One run of `strategy` per seed of `spec`, its trainer events sent to the observer.
fn runs_of(
    ctx: &mut Ctx<'_>,
    model: &Model,
    scenario: &Scenario,
    spec: &ContinualSpec,
    strategy: Strategy,
    hook: &mut dyn TaskHook,
) -> Result<Vec<ContinualRun>> {
    let mut runs = Vec::new();
    for &seed in &spec.seeds {
        ctx.observer.log(
            crate::Level::Info,
            format!("continual: {} seed {seed}", strategy.name()),
        );
        let run = observed(ctx.observer, TrainConfig::default(), |train| {
            let config = ContinualConfig {
                strategy,
                seed,
                progress: train.progress,
                ..spec.training.clone()
            };
            continual::run(model, scenario, &config, &mut *hook)
                .context(|| format!("continual learning ({}, seed {seed})", strategy.name()))
        })?;
        runs.push(run);
    }
    Ok(runs)
}

/// The figures of `runs` (one per seed): means, and standard deviations for several.
pub fn summarize(runs: &[ContinualRun]) -> Summary {
    let several = runs.len() > 1;
    let metrics: Vec<_> = runs.iter().map(ContinualRun::metrics).collect();
    let stat = |get: &dyn Fn(usize) -> Option<f64>| -> (Option<f64>, Option<f64>) {
        let values: Vec<f64> = (0..runs.len()).filter_map(get).collect();
        if values.is_empty() {
            return (None, None);
        }
        let s = MeanStd::of(&values);
        (Some(s.mean), several.then_some(s.std))
    };
    let matrices: Vec<_> = runs.iter().map(|r| r.r_matrix.clone()).collect();
    let mean_std = matrix_mean_std(&matrices);
    let pick = |f: fn(&MeanStd) -> f64| -> Vec<Vec<f64>> {
        mean_std
            .iter()
            .map(|row| row.iter().map(f).collect())
            .collect()
    };
    let task_il: Option<Vec<_>> = runs.iter().map(|r| r.task_il_matrix.clone()).collect();
    let (average_accuracy, average_accuracy_std) = stat(&|i| Some(metrics[i].average_accuracy));
    let (forgetting, forgetting_std) = stat(&|i| Some(metrics[i].forgetting));
    let (bwt, bwt_std) = stat(&|i| Some(metrics[i].bwt));
    let (task_il_accuracy, task_il_accuracy_std) = stat(&|i| metrics[i].task_il_accuracy);
    let (fwt, fwt_std) = stat(&|i| metrics[i].fwt);
    let (seconds, _) = stat(&|i| Some(runs[i].seconds));
    Summary {
        r_matrix: pick(|m| m.mean),
        r_matrix_std: several.then(|| pick(|m| m.std)),
        task_il_matrix: task_il.map(|m| {
            matrix_mean_std(&m)
                .iter()
                .map(|row| row.iter().map(|c| c.mean).collect())
                .collect()
        }),
        average_accuracy: average_accuracy.unwrap_or(0.0),
        average_accuracy_std,
        forgetting: forgetting.unwrap_or(0.0),
        forgetting_std,
        bwt: bwt.unwrap_or(0.0),
        bwt_std,
        task_il_accuracy,
        task_il_accuracy_std,
        fwt,
        fwt_std,
        seconds: seconds.unwrap_or(0.0),
    }
}
