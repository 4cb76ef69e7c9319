//! The search's journals in the work folder and the one job every candidate runs through,
//! locally or on a cluster: measure a candidate, score it with the zero-cost proxy, or train
//! it at a rung. A job's result is
//! found by its key, so a killed search resumes where it stopped and a job never runs twice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_pipeline::journal::{Journal, Record};
use whittle_pipeline::step::train::{TrainStep, Training};
use whittle_pipeline::{Ctx, Observer};

use crate::nas::candidate::Candidate;
use crate::nas::error::{At, Result};
use crate::nas::halving::{Rung, VAL_FRACTION};
use crate::nas::measure::{measure, Measurement};
use crate::nas::shrink;

/// A measured candidate (`nas-measured.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The candidate's id.
    pub key: String,
    /// The candidate.
    pub candidate: Candidate,
    /// Its measurements.
    pub measurement: Measurement,
}

impl Record for Measured {
    const FILE: &'static str = "nas-measured.jsonl";
    fn key(&self) -> &str {
        &self.key
    }
}

/// A candidate trained at one rung (`nas-trained.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    /// `ID-rRUNG`.
    pub key: String,
    /// The candidate's id.
    pub id: String,
    /// The rung.
    pub rung: Rung,
    /// Accuracy on the rung's held-out samples, 0..1.
    pub accuracy: f64,
    /// Seconds of training.
    pub seconds: f64,
}

impl Record for Trained {
    const FILE: &'static str = "nas-trained.jsonl";
    fn key(&self) -> &str {
        &self.key
    }
}

/// A candidate's zero-cost proxy score (`nas-proxy.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proxied {
    /// [`proxy_key`] of the candidate's id.
    pub key: String,
    /// [`crate::nas::proxy::naswot`]: `ln |det K|`, `None` when `K` is singular.
    pub score: Option<f64>,
}

impl Record for Proxied {
    const FILE: &'static str = "nas-proxy.jsonl";
    fn key(&self) -> &str {
        &self.key
    }
}

/// The key of `id`'s proxy score: `ID-naswot` (another proxy would get another key, so
/// journals never mix them).
pub fn proxy_key(id: &str) -> String {
    format!("{id}-naswot")
}

/// The key of `id` trained at `rung`.
pub fn trained_key(id: &str, rung: usize) -> String {
    format!("{id}-r{rung}")
}

/// What a job does to a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Build and measure it.
    Measure,
    /// Score it, untrained, with the zero-cost proxy.
    Proxy,
    /// Train it at this rung, from its initial weights.
    Train(Rung),
}

/// The settings every job of a search shares.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSettings {
    /// Training data SPEC.
    pub data: String,
    /// ONNX Runtime and executor threads.
    pub threads: usize,
    /// Seed of data order and validation split.
    pub seed: u64,
    /// The trained model a pruned space shrinks (`--from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
}

/// A job's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A measurement.
    Measured(Measured),
    /// A training result.
    Trained(Trained),
    /// A proxy score.
    Proxied(Proxied),
}

/// Where a candidate's files lie in the work folder: `candidates/ID.onnx` (initial or,
/// pruned, trained weights), `candidates/ID-rRUNG.onnx` (trained at the last rung).
pub fn model_path(work_dir: &Path, key: &str) -> PathBuf {
    work_dir.join("candidates").join(format!("{key}.onnx"))
}

/// Runs `task` on `candidate` with `settings`, writing its models under `work_dir`.
pub fn run_job(
    observer: &dyn Observer,
    settings: &JobSettings,
    candidate: &Candidate,
    task: Task,
    last_rung: bool,
    work_dir: &Path,
) -> Result<Outcome> {
    let model = build(settings, candidate)?;
    match task {
        Task::Measure => {
            let path = model_path(work_dir, &candidate.id);
            save(&model, &path)?;
            let measurement =
                measure(&model, &path, settings.threads).map_err(|e| at_candidate(candidate, e))?;
            Ok(Outcome::Measured(Measured {
                key: candidate.id.clone(),
                candidate: candidate.clone(),
                measurement,
            }))
        }
        Task::Proxy => {
            let batch = crate::nas::proxy::batch(&settings.data)?;
            let score = crate::nas::proxy::naswot(&model, &batch)
                .map_err(|e| at_candidate(candidate, e))?;
            Ok(Outcome::Proxied(Proxied {
                key: proxy_key(&candidate.id),
                score,
            }))
        }
        Task::Train(rung) => {
            let start = std::time::Instant::now();
            let key = trained_key(&candidate.id, rung.index);
            let (trained, accuracy) = train(observer, settings, model, rung, work_dir)
                .map_err(|e| at_candidate(candidate, e))?;
            if last_rung {
                save(&trained, &model_path(work_dir, &key))?;
            }
            Ok(Outcome::Trained(Trained {
                key,
                id: candidate.id.clone(),
                rung,
                accuracy,
                seconds: start.elapsed().as_secs_f64(),
            }))
        }
    }
}

/// The untrained zoo model of `candidate`, or the pruned `--from` model.
fn build(settings: &JobSettings, candidate: &Candidate) -> Result<Model> {
    match &settings.from {
        Some(path) => {
            let model = Model::load(path).at(|| format!("reading --from {}", path.display()))?;
            shrink::prune(&model, &candidate.genome).map_err(|e| at_candidate(candidate, e))
        }
        None => whittle_zoo::build(&candidate.spec).at(|| candidate.spec.clone()),
    }
}

fn at_candidate(candidate: &Candidate, e: crate::nas::NasError) -> crate::nas::NasError {
    crate::nas::NasError::At {
        context: format!("candidate {} ({})", candidate.id, candidate.spec),
        source: Box::new(e),
    }
}

/// Trains `model` at `rung`: its validation accuracy on the rung's held-out share.
fn train(
    observer: &dyn Observer,
    settings: &JobSettings,
    model: Model,
    rung: Rung,
    work_dir: &Path,
) -> Result<(Model, f64)> {
    let mut ctx = Ctx::new(observer);
    ctx.threads = Some(settings.threads);
    ctx.seed = settings.seed;
    ctx.work_dir = Some(work_dir.to_path_buf());
    let mut step = TrainStep::new(settings.data.clone());
    step.limit = Some(rung.samples);
    step.val_fraction = Some(VAL_FRACTION);
    step.data_role = "--data".into();
    step.training = Training {
        epochs: rung.epochs,
        ..Training::default()
    };
    let (model, outcome) = step.train(&mut ctx, Some(model))?;
    Ok((model, outcome.final_accuracy.unwrap_or(0.0)))
}

/// Writes `model` to `path`, creating its folder.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(|| format!("creating {}", dir.display()))?;
    }
    model
        .save(path, &Default::default())
        .at(|| format!("writing {}", path.display()))
}

/// The journals of a work folder.
pub struct Trials {
    /// Every measured candidate.
    pub measured: Journal<Measured>,
    /// Every training result.
    pub trained: Journal<Trained>,
    /// Every proxy score.
    pub proxied: Journal<Proxied>,
}

impl Trials {
    /// Opens (or starts) the journals of `work_dir`.
    pub fn open(work_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(work_dir).at(|| format!("creating {}", work_dir.display()))?;
        Ok(Trials {
            measured: Journal::open(work_dir)?,
            trained: Journal::open(work_dir)?,
            proxied: Journal::open(work_dir)?,
        })
    }

    /// Records a job's outcome.
    pub fn record(&mut self, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Measured(m) => self.measured.append(m)?,
            Outcome::Trained(t) => self.trained.append(t)?,
            Outcome::Proxied(p) => self.proxied.append(p)?,
        }
        Ok(())
    }
}
