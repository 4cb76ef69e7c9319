//! `whittle quantize`: INT8 post-training quantization (static QDQ / QOperator, dynamic),
//! FP16 and INT4 weight-only; verification, accuracy and ONNX Runtime latency before and
//! after. The flags become one pipeline step (`whittle_pipeline::step::{quantize, fp16,
//! int4}`), which does the work.

mod options;

use std::path::{Path, PathBuf};

use whittle_ir::Model;
use whittle_pipeline::step::quantize::{Calibrator, IntType, Layout};
use whittle_pipeline::Ctx;

use super::output::{check_output, save_model, InputModel};
use crate::flags::flag_words;
use crate::observer::CliObserver;

/// Arguments of `whittle quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// The float ONNX model.
    model: PathBuf,
    /// Where to write the quantized model.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Quantization mode.
    #[arg(long, value_enum, default_value = "static")]
    mode: Mode,
    /// Layout of a static model [default: qdq].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Calibration data (static mode): a dataset SPEC (train split) for a one-input model,
    /// or feeds:FILE.npz with one array per model input, named after it.
    #[arg(long, value_name = "SPEC")]
    calib_data: Option<String>,
    /// Calibration samples to use (static mode) [default: 512].
    #[arg(long, value_name = "N")]
    calib_samples: Option<usize>,
    /// How activation ranges are chosen (static mode) [default: minmax].
    #[arg(long, value_enum)]
    calibration: Option<CalibrationArg>,
    /// Percentile for --calibration percentile [default: 99.999, as ONNX Runtime].
    #[arg(long)]
    percentile: Option<f64>,
    /// Histogram bins per tensor for entropy, percentile and mse calibration [default: 2048].
    #[arg(long, value_name = "N")]
    histogram_bins: Option<usize>,
    /// One weight scale per output channel (static, dynamic).
    #[arg(long)]
    per_channel: bool,
    /// Weight integer type: int8 symmetric, uint8 asymmetric (static, dynamic) [default: int8].
    #[arg(long, value_enum)]
    weight_type: Option<TypeArg>,
    /// Activation integer type: uint8 asymmetric, int8 symmetric (static) [default: uint8].
    #[arg(long, value_enum)]
    activation_type: Option<TypeArg>,
    /// 7-bit weights, for CPUs without VNNI (static, dynamic).
    #[arg(long)]
    reduce_range: bool,
    /// Operator types to quantize (static, dynamic; default Conv,Gemm,MatMul; QDQ also
    /// takes Add, Mul, Concat, MaxPool, AveragePool, Relu, Flatten).
    #[arg(long, value_delimiter = ',', value_name = "OP,...")]
    op_types: Option<Vec<String>>,
    /// Node names to keep in float (every mode; unnamed nodes are OpType#index).
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    exclude: Vec<String>,
    /// FP16: keep float32 graph inputs and outputs (Casts at the boundary) [default: true].
    #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
    keep_io_types: Option<bool>,
    /// INT4: weights per block (a power of two, at least 16) [default: 32].
    #[arg(long, value_name = "N")]
    block_size: Option<usize>,
    /// INT4: symmetric blocks (no zero points).
    #[arg(long)]
    symmetric: bool,
    /// Largest top-1 accuracy drop allowed, in percent (static; needs --eval-data).
    #[arg(long, value_name = "PERCENT")]
    accuracy_budget: Option<f64>,
    /// Labelled eval data (test split): accuracy before/after, and the budget's yardstick;
    /// or feeds:FILE.npz (no labels): outputs verified against float on these inputs.
    #[arg(long, value_name = "SPEC")]
    eval_data: Option<String>,
    /// Eval samples to use (default: all).
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Samples on which the float and quantized models are compared tensor by tensor
    /// (the first of the calibration data, or of --eval-data); 0 skips the comparison.
    /// Static mode on calibration data: calibration spills these samples' float values
    /// to a temporary file, so the float model does not run again.
    #[arg(long, default_value_t = 16, value_name = "N")]
    verify_samples: usize,
    /// ONNX Runtime intra-op threads for the latency measurement (0: one per core)
    /// [default: 1].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Skip measuring ONNX Runtime latency before and after.
    #[arg(long)]
    no_latency: bool,
    /// List every node left in float with its reason (by default: counts by operator type).
    #[arg(long)]
    verbose: bool,
    /// Write the full report to FILE.json or FILE.html.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Overwrite an existing output (even the input model itself).
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Quantization mode.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Activations quantized at run time; weights int8.
    Dynamic,
    /// Activations calibrated ahead of time (needs --calib-data).
    Static,
    /// Half-precision floats.
    Fp16,
    /// 4-bit weights.
    Int4,
}

/// `--format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// QuantizeLinear/DequantizeLinear pairs.
    Qdq,
    /// QLinearConv/QLinearMatMul operators.
    Qoperator,
}

/// `--calibration`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CalibrationArg {
    /// Smallest and largest value seen.
    Minmax,
    /// KL-divergence threshold.
    Entropy,
    /// --percentile of the values.
    Percentile,
    /// Least quantization MSE.
    Mse,
}

impl From<CalibrationArg> for Calibrator {
    fn from(c: CalibrationArg) -> Self {
        match c {
            CalibrationArg::Minmax => Calibrator::Minmax,
            CalibrationArg::Entropy => Calibrator::Entropy,
            CalibrationArg::Percentile => Calibrator::Percentile,
            CalibrationArg::Mse => Calibrator::Mse,
        }
    }
}

impl From<FormatArg> for Layout {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Qdq => Layout::Qdq,
            FormatArg::Qoperator => Layout::Qoperator,
        }
    }
}

/// An 8-bit integer type.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TypeArg {
    /// Signed.
    Int8,
    /// Unsigned.
    Uint8,
}

impl From<TypeArg> for IntType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Int8 => IntType::Int8,
            TypeArg::Uint8 => IntType::Uint8,
        }
    }
}

/// Runs the command: the flags become a `quantize`, `fp16` or `int4` step, run on the
/// model; the quantized model is written and the step's report rendered.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    options::check(&args)?;
    let step = options::step(&args);
    step.validate()?;
    check_output(
        &args.model,
        &args.output,
        args.force,
        InputModel::ForceOverwrites,
    )?;
    // Measured before anything is written: with --force the output may be the input.
    let (model, input_bytes) = Model::load_sized(&args.model)?;
    whittle_ir::validate(&model)?;
    let observer = CliObserver::new(args.json);
    let mut ctx = Ctx::new(&observer);
    // ONNX Runtime times the models from temporary files beside the output.
    ctx.work_dir = args.output.parent().map(Path::to_path_buf);
    let (quantized, mut report) = step.run(&ctx, &model)?;
    save_model(&quantized, &args.output)?;
    report.set_sizes(input_bytes, Model::disk_size(&args.output)?);
    let reasons = report.float_nodes.iter_mut().map(|f| &mut f.reason);
    for text in report
        .notes
        .iter_mut()
        .chain(&mut report.warnings)
        .chain(reasons)
    {
        *text = flag_words(text, &[]);
    }
    report.seconds = start.elapsed().as_secs_f64();
    if let Some(path) = &args.report {
        // Latency per operator type from a short profile unless latency is off.
        let runs = (!args.no_latency).then_some(3);
        let page = whittle_pipeline::report::quantize::report(&report, &model, &quantized, runs)?;
        whittle_pipeline::report::write(&page, path)?;
    }
    if args.json {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        return crate::report::print_json(&report);
    }
    print!("{}", flag_words(&report.summary(args.verbose), &[]));
    println!("wrote {}", args.output.display());
    Ok(())
}
