//! Checks made before training starts, so that bad input fails in seconds with a clear
//! reason: data shape against the model's input, labels against the output width, and
//! whether any gradient reaches a trainable parameter.

use std::collections::HashMap;

use whittle_data::Dataset;
use whittle_exec::{Executor, Value};
use whittle_ir::DataType;

use crate::bail;
use crate::error::Result;
use crate::finite;
use crate::step::{forward_backward, LossFn, PassOptions};

/// The batch size the model's input fixes, if it does.
pub fn fixed_batch(exec: &Executor, input: &str) -> Option<usize> {
    let spec = exec.inputs().into_iter().find(|s| s.name == input)?;
    spec.dims?.first().copied().flatten()
}

/// Checks sample shapes, the output's form and the label range of `train` and `val`.
pub fn check_data(
    exec: &Executor,
    input: &str,
    output: &str,
    train: &Dataset,
    val: Option<&Dataset>,
) -> Result<()> {
    let Some(spec) = exec.inputs().into_iter().find(|s| s.name == input) else {
        bail!("the model has no input '{input}'");
    };
    if spec.dtype.is_some_and(|d| d != DataType::Float) {
        bail!(
            "the model's input '{input}' is {:?}, the data is float32",
            spec.dtype
        );
    }
    for (data, what) in std::iter::once((train, "training")).chain(val.map(|v| (v, "validation"))) {
        if data.is_empty() {
            bail!("the {what} data is empty");
        }
        finite::check_dataset(data, what)?;
        if let Some(dims) = &spec.dims {
            let sample = data.sample_dims();
            let fits = dims.len() == sample.len() + 1
                && dims[1..]
                    .iter()
                    .zip(sample)
                    .all(|(d, s)| d.is_none_or(|d| d == *s));
            if !fits {
                bail!(
                    "{what} samples of shape {sample:?} do not match the model's input '{input}' {:?}",
                    dims
                );
            }
        }
    }
    let width = output_width(exec, input, output, train)?;
    for (data, what) in std::iter::once((train, "training")).chain(val.map(|v| (v, "validation"))) {
        if let Some(&l) = data.labels.iter().find(|&&l| l < 0 || l as usize >= width) {
            bail!("{what} label {l} is out of range for the model's {width} outputs ('{output}')");
        }
    }
    Ok(())
}

/// The class count of the model's output `[N, C]`, from one inference pass.
fn output_width(exec: &Executor, input: &str, output: &str, data: &Dataset) -> Result<usize> {
    let rows: Vec<usize> = (0..fixed_batch(exec, input).unwrap_or(1).min(data.len())).collect();
    let (images, _) = data.gather(&rows)?;
    let out = exec.run(HashMap::from([(
        input.to_string(),
        Value::try_from(&images)?,
    )]))?;
    match out.get(output).map(|v| v.shape().to_vec()).as_deref() {
        Some([n, c]) if *n == rows.len() => Ok(*c),
        shape => bail!("the model's output '{output}' has shape {shape:?}, expected [N, classes]"),
    }
}

/// One forward/backward pass on a sample batch; fails when no gradient reaches any
/// trainable parameter (a non-differentiable path between them and the loss).
pub fn check_gradients(
    exec: &Executor,
    inputs: HashMap<String, Value>,
    labels: &[i64],
    segments: Option<&[usize]>,
    loss: &mut LossFn,
) -> Result<()> {
    let opts = PassOptions {
        seed: 0,
        segments,
        running_stats: None,
    };
    let pass = forward_backward(exec, inputs, labels, loss, opts)?;
    if pass.grads.is_empty() {
        let mut names: Vec<&String> = exec.params().keys().collect();
        names.sort();
        bail!(
            "no gradient reaches the trainable parameters ({}): the path from them to the loss is not differentiable",
            names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
