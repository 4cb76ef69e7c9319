//! `whittle prune`: zero weights (per-layer or global magnitude, random, N:M) in one shot,
//! iteratively or gradually during training, fine-tune with the masks kept, and report
//! the exact sparsity per layer, sizes (raw and gzip -6) and accuracy before and after;
//! or remove whole channels (`--method channel`, see [`super::prune_channel`]) and report
//! parameters, MACs and measured latency before and after.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use whittle_ir::Model;
use whittle_pipeline::eval::Metrics;
use whittle_pipeline::step::prune::{
    CurveKind, DistillLoss, PruneMethod, PruneOutcome, PruneSchedule, PruneStep,
};
use whittle_pipeline::step::train::TestSet;
use whittle_pipeline::{report, Ctx};

use super::output::{check_output, save_model, InputModel};
use super::prune_channel::{self, LatencySummary};
use super::train::{build_model, training, Settings};
use crate::observer::CliObserver;

/// Arguments of `whittle prune`.
#[derive(clap::Args)]
pub struct Args {
    /// The model: MODEL.onnx or zoo:NAME.
    model: String,
    /// Where to write the pruned model.
    #[arg(short, long)]
    output: PathBuf,
    /// How weights are chosen.
    #[arg(long, value_enum)]
    method: MethodArg,
    /// Fraction of prunable weights to zero, in [0, 1) [default: 0.5; nm: 1 - N/M].
    #[arg(long)]
    sparsity: Option<f64>,
    /// N of N:M (weights kept per group).
    #[arg(long)]
    n: Option<usize>,
    /// M of N:M (group size along the reduction dimension).
    #[arg(long)]
    m: Option<usize>,
    /// Importance criterion: channel: l1 | l2 | bn | taylor | random [default: l1];
    /// unstructured methods rank by |w| (magnitude, l1, l2).
    #[arg(long)]
    criterion: Option<String>,
    /// Channel: rank all channels together (one global ratio) instead of per layer.
    #[arg(long)]
    global: bool,
    /// Channel: keep channel counts multiples of K [default: 8].
    #[arg(long)]
    round_to: Option<usize>,
    /// Channel: also prune the stem's output channels (protected by default).
    #[arg(long)]
    prune_stem: bool,
    /// Channel: timed runs of the batch-1 latency before and after (0: not measured)
    /// [default: 30].
    #[arg(long)]
    latency_runs: Option<usize>,
    /// When pruning happens.
    #[arg(long, value_enum, default_value = "oneshot")]
    schedule: ScheduleArg,
    /// Pruning steps: iterative steps, or mask updates of gradual pruning [default: 3 / 10].
    #[arg(long)]
    steps: Option<usize>,
    /// Sparsity curve of iterative and gradual schedules [default: linear / cubic].
    #[arg(long, value_enum)]
    curve: Option<CurveArg>,
    /// Exponent of the polynomial curve [default: 3].
    #[arg(long)]
    power: Option<f64>,
    /// Gradual: sparsity at the start step [default: 0].
    #[arg(long)]
    initial_sparsity: Option<f64>,
    /// Gradual: first optimizer step that prunes [default: 0].
    #[arg(long)]
    start_step: Option<u64>,
    /// Gradual: step reaching the final sparsity [default: 3/4 of the training steps].
    #[arg(long)]
    end_step: Option<u64>,
    /// Gradual: optimizer steps between mask updates [default: (end - start) / steps].
    #[arg(long)]
    frequency: Option<u64>,
    /// Fine-tuning epochs (one-shot: after pruning; iterative: after each step; gradual:
    /// in total) [default: 0 / 1 / 1]; needs --data.
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Dataset (mnist:DIR, fashion-mnist:DIR, npy:X.npy,Y.npy): training split for
    /// fine-tuning, test split for accuracy before and after.
    #[arg(long)]
    data: Option<String>,
    /// Fine-tune on the first N training samples only.
    #[arg(long)]
    limit: Option<usize>,
    /// Measure accuracy on the first N test samples only.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Fine-tuning learning rate [default: 0.01].
    #[arg(long)]
    lr: Option<f64>,
    /// Fine-tuning batch size [default: 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Fine-tuning optimizer: sgd | adam | adamw [default: sgd].
    #[arg(long)]
    optimizer: Option<String>,
    /// Node or weight names to leave dense (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Seed of the random method and of fine-tuning [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Fine-tune by distillation from the unpruned model (teacher) instead of labels alone.
    #[arg(long)]
    distill: bool,
    /// Distillation softmax temperature (> 0) [default: 4].
    #[arg(long)]
    temperature: Option<f64>,
    /// Weight of the distillation term in [0, 1]; the rest is cross-entropy on labels
    /// [default: 0.9].
    #[arg(long)]
    alpha: Option<f64>,
    /// Overwrite an existing output (or the input model).
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also write the report (size, parameters, MACs, accuracy and latency before and
    /// after; precision and sparsity per layer of both) to FILE.html or FILE.json.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// The pruning methods.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MethodArg {
    /// Each layer to the target sparsity by |w|.
    Magnitude,
    /// One |w| threshold across layers.
    Global,
    /// Seeded random weights per layer (baseline).
    Random,
    /// N:M along the reduction dimension (--n, --m).
    Nm,
    /// Remove whole channels (coupled groups found by a dependency graph).
    Channel,
}

impl From<MethodArg> for PruneMethod {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Magnitude => PruneMethod::Magnitude,
            MethodArg::Global => PruneMethod::Global,
            MethodArg::Random => PruneMethod::Random,
            MethodArg::Nm => PruneMethod::Nm,
            MethodArg::Channel => PruneMethod::Channel,
        }
    }
}

