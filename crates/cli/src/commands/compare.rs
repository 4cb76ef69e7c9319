//! `whittle compare`: how far a compressed model B is from a reference model A.
//!
//! Both models run in whittle's executor on the same inputs: a labelled dataset
//! (`--data`) or seeded random inputs built from the declared input specs. Reported:
//! file sizes and their ratio, parameter counts, per-output MSE / cosine / SQNR of B
//! against A, top-1 agreement of the first output when it is a [N, classes] score
//! matrix, and each model's accuracy when the data has labels. `--report` writes them with
//! both models' MACs and precision and sparsity per layer as whittle-pipeline's report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use whittle_bench::inputs;
use whittle_data::{Dataset, Split};
use whittle_exec::{Executor, InputSpec, Value};
use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::{Model, TensorData};

use whittle_pipeline::eval::accuracy::scores_2d;
use whittle_pipeline::eval::{Fidelity, Metrics, OutputFidelity};
use whittle_pipeline::report;
use whittle_pipeline::{DataSource, ModelSource};

/// Arguments of `whittle compare`.
#[derive(clap::Args)]
pub struct Args {
    /// The reference model (e.g. the float32 original).
    a: PathBuf,
    /// The model to compare against it (e.g. its quantized version).
    b: PathBuf,
    /// Labelled dataset (mnist:DIR, fashion-mnist:DIR, npy:X.npy,Y.npy; test split);
    /// without it, random inputs are drawn from the models' input specs.
    #[arg(long)]
    data: Option<String>,
    /// Samples to compare (default: the whole test split, or 64 random samples).
    #[arg(long)]
    samples: Option<usize>,
    /// Samples per forward pass when --data is given.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also write the report (A and B side by side with MACs, per-output fidelity,
    /// precision and sparsity per layer of both) to FILE.html or FILE.json.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// One model's figures.
#[derive(Serialize, Debug)]
pub struct ModelFigures {
    /// Path of the model.
    pub path: String,
    /// Bytes on disk, external data included.
    pub bytes: u64,
    /// Elements of all initializers.
    pub params: u64,
    /// Top-1 accuracy when the data has labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// Result of a comparison.
#[derive(Serialize, Debug)]
pub struct Comparison {
    /// The reference model.
    pub a: ModelFigures,
    /// The compared model.
    pub b: ModelFigures,
    /// B's size over A's.
    pub size_ratio: f64,
    /// Samples compared.
    pub samples: usize,
    /// Fidelity per output, in A's output order.
    pub outputs: Vec<OutputFidelity>,
    /// Share of samples where both models pick the same class (first output [N, C]).
    pub top1_agreement: Option<f64>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.samples == Some(0) {
        bail!("--samples 0: nothing to compare; give at least 1");
    }
    if let Some(path) = &args.report {
        report::file_format(path)?;
    }
    let (model_a, exec_a) = open(&args.a)?;
    let (model_b, exec_b) = open(&args.b)?;
    check_interfaces(&exec_a, &exec_b)?;
    let data = match &args.data {
        Some(spec) => Some(DataSource::new(spec).with_role("--data").load(
            &exec_a.inputs(),
            Split::Test,
            args.samples,
        )?),
        None => None,
    };
    let specs = exec_a.inputs();
    let (feeds, count) = match &data {
        Some(d) if d.is_empty() => {
            bail!("--data {}: no samples", args.data.as_deref().unwrap_or(""))
        }
        Some(d) => (
            dataset_feeds(&specs, d, args.batch_size)?,
            d.len().div_ceil(args.batch_size),
        ),
        None => {
            let samples = args.samples.unwrap_or(64);
            (random_feeds(&specs, samples, args.seed)?, samples)
        }
    };
    let (outs_a, outs_b) = run_both(&exec_a, &exec_b, feeds, count, !args.json)?;
    let labels = data.as_ref().map(|d| d.labels.as_slice());
    let result = summarize(
        [(&args.a, &model_a), (&args.b, &model_b)],
        &outs_a,
        &outs_b,
        labels,
    )?;
    if let Some(path) = &args.report {
        write_report(&result, [&model_a, &model_b], path)?;
    }
    if args.json {
        return crate::report::print_json(&result);
    }
    print_human(&result);
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<(Model, Executor)> {
    let model = ModelSource::File(path.to_path_buf()).load()?;
    let exec = Executor::new(&model).with_context(|| path.display().to_string())?;
    Ok((model, exec))
}

/// Both models must take the same inputs and produce the same outputs.
fn check_interfaces(a: &Executor, b: &Executor) -> anyhow::Result<()> {
    let (ia, ib) = (a.inputs(), b.inputs());
    let names = |v: &[InputSpec]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(&ia) != names(&ib) {
        bail!(
            "the models take different inputs: A {:?}, B {:?}",
            names(&ia),
            names(&ib)
        );
    }
    for (sa, sb) in ia.iter().zip(&ib) {
        if sa.dims != sb.dims || sa.dtype != sb.dtype {
            bail!(
                "input '{}' differs: A {:?} {:?}, B {:?} {:?}",
                sa.name,
                sa.dtype,
                sa.dims,
                sb.dtype,
                sb.dims
            );
        }
    }
    if a.output_names() != b.output_names() {
        bail!(
            "the models have different outputs: A {:?}, B {:?}",
            a.output_names(),
            b.output_names()
        );
    }
    Ok(())
}

type Feed = HashMap<String, Value>;

/// Feeds made one at a time as the models run (none is kept).
type Feeds<'a> = Box<dyn Iterator<Item = anyhow::Result<Feed>> + 'a>;

/// Batches of a dataset for a single-input model.
fn dataset_feeds<'a>(
    specs: &[InputSpec],
    data: &'a Dataset,
    batch_size: usize,
) -> anyhow::Result<Feeds<'a>> {
    let [input] = specs else {
        bail!(
            "--data needs models with one input, these have {}",
            specs.len()
        );
    };
    let name = input.name.clone();
    Ok(Box::new(data.batches(batch_size).map(move |b| {
        let (x, _) = b?;
        Ok(HashMap::from([(name.clone(), Value::try_from(&x)?)]))
    })))
}

/// `samples` single-sample feeds by whittle's one synthetic-input policy
/// ([`whittle_bench::inputs::inputs_from_specs`]: open batch dimensions 1, other open ones
/// 16; [`whittle_bench::inputs::random_inputs`] for the values), sample `i` drawn with seed
/// `seed + i`.
pub fn random_feeds(
    specs: &[InputSpec],
    samples: usize,
    seed: u64,
) -> anyhow::Result<Feeds<'static>> {
    let inputs = inputs::inputs_from_specs(specs, &HashMap::new())
        .context("synthetic inputs need declared shapes: pass --data")?;
    Ok(Box::new((0..samples as u64).map(move |i| {
        inputs::random_inputs(&inputs, seed.wrapping_add(i))?
            .iter()
            .map(|(name, data)| Ok((name.clone(), Value::try_from(data)?)))
            .collect()
    })))
}

