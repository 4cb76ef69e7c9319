//! One trial: a candidate's steps run through the pipeline's [`Runner`] (each step's model
//! cached by content key in the work folder), then measured in stages: cost and latency,
//! the hard subset (a candidate confidently outside the accuracy budget stops there), the
//! full test set. A candidate much slower than the baseline in ONNX Runtime stops after
//! its latency when latency matters to the target (dynamic INT8 of a conv model runs as
//! ConvInteger, several times slower, and is as slow to evaluate). Each finished trial is a line of the work folder's `auto.jsonl`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use whittle_ir::Model;
use whittle_pipeline::journal::Record;
use whittle_pipeline::recipe::Recipe;
use whittle_pipeline::runner::Runner;
use whittle_pipeline::step::StepConfig;
use whittle_pipeline::{cache, Ctx, ModelSource, Observer, Result};

use super::measure::{Cost, Meter};
use super::predict::Prediction;
use super::space::Candidate;

/// What became of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Measured on the full test set.
    Measured,
    /// Stopped after the hard subset (confidently outside the accuracy budget) or after
    /// its latency (much slower than the baseline).
    Dropped,
    /// A step failed.
    Failed,
}

/// One finished trial, as journalled.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trial {
    /// The trial's content key (baseline, candidate, settings).
    pub key: String,
    /// Its number in the search, from 1.
    pub number: usize,
    /// The candidate.
    pub candidate: Candidate,
    /// Its name.
    pub name: String,
    /// Its pipeline steps.
    pub steps: Vec<StepConfig>,
    /// Its model in the work folder (None when a step failed).
    pub model: Option<PathBuf>,
    /// What the predictor expected (None for an action measured alone first).
    pub predicted: Option<Prediction>,
    /// Cost and latency (None when a step failed).
    pub cost: Option<Cost>,
    /// Accuracy drop estimated from the hard subset, points of the full test set.
    pub subset_drop_pts: Option<f64>,
    /// Top-1 accuracy on the full test set, 0..1 (None when dropped or failed).
    pub accuracy: Option<f64>,
    /// What became of it.
    pub verdict: Verdict,
    /// Why (the error, or the estimate that dropped it).
    pub reason: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Seconds each step took (0 when its model was cached).
    #[serde(default)]
    pub step_seconds: Vec<f64>,
    /// Seconds its measurements took (cost and latency, subset, full test set).
    #[serde(default)]
    pub measure_seconds: f64,
}

impl Record for Trial {
    const FILE: &'static str = "auto.jsonl";
    fn key(&self) -> &str {
        &self.key
    }
}

impl Trial {
    /// Accuracy lost against `baseline` (0..1 accuracy), points: measured on the full set,
    /// else estimated from the subset.
    pub fn drop_pts(&self, baseline: f64) -> Option<f64> {
        match self.accuracy {
            Some(a) => Some(100.0 * (baseline - a)),
            None => self.subset_drop_pts,
        }
    }
}

/// What a trial is run with.
pub struct Bench<'a> {
    /// The baseline's file in the work folder.
    pub baseline: &'a Path,
    /// Its accuracy on the hard subset.
    pub hard_accuracy: f64,
    /// Its ONNX Runtime latency, milliseconds.
    pub latency_ms: f64,
    /// The meter.
    pub meter: &'a Meter,
    /// The work folder.
    pub work_dir: &'a Path,
    /// Seed and threads of the steps.
    pub seed: u64,
    /// Threads.
    pub threads: usize,
    /// Receives progress.
    pub observer: &'a dyn Observer,
}

/// A trial to run.
pub struct Plan {
    /// Its content key.
    pub key: String,
    /// Its number.
    pub number: usize,
    /// The candidate.
    pub candidate: Candidate,
    /// Its steps.
    pub steps: Vec<StepConfig>,
    /// What the predictor expects.
    pub predicted: Option<Prediction>,
    /// Drop above which the subset stops it (None: always measured in full).
    pub drop_limit: Option<f64>,
    /// Latency over the baseline's above which it stops before any accuracy (None:
    /// never).
    pub slow_limit: Option<f64>,
}

impl Bench<'_> {
    /// Runs `plan`: its steps, then the measurements; a failing step is a failed trial,
    /// not an error.
    pub fn run(&self, plan: Plan) -> Trial {
        let start = Instant::now();
        let mut trial = Trial {
            key: plan.key,
            number: plan.number,
            candidate: plan.candidate,
            name: plan.candidate.name(),
            steps: plan.steps,
            model: None,
            predicted: plan.predicted,
            cost: None,
            subset_drop_pts: None,
            accuracy: None,
            verdict: Verdict::Failed,
            reason: String::new(),
            seconds: 0.0,
            step_seconds: Vec::new(),
            measure_seconds: 0.0,
        };
        if let Err(e) = self.measure(&mut trial, plan.drop_limit, plan.slow_limit) {
            trial.verdict = Verdict::Failed;
            trial.reason = e.to_string();
        }
        trial.seconds = start.elapsed().as_secs_f64();
        trial
    }

    fn measure(
        &self,
        trial: &mut Trial,
        drop_limit: Option<f64>,
        slow_limit: Option<f64>,
    ) -> Result<()> {
        let recipe = Recipe {
            model: ModelSource::File(self.baseline.to_path_buf()),
            output: None,
            seed: self.seed,
            threads: Some(self.threads),
            evaluate: None,
            steps: trial.steps.clone(),
        };
        let runner = Runner {
            work_dir: self.work_dir.to_path_buf(),
            observer: self.observer,
        };
        let run = runner.run(&recipe)?;
        let key = run.steps.last().map(|s| s.key.clone()).unwrap_or_default();
        trial.model = Some(cache::model_path(self.work_dir, &key));
        trial.step_seconds = (run.steps.iter())
            .map(|s| if s.cached { 0.0 } else { s.seconds })
            .collect();
        let model: Model = run.model;
        drop(run.input);
        let start = Instant::now();
        let result = self.measure_model(trial, &model, drop_limit, slow_limit);
        trial.measure_seconds = start.elapsed().as_secs_f64();
        result
    }

    fn measure_model(
        &self,
        trial: &mut Trial,
        model: &Model,
        drop_limit: Option<f64>,
        slow_limit: Option<f64>,
    ) -> Result<()> {
        let mut ctx = Ctx::new(self.observer);
        ctx.seed = self.seed;
        ctx.threads = Some(self.threads);
        let cost = self.meter.cost(&ctx, model)?;
        let slower = cost.latency_ms / self.latency_ms;
        trial.cost = Some(cost);
        if let Some(limit) = slow_limit.filter(|l| slower > *l) {
            trial.verdict = Verdict::Dropped;
            trial.reason = format!(
                "{slower:.2}x the baseline's latency in ONNX Runtime, over the {limit:.2}x allowed before measuring accuracy"
            );
            return Ok(());
        }
        let hard = self.meter.accuracy(&ctx, model, true)?;
        let hard_len = self.meter.hard_len() as f64;
        let subset = 100.0 * (self.hard_accuracy - hard) * hard_len / self.meter.samples() as f64;
        trial.subset_drop_pts = Some(subset);
        if let Some(limit) = drop_limit.filter(|l| subset > *l) {
            trial.verdict = Verdict::Dropped;
            trial.reason =
                format!("hard subset: about {subset:.2} points lost, over the {limit:.2} allowed");
            return Ok(());
        }
        trial.accuracy = Some(self.meter.accuracy(&ctx, model, false)?);
        trial.verdict = Verdict::Measured;
        Ok(())
    }
}
