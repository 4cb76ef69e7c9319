//! [`Evaluator`]: the one way a model is measured. Each figure is optional: accuracy needs
//! labelled data (run in whittle's executor, or in ONNX Runtime), fidelity a reference
//! model's outputs, latency asks to be timed.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use whittle_bench::inputs::{random_inputs, resolve_inputs, ShapeRequest};
use whittle_bench::ort_engine::OrtEngine;
use whittle_bench::stats::Latency;
use whittle_data::Dataset;
use whittle_exec::{Executor, Value};
use whittle_ir::files::TempPath;
use whittle_ir::{Model, TensorData};

use super::accuracy::{scores_2d, Accuracy, Tally};
use super::fidelity::{Fidelity, OutputFidelity};
use super::Metrics;
use crate::error::{Context, Result};
use crate::feed::{self, Feed};
use crate::observer::{Event, Observer};
use crate::refuse;
use crate::step::Ctx;

/// How latency is timed: warm-up runs, then the median of timed runs of one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyPlan {
    /// Time whittle's executor.
    pub whittle: bool,
    /// Time ONNX Runtime (needs its shared library).
    pub ort: bool,
    /// Untimed runs first.
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
    /// ONNX Runtime's intra-op threads.
    pub threads: usize,
}

impl Default for LatencyPlan {
    fn default() -> Self {
        LatencyPlan {
            whittle: true,
            ort: true,
            warmup: 3,
            runs: 15,
            threads: 1,
        }
    }
}

/// A reference model's outputs on fixed feeds, to measure fidelity against.
pub struct Reference {
    feeds: Vec<Feed>,
    outputs: Vec<HashMap<String, TensorData>>,
    names: Vec<String>,
}

impl Reference {
    /// Runs `model` on every feed and keeps its outputs.
    pub fn new(ctx: &Ctx<'_>, model: &Model, feeds: Vec<Feed>) -> Result<Self> {
        let exec = Executor::new(model).context(|| "preparing the reference model".into())?;
        let names = exec.output_names();
        let outputs = run_all(ctx.observer, "reference outputs", &feeds, |feed| {
            exec_outputs(&exec, feed)
        })?;
        Ok(Reference {
            feeds,
            outputs,
            names,
        })
    }

    /// [`Reference::new`], `model` run in ONNX Runtime with `threads` intra-op threads.
    pub fn in_ort(ctx: &Ctx<'_>, model: &Model, feeds: Vec<Feed>, threads: usize) -> Result<Self> {
        let file = OrtFile::new(model);
        let mut engine = file.session(threads)?;
        let outputs = run_all(ctx.observer, "reference outputs", &feeds, |feed| {
            ort_outputs(&mut engine, feed)
        })?;
        let names = model
            .graph()
            .output
            .iter()
            .map(|o| o.name.clone())
            .collect();
        Ok(Reference {
            feeds,
            outputs,
            names,
        })
    }

    /// Fidelity of `got` (a model's outputs on each feed) to the reference's outputs.
    fn compare(&self, got: &[HashMap<String, TensorData>]) -> Result<FidelityReport> {
        let mut per_output: Vec<Fidelity> = self.names.iter().map(Fidelity::new).collect();
        let mut overall = Fidelity::new("outputs");
        for (want, have) in self.outputs.iter().zip(got) {
            for (f, name) in per_output.iter_mut().zip(&self.names) {
                let Some(h) = have.get(name) else {
                    refuse!("the model has no output '{name}' (the reference has)");
                };
                f.add(&want[name], h)?;
                overall.add(&want[name], h)?;
            }
        }
        Ok(FidelityReport {
            outputs: per_output.iter().map(Fidelity::finish).collect(),
            overall: overall.finish(),
            samples: self.feeds.iter().map(feed::samples).sum(),
        })
    }
}

/// Fidelity to a reference model.
#[derive(Clone, Debug, PartialEq)]
pub struct FidelityReport {
    /// Each output, in the reference's output order.
    pub outputs: Vec<OutputFidelity>,
    /// All outputs' values together.
    pub overall: OutputFidelity,
    /// Samples compared.
    pub samples: usize,
}

