//! The `qat` step: quantization-aware training. The model trains with fake quantization
//! where static INT8 quantization puts its Q/DQ pairs and comes out in the same QDQ layout
//! as the `quantize` step's static mode.
//!
//! The run is split into phases at the epoch options: float epochs before `start_epoch`;
//! then fake quantization, with activation ranges calibrated on `calib_samples` training
//! samples (or taken from the input's Q/DQ pairs when it is a QDQ model). Without `lsq`
//! the ranges are re-calibrated at the start of every quantized epoch before
//! `freeze_observers_epoch` (default: calibrated once, then frozen); with `lsq` the scales
//! are learned until that epoch (default: to the end). From `freeze_bn_epoch`
//! BatchNormalization is folded into the preceding Conv for the remaining epochs. Each
//! phase is a fresh trainer (optimizer state and the LR schedule restart at phase
//! boundaries).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use whittle_data::Dataset;
use whittle_exec::{model_inputs, Value};
use whittle_ir::Model;
use whittle_passes::qat::{self, insert::ScaleMode, QatState};
use whittle_passes::quantize::{self, QuantConfig};
use whittle_train::{EpochReport, Trainer};

use super::quantize::{reduce_range_note, Calibrator, CALIB_SAMPLES};
use super::train::{load_training, observed, TestSet, Training};
use super::{Ctx, Step, StepReport};
use crate::error::{Context, Result};
use crate::feed::{self, Feed};
use crate::refuse;

/// Percentile of the percentile calibrator when `percentile` is not given.
const PERCENTILE: f64 = 99.99;

/// Configuration of the `qat` step (the options of `whittle qat`, same defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qat {
    /// Training data: a dataset SPEC (its training split; calibration uses its first
    /// samples).
    pub data: String,
    /// Use only the first N training samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Float epochs before fake quantization is inserted.
    #[serde(default)]
    pub start_epoch: usize,
    /// Fold BatchNormalization into the preceding Conv from this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_bn_epoch: Option<usize>,
    /// Activation scales stop changing from this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_observers_epoch: Option<usize>,
    /// Learn the activation step sizes (LSQ).
    #[serde(default)]
    pub lsq: bool,
    /// How activation ranges are calibrated.
    #[serde(default)]
    pub calibration: Calibrator,
    /// Percentile of the percentile calibrator.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Training samples used for calibration.
    #[serde(default = "default_calib_samples")]
    pub calib_samples: usize,
    /// One weight scale per output channel.
    #[serde(default)]
    pub per_channel: bool,
    /// 7-bit weights, for CPUs without VNNI.
    #[serde(default)]
    pub reduce_range: bool,
    /// Labelled data (its test split) to measure the float, post-training-quantized and
    /// QAT models' accuracy on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    /// Eval samples to use (None: the whole test split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<usize>,
    /// The trainer's settings (`epochs`: all epochs, float and quantized).
    #[serde(default)]
    pub training: Training,
    /// How errors name the training data (empty: "qat `data`"; the CLI names its flag).
    #[serde(skip)]
    pub data_role: String,
}

fn default_percentile() -> f64 {
    PERCENTILE
}

fn default_calib_samples() -> usize {
    CALIB_SAMPLES
}

/// One trained epoch and whether it ran with fake quantization.
#[derive(Clone, Debug, Serialize)]
pub struct QatEpoch {
    /// "float" or "qat".
    pub phase: &'static str,
    /// The trainer's report of the epoch (epochs counted over all phases).
    #[serde(flatten)]
    pub report: EpochReport,
}

