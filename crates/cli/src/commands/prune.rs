//! `whittle prune`: zero weights (per-layer or global magnitude, random, N:M) in one shot,
//! iteratively or gradually during training, fine-tune with the masks kept, and report
//! the exact sparsity per layer, sizes (raw and gzip -6) and accuracy before and after;
//! or remove whole channels (`--method channel`, see [`super::prune_channel`]) and report
//! parameters, MACs and measured latency before and after.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;
use whittle_data::{Dataset, Split};
use whittle_exec::model_inputs;
use whittle_ir::Model;
use whittle_passes::prune::channel::ChannelPruner;
use whittle_passes::prune::report::sparsity_report;
use whittle_passes::prune::schedule::iterative_targets;
use whittle_passes::prune::{
    driver, gzip_size, prunable_layers, Curve, FineTune, GradualSchedule, LayerSparsity, Method,
    Pruned, Pruner, Unstructured,
};
use whittle_passes::quantize::sensitivity::EvalSet;
use whittle_train::distill::DistillConfig;

use super::datasets::eval_set;
use super::output::{check_output, save_model, InputModel};
use super::prune_channel::{self, ChannelSummary, LatencySummary};
use super::train::{build_model, steps_per_epoch, train_config, Settings};

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
}

/// The pruning methods.
#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
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

/// The schedule as reported.
#[derive(Serialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
enum ScheduleJson {
    /// Pruned once.
    Oneshot,
    /// Pruned in steps to these targets.
    Iterative {
        /// Number of steps.
        steps: usize,
        /// The curve.
        #[serde(flatten)]
        curve: Curve,
        /// Sparsity after each step.
        targets: Vec<f64>,
    },
    /// Masks updated during training.
    Gradual(GradualSchedule),
}

