//! `resnet`: a small CIFAR-style ResNet: a 3×3 stem, stages of basic residual blocks (the
//! first block of each later stage halves the resolution, with a 1×1 projection
//! shortcut), global average pooling and a linear classifier. The default is ResNet-8.

use whittle_ir::Model;

use super::{classify, start};
use crate::builder::{GraphBuilder, Var};
use crate::error::Result;
use crate::layers::{Act, Conv, BN_EPS};
use crate::spec::{ModelInfo, OptionInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "resnet",
    summary:
        "ResNet with basic blocks (Conv-BN-ReLU-Conv-BN + shortcut, Add, ReLU); default ResNet-8",
    options: &[
        OptionInfo {
            key: "widths",
            default: "16-32-64",
            help: "channels of each stage, joined by '-' (the stem has the first)",
        },
        OptionInfo {
            key: "blocks",
            default: "1",
            help: "basic blocks per stage",
        },
    ],
    build,
};

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let widths = o.sizes("widths")?;
    let blocks = o.positive("blocks")?;
    let stem = Conv::new(widths[0], 3);
    let mut h = b.scoped("stem", |b| b.conv_bn(&x, stem, BN_EPS, Some(Act::Relu)))?;
    for (s, &width) in widths.iter().enumerate() {
        for k in 0..blocks {
            let stride = if s > 0 && k == 0 { 2 } else { 1 };
            let scope = format!("stage{}.block{}", s + 1, k + 1);
            h = b.scoped(&scope, |b| basic_block(b, &h, width, stride))?;
        }
    }
    let pooled = b.global_avg_pool(&h)?;
    let flat = b.flatten(&pooled);
    classify(b, &flat, o, 0.0)
}

/// Two 3×3 Conv-BN layers plus the identity (or a 1×1 Conv-BN projection when the shape
/// changes), then ReLU.
fn basic_block(b: &mut GraphBuilder, x: &Var, out: usize, stride: usize) -> Result<Var> {
    let y = b.conv_bn(x, Conv::new(out, 3).stride(stride), BN_EPS, Some(Act::Relu))?;
    let y = b.conv_bn(&y, Conv::new(out, 3), BN_EPS, None)?;
    let shortcut = if stride != 1 || x.shape[0] != out {
        b.conv_bn(x, Conv::new(out, 1).stride(stride), BN_EPS, None)?
    } else {
        x.clone()
    };
    let sum = b.add(&y, &shortcut)?;
    Ok(b.act(&sum, Act::Relu))
}