/// What a `qat` step did.
#[derive(Clone, Debug, Serialize)]
pub struct QatOutcome {
    /// Accuracy of the input model, with eval data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_fp32: Option<f64>,
    /// Accuracy of static post-training quantization with the same settings, with eval
    /// data (the yardstick QAT should beat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_ptq: Option<f64>,
    /// Accuracy of the QAT model, with eval data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_qat: Option<f64>,
    /// Samples the accuracies were measured on (0 without eval data).
    pub test_samples: usize,
    /// Nodes quantized in the exported model.
    pub quantized_nodes: usize,
    /// Every trained epoch.
    pub epochs: Vec<QatEpoch>,
    /// Warnings about running the model (e.g. full-range int8 weights on a CPU without
    /// VNNI); keys in backticks.
    pub notes: Vec<String>,
}

/// Epochs `first..end` trained as one trainer run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Phase {
    first: usize,
    end: usize,
}

impl Qat {
    /// A step training on the training split of `data`, with default settings.
    pub fn new(data: impl Into<String>) -> Self {
        Qat {
            data: data.into(),
            limit: None,
            start_epoch: 0,
            freeze_bn_epoch: None,
            freeze_observers_epoch: None,
            lsq: false,
            calibration: Calibrator::default(),
            percentile: PERCENTILE,
            calib_samples: CALIB_SAMPLES,
            per_channel: false,
            reduce_range: false,
            eval_data: None,
            eval_samples: None,
            training: Training::default(),
            data_role: String::new(),
        }
    }

    /// Refuses inconsistent epochs and out-of-range values.
    pub fn validate(&self) -> Result<()> {
        let epochs = self.training.epochs;
        if self.start_epoch >= epochs {
            refuse!(
                "`start_epoch` {} must be below `epochs` {epochs} (no epoch would train quantized)",
                self.start_epoch
            );
        }
        if self.calib_samples == 0 {
            refuse!("`calib_samples` must be at least 1");
        }
        if self.eval_samples == Some(0) {
            refuse!("`eval_samples` must be at least 1 (leave it out for the whole test split)");
        }
        if !(self.percentile > 50.0 && self.percentile <= 100.0) {
            refuse!("`percentile` must be in (50, 100], got {}", self.percentile);
        }
        Ok(())
    }

    /// The INT8 configuration of the fake quantization and of the exported model.
    pub fn config(&self) -> QuantConfig {
        QuantConfig {
            per_channel: self.per_channel,
            reduce_range: self.reduce_range,
            calibration: self.calibration.method(self.percentile),
            ..QuantConfig::default()
        }
    }

    /// Trains `model` with fake quantization and exports it as a QDQ model.
    pub fn train(&self, ctx: &mut Ctx<'_>, model: &Model) -> Result<(Model, QatOutcome)> {
        self.validate()?;
        let cfg = self.config();
        let state = initial_state(model)?;
        quantize::prepare(state.model.clone(), &cfg, quantize::WeightSource::Any)
            .context(|| "nothing to train with fake quantization".into())?;
        let role = match self.data_role.as_str() {
            "" => "qat `data`",
            role => role,
        };
        let train = load_training(&self.data, role, Some(&state.model), self.limit)?;
        let inputs = model_inputs(&state.model);
        // Only the calibration samples become a value: a copy of the whole training split
        // beside the dataset doubled its memory (the peak of the step before training).
        let (head, _) = train
            .batch(0, self.calib_samples.min(train.len()))
            .context(|| format!("{role} {}", self.data))?;
        let images = Value::try_from(&head).context(|| format!("{role} {}", self.data))?;
        let calib = feed::batches(
            &[(inputs[0].name.clone(), images)],
            self.calib_samples,
            feed::BATCH,
        )?;
        feed::check_fits(&inputs, &calib, role)?;
        let test = match &self.eval_data {
            Some(spec) => Some(TestSet::load(
                spec,
                "`eval_data`",
                model,
                self.eval_samples,
            )?),
            None => None,
        };
        let run = Run {
            qat: self,
            cfg: &cfg,
            train: &train,
            calib: &calib,
        };
        let float = state.model.clone();
        let (trained, epochs) = run.train_phases(ctx, state)?;
        let (exported, plan) =
            qat::export::export_qdq(&trained, &cfg).context(|| "exporting the QDQ model".into())?;
        let mut outcome = QatOutcome {
            accuracy_fp32: None,
            accuracy_ptq: None,
            accuracy_qat: None,
            test_samples: 0,
            quantized_nodes: plan.targets.len(),
            epochs,
            notes: reduce_range_note(&cfg).into_iter().collect(),
        };
        if let Some(test) = test {
            let (ptq, _) = quantize::static_int8(&float, &cfg, calib)
                .context(|| "post-training quantization (the yardstick)".into())?;
            outcome.accuracy_fp32 = Some(test.accuracy(ctx, &float)?);
            outcome.accuracy_ptq = Some(test.accuracy(ctx, &ptq)?);
            outcome.accuracy_qat = Some(test.accuracy(ctx, &exported)?);
            outcome.test_samples = test.samples();
        }
        Ok((exported, outcome))
    }

