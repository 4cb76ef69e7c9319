//! The flags of `whittle quantize` checked against the chosen mode, and the pipeline step
//! they configure. A flag the mode does not use is refused, naming it, rather than
//! silently ignored.

use anyhow::bail;
use whittle_ir::Model;
use whittle_passes::quantize::QuantReport;
use whittle_pipeline::step::fp16::Fp16;
use whittle_pipeline::step::int4::Int4;
use whittle_pipeline::step::quantize::{self, Quantize};
use whittle_pipeline::step::verify::Checks;
use whittle_pipeline::Ctx;

use super::{Args, Mode};

/// The modes each mode-specific flag works with.
fn mode_flags(args: &Args) -> [(&'static str, bool, &'static [Mode]); 15] {
    use Mode::{Dynamic, Fp16, Int4, Static};
    const INT8: &[Mode] = &[Static, Dynamic];
    [
        ("--format", args.format.is_some(), &[Static]),
        ("--calib-data", args.calib_data.is_some(), &[Static]),
        ("--calib-samples", args.calib_samples.is_some(), &[Static]),
        ("--calibration", args.calibration.is_some(), &[Static]),
        ("--percentile", args.percentile.is_some(), &[Static]),
        ("--histogram-bins", args.histogram_bins.is_some(), &[Static]),
        (
            "--activation-type",
            args.activation_type.is_some(),
            &[Static],
        ),
        (
            "--accuracy-budget",
            args.accuracy_budget.is_some(),
            &[Static],
        ),
        ("--per-channel", args.per_channel, INT8),
        ("--weight-type", args.weight_type.is_some(), INT8),
        ("--reduce-range", args.reduce_range, INT8),
        ("--op-types", args.op_types.is_some(), INT8),
        ("--keep-io-types", args.keep_io_types.is_some(), &[Fp16]),
        ("--block-size", args.block_size.is_some(), &[Int4]),
        ("--symmetric", args.symmetric, &[Int4]),
    ]
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Static => "static",
        Mode::Dynamic => "dynamic",
        Mode::Fp16 => "fp16",
        Mode::Int4 => "int4",
    }
}

/// Refuses flags that `args.mode` does not use (the step refuses values out of range).
pub(super) fn check(args: &Args) -> anyhow::Result<()> {
    let unused: Vec<String> = mode_flags(args)
        .into_iter()
        .filter(|(_, given, modes)| *given && !modes.contains(&args.mode))
        .map(|(flag, _, modes)| {
            let names: Vec<&str> = modes.iter().map(|&m| mode_name(m)).collect();
            format!("{flag} (for {})", names.join(", "))
        })
        .collect();
    if !unused.is_empty() {
        bail!(
            "--mode {} does not use {}",
            mode_name(args.mode),
            unused.join(", ")
        );
    }
    Ok(())
}

/// The step the flags configure.
pub(super) enum QuantStep {
    /// Static or dynamic INT8.
    Int8(Quantize),
    /// FP16.
    Fp16(Fp16),
    /// INT4 weight-only.
    Int4(Int4),
}

impl QuantStep {
    /// Refuses values out of range before anything is loaded.
    pub(super) fn validate(&self) -> whittle_pipeline::Result<()> {
        match self {
            QuantStep::Int8(q) => q.validate().and_then(|()| q.config().map(drop)),
            QuantStep::Fp16(s) => s.checks.validate(),
            QuantStep::Int4(s) => s.checks.validate(),
        }
    }

    /// Runs the step on `model`.
    pub(super) fn run(
        &self,
        ctx: &Ctx<'_>,
        model: &Model,
    ) -> whittle_pipeline::Result<(Model, QuantReport)> {
        match self {
            QuantStep::Int8(q) => q.quantize(ctx, model),
            QuantStep::Fp16(s) => s.convert(ctx, model),
            QuantStep::Int4(s) => s.convert(ctx, model),
        }
    }
}

/// The step configuration from the flags (defaults for those not given).
pub(super) fn step(args: &Args) -> QuantStep {
    let checks = Checks {
        eval_data: args.eval_data.clone(),
        eval_samples: args.eval_samples,
        verify_samples: args.verify_samples,
        no_latency: args.no_latency,
        threads: args.threads,
    };
    let exclude = args.exclude.clone();
    match args.mode {
        Mode::Static | Mode::Dynamic => QuantStep::Int8(Quantize {
            mode: if args.mode == Mode::Static {
                quantize::Mode::Static
            } else {
                quantize::Mode::Dynamic
            },
            format: args.format.map(Into::into),
            calib_data: args.calib_data.clone(),
            calib_samples: args.calib_samples,
            calibration: args.calibration.map(Into::into),
            percentile: args.percentile,
            histogram_bins: args.histogram_bins,
            per_channel: args.per_channel,
            weight_type: args.weight_type.map(Into::into),
            activation_type: args.activation_type.map(Into::into),
            reduce_range: args.reduce_range,
            op_types: args.op_types.clone(),
            exclude,
            accuracy_budget: args.accuracy_budget,
            checks,
        }),
        Mode::Fp16 => QuantStep::Fp16(Fp16 {
            keep_io_types: args.keep_io_types,
            exclude,
            checks,
        }),
        Mode::Int4 => QuantStep::Int4(Int4 {
            block_size: args.block_size,
            symmetric: args.symmetric,
            exclude,
            checks,
        }),
    }
}
