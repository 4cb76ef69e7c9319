//! `whittle eval`: top-1 / top-5 accuracy of a classifier on a labelled dataset, per class
//! and as a confusion matrix; `--report` writes them with the model's size, parameters and
//! MACs as whittle-pipeline's report.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use whittle_bench::bench::Engine;
use whittle_data::{Dataset, Split};
use whittle_exec::Executor;
use whittle_ir::Model;
use whittle_pipeline::eval::{Accuracy, ClassAccuracy, Evaluator, Metrics};
use whittle_pipeline::report;
use whittle_pipeline::{Ctx, DataSource, ModelSource};

use crate::observer::CliObserver;

/// Arguments of `whittle eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX classifier (one input, first output = class scores [N, classes]).
    model: PathBuf,
    /// Dataset: mnist:DIR, fashion-mnist:DIR, npy:X.npy,Y.npy, npz:FILE.npz,
    /// csv:FILE[?label=COLUMN], images:DIR[?size=HxW&channels=1|3].
    #[arg(long)]
    data: String,
    /// Evaluate only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Which split to read.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Where the model runs: whittle's executor, or ONNX Runtime (its default threads):
    /// the figure a deployment there gets. Dynamic INT8 quantizes each run's activations
    /// with one scale, so its accuracy depends on --batch-size.
    #[arg(long, default_value = "whittle", value_parser = str::parse::<Engine>)]
    engine: Engine,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also write the report (accuracy, per-class accuracy, size, parameters, MACs,
    /// precision and sparsity per layer) to FILE.html or FILE.json.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// The dataset split named on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    /// The training split.
    Train,
    /// The test split (t10k).
    Test,
}

/// Classes listed one by one in the human report; beyond that only the worst ones are.
const TABLE_CLASSES: usize = 20;

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    if let Some(path) = &args.report {
        report::file_format(path)?;
    }
    let model = ModelSource::File(args.model.clone()).load()?;
    let exec = Executor::new(&model)?;
    let data =
        DataSource::new(&args.data)
            .with_role("--data")
            .load(&exec.inputs(), split, args.limit)?;
    let result = evaluate(
        &model,
        &exec,
        args.engine,
        &data,
        args.batch_size,
        !args.json,
    )?;
    if let Some(path) = &args.report {
        write_report(&args.model, &model, &result, path)?;
    }
    if args.json {
        return crate::report::print_json(&result);
    }
    println!(
        "top-1 {:.2}% ({} / {}), top-5 {:.2}%",
        100.0 * result.accuracy,
        result.correct,
        result.samples,
        100.0 * result.top5
    );
    print_class_table(&result.per_class);
    Ok(())
}

/// Writes the report of `model` (read from `path`) with the figures of `result`.
fn write_report(
    path: &Path,
    model: &Model,
    result: &Accuracy,
    report: &Path,
) -> anyhow::Result<()> {
    let mut metrics = Metrics {
        size_bytes: Some(Model::disk_size(path)?),
        ..Metrics::default()
    };
    metrics.set_accuracy(result.clone());
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    report::write(&report::evaluate::report(&name, model, metrics)?, report)?;
    Ok(())
}

/// Prints one line per class (only the [`TABLE_CLASSES`] / 2 least accurate ones when
/// there are more than [`TABLE_CLASSES`]).
fn print_class_table(classes: &[ClassAccuracy]) {
    let mut rows: Vec<&ClassAccuracy> = classes.iter().filter(|c| c.samples > 0).collect();
    if rows.len() > TABLE_CLASSES {
        rows.sort_by(|a, b| {
            a.accuracy
                .partial_cmp(&b.accuracy)
                .unwrap_or(Ordering::Equal)
        });
        rows.truncate(TABLE_CLASSES / 2);
        println!(
            "least accurate {} of {} classes:",
            rows.len(),
            classes.len()
        );
    }
    let label = |c: &ClassAccuracy| c.name.clone().unwrap_or_else(|| c.class.to_string());
    let width = rows
        .iter()
        .map(|c| label(c).len())
        .max()
        .unwrap_or(0)
        .max(5);
    println!(
        "{:<width$}  {:>8}  {:>8}  {:>8}",
        "class", "samples", "correct", "accuracy"
    );
    for c in rows {
        let accuracy = 100.0 * c.accuracy.unwrap_or(0.0);
        println!(
            "{:<width$}  {:>8}  {:>8}  {:>7.2}%",
            label(c),
            c.samples,
            c.correct,
            accuracy
        );
    }
}

/// Evaluates a single-input classifier (`model`, `exec` its executor) on `data` in batches
/// on `engine` (the pipeline's [`Evaluator`]; ONNX Runtime with its default threads),
/// drawing a progress bar when `progress`.
pub fn evaluate(
    model: &Model,
    exec: &Executor,
    engine: Engine,
    data: &Dataset,
    batch_size: usize,
    progress: bool,
) -> anyhow::Result<Accuracy> {
    let observer = CliObserver::new(!progress);
    let ctx = Ctx::new(&observer);
    let evaluator = Evaluator::new().with_labelled(data.clone(), batch_size);
    let accuracy = match engine {
        Engine::Whittle => evaluator.accuracy(&ctx, exec)?,
        Engine::Ort => evaluator.accuracy_in_ort(&ctx, exec, model, 0)?,
    };
    accuracy.context("no labelled data to evaluate")
}
