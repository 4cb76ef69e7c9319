//! `whittle eval`: top-1 / top-5 accuracy of a classifier on a labelled dataset.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use whittle_data::{Dataset, Split};
use whittle_exec::{Executor, Value};
use whittle_ir::{Model, TensorData};

/// Arguments of `whittle eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX classifier (one input, first output = class scores [N, classes]).
    model: PathBuf,
    /// Dataset: mnist:DIR, fashion-mnist:DIR or npy:X.npy,Y.npy.
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
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// The dataset split named on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    /// The training split.
    Train,
    /// The test split (t10k).
    Test,
}

/// Accuracy figures of one evaluation.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// Top-1 accuracy, 0..1.
    pub accuracy: f64,
    /// Top-5 accuracy, 0..1 (equals top-1 when there are 5 classes or fewer).
    pub top5: f64,
    /// Samples evaluated.
    pub samples: usize,
    /// Correct top-1 predictions.
    pub correct: usize,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let exec = Executor::new(&model)?;
    let data = whittle_data::spec::load(&args.data, split, args.limit)
        .with_context(|| format!("loading --data {}", args.data))?;
    let result = evaluate(&exec, &data, args.batch_size, !args.json)?;
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
    Ok(())
}

/// Evaluates a single-input classifier on `data` in batches.
pub fn evaluate(
    exec: &Executor,
    data: &Dataset,
    batch_size: usize,
    progress: bool,
) -> anyhow::Result<Accuracy> {
    let inputs = exec.inputs();
    let [input] = inputs.as_slice() else {
        bail!(
            "eval needs a model with one input, this one has {}",
            inputs.len()
        );
    };
    let output = exec.output_names()[0].clone();
    let n = data.len();
    let bar = if progress {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} samples {elapsed}",
    )?);
    let images = Value::try_from(&data.images)?;
    let (mut correct, mut correct5) = (0, 0);
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let batch = Value::new(images.tensor().narrow(0, start, len)?, images.dtype())?;
        let out = exec.run(HashMap::from([(input.name.clone(), batch)]))?;
        let scores = scores_2d(&out[&output].to_data()?, len)?;
        for (row, &label) in scores.iter().zip(&data.labels[start..start + len]) {
            let Some(&target) = usize::try_from(label).ok().and_then(|l| row.get(l)) else {
                bail!(
                    "label {label} is out of range for a model with {} classes",
                    row.len()
                );
            };
            let rank = row.iter().filter(|&&s| s > target).count();
            correct += (rank == 0) as usize;
            correct5 += (rank < 5) as usize;
        }
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    let samples = n.max(1) as f64;
    Ok(Accuracy {
        accuracy: correct as f64 / samples,
        top5: correct5 as f64 / samples,
        samples: n,
        correct,
    })
}

/// Splits class scores [N, C] into rows, checking the shape.
pub fn scores_2d(scores: &TensorData, n: usize) -> anyhow::Result<Vec<Vec<f64>>> {
    let dims = scores.dims();
    if dims.len() != 2 || dims[0] != n {
        bail!("the model's output has shape {dims:?}, expected [{n}, classes]");
    }
    let v = scores.to_f64_vec()?;
    Ok(v.chunks(dims[1]).map(<[f64]>::to_vec).collect())
}
