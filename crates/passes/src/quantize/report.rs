//! The quantization report: what was quantized, what stayed float and why, calibration,
//! sizes, verification and accuracy; as a terminal summary (whittle-pipeline's report
//! module renders it as HTML).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::calibrate::Calibration;
use super::config::QuantConfig;
use super::opset::OpsetChange;
use super::plan::FloatNode;
use super::sensitivity::{AccuracyReport, LayerSensitivity};
use super::verify::Verification;
use whittle_bench::latency::LatencyComparison;

/// A node that was quantized.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantizedNode {
    /// Node name.
    pub name: String,
    /// Operator type.
    pub op_type: String,
}

/// Everything a quantization run did and measured.
#[derive(Clone, Debug, Serialize)]
pub struct QuantReport {
    /// `"static"` or `"dynamic"`.
    pub mode: String,
    /// `"qdq"` or `"qoperator"` (dynamic mode uses integer operators: `"qoperator"`).
    pub format: String,
    /// The options used.
    pub config: QuantConfig,
    /// Bytes of the input model (serialized, or on disk when the CLI measured it).
    pub input_bytes: u64,
    /// Bytes of the output model.
    pub output_bytes: u64,
    /// `output_bytes / input_bytes`.
    pub size_ratio: f64,
    /// Nodes quantized.
    pub quantized_nodes: Vec<QuantizedNode>,
    /// Nodes left in float, with the reason.
    pub float_nodes: Vec<FloatNode>,
    /// Nodes that were already quantized in the input.
    pub already_quantized: usize,
    /// Calibration (static mode).
    pub calibration: Option<Calibration>,
    /// The opset raise done, if any.
    pub opset_change: Option<OpsetChange>,
    /// Float vs quantized comparison.
    pub verification: Option<Verification>,
    /// Accuracy on labelled eval data.
    pub accuracy: Option<AccuracyReport>,
    /// Per-layer sensitivity, most sensitive first (accuracy budget runs).
    pub sensitivity: Vec<LayerSensitivity>,
    /// ONNX Runtime latency at batch 1 before and after, when measured.
    pub latency_ms: Option<LatencyComparison>,
    /// Problems with the result (it runs slower, ...).
    pub warnings: Vec<String>,
    /// Remarks.
    pub notes: Vec<String>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl QuantReport {
    /// A report of one run: its mode, format and options, the nodes converted and kept in
    /// float, and the serialized sizes of `models` (input, output); everything measured
    /// later (calibration, verification, accuracy, time) starts empty.
    pub fn new(
        (mode, format): (&str, &str),
        config: QuantConfig,
        quantized_nodes: Vec<QuantizedNode>,
        float_nodes: Vec<FloatNode>,
        (input, output): (&whittle_ir::Model, &whittle_ir::Model),
    ) -> Self {
        let mut report = QuantReport {
            mode: mode.into(),
            format: format.into(),
            config,
            input_bytes: 0,
            output_bytes: 0,
            size_ratio: 0.0,
            quantized_nodes,
            float_nodes,
            already_quantized: 0,
            calibration: None,
            opset_change: None,
            verification: None,
            accuracy: None,
            sensitivity: Vec::new(),
            latency_ms: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
        };
        report.set_sizes(input.encoded_len() as u64, output.encoded_len() as u64);
        report
    }

    /// The mode as a person reads it: `static INT8`, `dynamic INT8`, `FP16`, `INT4 weight-only`.
    pub fn precision(&self) -> String {
        match self.mode.as_str() {
            "fp16" => "FP16".into(),
            "int4" => "INT4 weight-only".into(),
            mode => format!("{mode} INT8"),
        }
    }

    /// Records the sizes and notes when the model did not shrink.
    pub fn set_sizes(&mut self, input_bytes: u64, output_bytes: u64) {
        self.input_bytes = input_bytes;
        self.output_bytes = output_bytes;
        self.size_ratio = output_bytes as f64 / input_bytes.max(1) as f64;
        if output_bytes >= input_bytes {
            self.notes.push(format!(
                "the quantized model ({output_bytes} B) is not smaller than the input ({input_bytes} B)"
            ));
        }
    }

    /// Float nodes counted by operator type, most frequent first (ties by name).
    pub fn float_op_counts(&self) -> Vec<(&str, usize)> {
        let mut map: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.float_nodes {
            *map.entry(&f.op_type).or_default() += 1;
        }
        let mut counts: Vec<(&str, usize)> = map.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// A few lines for the terminal: the float nodes as one line of counts by operator
    /// type, or with `verbose` one line per node with its reason.
    pub fn summary(&self, verbose: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}): {} nodes quantized, {} float; {} -> {} bytes ({:.1}%) in {:.1}s",
            self.precision(),
            self.format,
            self.quantized_nodes.len(),
            self.float_nodes.len(),
            self.input_bytes,
            self.output_bytes,
            100.0 * self.size_ratio,
            self.seconds
        );
        if let Some(c) = &self.calibration {
            let _ = writeln!(s, "calibration: {:?} on {} samples", c.method, c.samples);
        }
        if let Some(o) = self.opset_change {
            let _ = writeln!(s, "opset raised from {} to {}", o.from, o.to);
        }
        if verbose {
            for f in &self.float_nodes {
                let _ = writeln!(s, "float: {} ({}): {}", f.name, f.op_type, f.reason);
            }
        } else if !self.float_nodes.is_empty() {
            let counts: Vec<String> = (self.float_op_counts().into_iter())
                .map(|(op, n)| format!("{op} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "float: {} nodes ({}); `verbose` or `report` lists each with its reason",
                self.float_nodes.len(),
                counts.join(", ")
            );
        }
        if let Some(v) = &self.verification {
            for o in &v.outputs {
                let _ = writeln!(
                    s,
                    "output {}: cosine {:.5}, SQNR {:.1} dB, max |diff| {:.4} ({})",
                    o.name,
                    o.cosine,
                    o.sqnr_db,
                    o.max_abs_diff,
                    if o.cosine >= v.cosine_tolerance {
                        "ok"
                    } else {
                        "BELOW TOLERANCE"
                    }
                );
            }
            for t in v.tensors.iter().take(3) {
                let _ = writeln!(
                    s,
                    "worst tensor {}: SQNR {:.1} dB, cosine {:.5}",
                    t.name, t.sqnr_db, t.cosine
                );
            }
        }
        if let Some(a) = &self.accuracy {
            let _ = writeln!(
                s,
                "accuracy: float {:.2}%, quantized {:.2}% (drop {:.2}%) on {} samples",
                100.0 * a.float_accuracy,
                100.0 * a.quantized_accuracy,
                100.0 * a.accuracy_drop,
                a.samples
            );
        }
        if let Some(l) = &self.latency_ms {
            let _ = writeln!(s, "{l}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
