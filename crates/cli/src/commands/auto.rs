//! `whittle auto`: searches the composition of compression steps that best meets a target
//! under an accuracy budget (whittle-search's `auto`), writing the best model so far after
//! every trial, and prints the result (or `--json`) and the report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use whittle_pipeline::report;
use whittle_pipeline::{DataSource, ModelSource};
use whittle_search::auto::config::parse_duration;
use whittle_search::auto::space::Action;
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
    /// Labelled data (a dataset SPEC): its train split calibrates and fine-tunes. Or
    /// feeds:FILE.npz without labels: it calibrates and measures the outputs' cosine to
    /// the baseline's (see --min-cosine); fine-tuning, QAT and mixed precision are skipped.
    #[arg(long, value_name = "SPEC")]
    data: String,
    /// Data whose test split measures accuracy [default: --data]; feeds:FILE.npz when
    /// --data is.
    #[arg(long, value_name = "SPEC")]
    eval_data: Option<String>,
    /// What to optimize within the constraints: speed | size | accuracy | balanced.
    #[arg(long)]
    target: Target,
    /// Largest top-1 accuracy drop allowed, in percentage points [default: 1].
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    max_accuracy_drop: Option<f64>,
    /// With feeds:FILE.npz data: the smallest cosine similarity of each output to the
    /// baseline's, over every feed [default: 0.99].
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    min_cosine: Option<f64>,
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
    /// Only candidates using these actions, comma-separated: channel, 2:4, low-rank,
    /// int8-static, int8-dynamic, fp16, int4, qat (QAT is then a point of the grid, not
    /// only a refinement of INT8 that loses too much). Named actions are tried even where
    /// the model's profile says they cannot gain [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    actions: Option<Vec<Action>>,
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
    let labelled = data.is_labelled();
    let max_accuracy_drop = accuracy_budget(labelled, args.max_accuracy_drop, args.min_cosine)?;
    let config = AutoConfig {
        model: source,
        data,
        eval_data,
        target: args.target,
        max_accuracy_drop,
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
        actions: args.actions,
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
    let measure = |a: Option<f64>| match labelled {
        true => format!("top-1 {:.2}%", 100.0 * a.unwrap_or(f64::NAN)),
        false => format!("cosine {:.5}", a.unwrap_or(f64::NAN)),
    };
    println!(
        "baseline: {}, {} bytes, {:.3} ms",
        measure(b.accuracy),
        b.size_bytes,
        b.latency_ms
    );
    match &summary.best {
        Some(best) => {
            let f = &best.figures;
            println!(
                "best (trial {} of {}): {}: {}, {} bytes ({:.2}x smaller), {:.3} ms ({:.2}x faster)",
                best.trial,
                summary.trials,
                best.name,
                measure(f.accuracy),
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

/// The search's budget in points: `--max-accuracy-drop` for labelled data; for feeds,
/// `--min-cosine` C as 100 (1 - C) points of cosine x 100. Refuses the option that does
/// not apply to the data.
fn accuracy_budget(
    labelled: bool,
    max_drop: Option<f64>,
    min_cosine: Option<f64>,
) -> anyhow::Result<f64> {
    match (labelled, max_drop, min_cosine) {
        (true, _, Some(_)) => anyhow::bail!(
            "--min-cosine applies to feeds:FILE.npz data (labelled data: --max-accuracy-drop)"
        ),
        (true, drop, None) => Ok(drop.unwrap_or(1.0)),
        (false, Some(_), _) => anyhow::bail!(
            "--max-accuracy-drop needs labelled data; feeds:FILE.npz has none: give --min-cosine"
        ),
        (false, None, cosine) => {
            let c = cosine.unwrap_or(0.99);
            if !(c.is_finite() && 0.0 < c && c <= 1.0) {
                anyhow::bail!("--min-cosine must be in (0, 1], got {c}");
            }
            Ok(100.0 * (1.0 - c))
        }
    }
}
