//! The `prune` step: zero weights (per-layer or global magnitude, random, N:M) or remove
//! whole channels, in one shot, iteratively or gradually during training, fine-tuning with
//! the masks kept; reports the sparsity per layer, sizes (raw and gzip -6) and, for
//! channels, parameters and MACs before and after.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use whittle_data::Dataset;
use whittle_ir::Model;
use whittle_passes::prune::channel::depgraph::node_name;
use whittle_passes::prune::channel::{
    default_protected, ChannelConfig, ChannelPruner, ChannelReport, Criterion, GroupReport, Scope,
    SkippedGroup, TaylorData,
};
use whittle_passes::prune::report::sparsity_report;
use whittle_passes::prune::schedule::iterative_targets;
use whittle_passes::prune::{
    driver, gzip_size, prunable_layers, Curve, FineTune, GradualSchedule, LayerSparsity, Method,
    Pruned, Pruner, Unstructured,
};
use whittle_train::distill::DistillConfig;

use crate::error::{Context, PipelineError, Result};
use crate::step::train::{load_training, observed, steps_per_epoch, Training};
use crate::step::{Ctx, Step, StepReport};

/// Batches of training data the Taylor criterion averages its gradients over.
const TAYLOR_BATCHES: usize = 8;

/// How weights are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMethod {
    /// Each layer to the target sparsity by |w|.
    Magnitude,
    /// One |w| threshold across layers.
    Global,
    /// Seeded random weights per layer (baseline).
    Random,
    /// N:M along the reduction dimension (`n`, `m`).
    Nm,
    /// Remove whole channels (coupled groups found by a dependency graph).
    #[serde(alias = "structured")]
    Channel,
}

/// How sparsity rises over iterative steps or gradual updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CurveKind {
    /// The final sparsity at once.
    Constant,
    /// Linear in steps.
    Linear,
    /// Zhu & Gupta's cubic rule.
    Cubic,
    /// Density falling geometrically.
    Exponential,
    /// (1 - p)^power (the step's `power`, 3 by default).
    Polynomial,
}

/// When pruning happens.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PruneSchedule {
    /// Prune once, then fine-tune when `finetune` is given.
    #[default]
    Oneshot,
    /// Prune in `steps` steps [3] along `curve` [linear], fine-tuning after each.
    Iterative {
        /// Pruning steps.
        steps: Option<usize>,
        /// The sparsity curve.
        curve: Option<CurveKind>,
    },
    /// Update the masks during fine-tuning (Zhu & Gupta).
    Gradual {
        /// Mask updates when `frequency` is not given [10].
        steps: Option<usize>,
        /// The sparsity curve [cubic].
        curve: Option<CurveKind>,
        /// Sparsity at the start step [0].
        initial_sparsity: Option<f64>,
        /// First optimizer step that prunes [0].
        start_step: Option<u64>,
        /// Step reaching the final sparsity [3/4 of the training steps].
        end_step: Option<u64>,
        /// Optimizer steps between mask updates [(end - start) / steps].
        frequency: Option<u64>,
    },
}

/// Distillation from the unpruned model while fine-tuning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillLoss {
    /// Softmax temperature (> 0).
    pub temperature: f64,
    /// Weight of the distillation term in [0, 1]; the rest is cross-entropy on labels.
    pub alpha: f64,
}

impl Default for DistillLoss {
    fn default() -> Self {
        let d = DistillConfig::default();
        DistillLoss {
            temperature: d.temperature,
            alpha: d.alpha,
        }
    }
}

