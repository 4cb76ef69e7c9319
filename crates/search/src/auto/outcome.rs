//! What a search returns ([`Outcome`]): the status, the best trial, every trial; its JSON
//! form ([`Outcome::summary`], fractions 0..1, bytes, milliseconds) and its report
//! ([`Outcome::report`]: the pipeline's report with the search section).

use std::path::PathBuf;

use serde::Serialize;
use whittle_pipeline::eval::Metrics;
use whittle_pipeline::report::search::{self, Figures};
use whittle_pipeline::report::{ModelMetrics, Report};
use whittle_pipeline::step::StepConfig;

use super::config::Target;
use super::measure::Baseline;
use super::trial::{Trial, Verdict};
use crate::pareto::{Excess, Objectives};

/// Whether the result meets the constraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The best model meets every constraint.
    Ok,
    /// No candidate does; the output is the closest one.
    BudgetNotMet,
}

/// A candidate the search never ran, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The candidate.
    pub name: String,
    /// Why it was not run.
    pub reason: String,
}

/// The result of a search.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Whether the best meets the constraints.
    pub status: Status,
    /// Where the best model was written.
    pub output: PathBuf,
    /// The work folder.
    pub work_dir: PathBuf,
    /// The target.
    pub target: Target,
    /// The objectives and constraints.
    pub objectives: Objectives,
    /// The baseline's measurements.
    pub baseline: Baseline,
    /// The best trial's index, if any trial gave a model.
    pub best: Option<usize>,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
    /// Whether each trial meets every constraint.
    pub feasible: Vec<bool>,
    /// Each trial's score.
    pub scores: Vec<f64>,
    /// How far the best is from each constraint.
    pub excess: Vec<Excess>,
    /// Candidates not run.
    pub skipped: Vec<Skipped>,
    /// Points in the grid.
    pub search_space: usize,
    /// The plan printed before starting.
    pub plan: Vec<String>,
    /// Why the search ended.
    pub stop: String,
    /// Wall seconds of the search.
    pub elapsed_s: f64,
}

/// Figures of a model in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ModelJson {
    /// Top-1 on the full test split, 0..1 (null if not measured in full).
    pub accuracy: Option<f64>,
    /// Bytes of the model file.
    pub size_bytes: u64,
    /// ONNX Runtime latency at batch 1, milliseconds.
    pub latency_ms: f64,
    /// Parameters.
    pub parameters: u64,
    /// Multiply-accumulates per sample.
    pub macs: u64,
}

/// The best model in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct BestJson {
    /// Its figures.
    #[serde(flatten)]
    pub figures: ModelJson,
    /// Its pipeline steps (a recipe's `steps`).
    pub steps: Vec<StepConfig>,
    /// Its name.
    pub name: String,
    /// Its trial number.
    pub trial: usize,
}

/// One trial in the JSON history.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryJson {
    /// Trial number.
    pub trial: usize,
    /// Seconds of trials so far (this one included).
    pub elapsed_s: f64,
    /// The candidate.
    pub name: String,
    /// Its steps.
    pub steps: Vec<StepConfig>,
    /// Full-set accuracy (null when dropped on the subset or failed).
    pub accuracy: Option<f64>,
    /// Accuracy lost estimated on the hard subset, points.
    pub subset_drop_pts: Option<f64>,
    /// Accuracy lost predicted before the trial, points.
    pub predicted_drop_pts: Option<f64>,
    /// Latency, ms.
    pub latency_ms: Option<f64>,
    /// Size, bytes.
    pub size_bytes: Option<u64>,
    /// Whether it meets every constraint.
    pub in_budget: bool,
    /// measured | dropped | failed.
    pub verdict: Verdict,
    /// Why it was dropped or failed.
    pub reason: String,
}

/// The distance of a `budget_not_met` result to the constraints.
#[derive(Clone, Debug, Serialize)]
pub struct DistanceJson {
    /// Sum of the relative excesses.
    pub total: f64,
    /// Each constraint.
    pub constraints: Vec<Excess>,
}

/// `whittle auto --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// ok | budget_not_met.
    pub status: Status,
    /// The model written.
    pub output: String,
    /// The work folder.
    pub work_dir: String,
    /// The target.
    pub target: Target,
    /// The baseline.
    pub baseline: ModelJson,
    /// The best model (null when no trial gave one: the output is then the baseline).
    pub best: Option<BestJson>,
    /// How far the best is from the constraints (budget_not_met only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<DistanceJson>,
    /// Trials run or replayed.
    pub trials: usize,
    /// The trial that first met every constraint.
    pub first_in_budget: Option<usize>,
    /// Points in the grid.
    pub search_space: usize,
    /// The plan.
    pub plan: Vec<String>,
    /// Why the search ended.
    pub stopped: String,
    /// Wall seconds of the search.
    pub elapsed_s: f64,
    /// Every trial.
    pub history: Vec<HistoryJson>,
    /// Candidates never run, and why.
    pub skipped: Vec<Skipped>,
}