/// Measures models. Built with the figures wanted, then [`Evaluator::evaluate`]d on each.
#[derive(Default)]
pub struct Evaluator {
    labelled: Option<(Dataset, usize)>,
    /// ONNX Runtime's intra-op threads when accuracy runs there, not in whittle's executor.
    ort_accuracy: Option<usize>,
    reference: Option<Reference>,
    cost: bool,
    latency: Option<LatencyPlan>,
}

impl Evaluator {
    /// An evaluator that measures nothing yet.
    pub fn new() -> Self {
        Evaluator::default()
    }

    /// Measures top-1 / top-5 / per-class accuracy on `data` (the model's single input,
    /// first output = class scores `[N, classes]`), `batch_size` samples per run.
    pub fn with_labelled(mut self, data: Dataset, batch_size: usize) -> Self {
        self.labelled = Some((data, batch_size.max(1)));
        self
    }

    /// Measures the accuracy in ONNX Runtime with `threads` intra-op threads instead of
    /// whittle's executor: the figure a deployment in ONNX Runtime gets. Dynamic INT8
    /// quantizes each run's activations with one scale, so its accuracy there depends on
    /// the batch size ([`Evaluator::with_labelled`]'s).
    pub fn with_ort_accuracy(mut self, threads: usize) -> Self {
        self.ort_accuracy = Some(threads);
        self
    }

    /// Measures output fidelity (SQNR, cosine) against `reference`.
    pub fn with_reference(mut self, reference: Reference) -> Self {
        self.reference = Some(reference);
        self
    }

    /// Measures size, parameters and MACs.
    pub fn with_cost(mut self) -> Self {
        self.cost = true;
        self
    }

    /// Times one-sample runs as `plan` says.
    pub fn with_latency(mut self, plan: LatencyPlan) -> Self {
        self.latency = Some(plan);
        self
    }

    /// Every figure asked for, of `model`.
    pub fn evaluate(&self, ctx: &Ctx<'_>, model: &Model) -> Result<Metrics> {
        let exec = Executor::new(model).context(|| "preparing the model".into())?;
        // Serialized once for every ONNX Runtime session (accuracy, latency).
        let file = OrtFile::new(model);
        let mut metrics = Metrics::default();
        if self.cost {
            let graph = model.graph();
            metrics.size_bytes = Some(model.encoded_len() as u64);
            metrics.parameters = Some(whittle_ir::cost::parameter_count(graph));
            metrics.macs = Some(
                whittle_ir::cost::model_macs(model, &HashMap::new())
                    .context(|| "counting MACs".into())?,
            );
        }
        let accuracy = match self.ort_accuracy {
            Some(threads) => self.ort_accuracy(ctx, &exec, &file, threads)?,
            None => self.accuracy(ctx, &exec)?,
        };
        if let Some(accuracy) = accuracy {
            metrics.set_accuracy(accuracy);
        }
        if let Some(fidelity) = self.fidelity(ctx, &exec)? {
            metrics.sqnr_db = Some(fidelity.overall.sqnr_db);
            metrics.cosine = Some(fidelity.overall.cosine);
            metrics.samples.get_or_insert(fidelity.samples);
        }
        if let Some(plan) = self.latency {
            let sample = self.one_sample(model)?;
            if plan.whittle {
                metrics.latency_ms_whittle = Some(time_whittle(&exec, &sample, &plan)?);
            }
            if plan.ort {
                metrics.latency_ms_ort = Some(time_ort(&file, &sample, &plan)?);
            }
        }
        Ok(metrics)
    }

    /// Accuracy on the labelled data in whittle's executor, if any data was given.
    pub fn accuracy(&self, ctx: &Ctx<'_>, exec: &Executor) -> Result<Option<Accuracy>> {
        self.tally(ctx, exec, |batch, output| {
            let out = exec.run(batch).context(|| "running the model".into())?;
            out[output]
                .to_data()
                .context(|| format!("reading output '{output}'"))
        })
    }

    /// Accuracy on the labelled data in ONNX Runtime (`threads` intra-op threads), if any
    /// data was given; `exec` is `model`'s, for its input and output names.
    pub fn accuracy_in_ort(
        &self,
        ctx: &Ctx<'_>,
        exec: &Executor,
        model: &Model,
        threads: usize,
    ) -> Result<Option<Accuracy>> {
        self.ort_accuracy(ctx, exec, &OrtFile::new(model), threads)
    }

