//! The latency side of `whittle prune --method channel`: batch-1 latency measured in
//! whittle's executor and ONNX Runtime before and after (the pruning itself is the
//! pipeline's prune step).

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use whittle_bench::bench::{bench_batch, BenchOptions, Engine};
use whittle_ir::{ExternalData, Model};

/// Median batch-1 latency before and after, in milliseconds, per engine.
#[derive(Serialize)]
pub struct LatencySummary {
    /// Batch size of the measurement.
    pub batch: usize,
    /// Timed runs per model and engine.
    pub runs: usize,
    /// whittle's executor, before.
    pub whittle_ms_before: f64,
    /// whittle's executor, after.
    pub whittle_ms_after: f64,
    /// ONNX Runtime, before (`None` when its library could not be loaded).
    pub ort_ms_before: Option<f64>,
    /// ONNX Runtime, after.
    pub ort_ms_after: Option<f64>,
}

/// Measures both models in both engines (an input without a file is saved beside the
/// output for the measurement, then removed).
pub fn latency(
    (before, before_path): (&Model, Option<&Path>),
    (after, after_path): (&Model, &Path),
    runs: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<LatencySummary> {
    let scratch = tempfile_path(after_path);
    let before_path = match before_path {
        Some(p) => p.to_path_buf(),
        None => {
            before.save(&scratch, &ExternalData::Auto)?;
            scratch.clone()
        }
    };
    let median = |engine, model: &Model, path: &Path| -> anyhow::Result<f64> {
        // ORT on one thread; whittle's executor on its RAYON_NUM_THREADS.
        let opts = BenchOptions {
            engine,
            threads: usize::from(engine == Engine::Ort),
            warmup: 5,
            runs,
            shapes: Default::default(),
            seed: 0,
        };
        Ok(bench_batch(path, model, &opts, Some(1), &mut || {})?
            .latency
            .median_ms)
    };
    let result = (|| -> anyhow::Result<LatencySummary> {
        let whittle_ms_before = median(Engine::Whittle, before, &before_path)?;
        let whittle_ms_after = median(Engine::Whittle, after, after_path)?;
        let ort = median(Engine::Ort, before, &before_path)
            .and_then(|b| Ok((b, median(Engine::Ort, after, after_path)?)));
        let (ort_ms_before, ort_ms_after) = match ort {
            Ok((b, a)) => (Some(b), Some(a)),
            Err(e) => {
                notes.push(format!("ONNX Runtime latency not measured: {e:#}"));
                (None, None)
            }
        };
        Ok(LatencySummary {
            batch: 1,
            runs,
            whittle_ms_before,
            whittle_ms_after,
            ort_ms_before,
            ort_ms_after,
        })
    })();
    let _ = std::fs::remove_file(&scratch);
    result.context("measuring latency")
}

/// A scratch file beside `output` for an input model that exists only in memory.
fn tempfile_path(output: &Path) -> std::path::PathBuf {
    let name = format!(
        ".{}.before-{}.onnx",
        output
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model"),
        std::process::id()
    );
    output.with_file_name(name)
}
