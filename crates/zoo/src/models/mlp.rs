//! `mlp`: Flatten, fully connected layers with ReLU, a linear classifier.

use whittle_ir::Model;

use super::{classify, dense_relu, start};
use crate::error::Result;
use crate::spec::{ModelInfo, OptionInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "mlp",
    summary: "multilayer perceptron: Flatten, Gemm+ReLU per hidden layer, Gemm classifier",
    options: &[OptionInfo {
        key: "hidden",
        default: "256-128",
        help: "hidden layer widths, joined by '-'",
    }],
    build,
};

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let flat = b.flatten(&x);
    let h = dense_relu(&mut b, &flat, &o.sizes("hidden")?)?;
    classify(b, &h, o, 0.0)
}
