//! `whittle run`: run a model on .npy inputs, write each output as .npy.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use whittle_exec::{Executor, Value};
use whittle_ir::Model;

/// Arguments of `whittle run`.
#[derive(clap::Args)]
#[command(
    after_help = "Every graph output is written to DIR/<name>.npy, where each character of \
the output name other than ASCII letters, digits, '.', '_' and '-' becomes '_' \
(so 'onnx::Shape_4' is written as 'onnx__Shape_4.npy')."
)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// An input as NAME=FILE.npy; repeat for each graph input.
    #[arg(long = "input", value_name = "NAME=FILE.npy", required = true)]
    inputs: Vec<String>,
    /// Folder for the outputs (created if missing).
    #[arg(long = "out", value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Overwrite output files that already exist.
    #[arg(long)]
    force: bool,
}

/// The file name an output is written to: unsafe characters become `_`.
pub fn output_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.npy")
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let exec = Executor::new(&model)?;
    let mut feed = HashMap::new();
    for spec in &args.inputs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--input '{spec}' must be NAME=FILE.npy");
        };
        let data = whittle_data::npy::read_npy(std::path::Path::new(file))?;
        let value = Value::try_from(&data).with_context(|| format!("input '{name}' ({file})"))?;
        if feed.insert(name.to_string(), value).is_some() {
            bail!("input '{name}' is given twice");
        }
    }
    let targets: Vec<(String, PathBuf)> = exec
        .output_names()
        .into_iter()
        .map(|name| {
            let path = args.out.join(output_file_name(&name));
            (name, path)
        })
        .collect();
    if let Some((_, path)) = targets.iter().find(|(_, p)| p.exists() && !args.force) {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    let mut outputs = exec.run(feed)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, path) in targets {
        // Each output leaves the executor's map as it is written, so a large output is
        // held as a tensor or as its bytes, not both, while the next one is written.
        let value = outputs
            .remove(&name)
            .with_context(|| format!("output '{name}' was not computed"))?;
        let shape = value.shape().to_vec();
        let data = value.to_data()?;
        drop(value);
        whittle_data::npy::write_npy(&path, &data)?;
        println!("{name} {shape:?} -> {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_become_safe_file_names() {
        assert_eq!(output_file_name("onnx::Shape_4"), "onnx__Shape_4.npy");
        assert_eq!(
            output_file_name("save_infer_model/scale_0.tmp_1"),
            "save_infer_model_scale_0.tmp_1.npy"
        );
        assert_eq!(output_file_name("logits"), "logits.npy");
    }
}