/// Configuration of the `prune` step (the options of `whittle prune`, same defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneStep {
    /// How weights are chosen.
    pub method: PruneMethod,
    /// Fraction of prunable weights to zero, in [0, 1) [0.5; nm: 1 - N/M].
    #[serde(default, alias = "target_sparsity")]
    pub sparsity: Option<f64>,
    /// N of N:M [2].
    #[serde(default)]
    pub n: Option<usize>,
    /// M of N:M [4].
    #[serde(default)]
    pub m: Option<usize>,
    /// Channel importance: l1 | l2 | bn | taylor | random [l1].
    #[serde(default)]
    pub criterion: Option<String>,
    /// Channel: rank all channels together instead of per layer.
    #[serde(default)]
    pub global: bool,
    /// Channel: keep channel counts multiples of this [8].
    #[serde(default)]
    pub round_to: Option<usize>,
    /// Node or weight names to leave dense.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Channel: also prune the stem's output channels (the first Convs, fed by the
    /// model's inputs, are protected by default: they see the raw input). Their removal
    /// thins the next layer's input too, where most of a small CNN's time goes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune_stem: bool,
    /// Seed of the random method and criterion (None: the pipeline's seed).
    #[serde(default)]
    pub seed: Option<u64>,
    /// When pruning happens.
    #[serde(default)]
    pub schedule: PruneSchedule,
    /// Exponent of the polynomial curve [3].
    #[serde(default)]
    pub power: Option<f64>,
    /// Training data (a dataset SPEC) for fine-tuning and the Taylor criterion.
    #[serde(default)]
    pub data: Option<String>,
    /// Use only the first N training samples.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Fine-tuning settings (epochs: after a one-shot prune, after each iterative step,
    /// or in total for gradual pruning); None: no fine-tuning.
    #[serde(default)]
    pub finetune: Option<Training>,
    /// Fine-tune by distillation from the unpruned model.
    #[serde(default)]
    pub distill: Option<DistillLoss>,
}

/// The schedule as reported.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum ScheduleReport {
    /// Pruned once.
    Oneshot,
    /// Pruned in steps to these targets.
    Iterative {
        /// Number of steps.
        steps: usize,
        /// The curve.
        #[serde(flatten)]
        curve: Curve,
        /// Sparsity after each step.
        targets: Vec<f64>,
    },
    /// Masks updated during training.
    Gradual(GradualSchedule),
}

/// Parameters, MACs and groups of channel pruning.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelSummary {
    /// Parameters before pruning.
    pub params_before: u64,
    /// Parameters after.
    pub params_after: u64,
    /// MACs of one sample before.
    pub macs_before: u64,
    /// MACs of one sample after.
    pub macs_after: u64,
    /// Groups of the last pruning step.
    pub groups: Vec<GroupReport>,
    /// Groups left alone, with the reason.
    pub skipped: Vec<SkippedGroup>,
}

impl ChannelSummary {
    /// The summary over every step (first step's "before", last step's "after").
    fn of(reports: &[ChannelReport]) -> Option<Self> {
        let (first, last) = (reports.first()?, reports.last()?);
        Some(ChannelSummary {
            params_before: first.params_before,
            params_after: last.params_after,
            macs_before: first.macs_before,
            macs_after: last.macs_after,
            groups: last.groups.clone(),
            skipped: last.skipped.clone(),
        })
    }
}

/// What a `prune` step did.
#[derive(Clone, Debug, Serialize)]
pub struct PruneOutcome {
    /// The method.
    pub method: PruneMethod,
    /// The schedule with its defaults filled in.
    pub schedule: ScheduleReport,
    /// The sparsity asked for.
    pub target_sparsity: f64,
    /// Zeros among prunable weights; for channels, the fraction of parameters removed.
    pub sparsity: f64,
    /// Sparsity per prunable layer.
    pub layers: Vec<LayerSparsity>,
    /// Parameters of the pruned model.
    pub params: usize,
    /// Its non-zero parameters.
    pub nonzero_params: usize,
    /// Encoded size of the input model.
    pub input_size_bytes: usize,
    /// Its size after gzip -6.
    pub input_gzip_bytes: usize,
    /// Encoded size of the pruned model.
    pub size_bytes: usize,
    /// Its size after gzip -6.
    pub gzip_bytes: usize,
    /// How the gzip sizes were measured.
    pub compression: &'static str,
    /// Fine-tuning epochs.
    pub finetune_epochs: usize,
    /// Channel pruning's parameters, MACs and groups.
    pub channels: Option<ChannelSummary>,
    /// Remarks (layers pruned almost entirely, a schedule that did not finish).
    pub notes: Vec<String>,
}

