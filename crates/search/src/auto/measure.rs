//! Measuring for the search: the baseline once (accuracy on the full test split, the
//! hardest samples, ONNX Runtime latency, size, MACs, the per-node profile) and each
//! candidate model (cost and latency, then accuracy on the hard subset, then on the full
//! test split), all through the pipeline's one [`Evaluator`]. Top-1 accuracy runs in ONNX
//! Runtime, one sample per run: the goals are ONNX Runtime's figures at batch 1, and
//! dynamic INT8 quantizes each run's activations with one scale, so its accuracy depends
//! on the batch (zoo:cnn channel 65% + dynamic INT8 in ONNX Runtime: 89.27% one sample per
//! run, 89.29% at 64, 89.22% at 500). Label-less data
//! (`feeds:FILE.npz`) has no accuracy: its "accuracy" is the smallest cosine similarity
//! of any of the candidate's outputs to the baseline's on every feed (the baseline's is 1),
//! both run in ONNX Runtime, with no hard subset.

use serde::{Deserialize, Serialize};
use whittle_bench::inputs::ShapeRequest;
use whittle_bench::profile::{profile, ProfileOptions};
use whittle_data::{Dataset, Split};
use whittle_exec::{model_inputs, Executor, Value};
use whittle_ir::{GraphEdit, Model};
use whittle_pipeline::error::Context;
use whittle_pipeline::eval::accuracy::scores_2d;
use whittle_pipeline::eval::{Evaluator, LatencyPlan, Reference};
use whittle_pipeline::report::measure::op_latency;
use whittle_pipeline::report::OpLatency;
use whittle_pipeline::{feed, Ctx, DataSource, Feed, Result};

/// Samples per run of whittle's executor (the hardest samples, cosines of feeds): small,
/// since the search evaluates while a fine-tuning's memory may still be held by the
/// allocator (256 made the executor's buffers alone about 90 MB on zoo:cnn and the
/// search's peak over twice one `whittle eval`'s).
const BATCH: usize = 64;
/// Samples per ONNX Runtime run of the top-1 accuracy: one, as deployed at batch 1.
const ORT_BATCH: usize = 1;
/// Timed ONNX Runtime runs per latency (median), after [`WARMUP`] untimed ones.
const RUNS: usize = 30;
/// Untimed runs before timing.
const WARMUP: usize = 5;
/// The hard subset: this share of the test samples...
const HARD_SHARE: f64 = 0.1;
/// ...but at least this many (or all, when fewer).
const HARD_MIN: usize = 200;
/// Samples of a `feeds:` archive measured at most.
const MAX_FEED_SAMPLES: usize = 2048;

/// How accuracy is measured, part of the journals' keys: a work folder whose figures came
/// from whittle's executor is measured again, not replayed.
pub const ACCURACY_ENGINE: &str =
    "top-1 in ONNX Runtime, one sample per run; cosines of feeds in ONNX Runtime";

/// The test data of a search.
pub enum TestSet {
    /// Labelled samples: accuracy is top-1.
    Labelled(Dataset),
    /// Feeds without labels: accuracy is the cosine similarity to the baseline's outputs.
    Feeds(Vec<whittle_pipeline::Feed>),
}

/// Size, cost and latency of a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Bytes of the serialized model.
    pub size_bytes: u64,
    /// Parameters.
    pub parameters: u64,
    /// Multiply-accumulates of one sample.
    pub macs: u64,
    /// Median ONNX Runtime latency at batch 1, milliseconds.
    pub latency_ms: f64,
}

/// The baseline's measurements, kept in the work folder so a resumed run plans alike.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// Content hash of the model.
    pub key: String,
    /// Its cost.
    pub cost: Cost,
    /// Top-1 accuracy on the full test split, 0..1 (label-less feeds: the cosine to its
    /// own outputs, 1).
    pub accuracy: f64,
    /// Test samples.
    pub samples: usize,
    /// The hardest test samples (smallest gap between the two top scores), by index.
    pub hard: Vec<usize>,
    /// Top-1 accuracy on them.
    pub hard_accuracy: f64,
    /// Where the time goes per operator type (whittle's executor).
    pub op_latency: OpLatency,
    /// Seconds of one accuracy measurement on the full test split (what the search's
    /// time estimates start from; 0 in a journal from before they were kept).
    #[serde(default)]
    pub eval_seconds: f64,
    /// Share of the parameters in MatMul and Gemm weights (what INT4 can quantize).
    #[serde(default = "all")]
    pub matmul_share: f64,
}

