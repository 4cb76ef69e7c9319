//! The `quantize` step: INT8 post-training quantization, static (calibrated on data; QDQ or
//! QOperator layout; per-channel; four calibrators; an optional accuracy budget) or
//! dynamic, followed by the [`Checks`] (verification, accuracy, ONNX Runtime latency).

use serde::{Deserialize, Serialize};
use whittle_data::Split;
use whittle_exec::model_inputs;
use whittle_ir::Model;
use whittle_passes::quantize::{
    self, CalibrationMethod, Format, QuantConfig, QuantReport, QuantType,
};

use super::verify::Checks;
use super::{Ctx, Step, StepReport};
use crate::error::{Context, PipelineError, Result};
use crate::feed;
use crate::observer::Event;
use crate::source::DataSource;

/// Calibration samples used when `calib_samples` is not given.
pub const CALIB_SAMPLES: usize = 512;

/// INT8 quantization mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Activations calibrated ahead of time on `calib_data`.
    #[default]
    Static,
    /// Activations quantized at run time; weights int8.
    Dynamic,
}

/// Layout of a static model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// QuantizeLinear/DequantizeLinear pairs.
    #[default]
    Qdq,
    /// QLinearConv/QLinearMatMul operators.
    Qoperator,
}

/// How activation ranges are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Calibrator {
    /// Smallest and largest value seen.
    #[default]
    Minmax,
    /// KL-divergence threshold.
    Entropy,
    /// `percentile` of the values.
    Percentile,
    /// Least quantization MSE.
    Mse,
}

impl Calibrator {
    /// The library's method (`percentile` for [`Calibrator::Percentile`]).
    pub fn method(self, percentile: f64) -> CalibrationMethod {
        match self {
            Calibrator::Minmax => CalibrationMethod::MinMax,
            Calibrator::Entropy => CalibrationMethod::Entropy,
            Calibrator::Percentile => CalibrationMethod::Percentile { percentile },
            Calibrator::Mse => CalibrationMethod::Mse,
        }
    }
}

/// An 8-bit integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntType {
    /// Signed.
    Int8,
    /// Unsigned.
    Uint8,
}

impl From<IntType> for QuantType {
    fn from(t: IntType) -> Self {
        match t {
            IntType::Int8 => QuantType::Int8,
            IntType::Uint8 => QuantType::Uint8,
        }
    }
}

/// Configuration of the `quantize` step (the options of `whittle quantize --mode
/// static|dynamic`, same names and defaults).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quantize {
    /// Static (calibrated) or dynamic.
    pub mode: Mode,
    /// Layout of a static model [default: qdq].
    pub format: Option<Layout>,
    /// Calibration data (static): a dataset SPEC (train split) or `feeds:FILE.npz`.
    pub calib_data: Option<String>,
    /// Calibration samples [default: 512].
    pub calib_samples: Option<usize>,
    /// Calibrator [default: minmax].
    pub calibration: Option<Calibrator>,
    /// Percentile for the percentile calibrator [default: 99.999].
    pub percentile: Option<f64>,
    /// Histogram bins per tensor (entropy, percentile, mse) [default: 2048].
    pub histogram_bins: Option<usize>,
    /// One weight scale per output channel.
    pub per_channel: bool,
    /// Weight integer type [default: int8].
    pub weight_type: Option<IntType>,
    /// Activation integer type (static) [default: uint8].
    pub activation_type: Option<IntType>,
    /// 7-bit weights, for CPUs without VNNI.
    pub reduce_range: bool,
    /// Operator types to quantize [default: Conv, Gemm, MatMul].
    pub op_types: Option<Vec<String>>,
    /// Node names to keep in float.
    pub exclude: Vec<String>,
    /// Largest top-1 accuracy drop allowed, in percent (static; needs `eval_data`).
    pub accuracy_budget: Option<f64>,
    /// Verification, accuracy and latency before and after.
    #[serde(flatten)]
    pub checks: Checks,
}