    /// [`Evaluator::accuracy_in_ort`] of the model of `file`.
    fn ort_accuracy(
        &self,
        ctx: &Ctx<'_>,
        exec: &Executor,
        file: &OrtFile<'_>,
        threads: usize,
    ) -> Result<Option<Accuracy>> {
        if self.labelled.is_none() {
            return Ok(None);
        }
        let mut engine = file.session(threads)?;
        self.tally(ctx, exec, |batch, output| {
            let mut out = ort_outputs(&mut engine, &batch)?;
            match out.remove(output) {
                Some(scores) => Ok(scores),
                None => refuse!("ONNX Runtime gave no output '{output}'"),
            }
        })
    }

    /// Top-1 / top-5 of the labelled data, batch by batch: `scores` runs a batch and
    /// returns the named output's class scores.
    fn tally(
        &self,
        ctx: &Ctx<'_>,
        exec: &Executor,
        mut scores: impl FnMut(Feed, &str) -> Result<TensorData>,
    ) -> Result<Option<Accuracy>> {
        let Some((data, batch)) = &self.labelled else {
            return Ok(None);
        };
        let inputs = exec.inputs();
        let [input] = inputs.as_slice() else {
            refuse!(
                "accuracy needs a model with one input, this one has {}",
                inputs.len()
            );
        };
        let output = exec.output_names()[0].clone();
        let images = Value::try_from(&data.images).context(|| "reading the images".into())?;
        let feeds = feed::batches(&[(input.name.clone(), images)], data.len(), *batch)?;
        let observer = ctx.observer;
        observer.event(&Event::Begin {
            task: "evaluate".into(),
            total: Some(data.len() as u64),
        });
        let mut tally = Tally::default();
        let mut start = 0;
        for batch in feeds {
            let len = feed::samples(&batch);
            let scores = scores(batch, &output)?;
            for (row, &label) in scores_2d(&scores, len)?
                .iter()
                .zip(&data.labels[start..start + len])
            {
                tally.add(row, label)?;
            }
            start += len;
            observer.event(&Event::Progress {
                done: start as u64,
                message: None,
            });
        }
        observer.event(&Event::End);
        tally.finish(&data.class_names, &output).map(Some)
    }

    /// Fidelity of each output and of all outputs together to the reference's, if a
    /// reference was given.
    pub fn fidelity(&self, ctx: &Ctx<'_>, exec: &Executor) -> Result<Option<FidelityReport>> {
        self.fidelity_of(ctx, |feed| exec_outputs(exec, feed))
    }

    /// [`Evaluator::fidelity`], `model` run in ONNX Runtime with `threads` intra-op threads
    /// (compare it to a [`Reference::in_ort`]).
    pub fn fidelity_in_ort(
        &self,
        ctx: &Ctx<'_>,
        model: &Model,
        threads: usize,
    ) -> Result<Option<FidelityReport>> {
        if self.reference.is_none() {
            return Ok(None);
        }
        let file = OrtFile::new(model);
        let mut engine = file.session(threads)?;
        self.fidelity_of(ctx, |feed| ort_outputs(&mut engine, feed))
    }

    /// Fidelity to the reference, if any, of the outputs `run` gives on its feeds.
    fn fidelity_of(
        &self,
        ctx: &Ctx<'_>,
        run: impl FnMut(&Feed) -> Result<HashMap<String, TensorData>>,
    ) -> Result<Option<FidelityReport>> {
        let Some(reference) = &self.reference else {
            return Ok(None);
        };
        let got = run_all(ctx.observer, "fidelity", &reference.feeds, run)?;
        reference.compare(&got).map(Some)
    }

    /// One sample to time: from the labelled data or the reference feeds, else synthetic
    /// inputs ([`whittle_bench::inputs::random_inputs`], dynamic batch 1).
    fn one_sample(&self, model: &Model) -> Result<HashMap<String, TensorData>> {
        let from_feed = |feed: &Feed| -> Result<HashMap<String, TensorData>> {
            feed.iter()
                .map(|(name, v)| {
                    let row = feed::narrow(v, 0, 1)?;
                    Ok((name.clone(), row.to_data().context(|| name.clone())?))
                })
                .collect()
        };
        if let Some(first) = self.reference.as_ref().and_then(|r| r.feeds.first()) {
            return from_feed(first);
        }
        let inputs = resolve_inputs(model, &ShapeRequest::default())
            .context(|| "choosing input shapes to time".into())?;
        random_inputs(&inputs, 0).context(|| "drawing inputs to time".into())
    }
}

