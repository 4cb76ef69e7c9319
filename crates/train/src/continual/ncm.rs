//! Nearest-class-mean classification (iCaRL, Rebuffi et al. 2017; Mai et al. 2021): each
//! sample goes to the class whose mean penultimate feature is nearest, so that the
//! trained head's bias toward the newest classes plays no part.
//!
//! The model stays plain ONNX: `argmin_c ||f - mu_c||^2 = argmax_c (2 mu_c . f - ||mu_c||^2)`,
//! so [`ncm_head`] rewrites the weight and bias of the Gemm that makes the output to
//! `W_c = 2 mu_c`, `b_c = -||mu_c||^2`; every compression pass still applies.

use std::collections::HashMap;

use whittle_data::Dataset;
use whittle_exec::{Executor, RunOptions, Value};
use whittle_ir::attr::NodeAttrs;
use whittle_ir::{GraphEdit, Model, TensorData};

use super::buffer::ReplayBuffer;
use crate::bail;
use crate::error::Result;

/// Samples per feature pass.
const FEATURE_BATCH: usize = 1000;

/// Score of a class no sample showed yet (before its task): below any mean's score.
const UNSEEN_SCORE: f32 = -1e9;

/// [`ncm_head`] with the means of what a continual learner holds after a task: the replay
/// buffer (when there is one) and that task's training data `task`.
pub fn ncm_after_task(
    model: &Model,
    buffer: Option<&ReplayBuffer>,
    task: &Dataset,
    num_classes: usize,
) -> Result<Model> {
    let kept = buffer
        .filter(|b| !b.is_empty())
        .map(|b| b.dataset(task.sample_dims(), num_classes))
        .transpose()?;
    let sets: Vec<&Dataset> = kept.iter().chain([task]).collect();
    ncm_head(model, &sets)
}

/// The head Gemm of a model: its feature input and its weight and bias initializers.
struct HeadGemm {
    features: String,
    weight: String,
    bias: String,
    /// Whether the weight is stored `[classes, features]` (`transB = 1`).
    transposed: bool,
}

/// `model` with its output Gemm scoring classes by the nearest mean of the penultimate
/// features of `data`'s samples (all datasets together; a class none of them holds is
/// never chosen). The error names the node that is not such a head.
pub fn ncm_head(model: &Model, data: &[&Dataset]) -> Result<Model> {
    let head = find_head(model)?;
    let exec = Executor::new(model)?;
    let input = match exec.inputs().as_slice() {
        [input] => input.name.clone(),
        inputs => bail!(
            "--ncm needs a model with one input, this one has {}",
            inputs.len()
        ),
    };
    let weight = TensorData::from_proto(
        model.graph().initializer(&head.weight).expect("checked"),
        None,
    )?;
    let (classes, width) = match (weight.dims(), head.transposed) {
        ([c, f], true) | ([f, c], false) => (*c, *f),
        (dims, _) => bail!(
            "--ncm: the head's weight '{}' is {dims:?}, not a matrix",
            head.weight
        ),
    };
    let mut sums = vec![vec![0f64; width]; classes];
    let mut counts = vec![0usize; classes];
    for set in data {
        for batch in set.batches(FEATURE_BATCH) {
            let (images, labels) = batch?;
            let feed = HashMap::from([(input.clone(), Value::try_from(&images)?)]);
            let opts = RunOptions {
                keep: vec![head.features.clone()],
                ..RunOptions::default()
            };
            let out = exec.run_with(feed, opts)?;
            let Some(features) = out.get(&head.features) else {
                bail!("--ncm: the model did not produce '{}'", head.features);
            };
            let values = features.to_f32_vec()?;
            if values.len() != labels.len() * width {
                bail!(
                    "--ncm: the head's input '{}' is {:?}, not [N, {width}]",
                    head.features,
                    features.shape()
                );
            }
            for (row, &label) in values.chunks(width).zip(labels) {
                let Some(sum) = usize::try_from(label).ok().and_then(|c| sums.get_mut(c)) else {
                    bail!("--ncm: label {label} is outside the model's {classes} classes");
                };
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += f64::from(v);
                }
                counts[label as usize] += 1;
            }
        }
    }
    let mut w = vec![0f32; classes * width];
    let mut b = vec![UNSEEN_SCORE; classes];
    for (c, (sum, &n)) in sums.iter().zip(&counts).enumerate() {
        if n == 0 {
            continue;
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        b[c] = -mean.iter().map(|m| m * m).sum::<f64>() as f32;
        for (k, m) in mean.iter().enumerate() {
            let at = match head.transposed {
                true => c * width + k,
                false => k * classes + c,
            };
            w[at] = (2.0 * m) as f32;
        }
    }
    let mut out = model.clone();
    let bias_dims = TensorData::from_proto(
        model.graph().initializer(&head.bias).expect("checked"),
        None,
    )?
    .dims()
    .to_vec();
    let new_weight = TensorData::from_slice(weight.dims().to_vec(), &w)?.to_proto(&head.weight);
    let new_bias = TensorData::from_slice(bias_dims, &b)?.to_proto(&head.bias);
    for init in &mut out.graph_mut().initializer {
        if init.name == head.weight {
            *init = new_weight.clone();
        } else if init.name == head.bias {
            *init = new_bias.clone();
        }
    }
    Ok(out)
}

/// The Gemm that makes the model's first output, with a constant float weight and a bias
/// of one value per class and no scaling (`alpha`, `beta` 1, `transA` 0).
fn find_head(model: &Model) -> Result<HeadGemm> {
    let graph = model.graph();
    let Some(output) = graph.output.first() else {
        bail!("--ncm: the model has no output");
    };
    let Some(&at) = graph.producers().get(&output.name) else {
        bail!("--ncm: no node makes the output '{}'", output.name);
    };
    let node = &graph.node[at];
    let what = format!(
        "--ncm: the output '{}' comes from node '{}' ({})",
        output.name, node.name, node.op_type
    );
    if node.op_type != "Gemm" || node.input.len() != 3 {
        bail!("{what}; it needs a Gemm with a bias (a linear classifier)");
    }
    let unscaled = node.float("alpha")?.unwrap_or(1.0) == 1.0
        && node.float("beta")?.unwrap_or(1.0) == 1.0
        && node.int("transA")?.unwrap_or(0) == 0;
    if !unscaled {
        bail!("{what}; it needs alpha 1, beta 1 and transA 0");
    }
    for name in &node.input[1..] {
        match graph.initializer(name) {
            Some(t) if t.data_type == whittle_ir::DataType::Float as i32 => {}
            _ => bail!("{what}; its input '{name}' must be a float32 initializer"),
        }
    }
    Ok(HeadGemm {
        features: node.input[0].clone(),
        weight: node.input[1].clone(),
        bias: node.input[2].clone(),
        transposed: node.int("transB")?.unwrap_or(0) != 0,
    })
}
