//! Compression of a continual learner (issue 19, item 5) and LoRA adapters per task
//! (item 3) as [`TaskHook`]s of [`whittle_train::continual::run`].
//!
//! After a run, [`compress`] turns its final model into FP16, INT8, pruned and pruned +
//! INT8 models through the pipeline's own `fp16`, `quantize` and `prune` steps, and scores
//! each like the run scored its tasks: the R matrix's last row replaced by the compressed
//! model's accuracy per task gives its average accuracy and forgetting. Calibration and
//! the fine-tuning that recovers pruning see only what a continual learner keeps: the
//! replay buffer and the last task's data (class-balanced with the buffer), never the
//! earlier tasks (that would be joint training in disguise).
//!
//! With `during`, [`CompressDuring`] compresses while the learner trains: before each task
//! the weights are pruned by magnitude to a sparsity that rises task by task to the target
//! (the masks re-applied after every step, so pruned weights stay zero), and the last task
//! trains with fake quantization calibrated on the buffer and that task's data, exported
//! as the same QDQ INT8 model the `quantize` step makes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use whittle_data::scenario::{Scenario, ScenarioKind};
use whittle_data::Dataset;
use whittle_exec::{model_inputs, Executor, Value};
use whittle_ir::files::TempPath;
use whittle_ir::{Model, TensorData};
use whittle_passes::lora::{self, LoraConfig, LoraReport};
use whittle_passes::prune::finetune::{apply_to_params, mask_tensors, MaskTensor};
use whittle_passes::prune::{Mask, Method, Pruner, Unstructured};
use whittle_passes::qat::{self, insert::ScaleMode, QatState};
use whittle_passes::quantize::QuantConfig;
use whittle_train::continual::metrics::{self, MeanStd};
use whittle_train::continual::ncm::{ncm_after_task, trained_head};
use whittle_train::continual::{self, ContinualRun, Ncm, ReplayBuffer, TaskHook, TaskStart};
use whittle_train::TrainError;

use crate::error::{Context, PipelineError, Result};
use crate::eval::{Evaluator, LatencyPlan};
use crate::feed;
use crate::step::fp16::Fp16;
use crate::step::prune::PruneStep;
use crate::step::quantize::{Quantize, CALIB_SAMPLES};
use crate::step::verify::Checks;
use crate::step::{Ctx, Step};

/// Samples per class of the last task kept for recovery when the run has no buffer.
const NO_BUFFER_PER_CLASS: usize = 250;

/// A precision a continual learner is quantized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Half-precision floats (the `fp16` step).
    Fp16,
    /// Static INT8, calibrated on the buffer and the last task (the `quantize` step).
    Int8,
}

impl Precision {
    /// The name in reports and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

/// What to compress the final model into (recipe keys of the `continual` step's
/// `compress` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressConfig {
    /// Precisions to quantize to, each alone and (with `prune`) after pruning.
    pub quantize: Vec<Precision>,
    /// Fraction of Gemm/MatMul/Conv weights to zero by magnitude, then fine-tune.
    pub prune: Option<f64>,
    /// Epochs of fine-tuning after pruning, on the buffer and the last task.
    pub finetune_epochs: usize,
    /// Learning rate of that fine-tuning (SGD, as the continual run trains).
    pub finetune_lr: f64,
    /// Time each model in ONNX Runtime (frames per second at batch 1).
    pub fps: bool,
    /// Also compress during training ([`CompressDuring`]): pruning rising to `prune`
    /// across tasks, quantization-aware training on the last task when `quantize` has
    /// INT8; measured beside the variants compressed after the run (`during_*` keys).
    pub during: bool,
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            quantize: Vec::new(),
            prune: None,
            finetune_epochs: 1,
            finetune_lr: 0.01,
            fps: true,
            during: false,
        }
    }
}

