//! `whittle qat`: quantization-aware training. The model trains with fake quantization
//! where static INT8 quantization puts its Q/DQ pairs and is written in the same QDQ
//! layout as `whittle quantize --mode static`.
//!
//! The run is split into phases at the epoch options: float epochs before
//! `--start-epoch`; then fake quantization, with activation ranges calibrated on
//! `--calib-samples` training images (or taken from the input's Q/DQ pairs when it is a
//! QDQ model). Without `--lsq` the ranges are re-calibrated at the start of every
//! quantized epoch before `--freeze-observers-epoch` (default: calibrated once, then
//! frozen); with `--lsq` the scales are learned until that epoch (default: to the end).
//! From `--freeze-bn-epoch` BatchNormalization is folded into the preceding Conv for the
//! remaining epochs. Each phase is a fresh trainer (optimizer state and the LR schedule
//! restart at phase boundaries).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;
use whittle_data::Dataset;
use whittle_exec::{Executor, Value};
use whittle_ir::Model;
use whittle_passes::qat::{self, insert::ScaleMode, QatState};
use whittle_passes::quantize::{self, QuantConfig};
use whittle_pipeline::error::Context as PipelineContext;
use whittle_pipeline::step::train::{load_training, observed};
use whittle_train::{EpochReport, Trainer};

use super::datasets::{check_batch, dataset_batches, eval_set, single_input};
use super::distill::check_test_samples;
use super::output::save_model;
use super::quantize::CalibrationArg;
use super::train::{build_model, check_outputs, refuse_model_setting, training, Settings};
use super::vnni::reduce_range_note;
use crate::observer::CliObserver;

