//! `lenet`: LeNet-5 for 28×28 digits (the first convolution keeps the size, padding by
//! half the kernel, as for MNIST), with ReLU and max pooling; the options widen it (wider
//! convolutions, 3x3 kernels, other fully connected widths) keeping its shape.

use whittle_ir::Model;

use super::{classify, dense_relu, start};
use crate::error::Result;
use crate::layers::{Act, Conv};
use crate::spec::{ModelInfo, OptionInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "lenet",
    summary:
        "LeNet-5: Conv 6@5x5 (pad 2), MaxPool, Conv 16@5x5, MaxPool, FC 120, FC 84, FC classes",
    options: &[
        OptionInfo {
            key: "channels",
            default: "",
            help: "output channels of the two convolutions, joined by '-' [6-16]",
        },
        OptionInfo {
            key: "kernel",
            default: "",
            help: "kernel size of both convolutions; the first pads by half of it [5]",
        },
        OptionInfo {
            key: "hidden",
            default: "",
            help:
                "widths of the fully connected layers before the classifier, joined by '-' [120-84]",
        },
    ],
    build,
};

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    // Options added after the model default to empty, keeping its spec and bytes.
    let kernel = match o.text("kernel")? {
        "" => 5,
        _ => o.positive("kernel")?,
    };
    let [first, second] = match o.text("channels")? {
        "" => [6, 16],
        _ => match o.sizes("channels")?[..] {
            [first, second] => [first, second],
            _ => {
                return Err(o.bad(
                    "channels",
                    "must be two channel counts joined by '-', e.g. 6-16",
                ))
            }
        },
    };
    let hidden = match o.text("hidden")? {
        "" => vec![120, 84],
        _ => o.sizes("hidden")?,
    };
    let mut h = x;
    for (i, conv) in [
        Conv::new(first, kernel).bias(),
        Conv::new(second, kernel).pad(0).bias(),
    ]
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
    let h = dense_relu(&mut b, &flat, &hidden)?;
    classify(b, &h, o, 0.0)
}