impl PruneStep {
    /// A one-shot step of `method` at the default sparsity, without fine-tuning.
    pub fn new(method: PruneMethod) -> Self {
        PruneStep {
            method,
            sparsity: None,
            n: None,
            m: None,
            criterion: None,
            global: false,
            round_to: None,
            exclude: Vec::new(),
            prune_stem: false,
            seed: None,
            schedule: PruneSchedule::Oneshot,
            power: None,
            data: None,
            limit: None,
            finetune: None,
            distill: None,
        }
    }

    /// The sparsity the step prunes to (N:M: 1 - N/M), checked.
    pub fn target(&self) -> Result<f64> {
        let target = match (self.method, self.sparsity) {
            (PruneMethod::Nm, Some(_)) => {
                return Err(PipelineError::invalid(
                    "sparsity",
                    "method nm sets the sparsity to 1 - N/M; leave it out",
                ))
            }
            (PruneMethod::Nm, None) => {
                let (n, m) = self.nm();
                whittle_passes::prune::nm::check_nm(n, m).context(|| "n/m".into())?;
                1.0 - n as f64 / m as f64
            }
            (_, s) => s.unwrap_or(0.5),
        };
        if !(0.0..1.0).contains(&target) {
            return Err(PipelineError::invalid(
                "sparsity",
                format!("{target} must be in [0, 1)"),
            ));
        }
        Ok(target)
    }

    /// Prunes `model` and reports what it did.
    pub fn prune(&self, ctx: &mut Ctx<'_>, model: &Model) -> Result<(Model, PruneOutcome)> {
        let target = self.target()?;
        if self.prune_stem && self.method != PruneMethod::Channel {
            return Err(PipelineError::invalid(
                "prune_stem",
                "applies to method channel (unstructured methods already prune the stem)",
            ));
        }
        let seed = self.seed.unwrap_or(ctx.seed);
        let taylor = self.criterion.as_deref() == Some("taylor");
        let epochs = self.finetune.as_ref().map_or(0, |t| t.epochs);
        let train = match &self.data {
            Some(spec) if epochs > 0 || taylor => Some(load_training(
                spec,
                "prune `data`",
                Some(model),
                self.limit,
            )?),
            _ => None,
        };
        let (pruned, schedule, channels) = match (&self.finetune, &train) {
            (Some(training), Some(train)) if epochs > 0 => {
                let config = training.config(train.len(), seed)?;
                observed(ctx.observer, config, |config| {
                    let finetune = FineTune {
                        train,
                        config,
                        teacher: self.distill.as_ref().map(|d| {
                            let cfg = DistillConfig {
                                temperature: d.temperature,
                                alpha: d.alpha,
                                ..DistillConfig::default()
                            };
                            (model, cfg)
                        }),
                    };
                    self.execute(model, target, Some(train), Some(&finetune), seed)
                })?
            }
            (Some(_), None) if epochs > 0 => {
                return Err(PipelineError::invalid(
                    "finetune",
                    "fine-tuning needs training data: give `data`",
                ))
            }
            _ => self.execute(model, target, train.as_ref(), None, seed)?,
        };
        let measuring = || "measuring sparsity".to_string();
        let layers = prunable_layers(&pruned.model, &[]).context(measuring)?;
        let report = sparsity_report(&pruned.model, &layers).context(measuring)?;
        let (input_bytes, output_bytes) = (model.to_bytes(), pruned.model.to_bytes());
        // Channel pruning leaves no zeros: its sparsity is the fraction of parameters removed.
        let sparsity = match &channels {
            Some(c) => 1.0 - c.params_after as f64 / c.params_before.max(1) as f64,
            None => report.sparsity,
        };
        let outcome = PruneOutcome {
            method: self.method,
            schedule,
            target_sparsity: target,
            sparsity,
            layers: report.layers,
            params: report.params,
            nonzero_params: report.nonzero_params,
            input_size_bytes: input_bytes.len(),
            input_gzip_bytes: gzip_size(&input_bytes),
            size_bytes: output_bytes.len(),
            gzip_bytes: gzip_size(&output_bytes),
            compression: "gzip -6",
            finetune_epochs: epochs,
            channels,
            notes: pruned.notes,
        };
        Ok((pruned.model, outcome))
    }

