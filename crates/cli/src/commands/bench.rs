//! `whittle bench`: latency, throughput and peak memory per batch size, in whittle's
//! executor or ONNX Runtime. Several batch sizes run in one fresh child process each
//! (this binary, one batch), so their peak-memory figures do not mix.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use whittle_bench::bench::{
    bench_batch, cap_threads, set_executor_threads, BatchResult, BenchOptions, BenchReport, Engine,
};
use whittle_ir::Model;
use whittle_pipeline::report::{measure, render, Format};

use crate::commands::inspect::parse_shapes;
use crate::commands::profile::progress_bar;
use crate::flags::flag_words;
use crate::report::print_json;

/// Arguments of `whittle bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Batch sizes, comma-separated (each in its own process when there are several)
    /// [default: the model's own; 1 where it is dynamic].
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Intra-op threads (0: the engine's default; at most the machine's cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Untimed warm-up runs per batch size.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs per batch size.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Runtime: whittle (the executor) or ort (ONNX Runtime).
    #[arg(long, default_value = "whittle", value_parser = str::parse::<Engine>)]
    engine: Engine,
    /// Fix an input's shape, e.g. `input_ids=1x128`; the batch dimension follows --batch.
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
pub fn run(mut args: Args) -> anyhow::Result<()> {
    if args.batch.contains(&0) {
        bail!("--batch 0: every batch size must be at least 1");
    }
    let (threads, warning) = cap_threads(args.threads);
    if let Some(w) = warning {
        eprintln!("warning: {}", flag_words(&w, &[]));
    }
    args.threads = threads;
    if args.engine == Engine::Whittle && args.threads > 0 {
        set_executor_threads(args.threads);
    }
    let model = Model::load(&args.model)?;
    whittle_ir::validate(&model)?;
    let opts = BenchOptions {
        engine: args.engine,
        threads: args.threads,
        warmup: args.warmup,
        runs: args.runs,
        shapes: parse_shapes(&args.shapes)?,
        seed: 0,
    };
    let mut batches: Vec<BatchResult> = match args.batch.as_slice() {
        [] | [_] => {
            let bar = progress_bar((args.warmup + args.runs) as u64, args.json)?;
            let batch = args.batch.first().copied();
            let result = bench_batch(&args.model, &model, &opts, batch, &mut || bar.inc(1));
            bar.finish_and_clear();
            vec![result?]
        }
        many => many
            .iter()
            .map(|&b| in_child(&args, b))
            .collect::<anyhow::Result<_>>()?,
    };
    for note in batches.iter_mut().flat_map(|b| &mut b.notes) {
        *note = flag_words(note, &[]);
    }
    let report = BenchReport::new(&args.model, &model, &opts, batches)?;
    if let Some(path) = &args.report {
        whittle_pipeline::report::write(&measure::bench_report(&report), path)?;
    }
    if args.json {
        return print_json(&report);
    }
    print!("{}", render(&measure::bench_report(&report), args.format)?);
    Ok(())
}

/// Benchmarks one batch size in a fresh `whittle bench` process.
fn in_child(args: &Args, batch: usize) -> anyhow::Result<BatchResult> {
    let exe = std::env::current_exe().context("locating the whittle binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .arg(&args.model)
        .args(["--batch", &batch.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--runs", &args.runs.to_string()])
        .args(["--engine", &args.engine.to_string()])
        .arg("--json");
    for s in &args.shapes {
        cmd.args(["--shape", s]);
    }
    let out = cmd.output().context("starting a benchmark process")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .last()
            .unwrap_or("failed")
            .trim_start_matches("error: ");
        bail!("batch {batch}: {line}");
    }
    let report: BenchReport = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("batch {batch}: reading the benchmark process's report"))?;
    report
        .batches
        .into_iter()
        .next()
        .with_context(|| format!("batch {batch}: the benchmark process reported nothing"))
}
