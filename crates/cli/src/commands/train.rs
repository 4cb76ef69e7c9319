//! `whittle train`: train (or fine-tune) a classifier on a labelled dataset and write the
//! trained model. Settings come from flags and optionally a YAML or TOML file (`--config`);
//! flags override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::output::{check_output, save_model, InputModel};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_pipeline::step::train::{LrSchedule, TrainOutcome, TrainStep, Training};
use whittle_pipeline::{Ctx, ModelSource};

use crate::observer::CliObserver;

/// Arguments of `whittle train`.
#[derive(clap::Args)]
pub struct Args {
    /// Training settings (also readable from --config).
    #[command(flatten)]
    settings: Settings,
    /// YAML (.yaml/.yml) or TOML (.toml) file with the same settings (kebab-case keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run saved in this checkpoint directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where to write the trained model.
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite an existing output file, and the checkpoint in --checkpoint-dir.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Every setting of a run; each may come from the command line or the config file.
#[derive(clap::Args, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// The model: zoo:NAME or MODEL.onnx (with --resume: the checkpoint's, if left out).
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Dataset: mnist:DIR, fashion-mnist:DIR or npy:X.npy,Y.npy (its training split).
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Use only the first N samples.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Epochs [default: 1].
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Samples per batch [default: 32].
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// sgd | adam | adamw [default: adamw].
    #[arg(long)]
    pub(crate) optimizer: Option<String>,
    /// Peak learning rate [default: 0.003].
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// SGD momentum [default: 0].
    #[arg(long)]
    momentum: Option<f64>,
    /// SGD Nesterov momentum.
    #[arg(long)]
    nesterov: Option<bool>,
    /// Weight decay (decoupled for adamw) [default: 0].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// constant | step | polynomial | warmup-cosine | warmup-exponential | warmup-step | one-cycle
    /// [default: warmup-cosine, without warmup unless --warmup-steps/--warmup-epochs].
    #[arg(long)]
    lr_schedule: Option<String>,
    /// Warmup optimizer steps (warmup-* schedules).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Warmup in epochs (instead of --warmup-steps).
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Steps between decays (step, warmup-step) [default: one epoch].
    #[arg(long)]
    step_size: Option<usize>,
    /// Decay factor (step, warmup-step: per decay [0.1]; warmup-exponential: per step [0.99]).
    #[arg(long)]
    gamma: Option<f64>,
    /// Final rate (warmup-cosine, polynomial, one-cycle) [default: 0 / from final-div-factor].
    #[arg(long)]
    min_lr: Option<f64>,
    /// Polynomial exponent [default: 1].
    #[arg(long)]
    power: Option<f64>,
    /// One-cycle: initial rate = lr / div-factor [default: 25].
    #[arg(long)]
    div_factor: Option<f64>,
    /// One-cycle: fraction of steps rising [default: 0.3].
    #[arg(long)]
    pct_start: Option<f64>,
    /// One-cycle: final rate = initial / final-div-factor [default: 1e4].
    #[arg(long)]
    final_div_factor: Option<f64>,
    /// Label smoothing of the cross-entropy.
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step (at least 1) [default: 1].
    #[arg(long)]
    accumulate: Option<usize>,
    /// Do not train initializers matching this glob (or re:REGEX); repeatable.
    #[arg(long)]
    #[serde(default)]
    freeze: Vec<String>,
    /// Hold out this fraction of the data for validation.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Early stopping: epochs without improvement of the validation metric.
    #[arg(long)]
    patience: Option<usize>,
    /// Early-stopping metric: val-accuracy | val-loss.
    #[arg(long)]
    monitor: Option<String>,
    /// Write a checkpoint here after every epoch (state.json and epoch-N/, replaced
    /// atomically; an existing checkpoint needs --force).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Seed of shuffling, the validation split and dropout [default: 0].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Gradient checkpointing: recompute activations in this many graph segments.
    #[arg(long)]
    recompute_segments: Option<usize>,
    /// Augmentation: pad training images by this many pixels, then crop back at random.
    #[arg(long)]
    crop_padding: Option<usize>,
    /// Augmentation: mirror training images left-right at random (true/false).
    #[arg(long)]
    horizontal_flip: Option<bool>,
    /// With validation data, end with the weights of the best epoch [default: true].
    #[arg(long)]
    restore_best: Option<bool>,
}

/// What `whittle train --json` prints.
#[derive(Serialize)]
struct Summary {
    output: String,
    #[serde(flatten)]
    outcome: TrainOutcome,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = match &args.config {
        Some(path) => overlay(read_settings(path)?, &args.settings)?,
        None => args.settings,
    };
    let model_spec = settings.model.clone();
    if model_spec.is_none() && args.resume.is_none() {
        bail!("--model is required (zoo:NAME or MODEL.onnx)");
    }
    let Some(data) = settings.data.clone() else {
        bail!("--data is required");
    };
    let input = model_spec.as_deref().map(Path::new);
    check_outputs(
        &settings,
        input,
        args.resume.as_deref(),
        &args.output,
        args.force,
    )?;
    let step = TrainStep {
        limit: settings.limit,
        val_fraction: settings.val_fraction,
        checkpoint_dir: settings.checkpoint_dir.clone(),
        resume: args.resume.clone(),
        training: training(&settings)?,
        identity: identity(&settings),
        data_role: "--data".into(),
        ..TrainStep::new(data)
    };
    let model = match (&args.resume, &model_spec) {
        (None, Some(spec)) => Some(build_model(spec)?),
        _ => None,
    };
    let observer = CliObserver::new(args.json);
    let (model, outcome) = step.train(&mut Ctx::new(&observer), model)?;
    save_model(&model, &args.output)?;
    if args.json {
        return crate::report::print_json(&Summary {
            output: args.output.display().to_string(),
            outcome,
        });
    }
    let report = &outcome.report;
    println!(
        "trained {} parameters for {} epochs ({} steps){}; wrote {}",
        crate::report::human_count(report.trainable_parameters as u64),
        report.epochs.len(),
        report.steps,
        if report.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        args.output.display()
    );
    Ok(())
}