    /// Prunes with the method's pruner (built here: the channel pruner records its
    /// reports, which are returned summarized).
    fn execute(
        &self,
        model: &Model,
        target: f64,
        train: Option<&Dataset>,
        finetune: Option<&FineTune>,
        seed: u64,
    ) -> Result<(Pruned, ScheduleReport, Option<ChannelSummary>)> {
        let channel = match self.method {
            PruneMethod::Channel => Some(self.channel_pruner(model, train, seed)?),
            _ => None,
        };
        let (pruned, schedule) =
            self.run_schedule(model, target, finetune, channel.as_ref(), seed)?;
        let channels = channel.and_then(|c| ChannelSummary::of(&c.reports()));
        Ok((pruned, schedule, channels))
    }

    fn nm(&self) -> (usize, usize) {
        (self.n.unwrap_or(2), self.m.unwrap_or(4))
    }

    /// The curve of the step, else `default`.
    fn curve(&self, curve: Option<CurveKind>, default: CurveKind) -> Curve {
        match curve.unwrap_or(default) {
            CurveKind::Constant => Curve::Constant,
            CurveKind::Linear => Curve::Linear,
            CurveKind::Cubic => Curve::Cubic,
            CurveKind::Exponential => Curve::Exponential,
            CurveKind::Polynomial => Curve::Polynomial {
                power: self.power.unwrap_or(3.0),
            },
        }
    }

    /// The unstructured pruner of the method.
    fn unstructured(&self, seed: u64) -> Result<Unstructured> {
        let method = match self.method {
            PruneMethod::Magnitude => Method::Magnitude,
            PruneMethod::Global => Method::Global,
            PruneMethod::Random => Method::Random { seed },
            PruneMethod::Nm => {
                let (n, m) = self.nm();
                Method::NM { n, m }
            }
            PruneMethod::Channel => {
                return Err(PipelineError::invalid("method", "channel is structured"))
            }
        };
        Unstructured::new(method, self.exclude.clone()).context(|| "exclude".into())
    }

    /// The channel pruner: defaults protect the stem (unless `prune_stem`) and the
    /// classifier, `exclude` more.
    fn channel_pruner(
        &self,
        model: &Model,
        train: Option<&Dataset>,
        seed: u64,
    ) -> Result<ChannelPruner> {
        let invalid = |what: &str, reason: String| Err(PipelineError::invalid(what, reason));
        let criterion = match self.criterion.as_deref().unwrap_or("l1") {
            "l1" => Criterion::L1,
            "l2" => Criterion::L2,
            "bn" => Criterion::BnGamma,
            "taylor" => Criterion::Taylor,
            "random" => Criterion::Random { seed },
            other => {
                return invalid(
                    "criterion",
                    format!("{other}: channel pruning takes l1, l2, bn, taylor or random"),
                )
            }
        };
        let round_to = self.round_to.unwrap_or(8);
        if round_to == 0 {
            return invalid("round_to", "must be at least 1".into());
        }
        let batch = self.finetune.as_ref().map_or(32, |t| t.batch_size).max(1);
        let data = match (&criterion, train) {
            (Criterion::Taylor, Some(data)) => Some(taylor_data(data, batch)?),
            (Criterion::Taylor, None) => {
                return invalid(
                    "criterion",
                    "taylor needs gradients: give training `data`".into(),
                )
            }
            _ => None,
        };
        let mut protected = default_protected(model);
        if self.prune_stem {
            // The defaults are the stem's Convs and the classifier's Gemm or MatMul.
            let convs: HashSet<String> = (model.graph().node.iter())
                .filter(|n| n.op_type == "Conv")
                .map(node_name)
                .collect();
            protected.retain(|name| !convs.contains(name));
        }
        protected.extend(self.exclude.iter().cloned());
        let config = ChannelConfig {
            criterion,
            scope: if self.global {
                Scope::Global
            } else {
                Scope::PerLayer
            },
            round_to,
            protected: Some(protected),
            ..ChannelConfig::default()
        };
        Ok(ChannelPruner::new(config, data))
    }