/// The schedules.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Prune once, then optionally fine-tune.
    Oneshot,
    /// Prune in --steps steps, fine-tuning between them.
    Iterative,
    /// Update masks during training (Zhu & Gupta).
    Gradual,
}

/// The sparsity curves.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CurveArg {
    /// The final sparsity at once.
    Constant,
    /// Linear in steps.
    Linear,
    /// Zhu & Gupta's cubic rule.
    Cubic,
    /// Density falling geometrically.
    Exponential,
    /// (1 - p)^power (--power).
    Polynomial,
}

impl CurveArg {
    fn kind(self) -> CurveKind {
        match self {
            CurveArg::Constant => CurveKind::Constant,
            CurveArg::Linear => CurveKind::Linear,
            CurveArg::Cubic => CurveKind::Cubic,
            CurveArg::Exponential => CurveKind::Exponential,
            CurveArg::Polynomial => CurveKind::Polynomial,
        }
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Summary {
    output: String,
    #[serde(flatten)]
    outcome: PruneOutcome,
    accuracy_before: Option<f64>,
    accuracy_after: Option<f64>,
    eval_samples: Option<usize>,
    latency: Option<LatencySummary>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let target = check_args(&args)?;
    if let Some(path) = &args.report {
        report::file_format(path)?;
    }
    check_output(
        Path::new(&args.model),
        &args.output,
        args.force,
        InputModel::ForceOverwrites,
    )?;
    let model = build_model(&args.model)?;
    let eval = match &args.data {
        Some(spec) => Some(TestSet::load(spec, "--data", &model, args.eval_limit)?),
        None => None,
    };
    let observer = CliObserver::new(args.json);
    let mut ctx = Ctx::new(&observer);
    let accuracy_before = accuracy(&ctx, eval.as_ref(), &model)?;
    let (pruned, mut outcome) = step(&args, target)?.prune(&mut ctx, &model)?;
    let accuracy_after = accuracy(&ctx, eval.as_ref(), &pruned)?;
    save_model(&pruned, &args.output)?;
    let latency = match (args.method, args.latency_runs.unwrap_or(30)) {
        (MethodArg::Channel, runs @ 1..) => {
            let input = Path::new(&args.model);
            Some(prune_channel::latency(
                (&model, input.is_file().then_some(input)),
                (&pruned, &args.output),
                runs,
                &mut outcome.notes,
            )?)
        }
        _ => None,
    };
    let summary = Summary {
        output: args.output.display().to_string(),
        outcome,
        accuracy_before,
        accuracy_after,
        eval_samples: eval.as_ref().map(TestSet::samples),
        latency,
    };
    if let Some(path) = &args.report {
        write_report(&summary, &model, &pruned, path)?;
    }
    if args.json {
        return crate::report::print_json(&summary);
    }
    print_human(&summary);
    Ok(())
}

/// Writes the report of the run `s` that turned `model` into `pruned`.
fn write_report(s: &Summary, model: &Model, pruned: &Model, path: &Path) -> anyhow::Result<()> {
    let measured = |top1, whittle_ms, ort_ms| Metrics {
        top1,
        samples: s.eval_samples,
        latency_ms_whittle: whittle_ms,
        latency_ms_ort: ort_ms,
        ..Metrics::default()
    };
    let l = s.latency.as_ref();
    let before = measured(
        s.accuracy_before,
        l.map(|l| l.whittle_ms_before),
        l.and_then(|l| l.ort_ms_before),
    );
    let after = measured(
        s.accuracy_after,
        l.map(|l| l.whittle_ms_after),
        l.and_then(|l| l.ort_ms_after),
    );
    let page = report::prune::report(&s.outcome, (model, before), (pruned, after))?;
    report::write(&page, path)?;
    Ok(())
}

/// The pipeline step the options describe.
fn step(args: &Args, target: f64) -> anyhow::Result<PruneStep> {
    let epochs = finetune_epochs(args);
    let mut settings = Settings::default();
    settings.epochs = Some(epochs);
    settings.batch_size = args.batch_size;
    settings.optimizer = args.optimizer.clone();
    settings.lr = args.lr;
    settings.seed = args.seed;
    let training = training(&settings)?;
    let curve = args.curve.map(CurveArg::kind);
    let schedule = match args.schedule {
        ScheduleArg::Oneshot => PruneSchedule::Oneshot,
        ScheduleArg::Iterative => PruneSchedule::Iterative {
            steps: args.steps,
            curve,
        },
        ScheduleArg::Gradual => PruneSchedule::Gradual {
            steps: args.steps,
            curve,
            initial_sparsity: args.initial_sparsity,
            start_step: args.start_step,
            end_step: args.end_step,
            frequency: args.frequency,
        },
    };
    Ok(PruneStep {
        sparsity: Some(target).filter(|_| !matches!(args.method, MethodArg::Nm)),
        n: args.n,
        m: args.m,
        criterion: args.criterion.clone(),
        global: args.global,
        round_to: args.round_to,
        exclude: args.exclude.clone(),
        prune_stem: args.prune_stem,
        seed: args.seed,
        schedule,
        power: args.power,
        data: args.data.clone(),
        limit: args.limit,
        finetune: (epochs > 0).then_some(training),
        distill: args.distill.then(|| {
            let d = DistillLoss::default();
            DistillLoss {
                temperature: args.temperature.unwrap_or(d.temperature),
                alpha: args.alpha.unwrap_or(d.alpha),
            }
        }),
        ..PruneStep::new(args.method.into())
    })
}

/// Checks the options before any work; returns the target sparsity.
fn check_args(args: &Args) -> anyhow::Result<f64> {
    let nm = matches!(args.method, MethodArg::Nm);
    if !nm && (args.n.is_some() || args.m.is_some()) {
        bail!("--n and --m apply to --method nm only");
    }
    let target = match (nm, args.sparsity) {
        (true, Some(_)) => bail!("--method nm sets the sparsity to 1 - N/M; drop --sparsity"),
        (true, None) => {
            let (n, m) = nm_sizes(args);
            whittle_passes::prune::nm::check_nm(n, m).context("--n/--m")?;
            1.0 - n as f64 / m as f64
        }
        (false, s) => s.unwrap_or(0.5),
    };
    if !(0.0..1.0).contains(&target) {
        bail!("--sparsity {target} must be in [0, 1)");
    }
    if let Some(c) = &args.criterion {
        check_criterion(args, c)?;
    }
    if args.distill && finetune_epochs(args) == 0 {
        bail!("--distill distils during fine-tuning: give --finetune-epochs and --data");
    }
    if args.finetune_epochs.is_some_and(|e| e > 0) && args.data.is_none() {
        bail!("--finetune-epochs needs training data: give --data");
    }
    if args.schedule == ScheduleArg::Gradual && args.data.is_none() {
        bail!("--schedule gradual prunes during training: give --data");
    }
    if nm && args.schedule != ScheduleArg::Oneshot {
        bail!("--method nm has a fixed sparsity: use --schedule oneshot");
    }
    let channel = matches!(args.method, MethodArg::Channel);
    if channel && args.schedule == ScheduleArg::Gradual {
        bail!("--method channel changes the graph's shapes: use --schedule oneshot or iterative");
    }
    if args.round_to == Some(0) {
        bail!("--round-to must be at least 1");
    }
    if !channel && args.global {
        bail!("--global applies to --method channel (use --method global for one |w| threshold)");
    }
    check_applicable(args)?;
    Ok(target)
}

/// Refuses an option that the method, schedule or fine-tuning asked for would ignore,
/// naming it and what it applies to.
fn check_applicable(args: &Args) -> anyhow::Result<()> {
    let channel = matches!(args.method, MethodArg::Channel);
    let gradual = args.schedule == ScheduleArg::Gradual;
    let stepped = args.schedule != ScheduleArg::Oneshot;
    let finetune = finetune_epochs(args) > 0;
    let taylor = args.criterion.as_deref() == Some("taylor");
    let polynomial = matches!(args.curve, Some(CurveArg::Polynomial));
    let rules = [
        (
            "--round-to",
            args.round_to.is_some(),
            channel,
            "--method channel",
        ),
        (
            "--latency-runs",
            args.latency_runs.is_some(),
            channel,
            "--method channel",
        ),
        ("--prune-stem", args.prune_stem, channel, "--method channel"),
        (
            "--steps",
            args.steps.is_some(),
            stepped,
            "--schedule iterative or gradual",
        ),
        (
            "--curve",
            args.curve.is_some(),
            stepped,
            "--schedule iterative or gradual",
        ),
        (
            "--power",
            args.power.is_some(),
            polynomial,
            "--curve polynomial",
        ),
        (
            "--initial-sparsity",
            args.initial_sparsity.is_some(),
            gradual,
            "--schedule gradual",
        ),
        (
            "--start-step",
            args.start_step.is_some(),
            gradual,
            "--schedule gradual",
        ),
        (
            "--end-step",
            args.end_step.is_some(),
            gradual,
            "--schedule gradual",
        ),
        (
            "--frequency",
            args.frequency.is_some(),
            gradual,
            "--schedule gradual",
        ),
        (
            "--temperature",
            args.temperature.is_some(),
            args.distill,
            "--distill",
        ),
        ("--alpha", args.alpha.is_some(), args.distill, "--distill"),
        ("--lr", args.lr.is_some(), finetune, FINE_TUNING),
        (
            "--optimizer",
            args.optimizer.is_some(),
            finetune,
            FINE_TUNING,
        ),
        (
            "--batch-size",
            args.batch_size.is_some(),
            finetune || taylor,
            FINE_TUNING,
        ),
        (
            "--limit",
            args.limit.is_some(),
            finetune || taylor,
            FINE_TUNING,
        ),
        (
            "--eval-limit",
            args.eval_limit.is_some(),
            args.data.is_some(),
            "--data",
        ),
    ];
    for (option, given, applies, needs) in rules {
        if given && !applies {
            bail!("{option} applies only with {needs}; it would be ignored here");
        }
    }
    Ok(())
}

/// What options of fine-tuning need.
const FINE_TUNING: &str = "fine-tuning (--finetune-epochs N with --data; iterative and gradual schedules fine-tune 1 epoch by default)";

/// N and M of `--method nm` (2:4 by default).
fn nm_sizes(args: &Args) -> (usize, usize) {
    (args.n.unwrap_or(2), args.m.unwrap_or(4))
}

/// Unstructured methods rank single weights by |w|: only magnitude criteria apply.
fn check_criterion(args: &Args, criterion: &str) -> anyhow::Result<()> {
    let method = args.method;
    let magnitude = matches!(criterion, "magnitude" | "l1" | "l2");
    match method {
        MethodArg::Channel if criterion == "taylor" && args.data.is_none() => {
            bail!("--criterion taylor needs gradients: give --data")
        }
        // The step names the channel criteria it takes.
        MethodArg::Channel => Ok(()),
        MethodArg::Random => bail!("--criterion {criterion}: --method random ignores the weights' values"),
        _ if !magnitude => bail!(
            "--criterion {criterion}: --method {} ranks single weights by |w|; use magnitude (l1 and l2 are the same for one weight)",
            method_name(method)
        ),
        _ => Ok(()),
    }
}

/// The command-line name of `method`.
fn method_name(method: MethodArg) -> String {
    use clap::ValueEnum;
    method
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// Fine-tuning epochs: the flag, else 1 for iterative and gradual schedules with data.
fn finetune_epochs(args: &Args) -> usize {
    match (args.finetune_epochs, args.schedule, &args.data) {
        (Some(e), _, _) => e,
        (None, ScheduleArg::Oneshot, _) | (None, _, None) => 0,
        (None, _, Some(_)) => 1,
    }
}

/// Top-1 accuracy of `model` on the eval data, when there is any.
fn accuracy(ctx: &Ctx<'_>, eval: Option<&TestSet>, model: &Model) -> anyhow::Result<Option<f64>> {
    Ok(match eval {
        Some(e) => Some(e.accuracy(ctx, model)?),
        None => None,
    })
}

/// The human-readable report.
fn print_human(s: &Summary) {
    use crate::report::human_bytes;
    if s.outcome.channels.is_none() {
        print_layers(s);
    }
    println!(
        "size {} -> {}; {}: {} -> {}",
        human_bytes(s.outcome.input_size_bytes as u64),
        human_bytes(s.outcome.size_bytes as u64),
        s.outcome.compression,
        human_bytes(s.outcome.input_gzip_bytes as u64),
        human_bytes(s.outcome.gzip_bytes as u64)
    );
    print_structure(s);
    if let (Some(before), Some(after)) = (s.accuracy_before, s.accuracy_after) {
        println!("accuracy {:.2}% -> {:.2}%", 100.0 * before, 100.0 * after);
    }
    for note in &s.outcome.notes {
        println!("note: {note}");
    }
    println!("wrote {}", s.output);
}

/// The per-layer sparsity table of unstructured methods.
fn print_layers(s: &Summary) {
    use crate::report::human_count;
    let width = (s.outcome.layers.iter().map(|l| l.name.len()).max())
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:<7}  {:>10}  {:>10}  {:>8}",
        "layer", "op", "params", "zeros", "sparsity"
    );
    for l in &s.outcome.layers {
        println!(
            "{:<width$}  {:<7}  {:>10}  {:>10}  {:>7.2}%",
            l.name,
            l.op_type,
            l.params,
            l.zeros,
            100.0 * l.sparsity
        );
    }
    println!(
        "sparsity {:.2}% of prunable weights; {} of {} parameters non-zero",
        100.0 * s.outcome.sparsity,
        human_count(s.outcome.nonzero_params as u64),
        human_count(s.outcome.params as u64)
    );
}

/// Parameters, MACs and latency of channel pruning.
fn print_structure(s: &Summary) {
    use crate::report::human_count;
    if let Some(c) = &s.outcome.channels {
        println!(
            "channels removed: parameters {} -> {}, MACs per sample {} -> {}",
            human_count(c.params_before),
            human_count(c.params_after),
            human_count(c.macs_before),
            human_count(c.macs_after)
        );
    }
    if let Some(l) = &s.latency {
        let ort = match (l.ort_ms_before, l.ort_ms_after) {
            (Some(b), Some(a)) => format!("; ONNX Runtime {b:.3} -> {a:.3} ms"),
            _ => String::new(),
        };
        println!(
            "latency (batch {}, median of {}): whittle {:.3} -> {:.3} ms{ort}",
            l.batch, l.runs, l.whittle_ms_before, l.whittle_ms_after
        );
    }
}
