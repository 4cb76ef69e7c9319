//! `whittle quantize`: INT8 post-training quantization (static QDQ / QOperator, dynamic).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use whittle_data::Split;
use whittle_exec::{feed_samples, model_inputs, InputSpec, Value};
use whittle_ir::{DataType, Model, TensorData};
use whittle_passes::fp16::Fp16Options;
use whittle_passes::int4::Int4Options;
use whittle_passes::quantize::sensitivity::EvalSet;
use whittle_passes::quantize::{
    self, CalibrationMethod, Format, QuantConfig, QuantReport, QuantType,
};

use super::datasets::{check_batch, dataset_batches, eval_set, single_input};
use super::feeds::{self, Feed};
use super::output::{check_output, save_model, InputModel};
use super::vnni::reduce_range_note;

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
    /// Layout of a static model.
    #[arg(long, value_enum, default_value = "qdq")]
    format: FormatArg,
    /// Calibration data (static mode): a dataset SPEC (train split) for a one-input model,
    /// or feeds:FILE.npz with one array per model input, named after it.
    #[arg(long, value_name = "SPEC")]
    calib_data: Option<String>,
    /// Calibration samples to use.
    #[arg(long, default_value_t = 512)]
    calib_samples: usize,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value = "minmax")]
    calibration: CalibrationArg,
    /// Percentile for --calibration percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Histogram bins per tensor for entropy, percentile and mse calibration.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    histogram_bins: usize,
    /// One weight scale per output channel.
    #[arg(long)]
    per_channel: bool,
    /// Weight integer type (int8 symmetric, uint8 asymmetric).
    #[arg(long, value_enum, default_value = "int8")]
    weight_type: TypeArg,
    /// Activation integer type (uint8 asymmetric, int8 symmetric).
    #[arg(long, value_enum, default_value = "uint8")]
    activation_type: TypeArg,
    /// 7-bit weights (for CPUs without VNNI).
    #[arg(long)]
    reduce_range: bool,
    /// Operator types to quantize (default Conv,Gemm,MatMul; QDQ also takes Add, Mul,
    /// Concat, MaxPool, AveragePool, Relu, Flatten).
    #[arg(long, value_delimiter = ',', value_name = "OP,...")]
    op_types: Option<Vec<String>>,
    /// Node names to keep in float.
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    exclude: Vec<String>,
    /// FP16: keep float32 graph inputs and outputs (Casts at the boundary).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    keep_io_types: bool,
    /// INT4: weights per block along K (a power of two, at least 16).
    #[arg(long, default_value_t = 32)]
    block_size: usize,
    /// INT4: symmetric blocks (no zero points).
    #[arg(long)]
    symmetric: bool,
    /// Largest top-1 accuracy drop allowed, in percent (needs --eval-data).
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
    /// A multiple of 32 verifies on whole calibration batches, whose float values
    /// calibration keeps (faster, but those values stay in memory).
    #[arg(long, default_value_t = 16, value_name = "N")]
    verify_samples: usize,
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