    /// Runs the schedule with `finetune` (if any).
    fn run_schedule(
        &self,
        model: &Model,
        target: f64,
        finetune: Option<&FineTune>,
        channel: Option<&ChannelPruner>,
        seed: u64,
    ) -> Result<(Pruned, ScheduleReport)> {
        let unstructured;
        let pruner: &dyn Pruner = match channel {
            Some(c) => c,
            None => {
                unstructured = self.unstructured(seed)?;
                &unstructured
            }
        };
        let pruning = || "pruning".to_string();
        Ok(match &self.schedule {
            PruneSchedule::Oneshot => {
                let pruned = driver::oneshot(pruner, model, target, finetune).context(pruning)?;
                (pruned, ScheduleReport::Oneshot)
            }
            PruneSchedule::Iterative { steps, curve } => {
                let steps = steps.unwrap_or(3);
                let curve = self.curve(*curve, CurveKind::Linear);
                let targets = iterative_targets(target, steps, curve).context(pruning)?;
                let pruned = driver::iterative(pruner, model, target, steps, curve, finetune)
                    .context(pruning)?;
                let report = ScheduleReport::Iterative {
                    steps,
                    curve,
                    targets,
                };
                (pruned, report)
            }
            PruneSchedule::Gradual { .. } => {
                let (Some(ft), None) = (finetune, channel) else {
                    return Err(PipelineError::invalid(
                        "schedule",
                        "gradual pruning needs unstructured pruning, training `data` and `finetune` epochs",
                    ));
                };
                let gradual = self.gradual(target, ft)?;
                let pruned = driver::gradual(&self.unstructured(seed)?, model, &gradual, ft)
                    .context(pruning)?;
                (pruned, ScheduleReport::Gradual(gradual))
            }
        })
    }

    /// The gradual schedule over the fine-tuning run, with defaults filled in.
    fn gradual(&self, target: f64, ft: &FineTune) -> Result<GradualSchedule> {
        let PruneSchedule::Gradual {
            steps,
            curve,
            initial_sparsity,
            start_step,
            end_step,
            frequency,
        } = &self.schedule
        else {
            return Err(PipelineError::invalid("schedule", "not gradual"));
        };
        let per_epoch = steps_per_epoch(ft.train.len(), ft.config.batch_size, 1) as u64;
        let total = per_epoch * ft.config.epochs as u64;
        let start = start_step.unwrap_or(0);
        let end = end_step.unwrap_or((total * 3 / 4).max(start + 1));
        let updates = steps.unwrap_or(10).max(1) as u64;
        let schedule = GradualSchedule {
            curve: self.curve(*curve, CurveKind::Cubic),
            initial: initial_sparsity.unwrap_or(0.0),
            last: target,
            start,
            end,
            frequency: frequency.unwrap_or((end.saturating_sub(start) / updates).max(1)),
        };
        schedule.check().context(|| "gradual schedule".into())?;
        Ok(schedule)
    }
}

/// The first [`TAYLOR_BATCHES`] batches of `data`.
fn taylor_data(data: &Dataset, batch: usize) -> Result<TaylorData> {
    let mut batches = Vec::new();
    for start in (0..data.len()).step_by(batch).take(TAYLOR_BATCHES) {
        let (images, labels) = data
            .batch(start, (start + batch).min(data.len()))
            .context(|| "taking Taylor batches".into())?;
        batches.push((images, labels.to_vec()));
    }
    Ok(TaylorData { batches })
}

