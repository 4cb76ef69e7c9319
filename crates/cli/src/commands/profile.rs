//! `whittle profile`: where a model spends its time, per node and per operator type.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use whittle_bench::inputs::ShapeRequest;
use whittle_bench::profile::{profile, ProfileOptions};
use whittle_ir::Model;
use whittle_pipeline::report::{measure, render, Format};

use crate::commands::inspect::parse_shapes;
use crate::flags::flag_words;
use crate::report::print_json;

/// Arguments of `whittle profile`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Leading (batch) dimension of inputs whose leading dimension is dynamic [default: 1].
    #[arg(long)]
    batch: Option<usize>,
    /// Timed runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Nodes above this share of the time are bottlenecks.
    #[arg(long, default_value_t = 0.05)]
    threshold: f64,
    /// Fix an input's shape, e.g. `input_ids=1x128` (needed for dynamic dimensions
    /// other than the batch).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Report format: text, md or html.
    #[arg(long, default_value = "text", value_parser = str::parse::<Format>)]
    format: Format,
    /// Machine-readable output (overrides --format).
    #[arg(long)]
    json: bool,
    /// Also write the report to FILE.html (a page with plots) or FILE.json.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let opts = ProfileOptions {
        shapes: ShapeRequest {
            batch: args.batch,
            shapes: parse_shapes(&args.shapes)?,
        },
        runs: args.runs,
        warmup: args.warmup,
        threshold: args.threshold,
        seed: 0,
    };
    let bar = progress_bar((args.runs + args.warmup) as u64, args.json)?;
    let result = profile(&model, &opts, &mut || bar.inc(1));
    bar.finish_and_clear();
    let mut result = result?;
    for note in &mut result.notes {
        *note = flag_words(note, &[]);
    }
    let report = measure::profile_report(&result, &args.model.display().to_string());
    if let Some(path) = &args.report {
        whittle_pipeline::report::write(&report, path)?;
    }
    if args.json {
        return print_json(&result);
    }
    print!("{}", render(&report, args.format)?);
    Ok(())
}

/// A bar counting runs on stderr; hidden with `--json` (and by indicatif off a terminal).
pub fn progress_bar(len: u64, hidden: bool) -> anyhow::Result<ProgressBar> {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} runs {elapsed}",
    )?);
    Ok(bar)
}