impl CalibrationArg {
    /// The library's method (`percentile` for [`CalibrationArg::Percentile`]).
    pub(crate) fn method(self, percentile: f64) -> CalibrationMethod {
        match self {
            CalibrationArg::Minmax => CalibrationMethod::MinMax,
            CalibrationArg::Entropy => CalibrationMethod::Entropy,
            CalibrationArg::Percentile => CalibrationMethod::Percentile { percentile },
            CalibrationArg::Mse => CalibrationMethod::Mse,
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

impl From<TypeArg> for QuantType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Int8 => QuantType::Int8,
            TypeArg::Uint8 => QuantType::Uint8,
        }
    }
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let cfg = config(&args)?;
    check_output(
        &args.model,
        &args.output,
        args.force,
        InputModel::ForceOverwrites,
    )?;
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let inputs = model_inputs(&model);
    let eval = load_eval(&inputs, args.eval_data.as_deref(), args.eval_samples)?;
    let (quantized, mut report, verify_feed, recorded) = match args.mode {
        Mode::Fp16 | Mode::Int4 => {
            let (q, r) = if args.mode == Mode::Fp16 {
                let opts = Fp16Options {
                    keep_io_types: args.keep_io_types,
                    keep_nodes: args.exclude.clone(),
                    ..Fp16Options::default()
                };
                quantize::fp16_with_report(&model, &opts)?
            } else {
                let opts = Int4Options {
                    block_size: args.block_size,
                    symmetric: args.symmetric,
                    ..Int4Options::default()
                };
                quantize::int4_with_report(&model, &opts)?
            };
            (
                q,
                r,
                verification_feeds(eval.as_ref(), &inputs, args.verify_samples)?,
                None,
            )
        }
        Mode::Dynamic => {
            let (q, r) = quantize::dynamic_int8(&model, &cfg)?;
            (
                q,
                r,
                verification_feeds(eval.as_ref(), &inputs, args.verify_samples)?,
                None,
            )
        }
        Mode::Static => {
            let spec = args
                .calib_data
                .as_deref()
                .context("static mode needs --calib-data SPEC")?;
            let batches = calib_batches(&inputs, spec, args.calib_samples)?;
            // Verified on unlabelled eval data when given, else on the calibration data.
            let unlabelled = eval.as_ref().filter(|e| e.labels.is_none());
            let verify = match unlabelled {
                Some(e) => feeds::first_samples(&e.batches, args.verify_samples)?,
                None => feeds::first_samples(&batches, args.verify_samples)?,
            };
            // Verifying on whole calibration batches reuses the float values calibration saw.
            let reuse = unlabelled.is_none()
                && verify
                    .iter()
                    .zip(&batches)
                    .all(|(v, b)| feed_samples(v) == feed_samples(b));
            let cfg = QuantConfig {
                record_batches: if reuse { verify.len() } else { 0 },
                ..cfg.clone()
            };
            let (q, mut r) = match (args.accuracy_budget, &eval) {
                (Some(b), Some(e)) => {
                    quantize::static_int8_within_budget(&model, &cfg, batches, e, b / 100.0)?
                }
                _ => quantize::static_int8(&model, &cfg, batches)?,
            };
            let recorded = r
                .calibration
                .as_mut()
                .map(|c| std::mem::take(&mut c.recorded));
            (q, r, verify, recorded)
        }
    };
    if args.verify_samples == 0 {
        report
            .notes
            .push("outputs not verified against the float model (--verify-samples 0)".into());
    } else {
        report.verification = Some(quantize::verify::compare(
            &model,
            &quantized,
            &verify_feed,
            recorded.as_deref(),
        )?);
    }
    if report.accuracy.is_none() {
        if let Some(e) = eval.as_ref().filter(|e| e.labels.is_some()) {
            report.accuracy = Some(e.compare(&model, &quantized, None)?);
        }
    }
    save_model(&quantized, &args.output)?;
    report.set_sizes(
        Model::disk_size(&args.model)?,
        Model::disk_size(&args.output)?,
    );
    if matches!(args.mode, Mode::Static | Mode::Dynamic) {
        report.notes.extend(reduce_range_note(&cfg));
    }
    if args.mode != Mode::Static && args.eval_data.is_none() {
        report
            .notes
            .push("verified on synthetic inputs (give --eval-data for real ones)".into());
    }
    report.seconds = start.elapsed().as_secs_f64();
    if let Some(path) = &args.report {
        write_report(&report, path)?;
    }
    if args.json {
        return crate::report::print_json(&report);
    }
    print!("{}", report.summary());
    println!("wrote {}", args.output.display());
    Ok(())
}

/// The library config from the flags, refusing inconsistent ones.
fn config(args: &Args) -> anyhow::Result<QuantConfig> {
    if args.accuracy_budget.is_some() && args.eval_data.is_none() {
        bail!("--accuracy-budget needs --eval-data SPEC");
    }
    if args.accuracy_budget.is_some() && args.mode != Mode::Static {
        bail!("--accuracy-budget works with --mode static");
    }
    if !(args.percentile > 50.0 && args.percentile <= 100.0) {
        bail!("--percentile must be in (50, 100], got {}", args.percentile);
    }
    let max_bins = quantize::observer::Histogram::MAX_BINS;
    if !(16..=max_bins).contains(&args.histogram_bins) {
        bail!(
            "--histogram-bins must be between 16 and {max_bins}, got {}",
            args.histogram_bins
        );
    }
    let calibration = args.calibration.method(args.percentile);
    let mut cfg = QuantConfig {
        format: match args.format {
            FormatArg::Qdq => Format::Qdq,
            FormatArg::Qoperator => Format::QOperator,
        },
        per_channel: args.per_channel,
        weight_type: args.weight_type.into(),
        activation_type: args.activation_type.into(),
        reduce_range: args.reduce_range,
        calibration,
        exclude: args.exclude.clone(),
        histogram_bins: args.histogram_bins,
        progress: !args.json,
        ..QuantConfig::default()
    };
    if let Some(ops) = &args.op_types {
        cfg.op_types = ops.clone();
    }
    Ok(cfg)
}

