//! `whittle qat`: quantization-aware training, written in the QDQ layout of `whittle
//! quantize --mode static`. The flags become the pipeline's `qat` step (whose docs give the
//! phase schedule of the epoch options), which runs and is rendered here.

use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;
use whittle_ir::Model;
use whittle_pipeline::step::qat::{Qat, QatOutcome};
use whittle_pipeline::Ctx;

use super::distill::{check_test_samples, flag_error, TRAINING_FLAGS};
use super::output::save_model;
use super::quantize::CalibrationArg;
use super::train::{build_model, check_outputs, refuse_model_setting, training, Settings};
use crate::flags::flag_words;
use crate::observer::CliObserver;

/// Arguments of `whittle qat`.
#[derive(clap::Args)]
pub struct Args {
    /// The float (or QDQ-quantized) model: MODEL.onnx or zoo:NAME.
    #[arg(value_name = "MODEL")]
    input: String,
    /// Where to write the QDQ model.
    #[arg(short, long)]
    output: PathBuf,
    /// Float epochs before fake quantization is inserted.
    #[arg(long, default_value_t = 0)]
    start_epoch: usize,
    /// Fold BatchNormalization into the preceding Conv from this epoch.
    #[arg(long)]
    freeze_bn_epoch: Option<usize>,
    /// Activation scales stop changing from this epoch.
    #[arg(long)]
    freeze_observers_epoch: Option<usize>,
    /// Learn the activation step sizes (LSQ).
    #[arg(long)]
    lsq: bool,
    /// How activation ranges are calibrated.
    #[arg(long, value_enum, default_value = "minmax")]
    calibration: CalibrationArg,
    /// Percentile for --calibration percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Training images used for calibration.
    #[arg(long, default_value_t = 512)]
    calib_samples: usize,
    /// One weight scale per output channel.
    #[arg(long)]
    per_channel: bool,
    /// 7-bit weights: ONNX Runtime's int8 kernels on CPUs without VNNI can saturate with
    /// full-range weights (as `whittle quantize --reduce-range`).
    #[arg(long)]
    reduce_range: bool,
    /// Test images for the accuracies (default: the whole test split).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Training settings (as `whittle train`; --model is the positional MODEL here).
    #[command(flatten)]
    settings: Settings,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// What `whittle qat --json` prints.
#[derive(Serialize)]
struct Summary {
    output: String,
    size_fp32: u64,
    size_qat: u64,
    #[serde(flatten)]
    outcome: QatOutcome,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    refuse_model_setting(&args.settings, "the MODEL argument")?;
    check_test_samples(args.test_samples)?;
    let input = std::path::Path::new(&args.input);
    check_outputs(&args.settings, Some(input), None, &args.output, args.force)?;
    let Some(data) = args.settings.data.clone() else {
        bail!("--data is required");
    };
    let mut training = training(&args.settings)?;
    training.epochs = args.settings.epochs.unwrap_or(1);
    let step = Qat {
        limit: args.settings.limit,
        start_epoch: args.start_epoch,
        freeze_bn_epoch: args.freeze_bn_epoch,
        freeze_observers_epoch: args.freeze_observers_epoch,
        lsq: args.lsq,
        calibration: args.calibration.into(),
        percentile: args.percentile,
        calib_samples: args.calib_samples,
        per_channel: args.per_channel,
        reduce_range: args.reduce_range,
        eval_data: Some(data.clone()),
        eval_samples: args.test_samples,
        training,
        data_role: "--data".into(),
        ..Qat::new(data)
    };
    step.validate().map_err(flag_error)?;
    let model = build_model(&args.input)?;
    let observer = CliObserver::new(args.json);
    let (exported, mut outcome) = step
        .train(&mut Ctx::new(&observer), &model)
        .map_err(flag_error)?;
    save_model(&exported, &args.output)?;
    for note in &mut outcome.notes {
        *note = flag_words(note, &TRAINING_FLAGS);
    }
    let summary = Summary {
        output: args.output.display().to_string(),
        size_fp32: model.encoded_len() as u64,
        size_qat: Model::disk_size(&args.output)?,
        outcome,
    };
    print_summary(&summary, args.json)
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        return crate::report::print_json(s);
    }
    let o = &s.outcome;
    let percent = |a: Option<f64>| 100.0 * a.unwrap_or(f64::NAN);
    println!(
        "accuracy on {} test samples: fp32 {:.2}%, PTQ int8 {:.2}%, QAT int8 {:.2}%",
        o.test_samples,
        percent(o.accuracy_fp32),
        percent(o.accuracy_ptq),
        percent(o.accuracy_qat)
    );
    println!(
        "size {} -> {}; wrote {}",
        crate::report::human_bytes(s.size_fp32),
        crate::report::human_bytes(s.size_qat),
        s.output
    );
    for note in &o.notes {
        println!("note: {note}");
    }
    Ok(())
}