impl Step for PruneStep {
    fn name(&self) -> &'static str {
        "prune"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (pruned, outcome) = self.prune(ctx, &model)?;
        let summary = vec![format!(
            "pruned to {:.2}% sparsity ({} of {} parameters non-zero), {} fine-tuning epochs",
            100.0 * outcome.sparsity,
            outcome.nonzero_params,
            outcome.params,
            outcome.finetune_epochs
        )];
        Ok((pruned, StepReport::new(self.name(), &outcome, summary)?))
    }

    fn data_specs(&self) -> Vec<&str> {
        self.data.iter().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use whittle_bench::ort_engine::OrtEngine;
    use whittle_exec::{Executor, Value};
    use whittle_ir::TensorData;

    use super::*;
    use crate::{ModelSource, SilentObserver};

    /// Output channels of the Conv fed by the model's input, and input channels of the
    /// Conv after it.
    fn stem_channels(model: &Model) -> (i64, i64) {
        let graph = model.graph();
        let dims = |name: &str| {
            let init = graph.initializer.iter().find(|t| t.name == name);
            init.map_or_else(Vec::new, |t| t.dims.clone())
        };
        let convs: Vec<_> = graph.node.iter().filter(|n| n.op_type == "Conv").collect();
        (dims(&convs[0].input[1])[0], dims(&convs[1].input[1])[1])
    }

    fn pruned(prune_stem: bool) -> Result<Model> {
        let model = ModelSource::parse("zoo:cnn").load()?;
        let step = PruneStep {
            sparsity: Some(0.5),
            prune_stem,
            ..PruneStep::new(PruneMethod::Channel)
        };
        Ok(step.prune(&mut Ctx::new(&SilentObserver), &model)?.0)
    }

    #[test]
    fn prune_stem_removes_the_stems_channels_and_ort_agrees() {
        // By default the stem keeps its 32 output channels.
        assert_eq!(stem_channels(&pruned(false).unwrap()), (32, 32));
        let model = pruned(true).unwrap();
        assert_eq!(stem_channels(&model), (16, 16));

        // The pruned model runs the same in whittle's executor and in ONNX Runtime.
        let values: Vec<f32> = (0..28 * 28).map(|i| (i as f32 * 0.37).sin()).collect();
        let image = TensorData::from_slice(vec![1, 1, 28, 28], &values).unwrap();
        let exec = Executor::new(&model).unwrap();
        let (input, output) = (
            exec.inputs()[0].name.clone(),
            exec.output_names()[0].clone(),
        );
        let feed = HashMap::from([(input.clone(), Value::try_from(&image).unwrap())]);
        let ours: Vec<f32> = exec.run(feed).unwrap()[&output].to_f32_vec().unwrap();
        let dir = whittle_testkit::scratch("prune-stem");
        let path = dir.join("pruned.onnx");
        model.save(&path, &whittle_ir::ExternalData::Never).unwrap();
        let theirs = OrtEngine::load(&path, 1)
            .unwrap()
            .run(&HashMap::from([(input, image)]))
            .unwrap()[&output]
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(ours.len(), 10);
        let diff = whittle_ir::numeric::max_abs_diff(ours, theirs);
        assert!(diff < 1e-4, "executor and ONNX Runtime differ by {diff}");
    }

    #[test]
    fn prune_stem_is_refused_for_unstructured_methods() {
        let model = ModelSource::parse("zoo:cnn").load().unwrap();
        let step = PruneStep {
            prune_stem: true,
            ..PruneStep::new(PruneMethod::Magnitude)
        };
        let err = step
            .prune(&mut Ctx::new(&SilentObserver), &model)
            .unwrap_err();
        assert!(err.to_string().contains("prune_stem"), "{err}");
    }
}