    /// First quantized epoch from which activation scales stay fixed.
    fn freeze_observers(&self) -> usize {
        match (self.freeze_observers_epoch, self.lsq) {
            (Some(k), _) => k,
            (None, true) => self.training.epochs,
            (None, false) => self.start_epoch + 1,
        }
    }

    /// Phase boundaries: every option epoch, and every epoch that re-calibrates.
    fn phases(&self) -> Vec<Phase> {
        let (start, epochs) = (self.start_epoch, self.training.epochs);
        let freeze = self.freeze_observers();
        let mut cuts = vec![0, start, epochs, freeze];
        cuts.extend(self.freeze_bn_epoch);
        if !self.lsq {
            cuts.extend(start..freeze);
        }
        cuts.retain(|&c| c <= epochs);
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .map(|w| Phase {
                first: w[0],
                end: w[1],
            })
            .collect()
    }

    /// Whether the phase starts by calibrating: the first quantized phase, and every
    /// phase before the observers freeze (without `lsq`).
    fn recalibrates(&self, phase: Phase) -> bool {
        phase.first == self.start_epoch || (!self.lsq && phase.first < self.freeze_observers())
    }
}

impl Step for Qat {
    fn name(&self) -> &'static str {
        "qat"
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (model, outcome) = self.train(ctx, &model)?;
        let mut summary = vec![format!(
            "trained {} epochs with fake quantization of {} nodes",
            outcome.epochs.len(),
            outcome.quantized_nodes
        )];
        if let (Some(f), Some(p), Some(q)) = (
            outcome.accuracy_fp32,
            outcome.accuracy_ptq,
            outcome.accuracy_qat,
        ) {
            summary.push(format!(
                "accuracy on {} test samples: fp32 {:.2}%, PTQ int8 {:.2}%, QAT int8 {:.2}%",
                outcome.test_samples,
                100.0 * f,
                100.0 * p,
                100.0 * q
            ));
        }
        summary.extend(outcome.notes.iter().map(|n| format!("note: {n}")));
        Ok((model, StepReport::new(self.name(), &outcome, summary)?))
    }

    fn data_specs(&self) -> Vec<&str> {
        std::iter::once(self.data.as_str())
            .chain(self.eval_data.as_deref())
            .collect()
    }
}

/// The float state of the input (with the scales of its Q/DQ pairs when it is a QDQ model).
fn initial_state(input: &Model) -> Result<QatState> {
    if qat::import::is_qdq(input) {
        return qat::import::from_qdq(input).context(|| "reading the input's Q/DQ pairs".into());
    }
    Ok(QatState {
        model: input.clone(),
        params: HashMap::new(),
    })
}

/// Everything the phases share.
struct Run<'a> {
    qat: &'a Qat,
    cfg: &'a QuantConfig,
    train: &'a Dataset,
    calib: &'a [Feed],
}