impl CompressConfig {
    /// True when nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.quantize.is_empty() && self.prune.is_none()
    }

    /// Whether compression during training quantizes (INT8 asked for).
    fn qat(&self) -> bool {
        self.quantize.contains(&Precision::Int8)
    }

    /// The key of the model compressed during training: `during_pruned`, `during_int8`
    /// or `during_pruned_int8`.
    pub fn during_name(&self) -> String {
        let mut name = "during".to_string();
        if self.prune.is_some() {
            name.push_str("_pruned");
        }
        if self.qat() {
            name.push_str("_int8");
        }
        name
    }

    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.during && self.prune.is_none() && !self.qat() {
            return Err(PipelineError::invalid(
                "`compress.during`",
                "compressing during training needs `prune` or INT8 in `quantize`",
            ));
        }
        if let Some(s) = self.prune {
            if !(s > 0.0 && s < 1.0) {
                return Err(PipelineError::invalid(
                    "`compress.prune`",
                    format!("the sparsity must be in (0, 1), got {s}"),
                ));
            }
        }
        if !(self.finetune_lr > 0.0 && self.finetune_lr.is_finite()) {
            return Err(PipelineError::invalid(
                "`compress.finetune_lr`",
                format!("must be positive, got {}", self.finetune_lr),
            ));
        }
        Ok(())
    }
}

/// How one compressed model does (fractions 0..1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressedMetrics {
    /// Mean accuracy over all tasks.
    pub average_accuracy: f64,
    /// Its standard deviation over seeds (several seeds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_accuracy_std: Option<f64>,
    /// Forgetting (Chaudhry et al.) with the compressed model as the last row.
    pub forgetting: f64,
    /// Its standard deviation over seeds (several seeds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgetting_std: Option<f64>,
    /// Mean task-IL accuracy (class-IL and task-IL scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_il_accuracy: Option<f64>,
    /// Bytes of the serialized model.
    pub size_bytes: u64,
    /// Initializer elements.
    pub parameters: u64,
    /// Initializer elements that are not zero.
    pub nonzero_parameters: u64,
    /// Single-sample inferences per second in ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
}

/// Compresses `run`'s final model as `cfg` asks and measures every variant, `fp32` (the
/// model itself) included, keyed `fp32`, `fp16`, `int8`, `pruned`, `pruned_int8`, ...
/// With `ncm` on (the run's model has the nearest-class-mean head) the pruned model's head
/// is the means again, by the same distance, after the fine-tune (a hybrid's trained head
/// fine-tunes without its means, which are then added again).
pub fn compress(
    ctx: &mut Ctx<'_>,
    run: &ContinualRun,
    scenario: &Scenario,
    cfg: &CompressConfig,
    ncm: Ncm,
) -> Result<BTreeMap<String, CompressedMetrics>> {
    cfg.validate()?;
    let Some(last) = scenario.tasks.last() else {
        return Err(PipelineError::Refused("the scenario has no tasks".into()));
    };
    let recovery = recovery_data(run.buffer.as_ref(), &last.train, scenario.num_classes)?;
    let files = RecoveryFiles::write(ctx, &recovery)?;
    let spec = files.spec();
    let mut variants = vec![("fp32".to_string(), run.model.clone())];
    let mut bases = vec![(String::new(), run.model.clone())];
    if let Some(sparsity) = cfg.prune {
        // A hybrid head's trained part fine-tunes alone (as the run trained it); its
        // means come back after.
        let trained = match ncm {
            Ncm::Hybrid { .. } => trained_head(&run.model)
                .context(|| "the trained head of the hybrid model".into())?,
            _ => run.model.clone(),
        };
        let mut pruned = prune(ctx, &trained, sparsity, cfg, &spec)?;
        if ncm.is_on() {
            // The fine-tune trained the mean head by cross-entropy on mostly the last
            // task's classes: the means of the pruned features replace it again.
            pruned = ncm_after_task(
                &pruned,
                run.buffer.as_ref(),
                &last.train,
                scenario.num_classes,
                ncm,
            )
            .context(|| "the nearest-class-mean head of the pruned model".into())?;
        }
        variants.push(("pruned".into(), pruned.clone()));
        bases.push(("pruned_".into(), pruned));
    }
    for (prefix, base) in &bases {
        for &precision in &cfg.quantize {
            let model = quantize(ctx, base, precision, &spec)?;
            variants.push((format!("{prefix}{}", precision.name()), model));
        }
    }
    let mut out = BTreeMap::new();
    for (name, model) in variants {
        let measured = measure(ctx, run, scenario, &model, cfg.fps)
            .map_err(|e| PipelineError::Refused(format!("measuring the {name} model: {e}")))?;
        out.insert(name, measured);
    }
    Ok(out)
}