/// What `--json` prints.
#[derive(Serialize)]
struct Summary {
    output: String,
    method: MethodArg,
    schedule: ScheduleJson,
    target_sparsity: f64,
    sparsity: f64,
    layers: Vec<LayerSparsity>,
    params: usize,
    nonzero_params: usize,
    input_size_bytes: usize,
    input_gzip_bytes: usize,
    size_bytes: usize,
    gzip_bytes: usize,
    compression: &'static str,
    accuracy_before: Option<f64>,
    accuracy_after: Option<f64>,
    eval_samples: Option<usize>,
    finetune_epochs: usize,
    channels: Option<ChannelSummary>,
    latency: Option<LatencySummary>,
    notes: Vec<String>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let target = check_args(&args)?;
    check_output(
        Path::new(&args.model),
        &args.output,
        args.force,
        InputModel::ForceOverwrites,
    )?;
    let model = build_model(&args.model)?;
    let epochs = finetune_epochs(&args);
    let taylor = args.criterion.as_deref() == Some("taylor");
    let train = match (&args.data, epochs) {
        (Some(spec), 1..) | (Some(spec), 0) if epochs > 0 || taylor => Some(
            whittle_data::load(spec, Split::Train, args.limit)
                .with_context(|| format!("loading --data {spec}"))?,
        ),
        _ => None,
    };
    let eval = match &args.data {
        Some(spec) => Some(eval_set(
            &model_inputs(&model),
            spec,
            args.eval_limit,
            "--data",
        )?),
        None => None,
    };
    let accuracy_before = accuracy(eval.as_ref(), &model)?;
    let channel = match args.method {
        MethodArg::Channel => Some(channel_pruner(&args, &model, train.as_ref())?),
        _ => None,
    };
    let (mut pruned, schedule) = prune(
        &args,
        &model,
        target,
        train.as_ref(),
        epochs,
        channel.as_ref(),
    )?;
    let report = sparsity_report(&pruned.model, &prunable_layers(&pruned.model, &[])?)?;
    let (input_bytes, output_bytes) = (model.to_bytes(), pruned.model.to_bytes());
    let channels = channel
        .as_ref()
        .and_then(|c| prune_channel::summary(&c.reports()));
    // Channel pruning leaves no zeros: its sparsity is the fraction of parameters removed.
    let sparsity = match &channels {
        Some(c) => 1.0 - c.params_after as f64 / c.params_before.max(1) as f64,
        None => report.sparsity,
    };
    let accuracy_after = accuracy(eval.as_ref(), &pruned.model)?;
    save_model(&pruned.model, &args.output)?;
    let latency = match (&channel, args.latency_runs.unwrap_or(30)) {
        (Some(_), runs @ 1..) => {
            let input = Path::new(&args.model);
            Some(prune_channel::latency(
                (&model, input.is_file().then_some(input)),
                (&pruned.model, &args.output),
                runs,
                &mut pruned.notes,
            )?)
        }
        _ => None,
    };
    let summary = Summary {
        output: args.output.display().to_string(),
        method: args.method,
        schedule,
        target_sparsity: target,
        sparsity,
        layers: report.layers,
        params: report.params,
        nonzero_params: report.nonzero_params,
        input_size_bytes: input_bytes.len(),
        input_gzip_bytes: gzip_size(&input_bytes),
        size_bytes: output_bytes.len(),
        gzip_bytes: gzip_size(&output_bytes),
        compression: "gzip -6",
        accuracy_before,
        accuracy_after,
        eval_samples: eval.as_ref().map(EvalSet::samples),
        finetune_epochs: epochs,
        channels,
        latency,
        notes: pruned.notes,
    };
    if args.json {
        return crate::report::print_json(&summary);
    }
    print_human(&summary);
    Ok(())
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
        check_criterion(args.method, c)?;
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
fn check_criterion(method: MethodArg, criterion: &str) -> anyhow::Result<()> {
    let magnitude = matches!(criterion, "magnitude" | "l1" | "l2");
    match method {
        MethodArg::Channel => prune_channel::criterion(Some(criterion), 0).map(|_| ()),
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

/// The unstructured pruner the options describe.
fn unstructured(args: &Args) -> anyhow::Result<Unstructured> {
    let method = match args.method {
        MethodArg::Magnitude => Method::Magnitude,
        MethodArg::Global => Method::Global,
        MethodArg::Random => Method::Random {
            seed: args.seed.unwrap_or(0),
        },
        MethodArg::Nm => {
            let (n, m) = nm_sizes(args);
            Method::NM { n, m }
        }
        MethodArg::Channel => bail!("--method channel is structured"),
    };
    Ok(Unstructured::new(method, args.exclude.clone())?)
}

/// The channel pruner the options describe.
fn channel_pruner(
    args: &Args,
    model: &Model,
    train: Option<&Dataset>,
) -> anyhow::Result<ChannelPruner> {
    let seed = args.seed.unwrap_or(0);
    prune_channel::pruner(
        model,
        prune_channel::criterion(args.criterion.as_deref(), seed)?,
        (args.global, args.round_to.unwrap_or(8)),
        &args.exclude,
        train.map(|t| (t, args.batch_size.unwrap_or(32))),
    )
}

/// The pruner of `--method` (the channel pruner is built by the caller, which reads its
/// reports afterwards).
fn pruner<'a>(
    args: &Args,
    channel: Option<&'a ChannelPruner>,
) -> anyhow::Result<Box<dyn Pruner + 'a>> {
    Ok(match (args.method, channel) {
        (MethodArg::Channel, Some(c)) => Box::new(c),
        (MethodArg::Channel, None) => bail!("--method channel: no channel pruner"),
        _ => Box::new(unstructured(args)?),
    })
}

/// Runs the schedule; returns the pruned model and the schedule's JSON description.
fn prune(
    args: &Args,
    model: &Model,
    target: f64,
    train: Option<&Dataset>,
    epochs: usize,
    channel: Option<&ChannelPruner>,
) -> anyhow::Result<(Pruned, ScheduleJson)> {
    let finetune = match train {
        Some(train) if epochs > 0 => Some(FineTune {
            train,
            config: finetune_config(args, train.len(), epochs)?,
            teacher: args.distill.then(|| {
                let defaults = DistillConfig::default();
                let cfg = DistillConfig {
                    temperature: args.temperature.unwrap_or(defaults.temperature),
                    alpha: args.alpha.unwrap_or(defaults.alpha),
                    ..defaults
                };
                (model, cfg)
            }),
        }),
        _ => None,
    };
    Ok(match args.schedule {
        ScheduleArg::Oneshot => {
            let pruned = driver::oneshot(
                pruner(args, channel)?.as_ref(),
                model,
                target,
                finetune.as_ref(),
            )?;
            (pruned, ScheduleJson::Oneshot)
        }
        ScheduleArg::Iterative => {
            let (steps, curve) = (args.steps.unwrap_or(3), curve(args, CurveArg::Linear));
            let targets = iterative_targets(target, steps, curve)?;
            let pruned = driver::iterative(
                pruner(args, channel)?.as_ref(),
                model,
                target,
                steps,
                curve,
                finetune.as_ref(),
            )?;
            (
                pruned,
                ScheduleJson::Iterative {
                    steps,
                    curve,
                    targets,
                },
            )
        }
        ScheduleArg::Gradual => {
            let Some(ft) = finetune else {
                bail!("--schedule gradual needs --data and --finetune-epochs of at least 1");
            };
            let gradual = gradual_schedule(args, target, ft.train.len(), epochs)?;
            let pruned = driver::gradual(&unstructured(args)?, model, &gradual, &ft)?;
            (pruned, ScheduleJson::Gradual(gradual))
        }
    })
}

/// The trainer settings of fine-tuning, from the shared `whittle train` settings.
fn finetune_config(
    args: &Args,
    samples: usize,
    epochs: usize,
) -> anyhow::Result<whittle_train::TrainConfig> {
    let mut settings = Settings::default();
    settings.epochs = Some(epochs);
    settings.batch_size = args.batch_size;
    settings.optimizer = args.optimizer.clone();
    settings.lr = args.lr;
    settings.seed = args.seed;
    let mut config = train_config(&settings, samples)?;
    config.progress = !args.json;
    config.verbose = !args.json;
    Ok(config)
}

/// The curve of `--curve`, else `default`.
fn curve(args: &Args, default: CurveArg) -> Curve {
    match args.curve.unwrap_or(default) {
        CurveArg::Constant => Curve::Constant,
        CurveArg::Linear => Curve::Linear,
        CurveArg::Cubic => Curve::Cubic,
        CurveArg::Exponential => Curve::Exponential,
        CurveArg::Polynomial => Curve::Polynomial {
            power: args.power.unwrap_or(3.0),
        },
    }
}

/// The gradual schedule over `epochs` of `samples`, with defaults filled in.
fn gradual_schedule(
    args: &Args,
    target: f64,
    samples: usize,
    epochs: usize,
) -> anyhow::Result<GradualSchedule> {
    let per_epoch = steps_per_epoch(samples, args.batch_size.unwrap_or(32), 1) as u64;
    let total = per_epoch * epochs as u64;
    let start = args.start_step.unwrap_or(0);
    let end = args.end_step.unwrap_or((total * 3 / 4).max(start + 1));
    let updates = args.steps.unwrap_or(10).max(1) as u64;
    let schedule = GradualSchedule {
        curve: curve(args, CurveArg::Cubic),
        initial: args.initial_sparsity.unwrap_or(0.0),
        last: target,
        start,
        end,
        frequency: args
            .frequency
            .unwrap_or((end.saturating_sub(start) / updates).max(1)),
    };
    schedule.check().context("--schedule gradual")?;
    Ok(schedule)
}

/// Top-1 accuracy of `model` on the eval data, when there is any.
fn accuracy(eval: Option<&EvalSet>, model: &Model) -> anyhow::Result<Option<f64>> {
    Ok(match eval {
        Some(e) => Some(e.accuracy(model)?),
        None => None,
    })
}

/// The human-readable report.
fn print_human(s: &Summary) {
    use crate::report::human_bytes;
    if s.channels.is_none() {
        print_layers(s);
    }
    println!(
        "size {} -> {}; {}: {} -> {}",
        human_bytes(s.input_size_bytes as u64),
        human_bytes(s.size_bytes as u64),
        s.compression,
        human_bytes(s.input_gzip_bytes as u64),
        human_bytes(s.gzip_bytes as u64)
    );
    print_structure(s);
    if let (Some(before), Some(after)) = (s.accuracy_before, s.accuracy_after) {
        println!("accuracy {:.2}% -> {:.2}%", 100.0 * before, 100.0 * after);
    }
    for note in &s.notes {
        println!("note: {note}");
    }
    println!("wrote {}", s.output);
}

/// The per-layer sparsity table of unstructured methods.
fn print_layers(s: &Summary) {
    use crate::report::human_count;
    let width = (s.layers.iter().map(|l| l.name.len()).max())
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:<7}  {:>10}  {:>10}  {:>8}",
        "layer", "op", "params", "zeros", "sparsity"
    );
    for l in &s.layers {
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
        100.0 * s.sparsity,
        human_count(s.nonzero_params as u64),
        human_count(s.params as u64)
    );
}

/// Parameters, MACs and latency of channel pruning.
fn print_structure(s: &Summary) {
    use crate::report::human_count;
    if let Some(c) = &s.channels {
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