fn all() -> f64 {
    1.0
}

impl whittle_pipeline::journal::Record for Baseline {
    const FILE: &'static str = "auto-baseline.jsonl";
    fn key(&self) -> &str {
        &self.key
    }
}

/// Measures models on one test set and its hard subset.
pub struct Meter {
    full: Evaluator,
    /// None for label-less feeds: the subset is the whole set.
    hard: Option<Evaluator>,
    /// One sample of label-less feeds, timed and profiled instead of synthetic inputs
    /// (which cannot guess a dynamic sequence length).
    sample: Option<Vec<Feed>>,
    samples: usize,
    hard_len: usize,
    threads: usize,
}

impl Meter {
    /// Loads the test split of `data` for `model` (a `feeds:` archive: its feeds).
    pub fn load(data: &DataSource, model: &Model) -> Result<TestSet> {
        let inputs = model_inputs(model);
        Ok(if data.is_labelled() {
            TestSet::Labelled(data.load(&inputs, Split::Test, None)?)
        } else {
            TestSet::Feeds(data.feeds(&inputs, Split::Test, MAX_FEED_SAMPLES)?)
        })
    }

    /// The baseline's measurements of `model` (keyed `key`) on `test`, and the meter of
    /// its hard subset.
    pub fn baseline(
        ctx: &Ctx<'_>,
        key: String,
        model: &Model,
        test: TestSet,
        threads: usize,
    ) -> Result<(Baseline, Meter)> {
        let hard = match &test {
            TestSet::Labelled(data) => hardest(model, data)?,
            TestSet::Feeds(_) => Vec::new(),
        };
        let meter = Meter::new(ctx, model, test, &hard, threads)?;
        let cost = meter.cost(ctx, model)?;
        let start = std::time::Instant::now();
        let accuracy = meter.accuracy(ctx, model, false)?;
        let eval_seconds = start.elapsed().as_secs_f64();
        let hard_accuracy = meter.accuracy(ctx, model, true)?;
        let options = ProfileOptions {
            shapes: meter.sample_shapes(),
            ..ProfileOptions::default()
        };
        let profiled =
            profile(model, &options, &mut || {}).context(|| "profiling the baseline".into())?;
        let baseline = Baseline {
            key,
            cost,
            accuracy,
            samples: meter.samples(),
            hard,
            hard_accuracy,
            op_latency: op_latency(&profiled, "baseline"),
            eval_seconds,
            matmul_share: matmul_share(model),
        };
        Ok((baseline, meter))
    }

    /// The meter of `test` with the hard subset `hard` (row indices; label-less feeds
    /// have none and are compared to the outputs of `baseline`).
    pub fn new(
        ctx: &Ctx<'_>,
        baseline: &Model,
        test: TestSet,
        hard: &[usize],
        threads: usize,
    ) -> Result<Meter> {
        // Each set is held once, by its evaluator (no copy per evaluation).
        Ok(match test {
            TestSet::Labelled(test) => {
                let subset = test
                    .subset(hard)
                    .context(|| "the hard test samples".into())?;
                let in_ort = |data| {
                    Evaluator::new()
                        .with_labelled(data, ORT_BATCH)
                        .with_ort_accuracy(threads)
                };
                Meter {
                    samples: test.len(),
                    hard_len: subset.len(),
                    full: in_ort(test),
                    hard: Some(in_ort(subset)),
                    sample: None,
                    threads,
                }
            }
            TestSet::Feeds(feeds) => {
                let samples = feeds.iter().map(feed::samples).sum();
                let sample = Some(feed::first_samples(&feeds, 1)?);
                let reference = Reference::in_ort(ctx, baseline, feeds, threads)?;
                Meter {
                    samples,
                    hard_len: samples,
                    full: Evaluator::new().with_reference(reference),
                    hard: None,
                    sample,
                    threads,
                }
            }
        })
    }

    /// Test samples in the full set.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Test samples in the hard subset.
    pub fn hard_len(&self) -> usize {
        self.hard_len
    }