/// Calibration batches from `spec`: `feeds:FILE.npz` for any model, else the train split
/// of a dataset feeding the model's single input.
fn calib_batches(inputs: &[InputSpec], spec: &str, limit: usize) -> anyhow::Result<Vec<Feed>> {
    const FLAG: &str = "--calib-data";
    if let Some(file) = feeds::archive(spec) {
        return feeds::load(inputs, file, limit, FLAG);
    }
    let input = single_input(inputs, FLAG)?;
    let calib = whittle_data::spec::load(spec, Split::Train, Some(limit))
        .with_context(|| format!("loading {FLAG} {spec}"))?;
    let batches = dataset_batches(&input.name, &calib.images, calib.len())?;
    check_batch(&input, &batches, FLAG)?;
    Ok(batches)
}

/// `--eval-data`: a labelled dataset SPEC (test split), or unlabelled `feeds:FILE.npz`
/// batches; at most `limit` samples.
fn load_eval(
    inputs: &[InputSpec],
    spec: Option<&str>,
    limit: Option<usize>,
) -> anyhow::Result<Option<EvalSet>> {
    const FLAG: &str = "--eval-data";
    let Some(spec) = spec else {
        return Ok(None);
    };
    Ok(Some(match feeds::archive(spec) {
        Some(file) => EvalSet {
            batches: feeds::load(inputs, file, limit.unwrap_or(usize::MAX), FLAG)?,
            labels: None,
        },
        None => eval_set(inputs, spec, limit, FLAG)?,
    }))
}

/// Feeds to verify a model on: the first `samples` of the eval data, else one synthetic
/// sample.
fn verification_feeds(
    eval: Option<&EvalSet>,
    inputs: &[InputSpec],
    samples: usize,
) -> anyhow::Result<Vec<Feed>> {
    match eval {
        Some(e) => feeds::first_samples(&e.batches, samples),
        None => Ok(vec![synthetic_feed(inputs)?]),
    }
}

/// One synthetic sample per input: floats in [0, 1), integers 1 (valid ids, masks and
/// type ids), symbolic dimensions 1 for the first axis and 16 for others.
fn synthetic_feed(inputs: &[InputSpec]) -> anyhow::Result<Feed> {
    inputs
        .iter()
        .map(|spec| {
            let dims: Vec<usize> = spec
                .dims
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .enumerate()
                .map(|(i, d)| d.unwrap_or(if i == 0 { 1 } else { 16 }))
                .collect();
            let n: usize = dims.iter().product();
            let data = match spec.dtype.unwrap_or(DataType::Float) {
                DataType::Float => {
                    let v: Vec<f32> = (0..n)
                        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                        .collect();
                    TensorData::from_slice(dims, &v)?
                }
                DataType::Int64 => TensorData::from_slice(dims, &vec![1i64; n])?,
                DataType::Int32 => TensorData::from_slice(dims, &vec![1i32; n])?,
                other => bail!(
                    "cannot make a synthetic {other} input for '{}'; give --eval-data",
                    spec.name
                ),
            };
            Ok((spec.name.clone(), Value::try_from(&data)?))
        })
        .collect()
}

/// Writes the report as JSON or HTML, by the file's extension.
fn write_report(report: &QuantReport, path: &Path) -> anyhow::Result<()> {
    let text = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::to_string_pretty(report)?,
        Some("html" | "htm") => report.to_html(),
        _ => bail!("--report {} must end in .json or .html", path.display()),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