/// Checks, before any training, the output `-o` and the `--checkpoint-dir` of a command
/// whose input model is `input` (a path or `zoo:NAME`; `None` when it comes from `resume`).
pub(crate) fn check_outputs(
    settings: &Settings,
    input: Option<&Path>,
    resume: Option<&Path>,
    output: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let input = input.unwrap_or(Path::new(""));
    check_output(input, output, force, InputModel::Protected)?;
    if let Some(dir) = &settings.checkpoint_dir {
        let protected = [(input, "the input model"), (output, "the output")];
        whittle_train::checkpoint::check_dir(dir, resume, &protected, force)?;
    }
    Ok(())
}

/// What a checkpoint of this run records, so that resuming with another `--model`,
/// `--data` or `--limit` is refused (a model file by its full path).
fn identity(s: &Settings) -> BTreeMap<String, String> {
    let model = s.model.as_ref().map(|m| match Path::new(m).canonicalize() {
        Ok(path) if !m.starts_with(whittle_zoo::PREFIX) => path.display().to_string(),
        _ => m.clone(),
    });
    let limit = Some(s.limit.map_or("none".to_string(), |l| l.to_string()));
    [
        ("--model", model),
        ("--data", s.data.clone()),
        ("--limit", limit),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v?)))
    .collect()
}

/// Fails when `--model` was given to a command that names its model otherwise (`instead`),
/// rather than ignoring it.
pub(crate) fn refuse_model_setting(settings: &Settings, instead: &str) -> anyhow::Result<()> {
    if let Some(model) = &settings.model {
        bail!("--model {model} does not apply to this command: give the model as {instead}");
    }
    Ok(())
}

/// Loads `MODEL.onnx`, or builds `zoo:NAME`.
pub(crate) fn build_model(spec: &str) -> anyhow::Result<Model> {
    ModelSource::parse(spec)
        .load()
        .with_context(|| format!("--model {spec}"))
}

/// Reads settings from a YAML or TOML file (by extension).
fn read_settings(path: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let parsed = match ext {
        "toml" => toml::from_str(&text).map_err(anyhow::Error::from),
        "yaml" | "yml" => serde_norway::from_str(&text).map_err(anyhow::Error::from),
        _ => bail!(
            "--config {}: expected a .yaml, .yml or .toml file",
            path.display()
        ),
    };
    parsed.with_context(|| format!("--config {}", path.display()))
}

/// `file` with every setting given on the command line replaced.
fn overlay(file: Settings, flags: &Settings) -> anyhow::Result<Settings> {
    let mut merged = serde_json::to_value(file)?;
    let serde_json::Value::Object(flags) = serde_json::to_value(flags)? else {
        bail!("settings are not an object");
    };
    for (key, value) in flags {
        let given = !(value.is_null() || value.as_array().is_some_and(Vec::is_empty));
        if given {
            merged[key] = value;
        }
    }
    Ok(serde_json::from_value(merged)?)
}

/// Parses a kebab-case setting value into one of the trainer's enums.
fn parse_enum<T: serde::de::DeserializeOwned>(option: &str, value: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| anyhow::anyhow!("--{option} {value} is not a known choice"))
}

/// The trainer's settings given by the flags, the trainer's defaults for the others.
pub(crate) fn training(s: &Settings) -> anyhow::Result<Training> {
    let d = Training::default();
    let schedule = LrSchedule {
        kind: match &s.lr_schedule {
            Some(kind) => parse_enum("lr-schedule", kind)?,
            None => d.lr_schedule.kind,
        },
        warmup_steps: s.warmup_steps,
        warmup_epochs: s.warmup_epochs,
        step_size: s.step_size,
        gamma: s.gamma,
        min_lr: s.min_lr,
        power: s.power,
        div_factor: s.div_factor,
        pct_start: s.pct_start,
        final_div_factor: s.final_div_factor,
    };
    Ok(Training {
        epochs: s.epochs.unwrap_or(d.epochs),
        batch_size: s.batch_size.unwrap_or(d.batch_size),
        optimizer: match &s.optimizer {
            Some(o) => parse_enum("optimizer", o)?,
            None => d.optimizer,
        },
        lr: s.lr.unwrap_or(d.lr),
        momentum: s.momentum.unwrap_or(d.momentum),
        nesterov: s.nesterov.unwrap_or(d.nesterov),
        weight_decay: s.weight_decay.unwrap_or(d.weight_decay),
        lr_schedule: schedule,
        label_smoothing: s.label_smoothing.unwrap_or(d.label_smoothing),
        clip_grad_norm: s.clip_grad_norm,
        accumulate: s.accumulate.unwrap_or(d.accumulate),
        freeze: s.freeze.clone(),
        patience: s.patience,
        monitor: match &s.monitor {
            Some(m) => parse_enum("monitor", m)?,
            None => d.monitor,
        },
        seed: s.seed,
        recompute_segments: s.recompute_segments,
        crop_padding: s.crop_padding.unwrap_or(d.crop_padding),
        horizontal_flip: s.horizontal_flip.unwrap_or(d.horizontal_flip),
        restore_best: s.restore_best.unwrap_or(d.restore_best),
    })
}
