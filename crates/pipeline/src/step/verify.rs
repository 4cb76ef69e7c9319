//! Checking a compressed model against the model it came from: the `verify` step, and
//! [`Checks`], the verification, accuracy and ONNX Runtime latency before and after that
//! the `quantize`, `fp16` and `int4` steps make.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use whittle_data::Split;
use whittle_exec::{model_inputs, InputSpec};
use whittle_ir::{ExternalData, Model, TensorData};
use whittle_passes::quantize::sensitivity::EvalSet;
use whittle_passes::quantize::verify::{self as qverify, Verification};
use whittle_passes::quantize::{self, QuantReport};

use super::{Ctx, Step, StepReport};
use crate::error::{Context, PipelineError, Result};
use crate::feed::{self, Feed};
use crate::source::DataSource;

/// Samples per evaluation run.
const EVAL_BATCH: usize = 256;

/// The checks around a quantization step. Names in backticks in notes and errors are
/// these keys (the CLI shows them as its flags).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Labelled eval data (test split): accuracy before/after and the accuracy budget's
    /// yardstick; or `feeds:FILE.npz` (no labels): outputs verified on these inputs.
    pub eval_data: Option<String>,
    /// Eval samples to use (None: all).
    pub eval_samples: Option<usize>,
    /// Samples on which both models are compared tensor by tensor; 0 skips it.
    pub verify_samples: usize,
    /// Skip measuring ONNX Runtime latency before and after.
    pub no_latency: bool,
    /// ONNX Runtime intra-op threads for the latency measurement (0: one per core;
    /// None: 1).
    pub threads: Option<usize>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            eval_data: None,
            eval_samples: None,
            verify_samples: 16,
            no_latency: false,
            threads: None,
        }
    }
}

impl Checks {
    /// Refuses values out of range.
    pub fn validate(&self) -> Result<()> {
        if self.no_latency && self.threads.is_some() {
            return Err(PipelineError::Refused(
                "`threads` sets the latency measurement's threads; `no_latency` skips it".into(),
            ));
        }
        Ok(())
    }

    /// The eval data for a model taking `inputs`: a labelled dataset (test split) or
    /// unlabelled `feeds:` batches, at most `eval_samples` samples.
    pub fn load_eval(&self, inputs: &[InputSpec]) -> Result<Option<EvalSet>> {
        let Some(spec) = &self.eval_data else {
            return Ok(None);
        };
        let source = DataSource::new(spec.as_str()).with_role("`eval_data`");
        if !source.is_labelled() {
            let limit = self.eval_samples.unwrap_or(usize::MAX);
            return Ok(Some(EvalSet {
                batches: source.feeds(inputs, Split::Test, limit)?,
                labels: None,
            }));
        }
        let data = source.load(inputs, Split::Test, self.eval_samples)?;
        let name = &inputs[0].name;
        let set = EvalSet::from_rows(name, &data.images, Some(data.labels), EVAL_BATCH)
            .context(|| format!("`eval_data` {spec}"))?;
        Ok(Some(set))
    }

    /// Feeds to verify on when the step has no data of its own: the first
    /// `verify_samples` of the eval data, else one synthetic sample.
    pub fn verification_feeds(
        &self,
        eval: Option<&EvalSet>,
        inputs: &[InputSpec],
    ) -> Result<Vec<Feed>> {
        match eval {
            Some(e) => feed::first_samples(&e.batches, self.verify_samples),
            None => Ok(vec![feed::synthetic(inputs, 0)?]),
        }
    }

    /// Completes `report` for `float` -> `quantized`: verification on `verify_feed`
    /// (unless static quantization verified on calibration's spilled values), accuracy before/after on labelled eval data, ONNX Runtime latency, and notes for
    /// what was skipped (sizes are the caller's: see [`QuantReport::set_sizes`]).
    pub fn finish(
        &self,
        ctx: &Ctx<'_>,
        float: &Model,
        quantized: &Model,
        eval: Option<&EvalSet>,
        verify_feed: &[Feed],
        report: &mut QuantReport,
    ) -> Result<()> {
        if self.verify_samples == 0 {
            report
                .notes
                .push("outputs not verified against the float model (`verify_samples` 0)".into());
        } else if report.verification.is_none() {
            // Not verified by static quantization itself on calibration's spilled values.
            report.verification = Some(compare(float, quantized, verify_feed)?);
        }
        if report.accuracy.is_none() {
            if let Some(e) = eval.filter(|e| e.labels.is_some()) {
                let accuracy = e
                    .compare(float, quantized, None)
                    .context(|| "accuracy before and after".into())?;
                report.accuracy = Some(accuracy);
            }
        }
        if self.no_latency {
            report
                .notes
                .push("ONNX Runtime latency not measured (`no_latency`)".into());
        } else {
            let sample = latency_sample(verify_feed, &model_inputs(float))?;
            self.measure_latency(ctx, float, quantized, &sample, report);
        }
        Ok(())
    }

