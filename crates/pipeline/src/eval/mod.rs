//! Measuring a model: accuracy on labelled data, fidelity of its outputs to a reference
//! model's, size, parameters, MACs and latency, by one [`Evaluator`]; [`Metrics`] holds
//! what was measured.

pub mod accuracy;
pub mod evaluator;
pub mod fidelity;

use serde::{Deserialize, Serialize};

pub use accuracy::{Accuracy, ClassAccuracy};
pub use evaluator::{Evaluator, FidelityReport, LatencyPlan, Reference};
pub use fidelity::{Fidelity, OutputFidelity};

/// What an evaluation measured; a figure that was not asked for is `None`. In JSON a
/// figure that is not finite (an exact model's SQNR) is a string ([`crate::nonfinite`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Bytes of the serialized model, external data included.
    pub size_bytes: Option<u64>,
    /// Elements of all initializers ([`whittle_ir::cost::parameter_count`]).
    pub parameters: Option<u64>,
    /// Multiply-accumulates of one forward pass of one sample.
    pub macs: Option<u64>,
    /// Top-1 accuracy on the labelled data, 0..1.
    #[serde(default, with = "crate::nonfinite::option")]
    pub top1: Option<f64>,
    /// Top-5 accuracy on the labelled data, 0..1.
    #[serde(default, with = "crate::nonfinite::option")]
    pub top5: Option<f64>,
    /// Top-1 figures per class, in class order (empty without labelled data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassAccuracy>,
    /// Samples the accuracy or fidelity was measured on.
    pub samples: Option<usize>,
    /// SQNR in dB of all outputs against the reference model's (infinite when equal).
    #[serde(default, with = "crate::nonfinite::option")]
    pub sqnr_db: Option<f64>,
    /// Cosine similarity of all outputs to the reference model's.
    #[serde(default, with = "crate::nonfinite::option")]
    pub cosine: Option<f64>,
    /// Median latency of one run in whittle's executor, milliseconds.
    #[serde(default, with = "crate::nonfinite::option")]
    pub latency_ms_whittle: Option<f64>,
    /// Median latency of one run in ONNX Runtime, milliseconds.
    #[serde(default, with = "crate::nonfinite::option")]
    pub latency_ms_ort: Option<f64>,
}

impl Metrics {
    /// Takes the figures of `accuracy`: top-1, top-5, per class and the samples counted.
    pub fn set_accuracy(&mut self, accuracy: Accuracy) {
        self.top1 = Some(accuracy.accuracy);
        self.top5 = Some(accuracy.top5);
        self.samples = Some(accuracy.samples);
        self.per_class = accuracy.per_class;
    }
}