    /// Size, parameters, MACs and ONNX Runtime latency at batch 1.
    pub fn cost(&self, ctx: &Ctx<'_>, model: &Model) -> Result<Cost> {
        let plan = LatencyPlan {
            whittle: false,
            ort: true,
            warmup: WARMUP,
            runs: RUNS,
            threads: self.threads,
        };
        let mut evaluator = Evaluator::new().with_cost().with_latency(plan);
        if let Some(sample) = &self.sample {
            // Timed on the sample (the reference's first feed), compared to itself.
            evaluator = evaluator.with_reference(Reference::new(ctx, model, sample.clone())?);
        }
        let m = evaluator.evaluate(ctx, model)?;
        Ok(Cost {
            size_bytes: m.size_bytes.unwrap_or_default(),
            parameters: m.parameters.unwrap_or_default(),
            macs: m.macs.unwrap_or_default(),
            latency_ms: m.latency_ms_ort.unwrap_or(f64::NAN),
        })
    }

    /// The shapes of the sample, if any, for the profiler's synthetic inputs.
    fn sample_shapes(&self) -> ShapeRequest {
        let shapes = (self.sample.iter().flatten().flatten())
            .map(|(name, value)| (name.clone(), value.shape().to_vec()))
            .collect();
        ShapeRequest {
            batch: None,
            shapes,
        }
    }

    /// Top-1 accuracy in ONNX Runtime, one sample per run (label-less feeds: the smallest
    /// cosine of an output to the baseline's, both in ONNX Runtime, run by feed) on the hard
    /// subset or the full test set.
    pub fn accuracy(&self, ctx: &Ctx<'_>, model: &Model, hard: bool) -> Result<f64> {
        let evaluator = match &self.hard {
            Some(subset) if hard => subset,
            _ => &self.full,
        };
        if self.sample.is_some() {
            // The smallest cosine of any output: in one cosine of all outputs together,
            // one output's large values (token ids passed through, say) hide the others.
            let report = evaluator.fidelity_in_ort(ctx, model, self.threads)?;
            let cosines = report
                .iter()
                .flat_map(|r| r.outputs.iter().map(|o| o.cosine));
            let least = cosines.reduce(|a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.min(b)
                }
            });
            return Ok(least.unwrap_or(f64::NAN));
        }
        let m = evaluator.evaluate(ctx, model)?;
        Ok(m.top1.or(m.cosine).unwrap_or(f64::NAN))
    }
}

/// The share of `model`'s parameters in the constant weights (input B) of its MatMul
/// and Gemm nodes.
pub fn matmul_share(model: &Model) -> f64 {
    let graph = model.graph();
    let all = whittle_ir::cost::parameter_count(graph);
    let mut names: Vec<&str> = (graph.node.iter())
        .filter(|n| matches!(n.op_type.as_str(), "MatMul" | "Gemm"))
        .filter_map(|n| n.input.get(1).map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let weights: u64 = (names.iter())
        .filter_map(|n| graph.initializer(n))
        .map(whittle_ir::cost::tensor_elements)
        .sum();
    if all == 0 {
        0.0
    } else {
        weights as f64 / all as f64
    }
}

/// The hardest samples of `test` for `model`: the [`HARD_SHARE`] (at least [`HARD_MIN`])
/// with the smallest gap between their two top scores, those a compressed model flips
/// first; in index order.
pub fn hardest(model: &Model, test: &Dataset) -> Result<Vec<usize>> {
    let exec = Executor::new(model).context(|| "preparing the baseline".into())?;
    let input = model_inputs(model)[0].name.clone();
    let output = exec.output_names()[0].clone();
    let images = Value::try_from(&test.images).context(|| "reading the test images".into())?;
    let mut gaps = Vec::with_capacity(test.len());
    for batch in feed::batches(&[(input, images)], test.len(), BATCH)? {
        let n = feed::samples(&batch);
        let out = exec.run(batch).context(|| "running the baseline".into())?;
        let scores = out[&output]
            .to_data()
            .context(|| format!("reading output '{output}'"))?;
        for row in scores_2d(&scores, n)? {
            let mut sorted = row.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let gap =
                sorted.first().copied().unwrap_or(0.0) - sorted.get(1).copied().unwrap_or(0.0);
            gaps.push(gap);
        }
    }
    let count = ((test.len() as f64 * HARD_SHARE) as usize)
        .max(HARD_MIN)
        .min(test.len());
    let mut order: Vec<usize> = (0..gaps.len()).collect();
    order.sort_by(|&a, &b| gaps[a].total_cmp(&gaps[b]).then(a.cmp(&b)));
    let mut hard: Vec<usize> = order.into_iter().take(count).collect();
    hard.sort_unstable();
    Ok(hard)
}
