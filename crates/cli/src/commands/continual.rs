//! `whittle continual`: continual learning on a sequence of tasks (split classes or
//! permuted pixels) with a strategy against forgetting, measured by the accuracy matrix
//! after every task, over several seeds, beside the fine-tune and joint baselines.

use std::path::{Path, PathBuf};

use serde::Serialize;
use whittle_pipeline::continual::{run_continual, ContinualReport, ContinualSpec};
use whittle_pipeline::continual_compress::{CompressConfig, Precision};
use whittle_pipeline::report::{self, Report};
use whittle_pipeline::step::continual::{lr_schedule, LR_SCHEDULES};
use whittle_pipeline::Ctx;
use whittle_train::continual::{ContinualConfig, Ncm, NoHook};

use super::output::{check_output, save_model, InputModel};
use super::train::build_model;
use crate::observer::CliObserver;

/// Arguments of `whittle continual`.
#[derive(clap::Args)]
pub struct Args {
    /// The model: zoo:NAME[:options] or MODEL.onnx (one input, class scores out).
    #[arg(long)]
    model: String,
    /// The dataset SPEC: fashion-mnist:DIR, mnist:DIR, ...
    #[arg(long)]
    data: String,
    /// class-il (one head, no task id), task-il (other tasks' scores masked) or domain-il
    /// (permuted pixels).
    #[arg(long, default_value = "class-il")]
    scenario: String,
    /// Tasks of a split scenario (default: as many as the classes fill).
    #[arg(long)]
    tasks: Option<usize>,
    /// Classes per task of a split scenario (task t holds classes k t .. k t + k - 1).
    #[arg(long, default_value_t = 2)]
    classes_per_task: usize,
    /// Training order of the tasks, e.g. 4,3,2,1,0.
    #[arg(long, value_delimiter = ',')]
    task_order: Option<Vec<usize>>,
    /// Tasks of a domain-il scenario, each with its own pixel permutation (task 1 keeps
    /// the original pixels).
    #[arg(long)]
    permutations: Option<usize>,
    /// finetune, joint, er (experience replay), derpp (DER++), lwf or ewc.
    #[arg(long, default_value = "er")]
    strategy: String,
    /// Replay buffer capacity in samples (stored as uint8).
    #[arg(long, default_value_t = 500)]
    buffer: usize,
    /// reservoir or class-balanced.
    #[arg(long, default_value = "reservoir")]
    buffer_policy: String,
    /// Epochs over each task's training data.
    #[arg(long, default_value_t = 1)]
    epochs_per_task: usize,
    /// New samples per step.
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Replayed samples per step.
    #[arg(long, default_value_t = 128)]
    replay_batch: usize,
    /// SGD learning rate (the peak of --lr-schedule).
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// The learning rate within each task: constant, or cosine (from --lr down to 0 over
    /// the task's steps, restarted at every task).
    #[arg(long, default_value = "constant", value_parser = LR_SCHEDULES)]
    lr_schedule: String,
    /// ER-ACE's asymmetric cross-entropy (er, derpp): new samples are scored among their
    /// batch's classes only, replayed ones among all classes.
    #[arg(long)]
    ace: bool,
    /// Score with the nearest class mean of the penultimate features (of the replay
    /// buffer and the task's data, after each task) instead of the trained head, by
    /// euclidean distance (the default) or cosine similarity (an LpNormalization before
    /// the head); the output model's head Gemm holds the means. `hybrid[:S]` keeps the
    /// trained head and adds S (default 32) times the cosine similarity to each class
    /// mean to its scores (a second Gemm on the unit features).
    #[arg(long, value_name = "DISTANCE", num_args = 0..=1, default_missing_value = "euclidean")]
    ncm: Option<String>,
    /// er, derpp: flip every replayed image left to right at random and shift it by up to
    /// two pixels (image samples [C, H, W]).
    #[arg(long)]
    replay_augment: bool,
    /// DER++: weight of the stored-logit term.
    #[arg(long, default_value_t = ContinualConfig::default().alpha)]
    alpha: f64,
    /// DER++: weight of the replayed-label term.
    #[arg(long, default_value_t = ContinualConfig::default().beta)]
    beta: f64,
    /// EWC: strength of the penalty.
    #[arg(long, default_value_t = ContinualConfig::default().ewc_lambda)]
    ewc_lambda: f64,
    /// One run per seed, e.g. 0,1,2; figures are means (and standard deviations).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Leave out the fine-tune and joint baselines.
    #[arg(long)]
    no_baselines: bool,
    /// LoRA adapters of this rank on every layer but the head: per task only the adapters
    /// and the head train, then the adapters merge into the weights.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// The adapters' scale is alpha / rank (default: the rank).
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// After the last task, also quantize the final model: none, fp16, int8 (comma list),
    /// calibrated on the replay buffer and the last task only.
    #[arg(long, value_delimiter = ',', value_parser = ["none", "fp16", "int8"])]
    quantize: Vec<String>,
    /// After the last task, also zero this fraction of the weights by magnitude and
    /// fine-tune on the replay buffer and the last task (and quantize the pruned model).
    #[arg(long)]
    prune: Option<f64>,
    /// Also compress while training (beside the compression after the last task): prune
    /// gradually across tasks up to --prune (masks kept through training) and, with
    /// --quantize int8, train the last task with fake quantization; -o is then this model.
    #[arg(long)]
    compress_during: bool,
    /// Epochs of that fine-tuning.
    #[arg(long, default_value_t = CompressConfig::default().finetune_epochs)]
    prune_finetune_epochs: usize,
    /// Use at most this many training samples (before splitting into tasks).
    #[arg(long)]
    train_samples: Option<usize>,
    /// Use at most this many test samples (before splitting into tasks).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Threads of whittle's executor (RAYON_NUM_THREADS). A continual step is one small
    /// batch (10 new + 128 replayed samples): one thread runs it fastest, more threads
    /// mostly wait on each other (3.6x the CPU time of one thread on a loaded machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where to write the final model (of the first seed).
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
    /// Also write a report: FILE.html (heat map of R, accuracy over time) or FILE.json.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Machine-readable output (fractions 0..1).
    #[arg(long)]
    json: bool,
}