    /// Converts `model` with `convert` (a step that needs no calibration: FP16, INT4),
    /// then completes its report: verified on the eval data or one synthetic sample.
    pub fn convert(
        &self,
        ctx: &Ctx<'_>,
        model: &Model,
        convert: impl FnOnce(&Model) -> whittle_passes::Result<(Model, QuantReport)>,
    ) -> Result<(Model, QuantReport)> {
        let start = std::time::Instant::now();
        self.validate()?;
        let inputs = model_inputs(model);
        let eval = self.load_eval(&inputs)?;
        let (converted, mut report) = convert(model).context(|| "converting the model".into())?;
        let verify = self.verification_feeds(eval.as_ref(), &inputs)?;
        self.finish(ctx, model, &converted, eval.as_ref(), &verify, &mut report)?;
        self.note_synthetic(&mut report);
        report.seconds = start.elapsed().as_secs_f64();
        Ok((converted, report))
    }

    /// Notes that the model was verified on synthetic inputs when no eval data was given.
    pub fn note_synthetic(&self, report: &mut QuantReport) {
        if self.eval_data.is_none() {
            report
                .notes
                .push("verified on synthetic inputs (give `eval_data` for real ones)".into());
        }
    }

    /// ONNX Runtime latency of `float` and `quantized` (written to temporary files in the
    /// context's scratch folder), with a warning when the result is slower; a note when
    /// ONNX Runtime cannot run them.
    fn measure_latency(
        &self,
        ctx: &Ctx<'_>,
        float: &Model,
        quantized: &Model,
        sample: &HashMap<String, TensorData>,
        report: &mut QuantReport,
    ) {
        let defaults = whittle_bench::latency::LatencyOptions::default();
        let opts = whittle_bench::latency::LatencyOptions {
            threads: self.threads.unwrap_or(defaults.threads),
            ..defaults
        };
        let target = ctx.scratch_dir().join("latency.onnx");
        let (before, after) = (
            whittle_ir::files::TempPath::beside(&target),
            whittle_ir::files::TempPath::beside(&target),
        );
        let measured = float
            .save(before.path(), &ExternalData::Never)
            .and_then(|()| quantized.save(after.path(), &ExternalData::Never))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                whittle_bench::latency::measure(before.path(), after.path(), sample, &opts)
                    .map_err(|e| e.to_string())
            });
        match measured {
            Ok(latency) => {
                let warning =
                    quantize::latency::slowdown_warning(&report.mode, float, quantized, &latency);
                report.warnings.extend(warning);
                report.latency_ms = Some(latency);
            }
            Err(e) => report
                .notes
                .push(format!("ONNX Runtime latency not measured: {e}")),
        }
    }
}

/// Runs both models on `batches` and compares their tensors (see
/// [`whittle_passes::quantize::verify::compare`]).
fn compare(float: &Model, quantized: &Model, batches: &[Feed]) -> Result<Verification> {
    qverify::compare(float, quantized, batches)
        .context(|| "verifying the outputs against the float model".into())
}

/// One sample of every input to time the models on: the first verification sample, else
/// a synthetic one.
fn latency_sample(verify: &[Feed], inputs: &[InputSpec]) -> Result<HashMap<String, TensorData>> {
    let feed = match feed::first_samples(verify, 1)?.pop() {
        Some(feed) => feed,
        None => feed::synthetic(inputs, 0)?,
    };
    feed.iter()
        .map(|(name, v)| Ok((name.clone(), v.to_data().context(|| name.clone())?)))
        .collect()
}

/// Configuration of the `verify` step: the model's outputs and changed tensors compared
/// with the previous step's input model, on data or on one synthetic sample. The model
/// passes through unchanged; the step fails when an output's cosine is below `min_cosine`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// Data to compare on (a dataset SPEC, test split, or `feeds:FILE.npz`); None: one
    /// synthetic sample.
    pub data: Option<String>,
    /// Samples to compare on.
    pub samples: usize,
    /// Smallest output cosine accepted.
    pub min_cosine: f64,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            data: None,
            samples: 16,
            min_cosine: qverify::OUTPUT_COSINE_TOLERANCE,
        }
    }
}

impl Step for Verify {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn data_specs(&self) -> Vec<&str> {
        self.data.iter().map(String::as_str).collect()
    }

    fn uses_reference(&self) -> bool {
        true
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let reference = ctx.reference.as_ref().ok_or_else(|| {
            PipelineError::Refused(
                "a verify step compares with the previous step's input model: it cannot come \
                 first"
                    .into(),
            )
        })?;
        if self.samples == 0 {
            return Err(PipelineError::invalid(
                "verify `samples`",
                "must be at least 1",
            ));
        }
        let inputs = model_inputs(reference);
        let feeds = match &self.data {
            Some(spec) => {
                let source = DataSource::new(spec.as_str()).with_role("verify `data`");
                source.feeds(&inputs, Split::Test, self.samples)?
            }
            None => vec![feed::synthetic(&inputs, 0)?],
        };
        let verification = compare(reference, &model, &feeds)?;
        if let Some(bad) = verification
            .outputs
            .iter()
            .find(|o| o.cosine.is_nan() || o.cosine < self.min_cosine)
        {
            return Err(PipelineError::Refused(format!(
                "verification failed: output '{}' has cosine {:.6} to the reference model's \
                 ({:.1} dB SQNR), below `min_cosine` {}",
                bad.name, bad.cosine, bad.sqnr_db, self.min_cosine
            )));
        }
        let lines = verification
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "output '{}': SQNR {:.1} dB, cosine {:.6} on {} samples",
                    o.name, o.sqnr_db, o.cosine, verification.samples
                )
            })
            .collect();
        let report = StepReport::new(self.name(), &verification, lines)?;
        Ok((model, report))
    }
}
