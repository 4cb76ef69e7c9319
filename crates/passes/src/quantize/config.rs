//! What to quantize and how: the options shared by every mode and format.

use serde::Serialize;

use super::observer::CalibrationMethod;
use super::scheme::{QuantType, Scheme};

/// Layout of a statically quantized model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// QuantizeLinear/DequantizeLinear pairs around float operators (what ONNX Runtime
    /// and TensorRT fuse into integer kernels).
    Qdq,
    /// Integer operators: QLinearConv, QLinearMatMul, MatMulInteger.
    QOperator,
}

/// The operator types quantized unless told otherwise.
pub const DEFAULT_OP_TYPES: [&str; 3] = ["Conv", "Gemm", "MatMul"];

/// Extra operator types that keep int8 chains int8 in the QDQ format.
pub const CHAIN_OP_TYPES: [&str; 7] = [
    "Add",
    "Mul",
    "Concat",
    "MaxPool",
    "AveragePool",
    "Relu",
    "Flatten",
];

/// Options of INT8 quantization.
#[derive(Clone, Debug, Serialize)]
pub struct QuantConfig {
    /// Output layout (static mode).
    pub format: Format,
    /// One scale per output channel of each weight.
    pub per_channel: bool,
    /// Integer type of weights (int8 symmetric or uint8 asymmetric).
    pub weight_type: QuantType,
    /// Integer type of activations (uint8 asymmetric or int8 symmetric).
    pub activation_type: QuantType,
    /// 7-bit weights.
    pub reduce_range: bool,
    /// How activation ranges are chosen.
    pub calibration: CalibrationMethod,
    /// Operator types to quantize.
    pub op_types: Vec<String>,
    /// Node names to leave in float.
    pub exclude: Vec<String>,
    /// Histogram bins per tensor (entropy, percentile, mse; at most
    /// [`super::observer::Histogram::MAX_BINS`]).
    pub histogram_bins: usize,
    /// Calibration samples, counted from the first, whose float values are spilled to a
    /// temporary file ([`super::Calibration::reference`]) so that verification on those
    /// samples need not run the float model again; 0 spills none. Static quantization then
    /// verifies on them itself ([`super::static_int8`]).
    #[serde(skip)]
    pub record_samples: usize,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            format: Format::Qdq,
            per_channel: false,
            weight_type: QuantType::Int8,
            activation_type: QuantType::Uint8,
            reduce_range: false,
            calibration: CalibrationMethod::MinMax,
            op_types: DEFAULT_OP_TYPES.iter().map(|s| s.to_string()).collect(),
            exclude: Vec::new(),
            histogram_bins: 2048,
            record_samples: 0,
        }
    }
}

impl QuantConfig {
    /// The weight scheme.
    pub fn weight_scheme(&self) -> Scheme {
        Scheme::weights(self.weight_type, self.reduce_range)
    }

    /// The activation scheme.
    pub fn activation_scheme(&self) -> Scheme {
        Scheme::activations(self.activation_type)
    }
}
