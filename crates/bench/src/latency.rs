//! Deployment latency of a model before and after compression: both in ONNX Runtime at
//! batch 1 on the same real sample, timed runs alternating between them. `whittle quantize`
//! reports it (and warns when the result is slower); an optimizer choosing between
//! compressed variants compares the same figures.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use whittle_ir::TensorData;

use crate::error::Result;
use crate::ort_engine::OrtEngine;
use crate::stats::Latency;

/// How much slower than the input the result must be before it counts as slower: median
/// latencies of a few runs differ by a few percent from one measurement to the next.
pub const SLOWER_MARGIN: f64 = 0.05;

/// How to measure.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LatencyOptions {
    /// ONNX Runtime intra-op threads (0: one per core).
    pub threads: usize,
    /// Untimed runs of each model first.
    pub warmup: usize,
    /// Timed runs of each model, alternating between them.
    pub runs: usize,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            threads: 1,
            warmup: 3,
            runs: 15,
        }
    }
}

/// Median latency of both models, milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyComparison {
    /// The input model.
    pub before: f64,
    /// The compressed model.
    pub after: f64,
    /// Samples per run.
    pub batch: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Timed runs per model.
    pub runs: usize,
}

impl LatencyComparison {
    /// `after / before`.
    pub fn ratio(&self) -> f64 {
        self.after / self.before
    }

    /// Whether the compressed model is slower by more than [`SLOWER_MARGIN`].
    pub fn is_slower(&self) -> bool {
        self.after > self.before * (1.0 + SLOWER_MARGIN)
    }
}

impl fmt::Display for LatencyComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ONNX Runtime latency (batch {}, {} thread(s), median of {}): {:.3} -> {:.3} ms ({:.2}x)",
            self.batch,
            self.threads,
            self.runs,
            self.before,
            self.after,
            self.ratio()
        )
    }
}

/// Runs the models at `before` and `after` in ONNX Runtime on `feed` (one sample per
/// input): warm-up runs, then timed runs alternating between the two, so that a change
/// in the machine's load hits both alike.
pub fn measure(
    before: &Path,
    after: &Path,
    feed: &HashMap<String, TensorData>,
    opts: &LatencyOptions,
) -> Result<LatencyComparison> {
    let latencies = interleaved(&[before, after], feed, opts)?;
    Ok(LatencyComparison {
        before: latencies[0].median_ms,
        after: latencies[1].median_ms,
        batch: 1,
        threads: opts.threads,
        runs: opts.runs.max(1),
    })
}

/// The latency of each model of `models` in ONNX Runtime on `feed`: warm-up runs of each,
/// then rounds of one timed run of every model in turn, so that a change in the machine's
/// load hits them alike.
pub fn interleaved(
    models: &[&Path],
    feed: &HashMap<String, TensorData>,
    opts: &LatencyOptions,
) -> Result<Vec<Latency>> {
    let mut engines = models
        .iter()
        .map(|m| OrtEngine::load(m, opts.threads))
        .collect::<Result<Vec<_>>>()?;
    let inputs = engines
        .iter()
        .map(|e| e.prepare(feed))
        .collect::<Result<Vec<_>>>()?;
    for (engine, input) in engines.iter_mut().zip(&inputs) {
        for _ in 0..opts.warmup {
            engine.run_prepared(input)?;
        }
    }
    let mut samples = vec![Vec::new(); models.len()];
    for _ in 0..opts.runs.max(1) {
        for ((engine, input), times) in engines.iter_mut().zip(&inputs).zip(&mut samples) {
            let start = Instant::now();
            engine.run_prepared(input)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(samples
        .iter()
        .map(|s| Latency::from_samples(s).expect("at least one timed run"))
        .collect())
}