impl Outcome {
    /// The JSON summary.
    pub fn summary(&self) -> Summary {
        let b = &self.baseline;
        let best = self.best.map(|i| {
            let t = &self.trials[i];
            BestJson {
                figures: self.figures(t),
                steps: t.steps.clone(),
                name: t.name.clone(),
                trial: t.number,
            }
        });
        let mut elapsed = 0.0;
        let history = (self.trials.iter().zip(&self.feasible))
            .map(|(t, &in_budget)| {
                elapsed += t.seconds;
                HistoryJson {
                    trial: t.number,
                    elapsed_s: elapsed,
                    name: t.name.clone(),
                    steps: t.steps.clone(),
                    accuracy: t.accuracy,
                    subset_drop_pts: t.subset_drop_pts,
                    predicted_drop_pts: t.predicted.map(|p| p.drop_pts),
                    latency_ms: t.cost.as_ref().map(|c| c.latency_ms),
                    size_bytes: t.cost.as_ref().map(|c| c.size_bytes),
                    in_budget,
                    verdict: t.verdict,
                    reason: t.reason.clone(),
                }
            })
            .collect();
        Summary {
            status: self.status,
            output: self.output.display().to_string(),
            work_dir: self.work_dir.display().to_string(),
            target: self.target,
            baseline: ModelJson {
                accuracy: Some(b.accuracy),
                size_bytes: b.cost.size_bytes,
                latency_ms: b.cost.latency_ms,
                parameters: b.cost.parameters,
                macs: b.cost.macs,
            },
            best,
            distance: (self.status == Status::BudgetNotMet).then(|| DistanceJson {
                total: self.excess.iter().map(|e| e.relative).sum(),
                constraints: self.excess.clone(),
            }),
            trials: self.trials.len(),
            first_in_budget: self
                .feasible
                .iter()
                .position(|&f| f)
                .map(|i| self.trials[i].number),
            search_space: self.search_space,
            plan: self.plan.clone(),
            stopped: self.stop.clone(),
            elapsed_s: self.elapsed_s,
            history,
            skipped: self.skipped.clone(),
        }
    }

    fn figures(&self, t: &Trial) -> ModelJson {
        let c = t.cost.clone().unwrap_or_default();
        ModelJson {
            accuracy: t.accuracy,
            size_bytes: c.size_bytes,
            latency_ms: c.latency_ms,
            parameters: c.parameters,
            macs: c.macs,
        }
    }

    /// The report: baseline and best measured, the baseline's time per operator type, the
    /// plan as notes, and the search section.
    pub fn report(&self, title: &str) -> Report {
        let b = &self.baseline;
        let metrics = |m: &ModelJson| Metrics {
            size_bytes: Some(m.size_bytes),
            parameters: Some(m.parameters),
            macs: Some(m.macs),
            top1: m.accuracy,
            latency_ms_ort: Some(m.latency_ms),
            ..Metrics::default()
        };
        let summary = self.summary();
        let mut models = vec![ModelMetrics {
            name: "baseline".into(),
            metrics: metrics(&summary.baseline),
        }];
        if let Some(best) = &summary.best {
            models.push(ModelMetrics {
                name: format!("best: {}", best.name),
                metrics: metrics(&best.figures),
            });
        }
        let limit = |name: &str| {
            (self.objectives.constraints().iter())
                .find(|c| c.objective == name)
                .map(|c| c.limit)
        };
        let objective = match self.target {
            Target::Speed => "latency / baseline latency",
            Target::Size => "size / baseline size",
            Target::Balanced => "geometric mean of latency and size ratios to the baseline",
            Target::Accuracy => "accuracy lost (points), then latency",
        };
        let mut candidates: Vec<search::Candidate> = Vec::new();
        let mut elapsed = 0.0;
        for (i, t) in self.trials.iter().enumerate() {
            elapsed += t.seconds;
            let cost = t.cost.as_ref();
            let (status, reason) = match t.verdict {
                Verdict::Measured if self.feasible[i] => (
                    "kept",
                    "measured in full, within every constraint".to_string(),
                ),
                Verdict::Measured => ("kept", "measured in full, outside a constraint".to_string()),
                Verdict::Dropped => ("dropped", t.reason.clone()),
                Verdict::Failed => ("failed", t.reason.clone()),
            };
            candidates.push(search::Candidate {
                name: t.name.clone(),
                elapsed_s: elapsed,
                figures: Figures {
                    latency_ms: cost.map(|c| c.latency_ms),
                    size_bytes: cost.map(|c| c.size_bytes as f64),
                    accuracy: t.accuracy,
                },
                score: cost.map(|_| self.scores[i]),
                in_budget: self.feasible[i],
                best: self.best == Some(i),
                predicted_drop_pts: t.predicted.map(|p| p.drop_pts),
                measured_drop_pts: t.drop_pts(b.accuracy),
                status: status.into(),
                reason,
            });
        }
        candidates.extend(self.skipped.iter().map(|s| search::Candidate {
            name: s.name.clone(),
            status: "skipped".into(),
            reason: s.reason.clone(),
            elapsed_s: elapsed,
            ..search::Candidate::default()
        }));
        let mut notes = self.plan.clone();
        notes.push(format!("search ended: {}", self.stop));
        notes.push(match self.status {
            Status::Ok => "status: ok (the best model meets every constraint)".to_string(),
            Status::BudgetNotMet => {
                "status: budget_not_met (the output is the candidate closest to the constraints)"
                    .to_string()
            }
        });
        Report {
            title: title.to_string(),
            notes,
            models,
            op_latency: vec![b.op_latency.clone()],
            search: Some(search::Search {
                objective: objective.into(),
                baseline: Figures {
                    latency_ms: Some(b.cost.latency_ms),
                    size_bytes: Some(b.cost.size_bytes as f64),
                    accuracy: Some(b.accuracy),
                },
                limits: Figures {
                    latency_ms: limit(super::config::LATENCY),
                    size_bytes: limit(super::config::SIZE),
                    accuracy: limit(super::config::ACCURACY),
                },
                candidates,
            }),
            ..Report::default()
        }
    }
}
