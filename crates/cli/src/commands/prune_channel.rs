//! The structured side of `whittle prune --method channel`: the channel pruner from the
//! options, and what its report adds (parameters, MACs, groups, and measured latency in
//! whittle's executor and ONNX Runtime before and after).

use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use whittle_bench::bench::{bench_batch, BenchOptions, Engine};
use whittle_data::Dataset;
use whittle_ir::{ExternalData, Model};
use whittle_passes::prune::channel::{
    default_protected, ChannelConfig, ChannelPruner, ChannelReport, Criterion, GroupReport, Scope,
    SkippedGroup, TaylorData,
};

/// Batches of training data the Taylor criterion averages its gradients over.
const TAYLOR_BATCHES: usize = 8;

/// The channel criterion named by `--criterion` (default l1).
pub fn criterion(name: Option<&str>, seed: u64) -> anyhow::Result<Criterion> {
    Ok(match name.unwrap_or("l1") {
        "l1" => Criterion::L1,
        "l2" => Criterion::L2,
        "bn" => Criterion::BnGamma,
        "taylor" => Criterion::Taylor,
        "random" => Criterion::Random { seed },
        other => bail!("--criterion {other}: --method channel takes l1, l2, bn, taylor or random"),
    })
}

/// The pruner: defaults protect the stem and the classifier, `exclude` protects more.
pub fn pruner(
    model: &Model,
    criterion: Criterion,
    (global, round_to): (bool, usize),
    exclude: &[String],
    train: Option<(&Dataset, usize)>,
) -> anyhow::Result<ChannelPruner> {
    if round_to == 0 {
        bail!("--round-to must be at least 1");
    }
    let data = match (&criterion, train) {
        (Criterion::Taylor, Some((data, batch))) => Some(taylor_data(data, batch)?),
        (Criterion::Taylor, None) => bail!("--criterion taylor needs gradients: give --data"),
        _ => None,
    };
    let mut protected = default_protected(model);
    protected.extend(exclude.iter().cloned());
    let config = ChannelConfig {
        criterion,
        scope: if global {
            Scope::Global
        } else {
            Scope::PerLayer
        },
        round_to,
        protected: Some(protected),
        ..ChannelConfig::default()
    };
    Ok(ChannelPruner::new(config, data))
}

fn taylor_data(data: &Dataset, batch: usize) -> anyhow::Result<TaylorData> {
    let batch = batch.max(1);
    let mut batches = Vec::new();
    for start in (0..data.len()).step_by(batch).take(TAYLOR_BATCHES) {
        let (images, labels) = data.batch(start, (start + batch).min(data.len()))?;
        batches.push((images, labels.to_vec()));
    }
    Ok(TaylorData { batches })
}

/// What channel pruning adds to the `--json` report.
#[derive(Serialize)]
pub struct ChannelSummary {
    /// Parameters before pruning.
    pub params_before: u64,
    /// Parameters after.
    pub params_after: u64,
    /// MACs of one sample before.
    pub macs_before: u64,
    /// MACs of one sample after.
    pub macs_after: u64,
    /// Groups of the last pruning step.
    pub groups: Vec<GroupReport>,
    /// Groups left alone, with the reason.
    pub skipped: Vec<SkippedGroup>,
}

/// The summary over every step (first step's "before", last step's "after").
pub fn summary(reports: &[ChannelReport]) -> Option<ChannelSummary> {
    let (first, last) = (reports.first()?, reports.last()?);
    Some(ChannelSummary {
        params_before: first.params_before,
        params_after: last.params_after,
        macs_before: first.macs_before,
        macs_after: last.macs_after,
        groups: last.groups.clone(),
        skipped: last.skipped.clone(),
    })
}

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
