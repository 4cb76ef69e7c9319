//! The `fp16` step: float32 weights and activations to float16, followed by the
//! [`Checks`].

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_passes::fp16::Fp16Options;
use whittle_passes::quantize::{self, QuantReport};

use super::quantize::quant_step_report;
use super::verify::Checks;
use super::{Ctx, Step, StepReport};
use crate::error::Result;

/// Configuration of the `fp16` step (the options of `whittle quantize --mode fp16`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fp16 {
    /// Keep float32 graph inputs and outputs (Casts at the boundary) [default: true].
    pub keep_io_types: Option<bool>,
    /// Node names to keep in float32.
    pub exclude: Vec<String>,
    /// Verification, accuracy and latency before and after.
    #[serde(flatten)]
    pub checks: Checks,
}

impl Fp16 {
    /// The library's options.
    pub fn options(&self) -> Fp16Options {
        let defaults = Fp16Options::default();
        Fp16Options {
            keep_io_types: self.keep_io_types.unwrap_or(defaults.keep_io_types),
            keep_nodes: self.exclude.clone(),
            ..defaults
        }
    }

    /// Converts `model` and completes the report with the [`Checks`].
    pub fn convert(&self, ctx: &Ctx<'_>, model: &Model) -> Result<(Model, QuantReport)> {
        let options = self.options();
        self.checks
            .convert(ctx, model, |m| quantize::fp16_with_report(m, &options))
    }
}

impl Step for Fp16 {
    fn name(&self) -> &'static str {
        "fp16"
    }

    fn data_specs(&self) -> Vec<&str> {
        self.checks.eval_data.iter().map(String::as_str).collect()
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (converted, report) = self.convert(ctx, &model)?;
        quant_step_report(self.name(), &model, converted, report)
    }
}
