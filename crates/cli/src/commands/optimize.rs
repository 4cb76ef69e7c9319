//! `whittle optimize`: lossless graph optimization (folding, fusion, clean-up passes), run
//! as the pipeline's `optimize` step.

use std::path::PathBuf;

use serde::Serialize;
use whittle_ir::Model;
use whittle_passes::optimize::pass_names;
use whittle_pipeline::step::optimize::{Optimize, OptimizeSummary, VERIFY_TOLERANCE};
use whittle_pipeline::{Ctx, PipelineError};

use super::output::{check_output, save_model, InputModel};
use crate::observer::CliObserver;
use crate::report::{human_bytes, human_count, print_json};

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

/// The report of one optimization: the files, their sizes and what the step did.
#[derive(Serialize)]
struct Report {
    input: String,
    output: String,
    bytes_before: u64,
    bytes_after: u64,
    #[serde(flatten)]
    summary: OptimizeSummary,
}

/// Runs the command: the flags become an `optimize` step, run on the model.
pub fn run(args: Args) -> anyhow::Result<()> {
    check_output(&args.model, &args.output, args.force, InputModel::Protected)?;
    let step = Optimize {
        passes: args.passes.clone(),
        verify: args.verify,
        shapes: super::inspect::parse_shapes(&args.shapes)?
            .into_iter()
            .collect(),
    };
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let observer = CliObserver::new(args.json);
    let ctx = Ctx::new(&observer);
    let (optimized, summary) = step.optimize(&ctx, &model).map_err(|e| match e {
        PipelineError::Layer { context, cause } if context == "passes" => cause,
        other => anyhow::Error::new(other),
    })?;
    save_model(&optimized, &args.output)?;
    let out = Report {
        input: args.model.display().to_string(),
        output: args.output.display().to_string(),
        bytes_before: Model::disk_size(&args.model)?,
        bytes_after: Model::disk_size(&args.output)?,
        summary,
    };
    if args.json {
        print_json(&out)
    } else {
        print_human(&out);
        Ok(())
    }
}

fn print_human(r: &Report) {
    println!("{} -> {}", r.input, r.output);
    println!(
        "nodes  {} -> {}",
        r.summary.nodes_before, r.summary.nodes_after
    );
    println!(
        "params {} -> {}",
        human_count(r.summary.params_before),
        human_count(r.summary.params_after)
    );
    println!(
        "size   {} -> {}",
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after)
    );
    for p in &r.summary.passes {
        println!("  {:<20} {} changes", p.name, p.changes);
    }
    if let Some(d) = r.summary.max_relative_diff {
        println!("verified: max relative output difference {d:.2e}");
    }
}
