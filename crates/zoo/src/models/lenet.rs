//! `lenet`: LeNet-5 for 28×28 digits (the first convolution pads by 2, as for MNIST), with
//! ReLU and max pooling.

use whittle_ir::Model;

use super::{classify, dense_relu, start};
use crate::error::Result;
use crate::layers::{Act, Conv};
use crate::spec::{ModelInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "lenet",
    summary:
        "LeNet-5: Conv 6@5x5 (pad 2), MaxPool, Conv 16@5x5, MaxPool, FC 120, FC 84, FC classes",
    options: &[],
    build,
};

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let mut h = x;
    for (i, conv) in [Conv::new(6, 5).bias(), Conv::new(16, 5).pad(0).bias()]
        .into_iter()
        .enumerate()
    {
        h = b.scoped(&format!("conv{}", i + 1), |b| {
            let y = b.conv(&h, conv)?;
            let y = b.act(&y, Act::Relu);
            b.max_pool(&y, 2, 2)
        })?;
    }
    let flat = b.flatten(&h);
    let h = dense_relu(&mut b, &flat, &[120, 84])?;
    classify(b, &h, o, 0.0)
}