impl Run<'_> {
    fn train_phases(
        &self,
        ctx: &Ctx<'_>,
        mut state: QatState,
    ) -> Result<(QatState, Vec<QatEpoch>)> {
        let mut reports = Vec::new();
        for phase in self.qat.phases() {
            if self.qat.freeze_bn_epoch.is_some_and(|k| phase.first >= k) {
                state.model = qat::fold_batchnorm(&state.model)
                    .context(|| format!("folding BatchNormalization at epoch {}", phase.first))?;
            }
            let quantized = phase.first >= self.qat.start_epoch;
            if quantized && self.qat.recalibrates(phase) {
                let mut fresh = QatState::calibrate(&state.model, self.cfg, self.calib.to_vec())
                    .context(|| format!("calibrating at epoch {}", phase.first + 1))?;
                if phase.first == self.qat.start_epoch {
                    // Scales of a QDQ input win over the calibrated ones.
                    fresh.params.extend(state.params.drain());
                }
                state = fresh;
            }
            let (next, done) = self.train_phase(ctx, &state, phase, quantized)?;
            state = next;
            let name = if quantized { "qat" } else { "float" };
            reports.extend(done.into_iter().map(|report| QatEpoch {
                phase: name,
                report,
            }));
        }
        Ok((state, reports))
    }

    fn train_phase(
        &self,
        ctx: &Ctx<'_>,
        state: &QatState,
        phase: Phase,
        quantized: bool,
    ) -> Result<(QatState, Vec<EpochReport>)> {
        let epochs_name = format!("epochs {}..{}", phase.first + 1, phase.end);
        let graph = if quantized {
            let learn = self.qat.lsq && phase.first < self.qat.freeze_observers();
            let mode = if learn {
                ScaleMode::Learned
            } else {
                ScaleMode::Fixed
            };
            qat::insert::training_graph(state, self.cfg, mode)
                .context(|| format!("inserting fake quantization for {epochs_name}"))?
        } else {
            state.model.clone()
        };
        let mut config = self.qat.training.config(self.train.len(), ctx.seed)?;
        config.epochs = phase.end - phase.first;
        config.seed = config.seed.wrapping_add(phase.first as u64);
        let (trained, report) = observed(ctx.observer, config, |config| {
            let phase = || -> whittle_train::Result<_> {
                let mut trainer = Trainer::new(&graph, config)?;
                let report = trainer.fit(self.train, None)?;
                Ok((trainer.model()?, report))
            };
            phase().context(|| epochs_name.clone())
        })?;
        let next = if quantized {
            qat::strip::strip(&trained).context(|| "removing fake quantization".into())?
        } else {
            QatState {
                model: trained,
                params: state.params.clone(),
            }
        };
        let epochs = report
            .epochs
            .into_iter()
            .map(|mut e| {
                e.epoch += phase.first;
                e
            })
            .collect();
        Ok((next, epochs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(qat: &Qat) -> Vec<(usize, usize)> {
        qat.phases().iter().map(|p| (p.first, p.end)).collect()
    }

    #[test]
    fn phases_cut_at_every_option_epoch_and_every_recalibration() {
        let mut qat = Qat::new("mnist:x");
        qat.training.epochs = 4;
        // Calibrated once at epoch 0, then frozen: one quantized phase after the first.
        assert_eq!(phases(&qat), [(0, 1), (1, 4)]);
        qat.start_epoch = 1;
        qat.freeze_observers_epoch = Some(3);
        qat.freeze_bn_epoch = Some(2);
        // Float epoch 0; re-calibrated at 1 and 2; BN folded from 2; frozen from 3.
        assert_eq!(phases(&qat), [(0, 1), (1, 2), (2, 3), (3, 4)]);
        qat.lsq = true;
        qat.freeze_observers_epoch = None;
        qat.freeze_bn_epoch = None;
        // Learned scales to the end: one quantized phase.
        assert_eq!(phases(&qat), [(0, 1), (1, 4)]);
    }
}
