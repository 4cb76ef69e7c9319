//! Deployment latency before and after compression: both models in ONNX Runtime at batch 1
//! on the same real sample, and a warning naming the operators to blame when the result
//! runs slower (dynamic INT8 of a convolutional model runs `ConvInteger`, which ORT's CPU
//! provider executes far slower than float `Conv`). `whittle quantize` reports it; an
//! optimizer choosing between compressed variants compares the same figures.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use whittle_bench::ort_engine::OrtEngine;
use whittle_bench::stats::Latency;
use whittle_ir::{Model, TensorData};

use super::plan::QUANTIZED_OPS;
use crate::{PassError, Result};

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
    let ort = |e: whittle_bench::BenchError| PassError::Invalid(e.to_string());
    let mut engines = [
        OrtEngine::load(before, opts.threads).map_err(ort)?,
        OrtEngine::load(after, opts.threads).map_err(ort)?,
    ];
    let inputs = [
        engines[0].prepare(feed).map_err(ort)?,
        engines[1].prepare(feed).map_err(ort)?,
    ];
    for (engine, input) in engines.iter_mut().zip(&inputs) {
        for _ in 0..opts.warmup {
            engine.run_prepared(input).map_err(ort)?;
        }
    }
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..opts.runs.max(1) {
        for ((engine, input), times) in engines.iter_mut().zip(&inputs).zip(&mut samples) {
            let start = Instant::now();
            engine.run_prepared(input).map_err(ort)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |s: &[f64]| Latency::from_samples(s).map_or(f64::NAN, |l| l.median_ms);
    Ok(LatencyComparison {
        before: median(&samples[0]),
        after: median(&samples[1]),
        batch: 1,
        threads: opts.threads,
        runs: opts.runs.max(1),
    })
}

/// The operator types a conversion adds that can run slower than the float operators
/// they replace: integer and dequantizing operators, and casts.
fn added_ops(before: &Model, after: &Model) -> Vec<(String, usize)> {
    let count = |m: &Model| {
        let mut c: BTreeMap<String, usize> = BTreeMap::new();
        for n in &m.graph().node {
            *c.entry(n.op_type.clone()).or_default() += 1;
        }
        c
    };
    let (old, new) = (count(before), count(after));
    let suspect = |op: &str| {
        QUANTIZED_OPS.contains(&op) || matches!(op, "MatMulNBits" | "GatherBlockQuantized" | "Cast")
    };
    let mut added: Vec<(String, usize)> = new
        .into_iter()
        .filter(|(op, n)| suspect(op) && *n > old.get(op).copied().unwrap_or(0))
        .collect();
    // ConvInteger first: ORT's CPU kernel for it is the usual culprit.
    added.sort_by_key(|(op, n)| (op != "ConvInteger", std::cmp::Reverse(*n)));
    added
}

/// What to try instead of a `mode` result that runs slower (`uses_conv_integer`: the
/// result runs convolutions as ConvInteger).
fn alternative(mode: &str, uses_conv_integer: bool) -> &'static str {
    match mode {
        "dynamic" if uses_conv_integer => {
            "static INT8 (--mode static --calib-data SPEC), whose convolutions run as fused \
             integer kernels, or dynamic INT8 of the MatMul/Gemm layers only (--op-types MatMul,Gemm)"
        }
        "dynamic" => "static INT8 (--mode static --calib-data SPEC)",
        "static" => {
            "the other layout (--format qdq or qoperator), or fewer quantized layers \
             (--exclude, --op-types); the float model where neither helps"
        }
        "int4" => "dynamic INT8 (--mode dynamic)",
        _ => "the float model on this CPU (FP16 pays off where the hardware computes in float16)",
    }
}

/// A warning when `latency` says the `mode` result (`after`, from `before`) is slower:
/// the figures, the operators the conversion added and what to try instead.
pub fn slowdown_warning(
    mode: &str,
    before: &Model,
    after: &Model,
    latency: &LatencyComparison,
) -> Option<String> {
    if !latency.is_slower() {
        return None;
    }
    let added = added_ops(before, after);
    let ops: Vec<String> = added.iter().map(|(op, n)| format!("{op} x{n}")).collect();
    let blame = if ops.is_empty() {
        String::new()
    } else {
        format!("; operators it adds: {}", ops.join(", "))
    };
    let conv_integer = added.iter().any(|(op, _)| op == "ConvInteger");
    Some(format!(
        "the {mode} model runs {:.2}x slower than the input in ONNX Runtime ({:.3} ms vs {:.3} ms \
         at batch 1, {} thread(s)){blame}; faster: {}",
        latency.ratio(),
        latency.after,
        latency.before,
        latency.threads,
        alternative(mode, conv_integer)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::util::testing::{model, node, value};

    fn comparison(before: f64, after: f64) -> LatencyComparison {
        LatencyComparison {
            before,
            after,
            batch: 1,
            threads: 1,
            runs: 15,
        }
    }

    #[test]
    fn slower_dynamic_convolutions_name_conv_integer_and_static_mode() {
        let float = model(
            vec![node("Conv", &["x", "w"], &["y"])],
            vec![value("x", &[1, 1, 4, 4])],
            vec![value("y", &[1, 1, 4, 4])],
            vec![],
        );
        let dynamic = model(
            vec![
                node("DynamicQuantizeLinear", &["x"], &["q", "s", "z"]),
                node("ConvInteger", &["q", "w", "z"], &["i"]),
                node("Cast", &["i"], &["f"]),
                node("Mul", &["f", "s"], &["y"]),
            ],
            vec![value("x", &[1, 1, 4, 4])],
            vec![value("y", &[1, 1, 4, 4])],
            vec![],
        );
        let slow = comparison(0.5, 2.3);
        let warning = slowdown_warning("dynamic", &float, &dynamic, &slow).unwrap();
        assert!(
            warning.contains("4.60x slower")
                && warning.contains(
                    "operators it adds: ConvInteger x1, Cast x1, DynamicQuantizeLinear x1"
                )
                && warning.contains("--mode static"),
            "{warning}"
        );
        // Within the margin, or faster: no warning.
        for after in [0.52, 0.3] {
            assert!(
                slowdown_warning("dynamic", &float, &dynamic, &comparison(0.5, after)).is_none()
            );
        }
    }
}