/// [`compress`] for each seed's run, and the final model of each run compressed during
/// training (`during`, one per seed, keyed [`CompressConfig::during_name`]); figures are
/// the means over runs, with standard deviations of accuracy and forgetting for several
/// runs (`ncm` as for [`compress`]). Empty when `cfg` asks for nothing.
pub fn compress_runs(
    ctx: &mut Ctx<'_>,
    runs: &[ContinualRun],
    during: &[ContinualRun],
    scenario: &Scenario,
    cfg: &CompressConfig,
    ncm: Ncm,
) -> Result<BTreeMap<String, CompressedMetrics>> {
    if cfg.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut per_run = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let mut measured = compress(ctx, run, scenario, cfg, ncm)?;
        if let Some(d) = during.get(i) {
            let name = cfg.during_name();
            let m = measure(ctx, d, scenario, &d.model, cfg.fps)
                .map_err(|e| PipelineError::Refused(format!("measuring the {name} model: {e}")))?;
            measured.insert(name, m);
        }
        per_run.push(measured);
    }
    let Some(first) = per_run.first() else {
        return Ok(BTreeMap::new());
    };
    let several = per_run.len() > 1;
    let mut out = BTreeMap::new();
    for name in first.keys() {
        let all: Vec<&CompressedMetrics> = per_run.iter().filter_map(|m| m.get(name)).collect();
        let stat = |f: &dyn Fn(&CompressedMetrics) -> f64| {
            MeanStd::of(&all.iter().map(|m| f(m)).collect::<Vec<_>>())
        };
        let mean = |f: &dyn Fn(&CompressedMetrics) -> f64| stat(f).mean;
        let optional = |f: &dyn Fn(&CompressedMetrics) -> Option<f64>| {
            let values: Option<Vec<f64>> = all.iter().map(|m| f(m)).collect();
            values.map(|v| MeanStd::of(&v).mean)
        };
        let (accuracy, forgetting) = (stat(&|m| m.average_accuracy), stat(&|m| m.forgetting));
        out.insert(
            name.clone(),
            CompressedMetrics {
                average_accuracy: accuracy.mean,
                average_accuracy_std: several.then_some(accuracy.std),
                forgetting: forgetting.mean,
                forgetting_std: several.then_some(forgetting.std),
                task_il_accuracy: optional(&|m| m.task_il_accuracy),
                size_bytes: mean(&|m| m.size_bytes as f64).round() as u64,
                parameters: mean(&|m| m.parameters as f64).round() as u64,
                nonzero_parameters: mean(&|m| m.nonzero_parameters as f64).round() as u64,
                fps: optional(&|m| m.fps),
            },
        );
    }
    Ok(out)
}

