//! The `int4` step: 4-bit weight-only quantization of MatMul weights in blocks
//! (MatMulNBits), followed by the [`Checks`].

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_passes::int4::Int4Options;
use whittle_passes::quantize::{self, QuantReport};

use super::quantize::quant_step_report;
use super::verify::Checks;
use super::{Ctx, Step, StepReport};
use crate::error::Result;

/// Configuration of the `int4` step (the options of `whittle quantize --mode int4`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Int4 {
    /// Weights per block (a power of two, at least 16) [default: 32].
    pub block_size: Option<usize>,
    /// Symmetric blocks (no zero points).
    pub symmetric: bool,
    /// Node names to keep in float.
    pub exclude: Vec<String>,
    /// Verification, accuracy and latency before and after.
    #[serde(flatten)]
    pub checks: Checks,
}

impl Int4 {
    /// The library's options.
    pub fn options(&self) -> Int4Options {
        let defaults = Int4Options::default();
        Int4Options {
            block_size: self.block_size.unwrap_or(defaults.block_size),
            symmetric: self.symmetric,
            exclude: self.exclude.clone(),
            ..defaults
        }
    }

    /// Quantizes `model` and completes the report with the [`Checks`].
    pub fn convert(&self, ctx: &Ctx<'_>, model: &Model) -> Result<(Model, QuantReport)> {
        let options = self.options();
        self.checks
            .convert(ctx, model, |m| quantize::int4_with_report(m, &options))
    }
}

impl Step for Int4 {
    fn name(&self) -> &'static str {
        "int4"
    }

    fn data_specs(&self) -> Vec<&str> {
        self.checks.eval_data.iter().map(String::as_str).collect()
    }

    fn run(&self, ctx: &mut Ctx<'_>, model: Model) -> Result<(Model, StepReport)> {
        let (converted, report) = self.convert(ctx, &model)?;
        quant_step_report(self.name(), &model, converted, report)
    }
}
