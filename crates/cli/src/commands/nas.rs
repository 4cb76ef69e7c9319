//! `whittle nas`: architecture search under measured latency, size, MACs and accuracy
//! limits (whittle-search's `nas`), resumable from its work folder.

use std::path::PathBuf;

use anyhow::Context;
use whittle_search::auto::config::parse_duration;
use whittle_search::nas::ray::Ray;
use whittle_search::nas::report::{report, zoo_references};
use whittle_search::nas::runner::{run_file, Local};
use whittle_search::nas::{
    search, Family, Limits, NasResult, Settings, Status, Strategy, WarmStart,
};

use super::output::{check_output, InputModel};
use crate::observer::CliObserver;
use crate::report::print_json;

/// Arguments of `whittle nas`.
#[derive(clap::Args)]
pub struct Args {
    /// The search space: cnn, mobilenet-v3, resnet or vit.
    #[arg(
        long,
        value_parser = |s: &str| s.parse::<Family>(),
        required_unless_present_any = ["job", "from"],
        conflicts_with = "from"
    )]
    space: Option<Family>,
    /// Shrink this trained model instead: search the share of channels each of its
    /// channel groups loses (structured pruning), fine-tuning every candidate.
    #[arg(long, value_name = "MODEL")]
    from: Option<PathBuf>,
    /// Labelled training data: mnist:DIR, fashion-mnist:DIR, npz:FILE.npz, ...
    #[arg(long, value_name = "SPEC", required_unless_present = "job")]
    data: Option<String>,
    /// Labelled data whose test split checks the result [default: --data].
    #[arg(long, value_name = "SPEC")]
    eval_data: Option<String>,
    /// Largest ONNX Runtime latency at batch 1, milliseconds: the median screens
    /// candidates, the 90th percentile of a re-measurement at the end checks the result.
    #[arg(long, value_name = "X")]
    max_latency_ms: Option<f64>,
    /// Largest FP32 model, megabytes (10^6 bytes).
    #[arg(long, value_name = "Y")]
    max_size_mb: Option<f64>,
    /// Most multiply-accumulates per sample.
    #[arg(long, value_name = "M")]
    max_macs: Option<u64>,
    /// Least top-1 accuracy (0..1) on the test split, checked on the result.
    #[arg(long, value_name = "A")]
    min_accuracy: Option<f64>,
    /// Candidates trained at the first rung of successive halving.
    #[arg(long, value_name = "N", default_value_t = 24)]
    iterations: usize,
    /// Wall-clock safety stop (90s, 30m, 1.5h): no new candidate after half of it, and a
    /// rung starting after all of it trains only its best candidate (the JSON's
    /// budget_stops says when it did; otherwise --iterations alone sets the rungs).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    budget: std::time::Duration,
    /// Threads of ONNX Runtime's latency measurements and of training.
    #[arg(long, value_name = "T", default_value_t = 1)]
    threads: usize,
    /// Seed of the proposals, initial weights and data order: same seed, same result.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the best model (required; checked by `run`, since `--job` runs
    /// without it).
    #[arg(short = 'o', long = "output", value_name = "OUT.onnx")]
    output: Option<PathBuf>,
    /// Write the report (Pareto front with the limits, every candidate, the zoo's models
    /// as reference points) to R.html or R.json.
    #[arg(long, value_name = "R.html|R.json")]
    report: Option<PathBuf>,
    /// Folder of the journals and candidate models; a rerun resumes from it [default:
    /// OUT.onnx.work].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Warm start: the first generation draws 4 times as many candidates and trains the
    /// feasible ones a zero-cost proxy ranks best: params (the most parameters; measured
    /// to beat random search), naswot (NASWOT, in log space), or none (plain evolution,
    /// its first generation drawn at random).
    #[arg(
        long,
        value_name = "PROXY",
        num_args = 0..=1,
        default_value = "params",
        default_missing_value = "params",
        value_parser = ["params", "naswot", "none"]
    )]
    warm_start: String,
    /// Run the candidates' jobs on the Ray cluster whose dashboard is at ADDRESS
    /// (http://HOST:8265) through its job submission API; the whittle binary, the data and
    /// --work-dir must be on paths the cluster's workers share.
    #[arg(long, value_name = "ADDRESS")]
    ray: Option<String>,
    /// Run one candidate's job file (written by a --ray search; the Ray job's entrypoint).
    #[arg(long, hide = true, value_name = "FILE", conflicts_with_all = ["space", "data", "output"])]
    job: Option<PathBuf>,
    /// How candidates are proposed: evolution (the search) or random (a baseline).
    #[arg(long, hide = true, default_value = "evolution", value_parser = ["evolution", "random"])]
    strategy: String,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(job) = &args.job {
        let observer = CliObserver::new(true);
        return Ok(run_file(&observer, job)?);
    }
    let (Some(space), Some(data), Some(output)) = (
        args.space.or(args.from.as_ref().map(|_| Family::Pruned)),
        args.data.clone(),
        args.output.clone(),
    ) else {
        anyhow::bail!("whittle nas needs --space (or --from), --data and -o");
    };
    let from = match &args.from {
        Some(path) => {
            Some(std::path::absolute(path).with_context(|| format!("--from {}", path.display()))?)
        }
        None => None,
    };
    if let Some(path) = &args.report {
        whittle_pipeline::report::file_format(path)?;
    }
    check_output(
        from.as_deref().unwrap_or(std::path::Path::new("")),
        &output,
        args.force,
        InputModel::Protected,
    )?;
    whittle_bench::bench::set_executor_threads(args.threads);
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| super::pipeline::default_work_dir(&output));
    let limits = Limits {
        max_latency_ms: args.max_latency_ms,
        max_size_mb: args.max_size_mb,
        max_macs: args.max_macs,
        min_accuracy: args.min_accuracy,
    };
    let settings = Settings {
        space,
        data,
        eval_data: args.eval_data.clone(),
        limits: limits.clone(),
        iterations: args.iterations,
        budget: Some(args.budget),
        threads: args.threads,
        seed: args.seed,
        work_dir: work_dir.clone(),
        output: output.clone(),
        strategy: match args.strategy.as_str() {
            "random" => Strategy::Random,
            _ => Strategy::Evolution,
        },
        warm_start: match args.warm_start.as_str() {
            "none" => None,
            "naswot" => Some(WarmStart::Naswot),
            _ => Some(WarmStart::Params),
        },
        from,
    };
    let observer = CliObserver::new(args.json);
    let result = match &args.ray {
        Some(address) => {
            let binary = std::env::current_exe().context("locating the whittle binary")?;
            let work_dir = std::path::absolute(&work_dir)
                .with_context(|| format!("--work-dir {}", work_dir.display()))?;
            let runner = Ray {
                address: address.clone(),
                binary,
                work_dir,
                observer: &observer,
                poll: std::time::Duration::from_millis(500),
            };
            search(&settings, &observer, &runner)?
        }
        None => {
            let runner = Local {
                observer: &observer,
                work_dir: work_dir.clone(),
            };
            search(&settings, &observer, &runner)?
        }
    };
    if let Some(path) = &args.report {
        let references = zoo_references(result.input, result.classes, args.threads, &work_dir)?;
        whittle_pipeline::report::write(&report(&result, &limits, &references), path)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    if args.json {
        return print_json(&result);
    }
    print_summary(&result);
    if let Some(path) = &args.report {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_summary(r: &NasResult) {
    let figures = format!(
        "{} ({:.3} ms median, {:.3} ms p90, {:.3} MB, {} MACs{})",
        r.spec.as_deref().unwrap_or("-"),
        r.latency_ms.unwrap_or(f64::NAN),
        r.latency_p90_ms.unwrap_or(f64::NAN),
        r.size_mb.unwrap_or(f64::NAN),
        r.macs.unwrap_or(0),
        r.accuracy
            .map_or(String::new(), |a| format!(", top-1 {:.2}%", 100.0 * a))
    );
    println!(
        "{} candidates measured, {} trained, {} infeasible, {:.0} s",
        r.candidates, r.trained, r.infeasible, r.seconds
    );
    if let Some(s) = &r.source {
        println!(
            "--from {}: {:.3} ms median, {:.3} MB, {} MACs, top-1 {:.2}%",
            s.path,
            s.measurement.latency_ms,
            s.measurement.size_bytes as f64 / 1e6,
            s.measurement.macs,
            100.0 * s.accuracy
        );
    }
    if let Some(check) = r.rechecks.last() {
        println!(
            "measured again at the end ({} runs each, the 90th percentile against \
             --max-latency-ms), taking turns with {}: {:.3} ms now, {:.3} ms when the search \
             started",
            check.runs, r.reference.spec, check.reference_ms, r.reference.latency_ms
        );
    }
    for stop in &r.budget_stops {
        println!(
            "the budget stopped the search ({stop}): the result depends on the machine's speed"
        );
    }
    match (r.status, &r.output) {
        (Status::Ok, Some(out)) => println!("best: {figures}\nwrote {out}"),
        _ => println!(
            "infeasible: {}\nnearest: {figures}",
            r.reason.as_deref().unwrap_or("no candidate met the limits")
        ),
    }
}