/// The buffer plus the training samples of the task at hand (`task`: the last one after
/// a run), as many per class as the buffer holds on average (the task's first ones:
/// datasets come shuffled), the two spread evenly through each other so that any prefix
/// (the calibration samples) mixes both.
pub fn recovery_data(
    buffer: Option<&ReplayBuffer>,
    task: &Dataset,
    num_classes: usize,
) -> Result<Dataset> {
    let dims = task.sample_dims().to_vec();
    let buffer = match buffer {
        Some(b) if !b.is_empty() => Some(
            b.dataset(&dims, num_classes)
                .context(|| "the replay buffer".into())?,
        ),
        _ => None,
    };
    let per_class = buffer.as_ref().map_or(NO_BUFFER_PER_CLASS, |b| {
        let classes = b
            .labels
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        (b.len() / classes.max(1)).max(1)
    });
    let mut taken = BTreeMap::<i64, usize>::new();
    let mut rows = Vec::new();
    for (i, label) in task.labels.iter().enumerate() {
        let count = taken.entry(*label).or_default();
        if *count < per_class {
            *count += 1;
            rows.push(i);
        }
    }
    let (images, labels) = task.gather(&rows).context(|| "the task's data".into())?;
    let mut parts = vec![(
        images
            .to_vec::<f32>()
            .context(|| "the task's data".into())?,
        labels,
    )];
    if let Some(b) = buffer {
        parts.push((
            b.images
                .to_vec::<f32>()
                .context(|| "the replay buffer".into())?,
            b.labels,
        ));
    }
    let row = dims.iter().product::<usize>();
    // (part, index) ordered by relative position within the part.
    let mut order: Vec<(usize, usize)> = (parts.iter().enumerate())
        .flat_map(|(p, (_, labels))| (0..labels.len()).map(move |i| (p, i)))
        .collect();
    let position = |&(p, i): &(usize, usize)| (i as f64 + 0.5) / parts[p].1.len() as f64;
    order.sort_by(|a, b| position(a).total_cmp(&position(b)));
    let values: Vec<f32> = (order.iter())
        .flat_map(|&(p, i)| parts[p].0[i * row..(i + 1) * row].iter().copied())
        .collect();
    let labels: Vec<i64> = order.iter().map(|&(p, i)| parts[p].1[i]).collect();
    let images = TensorData::from_slice([vec![labels.len()], dims].concat(), &values)
        .context(|| "the recovery data".into())?;
    Dataset::new(images, labels, num_classes).context(|| "the recovery data".into())
}

/// The recovery data as `npy:X,Y` files the steps read (removed when dropped).
struct RecoveryFiles {
    images: TempPath,
    labels: TempPath,
}

impl RecoveryFiles {
    fn write(ctx: &Ctx<'_>, data: &Dataset) -> Result<Self> {
        let dir = ctx.scratch_dir();
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let images = TempPath::beside(&dir.join("continual-recovery-x.npy"));
        let labels = TempPath::beside(&dir.join("continual-recovery-y.npy"));
        let y = TensorData::from_slice(vec![data.labels.len()], &data.labels)
            .context(|| "the recovery labels".into())?;
        let save = |path: &Path, t: &TensorData| {
            whittle_data::npy::write_npy(path, t).context(|| format!("writing {}", path.display()))
        };
        save(images.path(), &data.images)?;
        save(labels.path(), &y)?;
        Ok(RecoveryFiles { images, labels })
    }

    fn spec(&self) -> String {
        format!(
            "npy:{},{}",
            self.images.path().display(),
            self.labels.path().display()
        )
    }
}

/// Checks of a compression step: none (the continual scores are the measurement).
fn quiet_checks() -> Checks {
    Checks {
        verify_samples: 0,
        no_latency: true,
        ..Checks::default()
    }
}

fn quantize(ctx: &mut Ctx<'_>, model: &Model, precision: Precision, spec: &str) -> Result<Model> {
    let step: Box<dyn Step> = match precision {
        Precision::Fp16 => Box::new(Fp16 {
            checks: quiet_checks(),
            ..Fp16::default()
        }),
        Precision::Int8 => Box::new(Quantize {
            calib_data: Some(spec.to_string()),
            checks: quiet_checks(),
            ..Quantize::default()
        }),
    };
    Ok(step.run(ctx, model.clone())?.0)
}

/// Magnitude pruning to `sparsity`, fine-tuned on the recovery data with the zeros kept.
fn prune(
    ctx: &mut Ctx<'_>,
    model: &Model,
    sparsity: f64,
    cfg: &CompressConfig,
    spec: &str,
) -> Result<Model> {
    let step: PruneStep = serde_json::from_value(serde_json::json!({
        "method": "magnitude",
        "sparsity": sparsity,
        "data": spec,
        "finetune": {
            "epochs": cfg.finetune_epochs,
            "optimizer": "sgd",
            "momentum": 0.9,
            "lr": cfg.finetune_lr,
            "batch_size": 32,
        },
    }))
    .map_err(|e| PipelineError::invalid("`compress`", e.to_string()))?;
    let step: &dyn Step = if cfg.finetune_epochs == 0 {
        &PruneStep {
            finetune: None,
            ..step
        }
    } else {
        &step
    };
    Ok(step.run(ctx, model.clone())?.0)
}