impl Quantize {
    /// Refuses values out of range and options the mode does not use.
    pub fn validate(&self) -> Result<()> {
        self.checks.validate()?;
        let calibration = self.calibration.unwrap_or_default();
        if self.percentile.is_some() && calibration != Calibrator::Percentile {
            return Err(PipelineError::Refused(
                "`percentile` applies to `calibration` percentile only".into(),
            ));
        }
        if self.histogram_bins.is_some() && calibration == Calibrator::Minmax {
            return Err(PipelineError::Refused(
                "`histogram_bins` applies to `calibration` entropy, percentile or mse, not minmax"
                    .into(),
            ));
        }
        if let Some(budget) = self.accuracy_budget {
            if !(budget.is_finite() && (0.0..=100.0).contains(&budget)) {
                return Err(PipelineError::Refused(format!(
                    "`accuracy_budget` must be a percentage between 0 and 100, got {budget}"
                )));
            }
            if self.checks.eval_data.is_none() {
                return Err(PipelineError::Refused(
                    "`accuracy_budget` needs `eval_data` SPEC".into(),
                ));
            }
        }
        if self.calib_samples == Some(0) {
            return Err(PipelineError::Refused(
                "`calib_samples` must be at least 1".into(),
            ));
        }
        if self.mode == Mode::Dynamic {
            let static_only = [
                ("format", self.format.is_some()),
                ("calib_data", self.calib_data.is_some()),
                ("calib_samples", self.calib_samples.is_some()),
                ("calibration", self.calibration.is_some()),
                ("activation_type", self.activation_type.is_some()),
                ("accuracy_budget", self.accuracy_budget.is_some()),
            ];
            if let Some((key, _)) = static_only.iter().find(|(_, given)| *given) {
                return Err(PipelineError::Refused(format!(
                    "`{key}` applies to static quantization only"
                )));
            }
        }
        Ok(())
    }

    /// The library's INT8 configuration (defaults for options not given).
    pub fn config(&self) -> Result<QuantConfig> {
        let percentile = self.percentile.unwrap_or(99.999);
        if !(percentile > 50.0 && percentile <= 100.0) {
            return Err(PipelineError::Refused(format!(
                "`percentile` must be in (50, 100], got {percentile}"
            )));
        }
        let defaults = QuantConfig::default();
        let histogram_bins = self.histogram_bins.unwrap_or(defaults.histogram_bins);
        let max_bins = quantize::observer::Histogram::MAX_BINS;
        if !(16..=max_bins).contains(&histogram_bins) {
            return Err(PipelineError::Refused(format!(
                "`histogram_bins` must be between 16 and {max_bins}, got {histogram_bins}"
            )));
        }
        Ok(QuantConfig {
            format: match self.format.unwrap_or_default() {
                Layout::Qdq => Format::Qdq,
                Layout::Qoperator => Format::QOperator,
            },
            per_channel: self.per_channel,
            weight_type: self.weight_type.map_or(defaults.weight_type, Into::into),
            activation_type: self
                .activation_type
                .map_or(defaults.activation_type, Into::into),
            reduce_range: self.reduce_range,
            calibration: self.calibration.unwrap_or_default().method(percentile),
            op_types: self.op_types.clone().unwrap_or(defaults.op_types),
            exclude: self.exclude.clone(),
            histogram_bins,
            ..defaults
        })
    }

