//! Latency, throughput and peak memory of a model per batch size, in whittle's executor
//! or in ONNX Runtime.
//!
//! Memory: [`peak_rss_bytes`] reads `VmHWM` (peak resident set) from `/proc/self/status`
//! of the process that ran the batch. `whittle bench` runs every batch size of a
//! multi-batch request in a fresh child process, so the figure covers loading the model
//! and the runtime, the inputs, warm-up and timed runs of that batch and engine only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use whittle_exec::{Executor, Value};
use whittle_ir::{Model, TensorData};

use crate::analysis::ensure_run_fits;
use crate::error::{bail, BenchError, Result};
use crate::inputs::{batch_note, random_inputs, resolve_inputs, shape_map, ShapeRequest};
use crate::ort_engine::OrtEngine;
use crate::stats::Latency;

/// How peak memory is measured, as stated in reports.
pub const MEMORY_METHOD: &str = "VmHWM (peak resident set) of a fresh process per batch size \
     and engine: model and runtime loading, inputs, warm-up and timed runs";

/// The runtime a benchmark runs the model in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// whittle's executor (candle-core).
    Whittle,
    /// ONNX Runtime through the `ort` crate.
    Ort,
}

impl FromStr for Engine {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "whittle" => Ok(Engine::Whittle),
            "ort" => Ok(Engine::Ort),
            other => bail!("`engine` '{other}': expected whittle or ort"),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Whittle => "whittle",
            Engine::Ort => "ort",
        })
    }
}

/// How to benchmark one batch size.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Engine to run in.
    pub engine: Engine,
    /// Intra-op threads (0: the engine's default). whittle's executor takes its thread
    /// count from `RAYON_NUM_THREADS`; see [`set_executor_threads`].
    pub threads: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Timed runs (at least 1).
    pub runs: usize,
    /// Shapes of inputs other than the batch dimension (`--shape`).
    pub shapes: HashMap<String, Vec<usize>>,
    /// Seed of the random inputs.
    pub seed: u64,
}

/// Figures of one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    /// Batch size.
    pub batch: usize,
    /// Input shapes used.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Latency of one run (one batch).
    #[serde(flatten)]
    pub latency: Latency,
    /// Samples per second: batch / mean latency.
    pub throughput: f64,
    /// Runs (forward passes) per second: 1 / mean latency.
    pub fps: f64,
    /// Peak resident memory of the process, bytes (`None` off Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Remarks for the reader (e.g. a dynamic batch dimension taken as 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A benchmark over batch sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Model path.
    pub model: String,
    /// Engine.
    pub engine: Engine,
    /// Threads the engine ran with.
    pub threads: usize,
    /// Warm-up runs per batch size.
    pub warmup: usize,
    /// Timed runs per batch size.
    pub runs: usize,
    /// Model file size (with external data), bytes.
    pub size_bytes: u64,
    /// Parameters (elements of the initializers the graph reads).
    pub params: u64,
    /// How `peak_rss_bytes` is measured.
    pub memory_method: String,
    /// One entry per batch size.
    pub batches: Vec<BatchResult>,
}

impl BenchReport {
    /// Assembles a report of `model` (loaded from `path`) from per-batch results.
    pub fn new(
        path: &Path,
        model: &Model,
        opts: &BenchOptions,
        batches: Vec<BatchResult>,
    ) -> Result<Self> {
        Ok(BenchReport {
            model: path.display().to_string(),
            engine: opts.engine,
            threads: effective_threads(opts),
            warmup: opts.warmup,
            runs: opts.runs,
            size_bytes: Model::disk_size(path)?,
            params: whittle_ir::cost::parameter_count(model.graph()),
            memory_method: MEMORY_METHOD.to_string(),
            batches,
        })
    }
}

/// `asked` intra-op threads capped at the cores of this machine, with a warning when the
/// cap applies (more threads than cores only contend for them).
pub fn cap_threads(asked: usize) -> (usize, Option<String>) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if asked <= cores {
        return (asked, None);
    }
    let warning =
        format!("`threads` {asked} is more than the {cores} cores of this machine; using {cores}");
    (cores, Some(warning))
}

/// Sets the thread count of whittle's executor (candle reads `RAYON_NUM_THREADS` when its
/// thread pools start). Call it first thing, before any model runs.
pub fn set_executor_threads(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
}

fn effective_threads(opts: &BenchOptions) -> usize {
    match (opts.engine, opts.threads) {
        (Engine::Whittle, _) => candle_core::utils::get_num_threads(),
        (Engine::Ort, t) => t,
    }
}

/// Peak resident set of this process so far (`VmHWM`), bytes; `None` where
/// `/proc/self/status` is not available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Benchmarks `model` (loaded from `path`) at one batch size in this process: `batch`,
/// else the model's own (1 where it is dynamic, see [`resolve_inputs`]). Checks that a run
/// fits in memory before allocating its inputs. `tick` is called after every run
/// (progress).
pub fn bench_batch(
    path: &Path,
    model: &Model,
    opts: &BenchOptions,
    batch: Option<usize>,
    tick: &mut dyn FnMut(),
) -> Result<BatchResult> {
    if opts.runs == 0 {
        bail!("`runs` must be at least 1");
    }
    let threads = effective_threads(opts);
    if opts.engine == Engine::Whittle && opts.threads != 0 && opts.threads != threads {
        bail!(
            "whittle's executor runs on {threads} threads (RAYON_NUM_THREADS), not the {} asked for",
            opts.threads
        );
    }
    let request = ShapeRequest {
        batch,
        shapes: opts.shapes.clone(),
    };
    let inputs = resolve_inputs(model, &request)?;
    ensure_run_fits(model, &inputs)?;
    let batch = match (batch, inputs.first().and_then(|i| i.dims.first())) {
        (Some(b), _) | (None, Some(&b)) => b,
        (None, None) => 1,
    };
    let data = random_inputs(&inputs, opts.seed)?;
    let mut run = runner(path, model, opts, &data)?;
    let mut samples = Vec::with_capacity(opts.runs);
    for i in 0..opts.warmup + opts.runs {
        let start = Instant::now();
        run()?;
        if i >= opts.warmup {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
        tick();
    }
    let Some(latency) = Latency::from_samples(&samples) else {
        bail!("no timed runs");
    };
    Ok(BatchResult {
        batch,
        input_shapes: shape_map(&inputs),
        throughput: batch as f64 * 1e3 / latency.mean_ms,
        fps: 1e3 / latency.mean_ms,
        latency,
        peak_rss_bytes: peak_rss_bytes(),
        notes: batch_note(&inputs).into_iter().collect(),
    })
}

type RunOnce<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// A closure that runs the model once on `data` in the chosen engine.
fn runner<'a>(
    path: &Path,
    model: &Model,
    opts: &BenchOptions,
    data: &HashMap<String, TensorData>,
) -> Result<RunOnce<'a>> {
    match opts.engine {
        Engine::Whittle => {
            let exec = Executor::new(model)?;
            let feed: HashMap<String, Value> = data
                .iter()
                .map(|(n, d)| Ok((n.clone(), Value::from_data(d, exec.device())?)))
                .collect::<Result<_>>()?;
            Ok(Box::new(move || {
                exec.run(feed.clone())?;
                Ok(())
            }))
        }
        Engine::Ort => {
            let mut engine = OrtEngine::load(path, opts.threads)?;
            let inputs = engine.prepare(data)?;
            Ok(Box::new(move || engine.run_prepared(&inputs)))
        }
    }
}
