//! `whittle inspect`: what a model is made of.

use std::collections::HashMap;

use anyhow::Context;
use whittle_pipeline::inspect::{inspect, Inspection};
use whittle_pipeline::ModelSource;

use crate::report::{human_bytes, human_count, print_json};

/// Arguments of `whittle inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model, or a zoo spec (`zoo:NAME`).
    model: String,
    /// Fix an input's shape for the MAC estimate, e.g. `input_ids=1x128` or `input_ids=1,128`
    /// (symbolic dimensions are otherwise taken as 1).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let source = ModelSource::parse(&args.model);
    let model = source.load()?;
    let info = inspect(&source, &model, &parse_shapes(&args.shapes)?)?;
    if args.json {
        return print_json(&info);
    }
    print_text(&info);
    Ok(())
}

/// Parses `--shape NAME=DIMS` options (dims joined by `x` or `,`).
pub fn parse_shapes(specs: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    whittle_ir::shape::parse_input_shapes(specs).context("--shape")
}

fn print_text(i: &Inspection) {
    println!("model      {}", i.path);
    let producer = if i.producer.is_empty() {
        "unknown"
    } else {
        &i.producer
    };
    println!("producer   {producer} (IR version {})", i.ir_version);
    let opsets: Vec<String> = i.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    println!("opsets     {}", opsets.join(", "));
    for (label, ports) in [("input ", &i.inputs), ("output", &i.outputs)] {
        for p in ports {
            println!("{label}     {}: {}[{}]", p.name, p.dtype, p.shape.join(","));
        }
    }
    println!(
        "size       {} on disk, {} of initializers",
        human_bytes(i.size_bytes),
        human_bytes(i.initializer_bytes)
    );
    println!(
        "parameters {} ({})",
        human_count(i.parameters),
        i.parameters
    );
    println!("MACs       {} per forward pass", human_count(i.macs));
    println!("nodes      {}", i.nodes);
    let mut ops: Vec<(&String, &usize)> = i.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        println!("  {n:>5}  {op}");
    }
}