/// Runs `run` on every feed, keeping every output as tensor data.
fn run_all(
    observer: &dyn Observer,
    task: &str,
    feeds: &[Feed],
    mut run: impl FnMut(&Feed) -> Result<HashMap<String, TensorData>>,
) -> Result<Vec<HashMap<String, TensorData>>> {
    observer.event(&Event::Begin {
        task: task.into(),
        total: Some(feeds.len() as u64),
    });
    let mut all = Vec::with_capacity(feeds.len());
    for (i, feed) in feeds.iter().enumerate() {
        all.push(run(feed).context(|| format!("{task}: running feed {i}"))?);
        observer.event(&Event::Progress {
            done: i as u64 + 1,
            message: None,
        });
    }
    observer.event(&Event::End);
    Ok(all)
}

/// `values` as tensor data, by name.
fn host_data(values: HashMap<String, Value>) -> Result<HashMap<String, TensorData>> {
    (values.into_iter())
        .map(|(name, v)| Ok((name.clone(), v.to_data().context(|| name)?)))
        .collect()
}

/// Every output of whittle's executor on `feed`.
fn exec_outputs(exec: &Executor, feed: &Feed) -> Result<HashMap<String, TensorData>> {
    host_data(
        exec.run(feed.clone())
            .context(|| "running the model".into())?,
    )
}

/// Every output of ONNX Runtime on `feed`.
fn ort_outputs(engine: &mut OrtEngine, feed: &Feed) -> Result<HashMap<String, TensorData>> {
    engine
        .run(&host_data(feed.clone())?)
        .context(|| "running the model in ONNX Runtime".into())
}

/// Median milliseconds of `plan.runs` timed runs of `f` after `plan.warmup` untimed ones.
fn median_ms(plan: &LatencyPlan, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..plan.warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(plan.runs.max(1));
    for _ in 0..plan.runs.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Latency::from_samples(&times).map_or(f64::NAN, |l| l.median_ms))
}

fn time_whittle(
    exec: &Executor,
    sample: &HashMap<String, TensorData>,
    plan: &LatencyPlan,
) -> Result<f64> {
    let feed: Feed = sample
        .iter()
        .map(|(n, t)| Ok((n.clone(), Value::try_from(t).context(|| n.clone())?)))
        .collect::<Result<_>>()?;
    median_ms(plan, || {
        exec.run(feed.clone())
            .map(drop)
            .context(|| "timing whittle's executor".into())
    })
}

/// A model for ONNX Runtime sessions, which load models from files: serialized to a
/// registered temporary file at the first session, which every later one loads (an
/// evaluation's accuracy and latency sessions serialize it once), removed on drop.
struct OrtFile<'a> {
    model: &'a Model,
    temp: OnceCell<TempPath>,
}

impl<'a> OrtFile<'a> {
    fn new(model: &'a Model) -> Self {
        OrtFile {
            model,
            temp: OnceCell::new(),
        }
    }

    /// The model's file, written on the first call.
    fn path(&self) -> Result<&std::path::Path> {
        if let Some(temp) = self.temp.get() {
            return Ok(temp.path());
        }
        let target = std::env::temp_dir().join("whittle-eval.onnx");
        let (temp, mut file) = TempPath::create(&target)
            .context(|| "creating a temporary model file for ONNX Runtime".into())?;
        file.write_all(&self.model.to_bytes())
            .context(|| format!("writing {}", temp.path().display()))?;
        drop(file);
        Ok(self.temp.get_or_init(|| temp).path())
    }

    /// A session of the model with `threads` intra-op threads.
    fn session(&self, threads: usize) -> Result<OrtEngine> {
        OrtEngine::load(self.path()?, threads).context(|| "loading ONNX Runtime".into())
    }
}

fn time_ort(
    file: &OrtFile<'_>,
    sample: &HashMap<String, TensorData>,
    plan: &LatencyPlan,
) -> Result<f64> {
    let mut engine = file.session(plan.threads)?;
    let inputs = engine
        .prepare(sample)
        .context(|| "ONNX Runtime inputs".into())?;
    median_ms(plan, || {
        engine
            .run_prepared(&inputs)
            .context(|| "timing ONNX Runtime".into())
    })
}
