//! `whittle optimize`: lossless graph optimization (folding, fusion, clean-up passes).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use whittle_ir::Model;
use whittle_passes::optimize::{optimize, pass_names, verify, PassReport, Pipeline};

use super::output::{check_output, save_model, InputModel};
use crate::report::{human_bytes, human_count, print_json};

/// Largest relative output difference `--verify` accepts.
pub const VERIFY_TOLERANCE: f64 = 1e-5;

/// Arguments of `whittle optimize`.
#[derive(clap::Args)]
#[command(after_help = format!(
    "Passes (default: all, in this order, repeated until none changes anything): {}.\n\
--verify runs both models in whittle's executor on the same random inputs (symbolic sizes \
= 1 unless --shape gives them) and fails when an output differs by more than {VERIFY_TOLERANCE:e} \
relative to max(1, its largest magnitude).",
    pass_names().join(", ")
))]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Where to write the optimized model.
    #[arg(short, long)]
    output: PathBuf,
    /// Comma-separated passes to run instead of the default pipeline.
    #[arg(long, value_delimiter = ',')]
    passes: Option<Vec<String>>,
    /// Check that the optimized model's outputs agree with the original's.
    #[arg(long)]
    verify: bool,
    /// Full shape of an input for --verify, as NAME=d0,d1,...; repeat per input.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Overwrite the output file when it exists.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// One pass in the report.
#[derive(Serialize)]
struct PassJson {
    name: String,
    changes: usize,
}

/// The report of one optimization.
#[derive(Serialize)]
struct Report {
    input: String,
    output: String,
    nodes_before: usize,
    nodes_after: usize,
    params_before: u64,
    params_after: u64,
    bytes_before: u64,
    bytes_after: u64,
    passes: Vec<PassJson>,
    /// Largest relative output difference (when verified).
    max_relative_diff: Option<f64>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    check_output(&args.model, &args.output, args.force, InputModel::Protected)?;
    let pipeline = match &args.passes {
        Some(names) => Pipeline::from_names(names)?,
        None => Pipeline::default_passes(),
    };
    let shapes = parse_shapes(&args.shapes)?;
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let bar = progress(&args, pipeline.len());
    let (optimized, report) = optimize(&model, &pipeline, &mut |name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    })
    .with_context(|| format!("optimizing {}", args.model.display()))?;
    bar.finish_and_clear();
    let max_relative_diff = if args.verify {
        Some(verify_outputs(&model, &optimized, &shapes)?)
    } else {
        None
    };
    save_model(&optimized, &args.output)?;
    let out = Report {
        input: args.model.display().to_string(),
        output: args.output.display().to_string(),
        nodes_before: report.before.nodes,
        nodes_after: report.after.nodes,
        params_before: report.before.params,
        params_after: report.after.params,
        bytes_before: Model::disk_size(&args.model)?,
        bytes_after: Model::disk_size(&args.output)?,
        passes: report.passes.iter().map(pass_json).collect(),
        max_relative_diff,
    };
    if args.json {
        print_json(&out)
    } else {
        print_human(&out);
        Ok(())
    }
}

/// Parses `NAME=d0,d1,...` items of `--shape`.
fn parse_shapes(items: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    items
        .iter()
        .map(|item| {
            let (name, dims) = item
                .split_once('=')
                .with_context(|| format!("--shape '{item}' must be NAME=d0,d1,..."))?;
            let dims = dims
                .split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--shape '{item}': sizes must be whole numbers"))?;
            Ok((name.to_string(), dims))
        })
        .collect()
}

fn verify_outputs(
    before: &Model,
    after: &Model,
    shapes: &HashMap<String, Vec<usize>>,
) -> anyhow::Result<f64> {
    let diffs = verify::compare(before, after, shapes).context("verifying outputs")?;
    let worst = diffs.iter().fold(0.0f64, |m, d| m.max(d.relative_diff));
    if let Some(d) = diffs
        .iter()
        .find(|d| d.relative_diff.is_nan() || d.relative_diff > VERIFY_TOLERANCE)
    {
        bail!(
            "verification failed: output '{}' differs by {:.3e} (relative), above {VERIFY_TOLERANCE:e}",
            d.name,
            d.relative_diff
        );
    }
    Ok(worst)
}

fn pass_json(p: &PassReport) -> PassJson {
    PassJson {
        name: p.name.to_string(),
        changes: p.changes,
    }
}

fn progress(args: &Args, passes: usize) -> ProgressBar {
    use std::io::IsTerminal;
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(passes as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} pass {pos} {msg}") {
        bar.set_style(style);
    }
    bar
}

fn print_human(r: &Report) {
    println!("{} -> {}", r.input, r.output);
    println!("nodes  {} -> {}", r.nodes_before, r.nodes_after);
    println!(
        "params {} -> {}",
        human_count(r.params_before),
        human_count(r.params_after)
    );
    println!(
        "size   {} -> {}",
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after)
    );
    for p in &r.passes {
        println!("  {:<20} {} changes", p.name, p.changes);
    }
    if let Some(d) = r.max_relative_diff {
        println!("verified: max relative output difference {d:.2e}");
    }
}
