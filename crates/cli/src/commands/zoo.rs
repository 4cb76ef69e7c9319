//! `whittle zoo`: write an initialised model of the zoo, or list the zoo's models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;
use whittle_ir::Model;
use whittle_pipeline::ModelSource;

use super::output::save_model;
use crate::report::{human_bytes, human_count, print_json};

/// Arguments of `whittle zoo`.
#[derive(clap::Args)]
#[command(
    after_help = "A model is NAME or NAME:key=value,key=value (a leading 'zoo:' is \
accepted), e.g. 'cnn:channels=16-32,classes=5'. Every model takes input=CxHxW (default \
1x28x28), classes (default 10) and seed (default 0); see --list for the rest."
)]
pub struct Args {
    /// The model to build, e.g. `cnn` or `vit-tiny:depth=4`.
    #[arg(required_unless_present = "list", value_name = "NAME[:OPTIONS]")]
    spec: Option<String>,
    /// Where to write the ONNX model.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "OUT.onnx",
        required_unless_present = "list"
    )]
    output: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
    /// List the zoo's models and their options instead.
    #[arg(long, conflicts_with_all = ["spec", "output", "force"])]
    list: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// What `whittle zoo NAME -o OUT` reports.
#[derive(Serialize)]
struct Built {
    /// The model's name.
    model: String,
    /// The full spec, every option spelled out.
    spec: String,
    path: String,
    parameters: u64,
    /// Multiply-accumulates of one sample's forward pass.
    macs: u64,
    size_bytes: u64,
}

/// One model in `--list`.
#[derive(Serialize)]
struct Listed {
    name: &'static str,
    summary: &'static str,
    options: Vec<ListedOption>,
}

/// One option in `--list`.
#[derive(Serialize)]
struct ListedOption {
    key: &'static str,
    default: &'static str,
    help: &'static str,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.list {
        return list(args.json);
    }
    let (Some(spec), Some(out)) = (&args.spec, &args.output) else {
        bail!("give a model and -o OUT.onnx, or --list");
    };
    write(spec, out, args.force, args.json)
}

fn write(spec: &str, out: &Path, force: bool, json: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    let (info, _) = whittle_zoo::parse(spec)?;
    let model = ModelSource::Zoo(spec.to_string()).load()?;
    save_model(&model, out)?;
    let built = Built {
        model: info.name.to_string(),
        spec: model
            .metadata(whittle_zoo::SPEC_KEY)
            .unwrap_or(spec)
            .to_string(),
        path: out.display().to_string(),
        parameters: whittle_ir::cost::parameter_count(model.graph()),
        macs: whittle_ir::cost::model_macs(&model, &HashMap::new())?,
        size_bytes: Model::disk_size(out)?,
    };
    if json {
        return print_json(&built);
    }
    println!("wrote {} ({})", built.path, human_bytes(built.size_bytes));
    println!("model      {}", built.spec);
    println!(
        "parameters {} ({})",
        human_count(built.parameters),
        built.parameters
    );
    println!("MACs       {} per sample", human_count(built.macs));
    Ok(())
}

fn list(json: bool) -> anyhow::Result<()> {
    let models: Vec<Listed> = whittle_zoo::catalog()
        .iter()
        .map(|m| Listed {
            name: m.name,
            summary: m.summary,
            options: m
                .all_options()
                .map(|o| ListedOption {
                    key: o.key,
                    default: o.default,
                    help: o.help,
                })
                .collect(),
        })
        .collect();
    if json {
        return print_json(&models);
    }
    for m in &models {
        println!("{}\n    {}", m.name, m.summary);
        for o in m
            .options
            .iter()
            .take(m.options.len() - whittle_zoo::COMMON_OPTIONS.len())
        {
            println!("    {:<24} {}", format!("{}={}", o.key, o.default), o.help);
        }
    }
    println!("options of every model:");
    for o in whittle_zoo::COMMON_OPTIONS {
        println!("    {:<24} {}", format!("{}={}", o.key, o.default), o.help);
    }
    Ok(())
}