    /// Quantizes `model` and completes the report with the [`Checks`].
    pub fn quantize(&self, ctx: &Ctx<'_>, model: &Model) -> Result<(Model, QuantReport)> {
        let start = std::time::Instant::now();
        self.validate()?;
        let cfg = self.config()?;
        let inputs = model_inputs(model);
        let eval = self.checks.load_eval(&inputs)?;
        let (quantized, mut report, verify_feed) = match self.mode {
            Mode::Dynamic => {
                let (q, r) = quantize::dynamic_int8(model, &cfg)
                    .context(|| "dynamic quantization".into())?;
                let verify = self.checks.verification_feeds(eval.as_ref(), &inputs)?;
                (q, r, verify)
            }
            Mode::Static => {
                let Some(spec) = &self.calib_data else {
                    return Err(PipelineError::Refused(
                        "static mode needs `calib_data` SPEC".into(),
                    ));
                };
                let limit = self.calib_samples.unwrap_or(CALIB_SAMPLES);
                let source = DataSource::new(spec.as_str()).with_role("`calib_data`");
                let batches = source.feeds(&inputs, Split::Train, limit)?;
                // Verified on unlabelled eval data when given, else on the calibration data.
                let unlabelled = eval.as_ref().filter(|e| e.labels.is_none());
                let samples = self.checks.verify_samples;
                let verify = match unlabelled {
                    Some(e) => feed::first_samples(&e.batches, samples)?,
                    None => feed::first_samples(&batches, samples)?,
                };
                // Verifying on the calibration data: calibration spills the float values of
                // the samples verified and static_int8 verifies on them (the float model
                // does not run again).
                let cfg = QuantConfig {
                    record_samples: if unlabelled.is_some() { 0 } else { samples },
                    ..cfg.clone()
                };
                let (q, r) = self.calibrate(ctx, model, &cfg, batches, eval.as_ref())?;
                (q, r, verify)
            }
        };
        let checks = &self.checks;
        checks.finish(
            ctx,
            model,
            &quantized,
            eval.as_ref(),
            &verify_feed,
            &mut report,
        )?;
        report.notes.extend(reduce_range_note(&cfg));
        if self.mode == Mode::Dynamic {
            checks.note_synthetic(&mut report);
        }
        report.seconds = start.elapsed().as_secs_f64();
        Ok((quantized, report))
    }

    /// Static quantization on `batches` (within the accuracy budget when one is set),
    /// counting calibration batches on the observer.
    fn calibrate(
        &self,
        ctx: &Ctx<'_>,
        model: &Model,
        cfg: &QuantConfig,
        batches: Vec<feed::Feed>,
        eval: Option<&quantize::sensitivity::EvalSet>,
    ) -> Result<(Model, QuantReport)> {
        let observer = ctx.observer;
        observer.event(&Event::Begin {
            task: "calibrate".into(),
            total: Some(batches.len() as u64),
        });
        let counted = batches.into_iter().enumerate().map(|(i, b)| {
            observer.event(&Event::Progress {
                done: i as u64,
                message: None,
            });
            b
        });
        let result = match (self.accuracy_budget, eval) {
            (Some(b), Some(e)) => {
                quantize::static_int8_within_budget(model, cfg, counted, e, b / 100.0)
            }
            _ => quantize::static_int8(model, cfg, counted),
        };
        observer.event(&Event::End);
        result.context(|| "static quantization".into())
    }
}

impl Step for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn data_specs(&self) -> Vec<&str> {
        self.calib_data
            .iter()
            .chain(&self.checks.eval_data)
            .map(String::as_str)
            .collect()
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (quantized, report) = self.quantize(ctx, &model)?;
        quant_step_report(self.name(), &model, quantized, report)
    }
}

/// The step's result for `quantized`, made from `model`: `report` with the sizes of the
/// encoded models, its summary lines and warnings.
pub(super) fn quant_step_report(
    name: &str,
    model: &Model,
    quantized: Model,
    mut report: QuantReport,
) -> Result<(Model, StepReport)> {
    report.set_sizes(model.encoded_len() as u64, quantized.encoded_len() as u64);
    let summary = report
        .summary(false)
        .lines()
        .map(str::to_string)
        .chain(report.warnings.iter().map(|w| format!("warning: {w}")))
        .collect();
    Ok((quantized, StepReport::new(name, &report, summary)?))
}

/// ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights with
/// `vpmaddubsw`, whose 16-bit pair sums saturate unless the CPU has VNNI. Full-range int8
/// weights then lose accuracy in ORT on that CPU (measured: `zoo:mobilenetv3-small` 85.70%
/// float, 83.69% static INT8, 85.75% with 7-bit weights): a note when `cfg` writes them
/// and this CPU has no VNNI.
pub fn reduce_range_note(cfg: &QuantConfig) -> Option<String> {
    (cfg.weight_type == QuantType::Int8 && !cfg.reduce_range && !has_vnni()).then(|| {
        "this CPU has no VNNI: ONNX Runtime's int8 kernels can saturate with full-range \
         int8 weights on it and lose accuracy; `reduce_range` (7-bit weights) avoids that"
            .to_string()
    })
}

/// Whether this CPU multiplies int8 without saturating (VNNI on x86; other architectures
/// use other kernels and are not flagged).
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}
