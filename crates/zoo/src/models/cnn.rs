//! `cnn`: blocks of `convs` Conv-BN-ReLU layers with max pooling between them, global average pooling and a
//! linear classifier.

use whittle_ir::Model;

use super::{classify, start};
use crate::error::Result;
use crate::layers::{Act, Conv, BN_EPS};
use crate::spec::{ModelInfo, OptionInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "cnn",
    summary:
        "Conv3x3-BN-ReLU blocks, MaxPool 2x2 between blocks, GlobalAveragePool, Gemm classifier",
    options: &[
        OptionInfo {
            key: "channels",
            default: "32-64-128",
            help: "output channels of each block, joined by '-'",
        },
        OptionInfo {
            key: "convs",
            default: "",
            help: "Conv3x3-BN-ReLU layers per block [1]",
        },
    ],
    build,
};

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let channels = o.sizes("channels")?;
    let convs = match o.text("convs")? {
        "" => 1,
        _ => o.positive("convs")?,
    };
    let mut h = x;
    for (i, &c) in channels.iter().enumerate() {
        h = b.scoped(&format!("block{}", i + 1), |b| {
            let mut y = h.clone();
            for _ in 0..convs {
                y = b.conv_bn(&y, Conv::new(c, 3), BN_EPS, Some(Act::Relu))?;
            }
            if i + 1 < channels.len() {
                return b.max_pool(&y, 2, 2);
            }
            Ok(y)
        })?;
    }
    let pooled = b.global_avg_pool(&h)?;
    let flat = b.flatten(&pooled);
    classify(b, &flat, o, 0.0)
}