/// The `compress` table's keys the library names in errors, and their flags.
const COMPRESS_FLAGS: [(&str, &str); 2] = [
    ("`compress.during`", "--compress-during"),
    ("`compress.prune`", "--prune"),
];

/// What `whittle continual --json` prints.
#[derive(Serialize)]
struct Summary<'a> {
    output: String,
    #[serde(flatten)]
    report: &'a ContinualReport,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    whittle_bench::bench::set_executor_threads(args.threads);
    check_output(
        Path::new(&args.model),
        &args.output,
        args.force,
        InputModel::Protected,
    )?;
    if let Some(path) = &args.report {
        report::file_format(path)?;
    }
    let spec = spec(&args)?;
    let model = build_model(&args.model)?;
    let observer = CliObserver::new(args.json);
    let mut ctx = Ctx::new(&observer);
    ctx.threads = Some(args.threads);
    let (trained, outcome, _) = run_continual(&mut ctx, model, &spec, &mut NoHook)?;
    save_model(&trained, &args.output)?;
    if let Some(path) = &args.report {
        let page = Report {
            title: format!("whittle continual: {} on {}", outcome.strategy, args.model),
            notes: vec![format!(
                "{} on {}, {} tasks, seeds {:?}",
                outcome.scenario,
                args.data,
                outcome.tasks.len(),
                args.seeds
            )],
            continual: Some(outcome.clone()),
            ..Default::default()
        };
        report::write(&page, path)?;
    }
    let summary = Summary {
        output: args.output.display().to_string(),
        report: &outcome,
    };
    if args.json {
        return crate::report::print_json(&summary);
    }
    print_text(&outcome, &args.output);
    Ok(())
}