/// Arguments of `whittle qat`.
#[derive(clap::Args)]
pub struct Args {
    /// The float (or QDQ-quantized) model: MODEL.onnx or zoo:NAME.
    #[arg(value_name = "MODEL")]
    input: String,
    /// Where to write the QDQ model.
    #[arg(short, long)]
    output: PathBuf,
    /// Float epochs before fake quantization is inserted.
    #[arg(long, default_value_t = 0)]
    start_epoch: usize,
    /// Fold BatchNormalization into the preceding Conv from this epoch.
    #[arg(long)]
    freeze_bn_epoch: Option<usize>,
    /// Activation scales stop changing from this epoch.
    #[arg(long)]
    freeze_observers_epoch: Option<usize>,
    /// Learn the activation step sizes (LSQ).
    #[arg(long)]
    lsq: bool,
    /// How activation ranges are calibrated.
    #[arg(long, value_enum, default_value = "minmax")]
    calibration: CalibrationArg,
    /// Percentile for --calibration percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Training images used for calibration.
    #[arg(long, default_value_t = 512)]
    calib_samples: usize,
    /// One weight scale per output channel.
    #[arg(long)]
    per_channel: bool,
    /// 7-bit weights: ONNX Runtime's int8 kernels on CPUs without VNNI can saturate with
    /// full-range weights (as `whittle quantize --reduce-range`).
    #[arg(long)]
    reduce_range: bool,
    /// Test images for the accuracies (default: the whole test split).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Training settings (as `whittle train`; --model is the positional MODEL here).
    #[command(flatten)]
    settings: Settings,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// One trained epoch and whether it ran with fake quantization.
#[derive(Serialize)]
struct QatEpoch {
    phase: &'static str,
    #[serde(flatten)]
    report: EpochReport,
}

/// What `whittle qat --json` prints.
#[derive(Serialize)]
struct Summary {
    output: String,
    accuracy_fp32: f64,
    accuracy_ptq: f64,
    accuracy_qat: f64,
    test_samples: usize,
    size_fp32: u64,
    size_qat: u64,
    quantized_nodes: usize,
    epochs: Vec<QatEpoch>,
    /// Warnings about running the model (e.g. full-range int8 weights on a CPU without VNNI).
    notes: Vec<String>,
}

/// Epoch ranges trained as one trainer run.
#[derive(Clone, Copy, Debug)]
struct Phase {
    first: usize,
    end: usize,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    refuse_model_setting(&args.settings, "the MODEL argument")?;
    let epochs = args.settings.epochs.unwrap_or(1);
    check_args(&args, epochs)?;
    let cfg = QuantConfig {
        per_channel: args.per_channel,
        reduce_range: args.reduce_range,
        calibration: args.calibration.method(args.percentile),
        ..QuantConfig::default()
    };
    let input = build_model(&args.input)?;
    let state = initial_state(&input)?;
    quantize::prepare(state.model.clone(), &cfg, quantize::WeightSource::Any)
        .with_context(|| format!("{}: nothing to train with fake quantization", args.input))?;
    let Some(spec) = args.settings.data.clone() else {
        bail!("--data is required");
    };
    let train = load_training(&spec, "--data", Some(&state.model), args.settings.limit)?;
    let exec = Executor::new(&state.model)?;
    let input_name = single_input(&exec.inputs(), "--data")?;
    let calib = dataset_batches(&input_name.name, &train.images, args.calib_samples)?;
    check_batch(&input_name, &calib, "--data")?;
    let eval = eval_set(&exec.inputs(), &spec, args.test_samples, "--data")?;
    let (ptq, _) = quantize::static_int8(&state.model, &cfg, calib.clone())?;
    let state_model = state.model.clone();
    let observer = CliObserver::new(args.json);
    let run = Run {
        observer: &observer,
        args: &args,
        cfg: &cfg,
        train: &train,
        calib: &calib,
    };
    let (trained, reports) = run.train_phases(state, epochs)?;
    let (exported, plan) = qat::export::export_qdq(&trained, &cfg)?;
    save_model(&exported, &args.output)?;
    let summary = Summary {
        output: args.output.display().to_string(),
        accuracy_fp32: eval.accuracy(&state_model)?,
        accuracy_ptq: eval.accuracy(&ptq)?,
        accuracy_qat: eval.accuracy(&exported)?,
        test_samples: eval.labels.as_ref().map_or(0, Vec::len),
        size_fp32: input.encoded_len() as u64,
        size_qat: Model::disk_size(&args.output)?,
        quantized_nodes: plan.targets.len(),
        epochs: reports,
        notes: reduce_range_note(&cfg).into_iter().collect(),
    };
    print_summary(&summary, args.json)
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        return crate::report::print_json(s);
    }
    println!(
        "accuracy on {} test samples: fp32 {:.2}%, PTQ int8 {:.2}%, QAT int8 {:.2}%",
        s.test_samples,
        100.0 * s.accuracy_fp32,
        100.0 * s.accuracy_ptq,
        100.0 * s.accuracy_qat
    );
    println!(
        "size {} -> {}; wrote {}",
        crate::report::human_bytes(s.size_fp32),
        crate::report::human_bytes(s.size_qat),
        s.output
    );
    for note in &s.notes {
        println!("note: {note}");
    }
    Ok(())
}

/// Refuses inconsistent epoch and sample options and outputs that cannot be written.
fn check_args(args: &Args, epochs: usize) -> anyhow::Result<()> {
    if args.start_epoch >= epochs {
        bail!(
            "--start-epoch {} must be below --epochs {epochs} (no epoch would train quantized)",
            args.start_epoch
        );
    }
    check_test_samples(args.test_samples)?;
    if args.calib_samples == 0 {
        bail!("--calib-samples must be at least 1");
    }
    let input = Some(std::path::Path::new(&args.input));
    check_outputs(&args.settings, input, None, &args.output, args.force)?;
    if !(args.percentile > 50.0 && args.percentile <= 100.0) {
        bail!("--percentile must be in (50, 100], got {}", args.percentile);
    }
    Ok(())
}

/// The float state of the input (with the scales of its Q/DQ pairs when it is a QDQ model).
fn initial_state(input: &Model) -> anyhow::Result<QatState> {
    if qat::import::is_qdq(input) {
        return Ok(qat::import::from_qdq(input)?);
    }
    Ok(QatState {
        model: input.clone(),
        params: HashMap::new(),
    })
}

