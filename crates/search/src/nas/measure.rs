//! Constraints measured before training: bytes of the FP32 and INT8 (dynamic) models,
//! exact MACs and parameters, and ONNX Runtime latency at batch 1 (warm-up, then at least
//! [`MIN_RUNS`] timed runs; median and p90) through whittle-bench.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use whittle_bench::bench::{bench_batch, BenchOptions, Engine};
use whittle_bench::stats::Latency;
use whittle_ir::Model;

use crate::nas::error::{At, Result};
use crate::pareto::{Direction, Objectives};

/// Timed runs of each latency measurement.
pub const MIN_RUNS: usize = 100;
/// Untimed runs before them.
pub const WARMUP: usize = 10;
/// Bytes in a megabyte of `--max-size-mb` (decimal, as file sizes are shown).
pub const MB: f64 = 1e6;

/// What was measured of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Bytes of the FP32 ONNX model.
    pub size_bytes: u64,
    /// Bytes of the same model with INT8 weights (dynamic quantization).
    pub int8_size_bytes: u64,
    /// Elements of all initializers.
    pub parameters: u64,
    /// Multiply-accumulates of one sample.
    pub macs: u64,
    /// Median ONNX Runtime latency at batch 1, milliseconds.
    pub latency_ms: f64,
    /// 90th percentile of the same runs.
    pub latency_p90_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
}

/// Measures `model`, which is saved at `path` (ONNX Runtime loads it from there), with
/// `threads` ONNX Runtime threads.
pub fn measure(model: &Model, path: &Path, threads: usize) -> Result<Measurement> {
    let at = || path.display().to_string();
    let cfg = whittle_passes::quantize::QuantConfig::default();
    let (int8, _) = whittle_passes::quantize::dynamic_int8(model, &cfg)
        .at(|| format!("{}: INT8 quantization", at()))?;
    let timed = latency(model, path, threads)?;
    Ok(Measurement {
        size_bytes: model.encoded_len() as u64,
        int8_size_bytes: int8.encoded_len() as u64,
        parameters: whittle_ir::cost::parameter_count(model.graph()),
        macs: whittle_ir::cost::model_macs(model, &HashMap::new())
            .at(|| format!("{}: counting MACs", at()))?,
        latency_ms: timed.median_ms,
        latency_p90_ms: timed.p90_ms,
        runs: MIN_RUNS,
        threads,
    })
}

/// The ONNX Runtime latency of `model`, saved at `path`, at batch 1 with `threads`
/// threads: [`WARMUP`] untimed runs, then [`MIN_RUNS`] timed ones.
pub fn latency(model: &Model, path: &Path, threads: usize) -> Result<Latency> {
    let opts = BenchOptions {
        engine: Engine::Ort,
        threads,
        warmup: WARMUP,
        runs: MIN_RUNS,
        shapes: HashMap::new(),
        seed: 0,
    };
    let timed = bench_batch(path, model, &opts, Some(1), &mut || {})
        .at(|| format!("{}: ONNX Runtime latency", path.display()))?;
    Ok(timed.latency)
}

/// The limits a returned model must meet; `None` is no limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Median ONNX Runtime latency at batch 1, milliseconds.
    pub max_latency_ms: Option<f64>,
    /// FP32 model size, megabytes of [`MB`] bytes.
    pub max_size_mb: Option<f64>,
    /// Multiply-accumulates of one sample.
    pub max_macs: Option<u64>,
    /// Top-1 accuracy on the test set, 0..1 (checked on the returned model).
    pub min_accuracy: Option<f64>,
}

impl Limits {
    /// Refuses limits that are not positive numbers (`--max-latency-ms 0`, NaN).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("--max-latency-ms", self.max_latency_ms),
            ("--max-size-mb", self.max_size_mb),
            ("--max-macs", self.max_macs.map(|m| m as f64)),
        ];
        for (flag, value) in positive {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(crate::nas::NasError::Refused(format!(
                    "{flag} {v}: must be a number above 0"
                )));
            }
        }
        if let Some(a) = self.min_accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(crate::nas::NasError::Refused(format!(
                "--min-accuracy {a}: must be between 0 and 1"
            )));
        }
        Ok(())
    }

    /// The measured objectives (latency, FP32 size in MB, MACs) with these limits as
    /// constraints, in the order of [`Limits::point`].
    pub fn objectives(&self) -> Objectives {
        let constraints = [
            (LATENCY, self.max_latency_ms),
            (SIZE, self.max_size_mb),
            (MACS, self.max_macs.map(|m| m as f64)),
        ];
        let mut objectives = Objectives::new([LATENCY, SIZE, MACS].map(|n| (n, Direction::Min)));
        for (name, limit) in constraints {
            if let Some(limit) = limit {
                objectives = objectives
                    .constrain(name, limit)
                    .expect("validated finite limits on declared objectives");
            }
        }
        objectives
    }

    /// `m` as a point of [`Limits::objectives`].
    pub fn point(m: &Measurement) -> [f64; 3] {
        [m.latency_ms, m.size_bytes as f64 / MB, m.macs as f64]
    }

    /// The limits `m` exceeds, one line each (empty when `m` is feasible).
    pub fn violations(&self, m: &Measurement) -> Vec<String> {
        self.objectives()
            .excess(&Limits::point(m))
            .into_iter()
            .filter(|e| e.by > 0.0)
            .map(|e| format!("{} {} > {}", e.objective, e.value, e.limit))
            .collect()
    }

    /// How far `m` is from feasible (the Pareto module's distance: 0 when feasible).
    pub fn distance(&self, m: &Measurement) -> f64 {
        self.objectives().distance(&Limits::point(m))
    }
}

/// Objective names of the measured constraints.
const LATENCY: &str = "latency_ms";
const SIZE: &str = "size_mb";
const MACS: &str = "macs";