/// Scores `model` on every task of `scenario` in place of `run`'s final model.
fn measure(
    ctx: &Ctx<'_>,
    run: &ContinualRun,
    scenario: &Scenario,
    model: &Model,
    fps: bool,
) -> Result<CompressedMetrics> {
    let task_il = scenario.kind == ScenarioKind::TaskIl;
    let both =
        continual::task_accuracies(model, scenario).context(|| "accuracy per task".into())?;
    let mut r = run.r_matrix.clone();
    if let Some(last) = r.last_mut() {
        *last = if task_il {
            both.masked.clone()
        } else {
            both.plain
        };
    }
    let task_il_accuracy = match scenario.kind {
        ScenarioKind::DomainIl => None,
        ScenarioKind::TaskIl => Some(metrics::average_accuracy(&r)),
        ScenarioKind::ClassIl => {
            Some(both.masked.iter().sum::<f64>() / both.masked.len().max(1) as f64)
        }
    };
    let mut evaluator = Evaluator::new().with_cost();
    if fps {
        evaluator = evaluator.with_latency(LatencyPlan {
            whittle: false,
            threads: ctx.threads.unwrap_or(1),
            ..LatencyPlan::default()
        });
    }
    let m = evaluator.evaluate(ctx, model)?;
    Ok(CompressedMetrics {
        average_accuracy: metrics::average_accuracy(&r),
        average_accuracy_std: None,
        forgetting: metrics::forgetting(&r),
        forgetting_std: None,
        task_il_accuracy,
        size_bytes: m.size_bytes.unwrap_or(0),
        parameters: m.parameters.unwrap_or(0),
        nonzero_parameters: nonzero_parameters(model)?,
        fps: m.latency_ms_ort.map(|ms| 1000.0 / ms),
    })
}

/// Initializer elements that are not zero (float and integer tensors alike).
fn nonzero_parameters(model: &Model) -> Result<u64> {
    let mut count = 0;
    for t in &model.graph().initializer {
        let data =
            TensorData::from_proto(t, None).context(|| format!("initializer '{}'", t.name))?;
        if let Ok(values) = data.to_f64_vec() {
            count += values.iter().filter(|v| **v != 0.0).count() as u64;
        }
    }
    Ok(count)
}

/// Compression during continual training (`compress.during`): before task `t` of `T` the
/// prunable weights are pruned by magnitude to `prune x t / (T - 1)` (dense on the first
/// task, the target on the last), the masks re-applied after every optimizer step; with
/// INT8 the last task trains with fake quantization (activation ranges calibrated on the
/// buffer and that task's data) and ends as a QDQ INT8 model.
pub struct CompressDuring {
    prune: Option<(Unstructured, f64)>,
    quant: Option<QuantConfig>,
    masks: Vec<Mask>,
    /// `masks` on the executor's device (made at the task's first step).
    tensors: Option<Vec<MaskTensor>>,
    /// The task in training carries fake quantization (the last one, with INT8).
    quantizing: bool,
    /// The sparsity each task of the last run trained at.
    pub sparsity: Vec<f64>,
}

impl CompressDuring {
    /// The hook for `cfg` (its `prune` target and, with `int8` in `quantize`, QAT).
    pub fn new(cfg: &CompressConfig) -> Result<Self> {
        let pruner = Unstructured::new(Method::Magnitude, Vec::new())
            .map_err(|e| PipelineError::invalid("`compress.prune`", e.to_string()))?;
        let quant = match cfg.qat() {
            true => Some(Quantize::default().config()?),
            false => None,
        };
        Ok(CompressDuring {
            prune: cfg.prune.map(|s| (pruner, s)),
            quant,
            masks: Vec::new(),
            tensors: None,
            quantizing: false,
            sparsity: Vec::new(),
        })
    }
}

fn during_error(what: &str) -> impl Fn(whittle_passes::PassError) -> TrainError + '_ {
    move |e| TrainError::Invalid(format!("compressing during training ({what}): {e}"))
}