/// Everything the phases share.
struct Run<'a> {
    args: &'a Args,
    cfg: &'a QuantConfig,
    train: &'a Dataset,
    calib: &'a [HashMap<String, Value>],
    observer: &'a CliObserver,
}

impl Run<'_> {
    /// First quantized epoch from which activation scales stay fixed.
    fn freeze_observers(&self, epochs: usize) -> usize {
        match (self.args.freeze_observers_epoch, self.args.lsq) {
            (Some(k), _) => k,
            (None, true) => epochs,
            (None, false) => self.args.start_epoch + 1,
        }
    }

    /// Phase boundaries: every option epoch, and every epoch that re-calibrates.
    fn phases(&self, epochs: usize) -> Vec<Phase> {
        let start = self.args.start_epoch;
        let freeze = self.freeze_observers(epochs);
        let mut cuts = vec![0, start, epochs, freeze];
        cuts.extend(self.args.freeze_bn_epoch);
        if !self.args.lsq {
            cuts.extend(start..freeze);
        }
        cuts.retain(|&c| c <= epochs);
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .map(|w| Phase {
                first: w[0],
                end: w[1],
            })
            .collect()
    }

    fn train_phases(
        &self,
        mut state: QatState,
        epochs: usize,
    ) -> anyhow::Result<(QatState, Vec<QatEpoch>)> {
        let mut reports = Vec::new();
        for phase in self.phases(epochs) {
            if self.args.freeze_bn_epoch.is_some_and(|k| phase.first >= k) {
                state.model = qat::fold_batchnorm(&state.model)?;
            }
            let quantized = phase.first >= self.args.start_epoch;
            if quantized && self.recalibrates(phase, epochs) {
                let mut fresh = QatState::calibrate(&state.model, self.cfg, self.calib.to_vec())?;
                if phase.first == self.args.start_epoch {
                    // Scales of a QDQ input win over the calibrated ones.
                    fresh.params.extend(state.params.drain());
                }
                state = fresh;
            }
            let (next, done) = self.train_phase(&state, phase, quantized, epochs)?;
            state = next;
            let name = if quantized { "qat" } else { "float" };
            reports.extend(done.into_iter().map(|report| QatEpoch {
                phase: name,
                report,
            }));
        }
        Ok((state, reports))
    }

    /// Whether the phase starts by calibrating: the first quantized phase, and every
    /// phase before the observers freeze (without --lsq).
    fn recalibrates(&self, phase: Phase, epochs: usize) -> bool {
        phase.first == self.args.start_epoch
            || (!self.args.lsq && phase.first < self.freeze_observers(epochs))
    }

    fn train_phase(
        &self,
        state: &QatState,
        phase: Phase,
        quantized: bool,
        epochs: usize,
    ) -> anyhow::Result<(QatState, Vec<EpochReport>)> {
        let graph = if quantized {
            let learn = self.args.lsq && phase.first < self.freeze_observers(epochs);
            let mode = if learn {
                ScaleMode::Learned
            } else {
                ScaleMode::Fixed
            };
            qat::insert::training_graph(state, self.cfg, mode)?
        } else {
            state.model.clone()
        };
        let mut config = training(&self.args.settings)?.config(self.train.len(), 0)?;
        config.epochs = phase.end - phase.first;
        config.seed = config.seed.wrapping_add(phase.first as u64);
        let epochs_name = format!("epochs {}..{}", phase.first + 1, phase.end);
        let (trained, report) = observed(self.observer, config, |config| {
            let phase = || -> whittle_train::Result<_> {
                let mut trainer = Trainer::new(&graph, config)?;
                let report = trainer.fit(self.train, None)?;
                Ok((trainer.model()?, report))
            };
            PipelineContext::context(phase(), || epochs_name)
        })?;
        let next = if quantized {
            qat::strip::strip(&trained)?
        } else {
            QatState {
                model: trained,
                params: state.params.clone(),
            }
        };
        let epochs = report
            .epochs
            .into_iter()
            .map(|mut e| {
                e.epoch += phase.first;
                e
            })
            .collect();
        Ok((next, epochs))
    }
}
