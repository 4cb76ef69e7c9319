//! The flags of `whittle quantize` checked against the chosen mode, and the library
//! options they give. A flag the mode does not use is refused, naming it, rather than
//! silently ignored.

use anyhow::bail;
use whittle_passes::fp16::Fp16Options;
use whittle_passes::int4::Int4Options;
use whittle_passes::quantize::{self, Format, QuantConfig};

use super::{Args, CalibrationArg, FormatArg, Mode};

/// `--calib-samples` when not given.
pub(super) const CALIB_SAMPLES: usize = 512;

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

/// Refuses flags that `args.mode` does not use and values out of range.
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
    let calibration = args.calibration.unwrap_or(CalibrationArg::Minmax);
    if args.percentile.is_some() && !matches!(calibration, CalibrationArg::Percentile) {
        bail!("--percentile applies to --calibration percentile only");
    }
    if args.histogram_bins.is_some() && matches!(calibration, CalibrationArg::Minmax) {
        bail!("--histogram-bins applies to --calibration entropy, percentile or mse, not minmax");
    }
    if let Some(budget) = args.accuracy_budget {
        if !(budget.is_finite() && (0.0..=100.0).contains(&budget)) {
            bail!("--accuracy-budget must be a percentage between 0 and 100, got {budget}");
        }
        if args.eval_data.is_none() {
            bail!("--accuracy-budget needs --eval-data SPEC");
        }
    }
    if args.no_latency && args.threads.is_some() {
        bail!("--threads sets the latency measurement's threads; --no-latency skips it");
    }
    if args.calib_samples == Some(0) {
        bail!("--calib-samples must be at least 1");
    }
    Ok(())
}

/// The INT8 library config from the flags (defaults for those not given).
pub(super) fn int8_config(args: &Args) -> anyhow::Result<QuantConfig> {
    let percentile = args.percentile.unwrap_or(99.999);
    if !(percentile > 50.0 && percentile <= 100.0) {
        bail!("--percentile must be in (50, 100], got {percentile}");
    }
    let defaults = QuantConfig::default();
    let histogram_bins = args.histogram_bins.unwrap_or(defaults.histogram_bins);
    let max_bins = quantize::observer::Histogram::MAX_BINS;
    if !(16..=max_bins).contains(&histogram_bins) {
        bail!("--histogram-bins must be between 16 and {max_bins}, got {histogram_bins}");
    }
    let calibration = args.calibration.unwrap_or(CalibrationArg::Minmax);
    Ok(QuantConfig {
        format: match args.format.unwrap_or(FormatArg::Qdq) {
            FormatArg::Qdq => Format::Qdq,
            FormatArg::Qoperator => Format::QOperator,
        },
        per_channel: args.per_channel,
        weight_type: args.weight_type.map_or(defaults.weight_type, Into::into),
        activation_type: args
            .activation_type
            .map_or(defaults.activation_type, Into::into),
        reduce_range: args.reduce_range,
        calibration: calibration.method(percentile),
        op_types: args.op_types.clone().unwrap_or(defaults.op_types),
        exclude: args.exclude.clone(),
        histogram_bins,
        progress: !args.json,
        ..QuantConfig::default()
    })
}

/// The FP16 options from the flags.
pub(super) fn fp16_options(args: &Args) -> Fp16Options {
    let defaults = Fp16Options::default();
    Fp16Options {
        keep_io_types: args.keep_io_types.unwrap_or(defaults.keep_io_types),
        keep_nodes: args.exclude.clone(),
        ..defaults
    }
}

/// The INT4 options from the flags.
pub(super) fn int4_options(args: &Args) -> Int4Options {
    let defaults = Int4Options::default();
    Int4Options {
        block_size: args.block_size.unwrap_or(defaults.block_size),
        symmetric: args.symmetric,
        exclude: args.exclude.clone(),
        ..defaults
    }
}
