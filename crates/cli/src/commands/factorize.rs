//! `whittle factorize`: low-rank factorization of Gemm/MatMul/Conv weights by truncated SVD.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;
use whittle_data::Split;
use whittle_exec::Executor;
use whittle_ir::Model;
use whittle_passes::factorize::{factorize, FactorizeConfig, LayerFactorization, RankRule};

use super::output::{check_output, save_model, InputModel};
use crate::report::{human_bytes, human_count, print_json};

/// Samples per batch when measuring accuracy.
const EVAL_BATCH: usize = 256;

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
    layers: Vec<LayerFactorization>,
    params_before: u64,
    params_after: u64,
    size_before: u64,
    size_after: u64,
    accuracy_before: Option<f64>,
    accuracy_after: Option<f64>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    check_output(&args.model, &args.output, args.force, InputModel::Protected)?;
    let rank = match (args.rank_ratio, args.energy) {
        (Some(r), None) => RankRule::Ratio(r),
        (None, Some(e)) => RankRule::Energy(e),
        _ => bail!("give exactly one of --rank-ratio and --energy"),
    };
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let cfg = FactorizeConfig {
        layers: args.layers.clone(),
        ..FactorizeConfig::new(rank)
    };
    let (factorized, report) =
        factorize(&model, &cfg).with_context(|| format!("factorizing {}", args.model.display()))?;
    let data = match &args.data {
        Some(spec) => Some(
            whittle_data::load(spec, Split::Test, args.limit)
                .with_context(|| format!("loading --data {spec}"))?,
        ),
        None => None,
    };
    let accuracy = |m: &Model| -> anyhow::Result<Option<f64>> {
        let Some(data) = &data else { return Ok(None) };
        let exec = Executor::new(m)?;
        let result = super::eval::evaluate(&exec, data, EVAL_BATCH, !args.json)?;
        Ok(Some(result.accuracy))
    };
    let (accuracy_before, accuracy_after) = (accuracy(&model)?, accuracy(&factorized)?);
    save_model(&factorized, &args.output)?;
    let out = Report {
        input: args.model.display().to_string(),
        output: args.output.display().to_string(),
        layers: report.layers,
        params_before: report.params_before,
        params_after: report.params_after,
        size_before: Model::disk_size(&args.model)?,
        size_after: Model::disk_size(&args.output)?,
        accuracy_before,
        accuracy_after,
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
    for l in &r.layers {
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
        human_count(r.params_before),
        human_count(r.params_after)
    );
    println!(
        "size   {} -> {}",
        human_bytes(r.size_before),
        human_bytes(r.size_after)
    );
    if let (Some(a), Some(b)) = (r.accuracy_before, r.accuracy_after) {
        println!("accuracy {:.2}% -> {:.2}%", 100.0 * a, 100.0 * b);
    }
}