/// Outputs of each model, per output name, as flat f64 samples in feed order.
type Collected = Vec<(String, Vec<TensorData>)>;

/// Runs both models on `count` feeds and keeps their outputs. After the first feed it
/// checks that keeping the outputs of all of them fits in memory.
fn run_both(
    a: &Executor,
    b: &Executor,
    feeds: Feeds,
    count: usize,
    progress: bool,
) -> anyhow::Result<(Collected, Collected)> {
    let bar = if progress {
        ProgressBar::new(count as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} runs {elapsed}",
    )?);
    let names = a.output_names();
    let mut ca: Collected = names.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut cb = ca.clone();
    for (i, feed) in feeds.enumerate() {
        let feed = feed?;
        let (oa, ob) = (
            a.run(feed.clone()).context("running A")?,
            b.run(feed).context("running B")?,
        );
        if i == 0 {
            ensure_outputs_fit(&oa, count)?;
        }
        for (k, name) in names.iter().enumerate() {
            ca[k].1.push(oa[name].to_data()?);
            cb[k].1.push(ob[name].to_data()?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((ca, cb))
}

/// Fails when keeping `count` feeds' worth of outputs like `outputs` for both models (as
/// tensors, then as f64 values to compare) would not fit in memory.
fn ensure_outputs_fit(outputs: &HashMap<String, Value>, count: usize) -> anyhow::Result<()> {
    let per_feed: Option<u128> = outputs.values().try_fold(0u128, |sum, v| {
        let element = v.dtype().size().unwrap_or(1) + size_of::<f64>();
        Some(sum + 2 * tensor_bytes(v.shape(), element)?)
    });
    let what = format!("keeping both models' outputs on {count} feeds");
    ensure_fits(per_feed.and_then(|b| b.checked_mul(count as u128)), &what)
        .map_err(|e| anyhow::anyhow!("{e}; lower --samples"))
}

fn summarize(
    models: [(&PathBuf, &Model); 2],
    outs_a: &Collected,
    outs_b: &Collected,
    labels: Option<&[i64]>,
) -> anyhow::Result<Comparison> {
    let mut outputs = Vec::new();
    for ((name, ta), (_, tb)) in outs_a.iter().zip(outs_b) {
        let mut fidelity = Fidelity::new(name);
        let (na, nb) = (elements(ta), elements(tb));
        if na != nb {
            bail!("output '{name}' has {na} elements in A, {nb} in B");
        }
        for (a, b) in ta.iter().zip(tb) {
            fidelity.add(a, b)?;
        }
        outputs.push(fidelity.finish());
    }
    let classes = |outs: &Collected| -> anyhow::Result<Option<Vec<usize>>> { top1(&outs[0].1) };
    let (pa, pb) = (classes(outs_a)?, classes(outs_b)?);
    let top1_agreement = match (&pa, &pb) {
        (Some(x), Some(y)) => Some(agreement(x, y)),
        _ => None,
    };
    let accuracy = |p: &Option<Vec<usize>>| match (p, labels) {
        (Some(p), Some(l)) => Some(accuracy(p, l)),
        _ => None,
    };
    let figures = |(path, model): (&PathBuf, &Model), acc| -> anyhow::Result<ModelFigures> {
        Ok(ModelFigures {
            path: path.display().to_string(),
            bytes: Model::disk_size(path)?,
            params: whittle_ir::cost::parameter_count(model.graph()),
            accuracy: acc,
        })
    };
    let (a, b) = (
        figures(models[0], accuracy(&pa))?,
        figures(models[1], accuracy(&pb))?,
    );
    Ok(Comparison {
        size_ratio: b.bytes as f64 / a.bytes.max(1) as f64,
        a,
        b,
        samples: outs_a.first().map_or(0, |(_, v)| {
            v.iter()
                .map(|t| t.dims().first().copied().unwrap_or(1))
                .sum()
        }),
        outputs,
        top1_agreement,
    })
}

/// Writes the report of the comparison `r` of `models` (A, B).
fn write_report(r: &Comparison, models: [&Model; 2], path: &Path) -> anyhow::Result<()> {
    let measured = |m: &ModelFigures| Metrics {
        size_bytes: Some(m.bytes),
        parameters: Some(m.params),
        top1: m.accuracy,
        samples: Some(r.samples),
        ..Metrics::default()
    };
    // "A: file", "B: file": two files of the same name stay apart.
    let name = |tag: &str, m: &ModelFigures| {
        let path = Path::new(&m.path);
        let file = path.file_name().unwrap_or(path.as_os_str());
        format!("{tag}: {}", file.to_string_lossy())
    };
    let (a, b) = (name("A", &r.a), name("B", &r.b));
    let report = report::compare::report(
        (&a, models[0], measured(&r.a)),
        (&b, models[1], measured(&r.b)),
        &r.outputs,
        r.samples,
        r.top1_agreement,
    )?;
    report::write(&report, path)?;
    Ok(())
}

/// Elements of all batches of one output.
fn elements(batches: &[TensorData]) -> usize {
    batches.iter().map(TensorData::numel).sum()
}

/// Argmax class (the first maximum) of every row when the output is a [N, C] float
/// score matrix.
fn top1(batches: &[TensorData]) -> anyhow::Result<Option<Vec<usize>>> {
    let mut classes = Vec::new();
    for t in batches {
        if t.dims().len() != 2 || !t.dtype().is_float() {
            return Ok(None);
        }
        for row in scores_2d(t, t.dims()[0])? {
            classes.push(whittle_ir::numeric::argmax(&row));
        }
    }
    Ok(Some(classes))
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

fn accuracy(pred: &[usize], labels: &[i64]) -> f64 {
    let hits = pred
        .iter()
        .zip(labels)
        .filter(|(p, &l)| **p as i64 == l)
        .count();
    hits as f64 / pred.len().max(1) as f64
}

fn print_human(r: &Comparison) {
    use crate::report::{human_bytes, human_count};
    for (tag, m) in [("A", &r.a), ("B", &r.b)] {
        let acc = m
            .accuracy
            .map(|a| format!(", top-1 {:.2}%", 100.0 * a))
            .unwrap_or_default();
        println!(
            "{tag}: {} — {}, {} params{acc}",
            m.path,
            human_bytes(m.bytes),
            human_count(m.params)
        );
    }
    println!("size B/A: {:.3} ({} samples)", r.size_ratio, r.samples);
    for o in &r.outputs {
        println!(
            "output {}: mse {:.3e}, cosine {:.6}, SQNR {:.1} dB",
            o.name, o.mse, o.cosine, o.sqnr_db
        );
    }
    if let Some(t) = r.top1_agreement {
        println!("top-1 agreement {:.2}%", 100.0 * t);
    }
}
