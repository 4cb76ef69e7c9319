//! The zoo's models, one module each, and the pieces they share: the input from the
//! common options, stacks of fully connected layers and the classifier head.

use whittle_ir::Model;

use crate::builder::{GraphBuilder, Var};
use crate::error::Result;
use crate::layers::Act;
use crate::spec::{ModelInfo, Options};

mod cnn;
mod lenet;
mod mlp;
mod mobilenet;
mod resnet;
mod vit;

/// Name of every zoo model's graph input ([N, C, H, W] float32).
pub const INPUT: &str = "input";
/// Name of every zoo model's graph output ([N, classes] float32).
pub const OUTPUT: &str = "logits";

/// Every model of the zoo.
pub const ALL: &[ModelInfo] = &[
    mlp::INFO,
    lenet::INFO,
    cnn::INFO,
    resnet::INFO,
    mobilenet::INFO,
    vit::INFO,
];

/// A builder seeded from the `seed` option and the graph input shaped by `input`.
fn start(o: &Options) -> Result<(GraphBuilder, Var)> {
    let mut b = GraphBuilder::new(o.number("seed")?);
    let x = b.input(INPUT, &o.input_shape()?);
    Ok((b, x))
}

/// Fully connected layers of the given widths, each followed by ReLU.
fn dense_relu(b: &mut GraphBuilder, x: &Var, widths: &[usize]) -> Result<Var> {
    let mut h = x.clone();
    for (i, &width) in widths.iter().enumerate() {
        h = b.scoped(&format!("fc{}", i + 1), |b| {
            let y = b.linear(&h, width)?;
            Ok(b.act(&y, Act::Relu))
        })?;
    }
    Ok(h)
}

/// Dropout (when `dropout` > 0), then a linear layer to the `classes` logits; finishes
/// the model.
fn classify(mut b: GraphBuilder, features: &Var, o: &Options, dropout: f32) -> Result<Model> {
    let classes = o.positive("classes")?;
    let logits = b.scoped("head", |b| {
        let x = b.dropout(features, dropout);
        b.linear(&x, classes)
    })?;
    b.finish(&logits, OUTPUT, o.model())
}
