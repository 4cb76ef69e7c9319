//! `whittle factorize`: low-rank factorization of Gemm/MatMul/Conv weights by truncated SVD.

use std::path::PathBuf;

use serde::Serialize;
use whittle_ir::Model;
use whittle_pipeline::step::factorize::{Factorize, FactorizeOutcome};
use whittle_pipeline::{Ctx, ModelSource};

use super::output::{check_output, save_model, InputModel};
use crate::observer::CliObserver;
use crate::report::{human_bytes, human_count, print_json};

/// Arguments of `whittle factorize`.
#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("rank").required(true).args(["rank_ratio", "energy"])),
    after_help = "Each Gemm/MatMul weight W [in, out] becomes two factors of rank r from its SVD; \
a KxK Conv becomes a KxK Conv with r output channels and a 1x1 Conv. Layers where r·(in + out) \
>= in·out would not shrink and are left as they are."
)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Where to write the factorized model.
    #[arg(short, long)]
    output: PathBuf,
    /// Rank as a fraction of min(in, out), in (0, 1]: r = ceil(R · min(in, out)).
    #[arg(long, value_name = "R")]
    rank_ratio: Option<f64>,
    /// Smallest rank keeping this fraction of the spectral energy Σσ², in (0, 1].
    #[arg(long, value_name = "E")]
    energy: Option<f64>,
    /// Only these layers (node names; unnamed nodes go by their first output).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    layers: Option<Vec<String>>,
    /// Labelled data (test split) to measure accuracy before and after, e.g. mnist:DIR.
    #[arg(long, value_name = "SPEC")]
    data: Option<String>,
    /// Use only the first N samples of --data.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Overwrite the output file when it exists.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// The report of one factorization.
#[derive(Serialize)]
struct Report {
    input: String,
    output: String,
    size_before: u64,
    size_after: u64,
    #[serde(flatten)]
    outcome: FactorizeOutcome,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    check_output(&args.model, &args.output, args.force, InputModel::Protected)?;
    let step = Factorize {
        rank_ratio: args.rank_ratio,
        energy: args.energy,
        layers: args.layers.clone(),
        eval_data: args.data.clone(),
        eval_samples: args.limit,
    };
    let renames = [("eval_data", "--data"), ("eval_samples", "--limit")];
    let flag_error = |e| crate::flags::flag_error(e, &renames);
    step.rank().map_err(flag_error)?;
    let source = ModelSource::File(args.model.clone());
    let model = source.load()?;
    let observer = CliObserver::new(args.json);
    let (factorized, outcome) = step
        .factorize(&Ctx::new(&observer), &model)
        .map_err(flag_error)
        .map_err(|e| e.context(format!("factorizing {source}")))?;
    save_model(&factorized, &args.output)?;
    let out = Report {
        input: args.model.display().to_string(),
        output: args.output.display().to_string(),
        size_before: Model::disk_size(&args.model)?,
        size_after: Model::disk_size(&args.output)?,
        outcome,
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
    let o = &r.outcome;
    for l in &o.report.layers {
        let what = match &l.skipped_reason {
            Some(reason) => format!("skipped: {reason}"),
            None => format!(
                "rank {}: {} -> {} weights",
                l.rank,
                human_count(l.params_before),
                human_count(l.params_after)
            ),
        };
        println!(
            "  {:<24} {:<6} {}x{}  {what}",
            l.name, l.op, l.inputs, l.outputs
        );
    }
    println!(
        "params {} -> {}",
        human_count(o.report.params_before),
        human_count(o.report.params_after)
    );
    println!(
        "size   {} -> {}",
        human_bytes(r.size_before),
        human_bytes(r.size_after)
    );
    if let (Some(a), Some(b)) = (o.accuracy_before, o.accuracy_after) {
        println!("accuracy {:.2}% -> {:.2}%", 100.0 * a, 100.0 * b);
    }
}
