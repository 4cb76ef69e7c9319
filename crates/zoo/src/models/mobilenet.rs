//! `mobilenetv3-small`: MobileNetV3-Small as in torchvision (Howard et al. 2019):
//! inverted residual blocks with depthwise convolutions, squeeze-and-excitation and
//! hard-swish, BatchNormalization (eps 0.001), and a Linear-HardSwish-Dropout-Linear
//! classifier. `width` scales every channel count (rounded to multiples of 8).

use whittle_ir::Model;

use super::{classify, start};
use crate::builder::{GraphBuilder, Var};
use crate::error::Result;
use crate::layers::{Act, Conv};
use crate::spec::{ModelInfo, OptionInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "mobilenetv3-small",
    summary:
        "MobileNetV3-Small (torchvision layout): depthwise inverted residuals, SE, hard-swish, BN",
    options: &[
        OptionInfo {
            key: "width",
            default: "1.0",
            help: "width multiplier of every layer",
        },
        OptionInfo {
            key: "dropout",
            default: "0.2",
            help: "dropout before the last linear layer",
        },
    ],
    build,
};

/// MobileNetV3's BatchNormalization epsilon.
const EPS: f32 = 1e-3;
/// Channels of the stem (before the width multiplier).
const STEM: usize = 16;
/// Width of the classifier's hidden layer (before the width multiplier).
const LAST_CHANNEL: usize = 1024;

/// One inverted residual block of the table.
struct Bneck {
    kernel: usize,
    expanded: usize,
    out: usize,
    se: bool,
    act: Act,
    stride: usize,
}

const fn bneck(
    kernel: usize,
    expanded: usize,
    out: usize,
    se: bool,
    act: Act,
    stride: usize,
) -> Bneck {
    Bneck {
        kernel,
        expanded,
        out,
        se,
        act,
        stride,
    }
}

/// MobileNetV3-Small's blocks (Table 2 of the paper).
const BLOCKS: [Bneck; 11] = [
    bneck(3, 16, 16, true, Act::Relu, 2),
    bneck(3, 72, 24, false, Act::Relu, 2),
    bneck(3, 88, 24, false, Act::Relu, 1),
    bneck(5, 96, 40, true, Act::HardSwish, 2),
    bneck(5, 240, 40, true, Act::HardSwish, 1),
    bneck(5, 240, 40, true, Act::HardSwish, 1),
    bneck(5, 120, 48, true, Act::HardSwish, 1),
    bneck(5, 144, 48, true, Act::HardSwish, 1),
    bneck(5, 288, 96, true, Act::HardSwish, 2),
    bneck(5, 576, 96, true, Act::HardSwish, 1),
    bneck(5, 576, 96, true, Act::HardSwish, 1),
];

/// `v` rounded to the nearest multiple of 8 (at least 8), never more than 10% below `v`
/// (torchvision's `_make_divisible`).
fn make_divisible(v: f32) -> usize {
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f32) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let width = o.real_in("width", 0.05, 16.0)?;
    let dropout = o.real_in("dropout", 0.0, 1.0)?;
    let scaled = |c: usize| make_divisible(c as f32 * width);
    let stem = Conv::new(scaled(STEM), 3).stride(2);
    let mut h = b.scoped("stem", |b| b.conv_bn(&x, stem, EPS, Some(Act::HardSwish)))?;
    for (i, blk) in BLOCKS.iter().enumerate() {
        let (expanded, out) = (scaled(blk.expanded), scaled(blk.out));
        h = b.scoped(&format!("block{}", i + 1), |b| {
            inverted_residual(b, &h, blk, expanded, out)
        })?;
    }
    let last_conv = Conv::new(6 * scaled(BLOCKS[BLOCKS.len() - 1].out), 1);
    let h = b.scoped("last", |b| {
        b.conv_bn(&h, last_conv, EPS, Some(Act::HardSwish))
    })?;
    let pooled = b.global_avg_pool(&h)?;
    let flat = b.flatten(&pooled);
    let hidden = b.scoped("pre_head", |b| {
        let y = b.linear(&flat, scaled(LAST_CHANNEL))?;
        Ok(b.act(&y, Act::HardSwish))
    })?;
    classify(b, &hidden, o, dropout)
}

/// Expand (1×1, unless the width does not change), depthwise k×k, optional SE, project
/// (1×1, no activation); the input is added back when the shape is unchanged.
fn inverted_residual(
    b: &mut GraphBuilder,
    x: &Var,
    blk: &Bneck,
    expanded: usize,
    out: usize,
) -> Result<Var> {
    let mut h = x.clone();
    if expanded != x.shape[0] {
        h = b.conv_bn(&h, Conv::new(expanded, 1), EPS, Some(blk.act))?;
    }
    let depthwise = Conv::new(expanded, blk.kernel)
        .stride(blk.stride)
        .depthwise();
    h = b.conv_bn(&h, depthwise, EPS, Some(blk.act))?;
    if blk.se {
        h = b.scoped("se", |b| squeeze_excite(b, &h))?;
    }
    let y = b.conv_bn(&h, Conv::new(out, 1), EPS, None)?;
    if blk.stride == 1 && x.shape[0] == out {
        return b.add(&y, x);
    }
    Ok(y)
}

/// Squeeze-and-excitation: global pool, 1×1 conv to a quarter of the channels, ReLU,
/// 1×1 conv back, hard-sigmoid, and the input scaled by the result.
fn squeeze_excite(b: &mut GraphBuilder, x: &Var) -> Result<Var> {
    let channels = x.shape[0];
    let squeezed = make_divisible((channels / 4) as f32);
    let s = b.global_avg_pool(x)?;
    let s = b.conv(&s, Conv::new(squeezed, 1).bias())?;
    let s = b.act(&s, Act::Relu);
    let s = b.conv(&s, Conv::new(channels, 1).bias())?;
    let s = b.hard_sigmoid(&s);
    b.mul(x, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_like_torchvision() {
        assert_eq!(make_divisible(16.0), 16);
        assert_eq!(make_divisible(72.0 * 0.5), 40);
        assert_eq!(make_divisible(16.0 * 0.25), 8);
        assert_eq!(make_divisible(88.0 * 0.75), 64);
        assert_eq!(make_divisible(1024.0 * 0.75), 768);
        assert_eq!(make_divisible(144.0 / 4.0), 40);
    }
}
