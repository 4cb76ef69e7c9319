//! `vit-tiny`: a small Vision Transformer. A strided convolution cuts the image into
//! patches; learned position embeddings are added; pre-norm encoder blocks apply
//! multi-head self-attention (MatMul, Softmax, Reshape, Transpose) and a GELU MLP, each
//! with a residual Add; the tokens are LayerNorm-ed and averaged, and a linear layer
//! classifies them.

use whittle_ir::Model;

use super::{classify, start};
use crate::builder::{GraphBuilder, Var};
use crate::error::{build_bail, Result};
use crate::layers::{Conv, LN_EPS};
use crate::spec::{ModelInfo, OptionInfo, Options};

/// The model's entry in the zoo.
pub const INFO: ModelInfo = ModelInfo {
    name: "vit-tiny",
    summary:
        "Vision Transformer: patch-embedding Conv, pre-norm MHSA + GELU MLP blocks, mean pooling",
    options: &[
        OptionInfo {
            key: "patch",
            default: "4",
            help: "patch size (kernel and stride of the embedding convolution)",
        },
        OptionInfo {
            key: "dim",
            default: "128",
            help: "token width",
        },
        OptionInfo {
            key: "depth",
            default: "5",
            help: "encoder blocks",
        },
        OptionInfo {
            key: "heads",
            default: "4",
            help: "attention heads (must divide dim)",
        },
        OptionInfo {
            key: "mlp",
            default: "304",
            help: "hidden width of each block's MLP",
        },
        OptionInfo {
            key: "dropout",
            default: "0.1",
            help: "dropout after each MLP's GELU and before the classifier",
        },
    ],
    build,
};

/// Deviation of the position embeddings' initial values.
const POS_STD: f32 = 0.02;

/// The sizes of one encoder block.
struct Block {
    heads: usize,
    mlp: usize,
    dropout: f32,
}

fn build(o: &Options) -> Result<Model> {
    let (mut b, x) = start(o)?;
    let (patch, dim, depth) = (
        o.positive("patch")?,
        o.positive("dim")?,
        o.positive("depth")?,
    );
    let cfg = Block {
        heads: o.positive("heads")?,
        mlp: o.positive("mlp")?,
        dropout: o.real_in("dropout", 0.0, 1.0)?,
    };
    if !dim.is_multiple_of(cfg.heads) {
        build_bail!("vit-tiny: {} heads do not divide dim {dim}", cfg.heads);
    }
    let mut h = b.scoped("embed", |b| patch_embed(b, &x, patch, dim))?;
    for i in 0..depth {
        h = b.scoped(&format!("block{}", i + 1), |b| encoder_block(b, &h, &cfg))?;
    }
    let h = b.layer_norm(&h, LN_EPS)?;
    let pooled = b.mean_over(&h, 0)?;
    classify(b, &pooled, o, cfg.dropout)
}

/// Patches as tokens ([T, dim]) plus position embeddings.
fn patch_embed(b: &mut GraphBuilder, x: &Var, patch: usize, dim: usize) -> Result<Var> {
    let y = b.conv(x, Conv::new(dim, patch).stride(patch).pad(0).bias())?;
    let tokens = y.shape[1] * y.shape[2];
    let y = b.reshape(&y, &[dim, tokens])?;
    let y = b.transpose(&y, &[1, 0])?;
    let pos = b.embedding("pos", &[tokens, dim], POS_STD)?;
    b.add(&y, &pos)
}

/// `x + attention(norm(x))`, then `x + mlp(norm(x))`.
fn encoder_block(b: &mut GraphBuilder, x: &Var, cfg: &Block) -> Result<Var> {
    let y = b.layer_norm(x, LN_EPS)?;
    let y = b.scoped("attn", |b| attention(b, &y, cfg.heads))?;
    let x = b.add(x, &y)?;
    let y = b.layer_norm(&x, LN_EPS)?;
    let y = b.scoped("mlp", |b| {
        let h = b.linear(&y, cfg.mlp)?;
        let h = b.gelu(&h);
        let h = b.dropout(&h, cfg.dropout);
        b.linear(&h, x.shape[1])
    })?;
    b.add(&x, &y)
}

/// Multi-head scaled dot-product self-attention over tokens [T, D].
fn attention(b: &mut GraphBuilder, x: &Var, heads: usize) -> Result<Var> {
    let (tokens, dim) = (x.shape[0], x.shape[1]);
    let head_dim = dim / heads;
    // [T, D] -> [T, H, d] -> heads first: [H, T, d] (queries, values) or [H, d, T] (keys).
    let project = |b: &mut GraphBuilder, perm: [usize; 3]| -> Result<Var> {
        let y = b.linear(x, dim)?;
        let y = b.reshape(&y, &[tokens, heads, head_dim])?;
        b.transpose(&y, &perm)
    };
    let q = project(b, [1, 0, 2])?;
    let k = project(b, [1, 2, 0])?;
    let v = project(b, [1, 0, 2])?;
    let scores = b.matmul(&q, &k)?;
    let scores = b.scale(&scores, 1.0 / (head_dim as f32).sqrt());
    let weights = b.softmax(&scores);
    let y = b.matmul(&weights, &v)?;
    let y = b.transpose(&y, &[1, 0, 2])?;
    let y = b.reshape(&y, &[tokens, dim])?;
    b.linear(&y, dim)
}
