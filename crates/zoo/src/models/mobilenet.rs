//! `mobilenetv3-small`: MobileNetV3-Small as in torchvision (Howard et al. 2019):
//! inverted residual blocks with depthwise convolutions, squeeze-and-excitation and
//! hard-swish, BatchNormalization (eps 0.001), and a Linear-HardSwish-Dropout-Linear
//! classifier. `width` scales every channel count (rounded to multiples of 8).
//!
//! Besides torchvision's table, a searchable layout: `depths=2-3-3` (one entry per stage,
//! 1 to 4 stages after the stem) with `kernels`, `expansions` and `se` per stage (see
//! [`Stage`]). Without them it is the torchvision model.

use whittle_ir::Model;

use super::{classify, start};
use crate::builder::{GraphBuilder, Var};
use crate::error::{build_bail, Result, ZooError};
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
        OptionInfo {
            key: "depths",
            default: "",
            help: "blocks per stage joined by '-' (1-4 stages) [torchvision's table]",
        },
        OptionInfo {
            key: "kernels",
            default: "",
            help: "depthwise kernel (3 or 5) of each stage, with depths",
        },
        OptionInfo {
            key: "expansions",
            default: "",
            help: "expansion ratio (1-8) of each stage's blocks, with depths",
        },
        OptionInfo {
            key: "se",
            default: "",
            help: "squeeze-excite (1) or not (0) in each stage, with depths",
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

/// One inverted residual block: channels before the width multiplier in the table, after
/// it once built.
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

/// Output channels (before the width multiplier), stride and activation of the stages of
/// the searchable layout, after the stem: torchvision's stage widths.
const STAGES: [(usize, usize, Act); 4] = [
    (24, 2, Act::Relu),
    (40, 2, Act::HardSwish),
    (48, 1, Act::HardSwish),
    (96, 2, Act::HardSwish),
];

/// One stage of the searchable layout: `depth` blocks of depthwise `kernel`, expanded
/// `expansion` times their input channels, with or without squeeze-excite.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stage {
    depth: usize,
    kernel: usize,
    expansion: usize,
    se: bool,
}

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let width = o.real_in("width", 0.05, 16.0)?;
    let dropout = o.real_in("dropout", 0.0, 1.0)?;
    let scaled = |c: usize| make_divisible(c as f32 * width);
    let stem = Conv::new(scaled(STEM), 3).stride(2);
    let mut h = b.scoped("stem", |b| b.conv_bn(&x, stem, EPS, Some(Act::HardSwish)))?;
    let blocks = match stages(o)? {
        None => BLOCKS
            .iter()
            .map(|blk| {
                bneck(
                    blk.kernel,
                    scaled(blk.expanded),
                    scaled(blk.out),
                    blk.se,
                    blk.act,
                    blk.stride,
                )
            })
            .collect(),
        Some(stages) => stage_blocks(&stages, scaled(STEM), scaled),
    };
    for (i, blk) in blocks.iter().enumerate() {
        h = b.scoped(&format!("block{}", i + 1), |b| {
            inverted_residual(b, &h, blk)
        })?;
    }
    let last_out = blocks.last().map_or(h.shape[0], |blk| blk.out);
    let last_conv = Conv::new(6 * last_out, 1);
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

/// The stages of the searchable layout, or None for torchvision's table (no layout option
/// given).
fn stages(o: &Options) -> Result<Option<Vec<Stage>>> {
    const KEYS: [&str; 4] = ["depths", "kernels", "expansions", "se"];
    let given = KEYS
        .iter()
        .filter(|k| o.text(k).is_ok_and(|v| !v.is_empty()))
        .count();
    if given == 0 {
        return Ok(None);
    }
    if given < KEYS.len() {
        build_bail!(
            "the options {} go together: give all or none",
            KEYS.join(", ")
        );
    }
    let depths = o.sizes("depths")?;
    let (kernels, expansions) = (o.sizes("kernels")?, o.sizes("expansions")?);
    let se = o.text("se")?.split('-').map(|v| match v.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(ZooError::Build(format!("se: '{other}' must be 0 or 1"))),
    });
    let se = se.collect::<Result<Vec<bool>>>()?;
    if !(1..=STAGES.len()).contains(&depths.len()) {
        build_bail!(
            "depths: {} stages, expected 1 to {}",
            depths.len(),
            STAGES.len()
        );
    }
    for (key, len) in [
        ("kernels", kernels.len()),
        ("expansions", expansions.len()),
        ("se", se.len()),
    ] {
        if len != depths.len() {
            build_bail!(
                "{key} has {len} entries, depths has {} stages",
                depths.len()
            );
        }
    }
    if let Some(k) = kernels.iter().find(|&&k| k != 3 && k != 5) {
        build_bail!("kernels: {k} is not 3 or 5");
    }
    if let Some(e) = expansions.iter().find(|&&e| e > 8) {
        build_bail!("expansions: {e} is more than 8");
    }
    Ok(Some(
        (0..depths.len())
            .map(|i| Stage {
                depth: depths[i],
                kernel: kernels[i],
                expansion: expansions[i],
                se: se[i],
            })
            .collect(),
    ))
}

/// The blocks of `stages` after a stem of `stem` channels; `scaled` applies the width.
fn stage_blocks(stages: &[Stage], stem: usize, scaled: impl Fn(usize) -> usize) -> Vec<Bneck> {
    let mut blocks = Vec::new();
    let mut channels = stem;
    for (stage, &(out, stride, act)) in stages.iter().zip(&STAGES) {
        let out = scaled(out);
        for k in 0..stage.depth {
            let stride = if k == 0 { stride } else { 1 };
            let expanded = make_divisible((channels * stage.expansion) as f32);
            blocks.push(bneck(stage.kernel, expanded, out, stage.se, act, stride));
            channels = out;
        }
    }
    blocks
}

/// Expand (1×1, unless the width does not change), depthwise k×k, optional SE, project
/// (1×1, no activation); the input is added back when the shape is unchanged.
fn inverted_residual(b: &mut GraphBuilder, x: &Var, blk: &Bneck) -> Result<Var> {
    let (expanded, out) = (blk.expanded, blk.out);
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
