//! `whittle quantize`: INT8 post-training quantization (static QDQ / QOperator, dynamic),
//! FP16 and INT4 weight-only; verification, accuracy and ONNX Runtime latency before and
//! after.

mod options;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use whittle_data::Split;
use whittle_exec::{feed_samples, model_inputs, InputSpec, Value};
use whittle_ir::{DataType, ExternalData, Model, TensorData};
use whittle_passes::quantize::sensitivity::EvalSet;
use whittle_passes::quantize::{self, CalibrationMethod, QuantConfig, QuantReport, QuantType};

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
    /// A multiple of 32 verifies on whole calibration batches, whose float values
    /// calibration keeps (faster, but those values stay in memory).
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
    options::check(&args)?;
    let cfg = options::int8_config(&args)?;
    check_output(
        &args.model,
        &args.output,
        args.force,
        InputModel::ForceOverwrites,
    )?;
    // Measured before anything is written: with --force the output may be the input.
    let input_bytes = Model::disk_size(&args.model)?;
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let inputs = model_inputs(&model);
    let eval = load_eval(&inputs, args.eval_data.as_deref(), args.eval_samples)?;
    let (quantized, mut report, verify_feed, recorded) = match args.mode {
        Mode::Fp16 | Mode::Int4 => {
            let (q, r) = if args.mode == Mode::Fp16 {
                quantize::fp16_with_report(&model, &options::fp16_options(&args))?
            } else {
                quantize::int4_with_report(&model, &options::int4_options(&args))?
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
            let limit = args.calib_samples.unwrap_or(options::CALIB_SAMPLES);
            let batches = calib_batches(&inputs, spec, limit)?;
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
    if args.no_latency {
        report
            .notes
            .push("ONNX Runtime latency not measured (--no-latency)".into());
    } else {
        let sample = latency_sample(&verify_feed, &inputs)?;
        measure_latency(&args, &model, &quantized, &sample, &mut report);
    }
    save_model(&quantized, &args.output)?;
    report.set_sizes(input_bytes, Model::disk_size(&args.output)?);
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
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        return crate::report::print_json(&report);
    }
    print!("{}", report.summary(args.verbose));
    println!("wrote {}", args.output.display());
    Ok(())
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

/// One sample of every input to time the models on: the first verification sample, else
/// a synthetic one.
fn latency_sample(
    verify: &[Feed],
    inputs: &[InputSpec],
) -> anyhow::Result<HashMap<String, TensorData>> {
    let feed = match feeds::first_samples(verify, 1)?.pop() {
        Some(feed) => feed,
        None => synthetic_feed(inputs)?,
    };
    feed.iter()
        .map(|(name, v)| Ok((name.clone(), v.to_data()?)))
        .collect()
}

/// ONNX Runtime latency of the input and of `quantized` (written to a temporary file
/// beside the output), with a warning when the result is slower; a note when ONNX
/// Runtime cannot run them.
fn measure_latency(
    args: &Args,
    model: &Model,
    quantized: &Model,
    sample: &HashMap<String, TensorData>,
    report: &mut QuantReport,
) {
    let defaults = whittle_bench::latency::LatencyOptions::default();
    let opts = whittle_bench::latency::LatencyOptions {
        threads: args.threads.unwrap_or(defaults.threads),
        ..defaults
    };
    let tmp = whittle_ir::files::TempPath::beside(&args.output);
    let measured = quantized
        .save(tmp.path(), &ExternalData::Never)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            whittle_bench::latency::measure(&args.model, tmp.path(), sample, &opts)
                .map_err(|e| e.to_string())
        });
    match measured {
        Ok(latency) => {
            let mode = report.mode.clone();
            let warning = quantize::latency::slowdown_warning(&mode, model, quantized, &latency);
            report.warnings.extend(warning);
            report.latency_ms = Some(latency);
        }
        Err(e) => report
            .notes
            .push(format!("ONNX Runtime latency not measured: {e}")),
    }
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