/// The run's settings from the flags, checked (errors name the flag).
fn spec(args: &Args) -> anyhow::Result<ContinualSpec> {
    let training = ContinualConfig {
        strategy: args.strategy.parse()?,
        buffer: args.buffer,
        buffer_policy: args.buffer_policy.parse()?,
        epochs_per_task: args.epochs_per_task,
        batch_size: args.batch_size,
        replay_batch: args.replay_batch,
        lr: args.lr,
        schedule: lr_schedule("--lr-schedule", &args.lr_schedule)?,
        ace: args.ace,
        ncm: match &args.ncm {
            Some(distance) => distance.parse()?,
            None => Ncm::Off,
        },
        replay_augment: args.replay_augment,
        alpha: args.alpha,
        beta: args.beta,
        ewc_lambda: args.ewc_lambda,
        ..ContinualConfig::default()
    };
    let spec = ContinualSpec {
        data: args.data.clone(),
        scenario: args.scenario.clone(),
        tasks: args.tasks,
        classes_per_task: args.classes_per_task,
        task_order: args.task_order.clone(),
        permutations: args.permutations,
        train_samples: args.train_samples,
        test_samples: args.test_samples,
        seeds: args.seeds.clone(),
        baselines: !args.no_baselines,
        training,
        lora_rank: args.lora_rank,
        lora_alpha: args.lora_alpha,
        compress: CompressConfig {
            quantize: args
                .quantize
                .iter()
                .filter_map(|p| match p.as_str() {
                    "fp16" => Some(Precision::Fp16),
                    "int8" => Some(Precision::Int8),
                    _ => None,
                })
                .collect(),
            prune: args.prune,
            finetune_epochs: args.prune_finetune_epochs,
            during: args.compress_during,
            ..CompressConfig::default()
        },
    };
    spec.validate().map_err(|e| {
        let mut text = e.to_string();
        for (key, flag) in COMPRESS_FLAGS {
            text = text.replace(key, flag);
        }
        anyhow::anyhow!(text)
    })?;
    Ok(spec)
}

/// The R matrix and the figures for a terminal.
fn print_text(c: &ContinualReport, output: &Path) {
    let pct = |v: f64| format!("{:6.2}", 100.0 * v);
    println!(
        "R matrix ({}, {}; % on each task after each task):",
        c.strategy, c.scenario
    );
    for (i, row) in c.summary.r_matrix.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|&v| pct(v)).collect();
        println!("  after task {}: {}", i + 1, cells.join(" "));
    }
    let line = |name: &str, s: &whittle_pipeline::continual::Summary| {
        let pm = |m: f64, sd: Option<f64>| match sd {
            Some(sd) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * sd),
            None => format!("{:.2}", 100.0 * m),
        };
        let til = s
            .task_il_accuracy
            .map(|t| format!(", task-IL {}%", pm(t, s.task_il_accuracy_std)))
            .unwrap_or_default();
        println!(
            "{name}: average accuracy {}%, forgetting {} points, BWT {} points{til} ({:.1} s per run)",
            pm(s.average_accuracy, s.average_accuracy_std),
            pm(s.forgetting, s.forgetting_std),
            pm(s.bwt, s.bwt_std),
            s.seconds
        );
    };
    line(&c.strategy, &c.summary);
    for (name, s) in &c.baselines {
        line(name, s);
    }
    for (name, m) in &c.compressed {
        let fps = m
            .fps
            .map(|f| format!(", {f:.0} FPS in ORT"))
            .unwrap_or_default();
        println!(
            "{name}: average accuracy {:.2}%, forgetting {:.2} points, {} bytes, {} parameters ({} non-zero){fps}",
            100.0 * m.average_accuracy,
            100.0 * m.forgetting,
            m.size_bytes,
            m.parameters,
            m.nonzero_parameters
        );
    }
    println!("wrote {}", output.display());
}
