//! `whittle auto`: searches the composition of compression steps that best meets a target
//! under an accuracy budget (whittle-search's `auto`), writing the best model so far after
//! every trial, and prints the result (or `--json`) and the report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use whittle_pipeline::report;
use whittle_pipeline::{DataSource, ModelSource};
use whittle_search::auto::config::parse_duration;
use whittle_search::auto::{self, AutoConfig, Budget, Status, Target};

use super::output::{check_output, InputModel};
use super::pipeline::default_work_dir;
use crate::observer::CliObserver;
use crate::report::print_json;

/// Arguments of `whittle auto`.
#[derive(clap::Args)]
pub struct Args {
    /// The model: an ONNX file or zoo:NAME.
    model: String,
    /// Labelled data (a dataset SPEC): its train split calibrates and fine-tunes.
    #[arg(long, value_name = "SPEC")]
    data: String,
    /// Labelled data whose test split measures accuracy [default: --data].
    #[arg(long, value_name = "SPEC")]
    eval_data: Option<String>,
    /// What to optimize within the constraints: speed | size | accuracy | balanced.
    #[arg(long)]
    target: Target,
    /// Largest top-1 accuracy drop allowed, in percentage points.
    #[arg(
        long,
        value_name = "PCT",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    max_accuracy_drop: f64,
    /// Largest ONNX Runtime latency at batch 1, milliseconds.
    #[arg(long, value_name = "X")]
    max_latency_ms: Option<f64>,
    /// Largest model file, megabytes (10^6 bytes).
    #[arg(long, value_name = "Y")]
    max_size_mb: Option<f64>,
    /// Time budget of the search: 90s, 20m, 1.5h [default: 20m without --max-trials].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    budget: Option<std::time::Duration>,
    /// Trials at most (those of a resumed work folder included).
    #[arg(long, value_name = "N")]
    max_trials: Option<usize>,
    /// Fine-tuning epochs of pruned or factorized candidates (channel pruning: as many
    /// again per 25% of channels removed).
    #[arg(long, value_name = "E", default_value_t = 1)]
    finetune_epochs: usize,
    /// Threads of ONNX Runtime (latency) and the executor.
    #[arg(long, value_name = "T", default_value_t = 1)]
    threads: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate every point of the grid in order (the reference for the search's
    /// efficiency), without prediction or early drop.
    #[arg(long)]
    exhaustive: bool,
    /// Where the best model is written (after every trial).
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Write the report to R.html (with the Pareto plots) or R.json.
    #[arg(long, value_name = "R.html|R.json")]
    report: Option<PathBuf>,
    /// Folder of the journal and every candidate's models; rerunning with it resumes
    /// [default: OUT.work beside the output].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Overwrite an existing output (not needed to resume a run of the same work folder).
    #[arg(long)]
    force: bool,
    /// Machine-readable result.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.report {
        report::file_format(path)?;
    }
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&args.output));
    let resuming = work_dir.join("auto.jsonl").is_file();
    let source = ModelSource::parse(&args.model);
    let model_path = source.path().unwrap_or(Path::new(""));
    check_output(
        model_path,
        &args.output,
        args.force || resuming,
        InputModel::Protected,
    )?;
    let max_size_bytes = match args.max_size_mb {
        Some(mb) if !(mb.is_finite() && mb > 0.0) => {
            anyhow::bail!("--max-size-mb must be positive, got {mb}")
        }
        Some(mb) => Some((mb * 1e6) as u64),
        None => None,
    };
    let time = match (args.budget, args.max_trials) {
        (None, None) => Some(auto::config::DEFAULT_TIME),
        (t, _) => t,
    };
    let data = DataSource::new(args.data.as_str()).with_role("--data");
    let eval_data = match &args.eval_data {
        Some(spec) => DataSource::new(spec.as_str()).with_role("--eval-data"),
        None => data.clone(),
    };
    let config = AutoConfig {
        model: source,
        data,
        eval_data,
        target: args.target,
        max_accuracy_drop: args.max_accuracy_drop,
        max_latency_ms: args.max_latency_ms,
        max_size_bytes,
        budget: Budget {
            time,
            trials: args.max_trials,
        },
        finetune_epochs: args.finetune_epochs,
        threads: args.threads,
        seed: args.seed,
        exhaustive: args.exhaustive,
        work_dir: work_dir.clone(),
        output: args.output.clone(),
    };
    let observer = CliObserver::new(args.json);
    let outcome = auto::run(&config, &observer)?;
    if let Some(path) = &args.report {
        let title = format!("whittle auto {} --target {:?}", args.model, args.target);
        report::write(&outcome.report(&title), path)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    let summary = outcome.summary();
    if args.json {
        return print_json(&summary);
    }
    let b = &summary.baseline;
    println!(
        "baseline: top-1 {:.2}%, {} bytes, {:.3} ms",
        100.0 * b.accuracy.unwrap_or(f64::NAN),
        b.size_bytes,
        b.latency_ms
    );
    match &summary.best {
        Some(best) => {
            let f = &best.figures;
            println!(
                "best (trial {} of {}): {}: top-1 {:.2}%, {} bytes ({:.2}x smaller), {:.3} ms ({:.2}x faster)",
                best.trial,
                summary.trials,
                best.name,
                100.0 * f.accuracy.unwrap_or(f64::NAN),
                f.size_bytes,
                b.size_bytes as f64 / f.size_bytes as f64,
                f.latency_ms,
                b.latency_ms / f.latency_ms
            );
        }
        None => println!("no candidate gave a model; the output is the input model"),
    }
    if let (Status::BudgetNotMet, Some(d)) = (summary.status, &summary.distance) {
        println!("status: budget_not_met (distance {:.3})", d.total);
        for e in d.constraints.iter().filter(|e| e.by > 0.0) {
            println!(
                "  {} is {} against a limit of {}",
                e.objective, e.value, e.limit
            );
        }
    } else {
        println!("status: ok");
    }
    println!("wrote {}", args.output.display());
    if let Some(path) = &args.report {
        println!("wrote {}", path.display());
    }
    Ok(())
}
