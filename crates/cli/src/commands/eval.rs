//! `whittle eval`: top-1 / top-5 accuracy of a classifier on a labelled dataset, per class
//! and as a confusion matrix.

use std::cmp::Ordering;
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

/// Classes listed one by one in the human report; beyond that only the worst ones are.
const TABLE_CLASSES: usize = 20;

/// Accuracy figures of one evaluation. The top-1 prediction is the first class of highest score.
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
    /// Top-1 figures of each class the model scores, in class order.
    pub per_class: Vec<ClassAccuracy>,
    /// Sample counts by true class (rows) and top-1 predicted class (columns).
    pub confusion: Vec<Vec<usize>>,
}

/// Top-1 figures of the samples of one true class.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ClassAccuracy {
    /// The class index.
    pub class: usize,
    /// The class name, when the dataset names its classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Samples of this class.
    pub samples: usize,
    /// Those predicted as this class.
    pub correct: usize,
    /// `correct / samples`, or `None` (JSON null) when the class has no samples.
    pub accuracy: Option<f64>,
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
    if let [input] = exec.inputs().as_slice() {
        super::datasets::check_image_shape(input, &args.data, "--data")?;
    }
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
    print_class_table(&result.per_class);
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

/// Evaluates a single-input classifier on `data` in batches. Fails, saying how many
/// samples, when the class scores are not all finite (a ranking of NaN means nothing).
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
    let mut tally = Tally::default();
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let batch = Value::new(images.tensor().narrow(0, start, len)?, images.dtype())?;
        let out = exec.run(HashMap::from([(input.name.clone(), batch)]))?;
        let scores = scores_2d(&out[&output].to_data()?, len)?;
        for (i, (row, &label)) in scores
            .iter()
            .zip(&data.labels[start..start + len])
            .enumerate()
        {
            if row.iter().all(|s| s.is_finite()) {
                tally.add(row, label)?;
            } else {
                tally.not_finite.get_or_insert((start + i, 0)).1 += 1;
            }
        }
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    if let Some((first, count)) = tally.not_finite {
        bail!(
            "the model's output '{output}' is not finite (NaN or infinite scores) for {count} of {n} samples (the first is sample {first}); no accuracy can be measured"
        );
    }
    Ok(tally.finish(data))
}

/// Running counts of an evaluation.
#[derive(Default)]
struct Tally {
    /// Correct top-5 predictions.
    correct5: usize,
    /// Counts by true class (rows) and predicted class (columns); sized by the first row.
    confusion: Vec<Vec<usize>>,
    /// The first sample whose scores are not all finite, and how many such samples.
    not_finite: Option<(usize, usize)>,
}

impl Tally {
    /// Counts one sample of class `label` with class scores `row`.
    fn add(&mut self, row: &[f64], label: i64) -> anyhow::Result<()> {
        let Some(&target) = usize::try_from(label).ok().and_then(|l| row.get(l)) else {
            bail!(
                "label {label} is out of range for a model with {} classes",
                row.len()
            );
        };
        if self.confusion.is_empty() {
            self.confusion = vec![vec![0; row.len()]; row.len()];
        }
        if self.confusion.len() != row.len() {
            bail!(
                "the model scored {} classes, then {}",
                self.confusion.len(),
                row.len()
            );
        }
        let predicted = row
            .iter()
            .enumerate()
            .fold(0, |best, (i, &s)| if s > row[best] { i } else { best });
        self.confusion[label as usize][predicted] += 1;
        let rank = row.iter().filter(|&&s| s > target).count();
        self.correct5 += usize::from(rank < 5);
        Ok(())
    }

    /// The figures of the samples counted, with class names from `data`.
    fn finish(self, data: &Dataset) -> Accuracy {
        let per_class: Vec<ClassAccuracy> = self
            .confusion
            .iter()
            .enumerate()
            .map(|(class, row)| {
                let (samples, correct) = (row.iter().sum::<usize>(), row[class]);
                ClassAccuracy {
                    class,
                    name: data.class_names.get(class).cloned(),
                    samples,
                    correct,
                    accuracy: (samples > 0).then(|| correct as f64 / samples as f64),
                }
            })
            .collect();
        let samples = per_class.iter().map(|c| c.samples).sum::<usize>();
        let correct = per_class.iter().map(|c| c.correct).sum::<usize>();
        let total = samples.max(1) as f64;
        Accuracy {
            accuracy: correct as f64 / total,
            top5: self.correct5 as f64 / total,
            samples,
            correct,
            per_class,
            confusion: self.confusion,
        }
    }
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