impl TaskHook for CompressDuring {
    fn begin_task(
        &mut self,
        start: &TaskStart<'_>,
        model: Model,
    ) -> whittle_train::Result<(Model, Vec<String>)> {
        if start.task == 0 {
            self.sparsity.clear();
        }
        let mut model = model;
        self.masks.clear();
        self.tensors = None;
        let target = self.prune.as_ref().map_or(0.0, |(_, s)| *s);
        let sparsity = match start.tasks {
            1 => target,
            n => target * start.task as f64 / (n - 1) as f64,
        };
        self.sparsity.push(sparsity);
        if let Some((pruner, _)) = self.prune.as_ref().filter(|_| sparsity > 0.0) {
            let pruned = pruner
                .prune(&model, sparsity)
                .map_err(during_error("pruning"))?;
            self.masks = pruned.masks;
            model = pruned.model;
        }
        if let Some(cfg) = self.quant.as_ref().filter(|_| start.is_last()) {
            let data = recovery_data(start.buffer, start.train, start.num_classes)
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            let input = model_inputs(&model)
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            let images = Value::try_from(&data.images)?;
            let calib = feed::batches(&[(input, images)], CALIB_SAMPLES, feed::BATCH)
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            let state =
                QatState::calibrate(&model, cfg, calib).map_err(during_error("calibration"))?;
            model = qat::insert::training_graph(&state, cfg, ScaleMode::Fixed)
                .map_err(during_error("fake quantization"))?;
            self.quantizing = true;
        }
        Ok((model, Vec::new()))
    }

    fn after_step(&mut self, exec: &Executor) -> whittle_train::Result<()> {
        let tensors = match self.tensors.take() {
            Some(t) => t,
            None => mask_tensors(&self.masks, exec.device())?,
        };
        apply_to_params(exec, &tensors)?;
        self.tensors = Some(tensors);
        Ok(())
    }

    fn end_task(&mut self, _task: usize, model: Model) -> whittle_train::Result<Model> {
        match self.quant.as_ref() {
            Some(cfg) if std::mem::take(&mut self.quantizing) => {
                let state = qat::strip::strip(&model).map_err(during_error("QAT export"))?;
                let (exported, _) =
                    qat::export::export_qdq(&state, cfg).map_err(during_error("QAT export"))?;
                Ok(exported)
            }
            _ => Ok(model),
        }
    }
}

/// LoRA adapters per task: before each task every Gemm/MatMul/1x1 Conv but the head gets
/// a fresh adapter and only the adapters and the head train; after it the adapters are
/// merged, so each task ends with a plain model.
pub struct LoraHook {
    config: LoraConfig,
    /// What each task's adapters were.
    pub reports: Vec<LoraReport>,
}

impl LoraHook {
    /// Adapters of `rank` (scaled by `alpha / rank`), seeded with `seed` plus the task.
    pub fn new(rank: usize, alpha: f64, seed: u64) -> Self {
        LoraHook {
            config: LoraConfig {
                alpha,
                exclude_head: true,
                seed,
                ..LoraConfig::new(rank)
            },
            reports: Vec::new(),
        }
    }
}

fn lora_error(e: whittle_passes::PassError) -> TrainError {
    TrainError::Invalid(format!("LoRA: {e}"))
}

impl TaskHook for LoraHook {
    fn begin_task(
        &mut self,
        start: &TaskStart<'_>,
        model: Model,
    ) -> whittle_train::Result<(Model, Vec<String>)> {
        let config = LoraConfig {
            seed: self.config.seed.wrapping_add(start.task as u64),
            ..self.config.clone()
        };
        let head = lora::head_parameters(&model).map_err(lora_error)?;
        let (adapted, report) = lora::add_adapters(&model, &config).map_err(lora_error)?;
        let freeze = lora::adapter_freeze(&adapted, &head).map_err(lora_error)?;
        self.reports.push(report);
        Ok((adapted, freeze))
    }

    fn end_task(&mut self, _task: usize, model: Model) -> whittle_train::Result<Model> {
        lora::merge_adapters(&model).map_err(lora_error)
    }
}
