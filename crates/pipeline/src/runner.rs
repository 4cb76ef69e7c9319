//! Runs a [`Recipe`]'s steps in order with a work folder: each step's model is saved under
//! its content key ([`crate::cache`]) and a line appended to the [`Journal`]; a rerun
//! loads the models of steps that finished before instead of running them again. The
//! model is written (atomically) before its journal line, so after a kill a rerun repeats
//! at most the step that was interrupted.
//!
//! With the recipe's `evaluate` settings the runner measures the input model and the model
//! after every step ([`Evaluate`]); measurements are kept in the work folder too
//! ([`Measured`]), and [`Run::report`] gathers them into a [`Report`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use whittle_ir::{ExternalData, Model};

use crate::cache;
use crate::error::{Context, Result};
use crate::eval::Metrics;
use crate::journal::{Entry, Journal, Measured};
use crate::observer::{Level, Observer};
use crate::recipe::Recipe;
use crate::report::weights::weight_stats;
use crate::report::{ModelMetrics, Report};
use crate::step::evaluate::Evaluate;
use crate::step::{Ctx, StepReport};

/// One step of a run.
#[derive(Clone, Debug, Serialize)]
pub struct StepRun {
    /// Position in the recipe, from 1.
    pub index: usize,
    /// The step's kind.
    pub step: String,
    /// The content key of its model.
    pub key: String,
    /// Whether its model came from the work folder (the step finished in an earlier run).
    pub cached: bool,
    /// Seconds the step took when it ran.
    pub seconds: f64,
    /// What it did (from the journal when cached).
    pub report: StepReport,
    /// The measurements of its model, when the recipe asks for them (`evaluate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// The outcome of a run: every step, and the input and final models.
pub struct Run {
    /// The steps, in order.
    pub steps: Vec<StepRun>,
    /// The recipe's input model.
    pub input: Model,
    /// The measurements of the input model, when the recipe asks for them.
    pub input_metrics: Option<Metrics>,
    /// The last step's model.
    pub model: Model,
}

/// The name of the recipe's input model in a [`Run::report`].
pub const INPUT: &str = "input";
/// The name of the last step's model in a [`Run::report`].
pub const FINAL: &str = "final";

impl Run {
    /// The run's report titled `title`: the input and final models' metrics, the metrics
    /// after every step (the input model first), precision and sparsity per layer of both
    /// models, and each step's summary as notes.
    pub fn report(&self, title: &str) -> Result<Report> {
        let measured = |name: String, metrics: &Option<Metrics>| ModelMetrics {
            name,
            metrics: metrics.clone().unwrap_or_default(),
        };
        let input = measured(INPUT.into(), &self.input_metrics);
        let mut steps = vec![input.clone()];
        steps.extend(
            (self.steps.iter()).map(|s| measured(format!("{} {}", s.index, s.step), &s.metrics)),
        );
        let last = steps.last().map(|s| s.metrics.clone()).unwrap_or_default();
        let notes = (self.steps.iter())
            .flat_map(|s| {
                (s.report.summary.iter()).map(move |line| format!("{} {}: {line}", s.index, s.step))
            })
            .collect();
        Ok(Report {
            title: title.to_string(),
            notes,
            models: vec![
                input,
                ModelMetrics {
                    name: FINAL.into(),
                    metrics: last,
                },
            ],
            steps,
            weights: vec![
                weight_stats(INPUT, &self.input)?,
                weight_stats(FINAL, &self.model)?,
            ],
            ..Report::default()
        })
    }
}

/// Runs recipes with a work folder.
pub struct Runner<'o> {
    /// Where intermediate models and the journal live.
    pub work_dir: PathBuf,
    /// Receives progress and log lines.
    pub observer: &'o dyn Observer,
}

impl Runner<'_> {
    /// Runs every step of `recipe` on its model, skipping those whose result the work
    /// folder holds.
    pub fn run(&self, recipe: &Recipe) -> Result<Run> {
        std::fs::create_dir_all(&self.work_dir)
            .context(|| format!("creating the work folder {}", self.work_dir.display()))?;
        let mut journal = Journal::<Entry>::open(&self.work_dir)?;
        let mut measured = Journal::<Measured>::open(&self.work_dir)?;
        let input = recipe.model.load()?;
        let mut model = input.clone();
        let mut ctx = Ctx::new(self.observer);
        ctx.seed = recipe.seed;
        ctx.threads = recipe.threads;
        ctx.work_dir = Some(self.work_dir.clone());
        let total = recipe.steps.len();
        let mut steps = Vec::with_capacity(total);
        let mut hash = cache::model_hash(&model);
        let evaluate = recipe.evaluate.as_ref();
        let input_metrics = self.measure(evaluate, &ctx, &mut measured, &model, &hash, INPUT)?;
        // The hash of the model the previous step started from (the reference's).
        let mut reference_hash: Option<String> = None;
        for (i, config) in recipe.steps.iter().enumerate() {
            let step = config.step();
            let index = i + 1;
            let uses_reference = step.uses_reference();
            let key = cache::key(
                &self.work_dir,
                &hash,
                config,
                reference_hash.as_deref().filter(|_| uses_reference),
            )?;
            let path = cache::model_path(&self.work_dir, &key);
            let at = format!("step {index}/{total} ({})", step.name());
            let done = journal.find(&key).filter(|_| path.is_file()).cloned();
            let next = match done {
                Some(entry) => {
                    self.observer.log(
                        Level::Info,
                        format!("{at}: done before, {}", path.display()),
                    );
                    let next = Model::load(&path).context(|| format!("{at}: loading"))?;
                    steps.push(StepRun {
                        index,
                        step: entry.step,
                        key: key.clone(),
                        cached: true,
                        seconds: entry.seconds,
                        report: entry.report,
                        metrics: None,
                    });
                    next
                }
                None => {
                    self.observer.log(Level::Info, format!("{at}: running"));
                    let start = Instant::now();
                    let (next, report) =
                        step.run(&mut ctx, model.clone()).context(|| at.clone())?;
                    let seconds = start.elapsed().as_secs_f64();
                    save(&next, &path).context(|| format!("{at}: saving"))?;
                    let entry = Entry {
                        key: key.clone(),
                        index,
                        step: step.name().to_string(),
                        seconds,
                        report: report.clone(),
                    };
                    journal.append(entry)?;
                    steps.push(StepRun {
                        index,
                        step: step.name().to_string(),
                        key: key.clone(),
                        cached: false,
                        seconds,
                        report,
                        metrics: None,
                    });
                    next
                }
            };
            reference_hash = Some(std::mem::replace(&mut hash, cache::model_hash(&next)));
            if let Some(last) = steps.last_mut() {
                last.metrics = self.measure(evaluate, &ctx, &mut measured, &next, &hash, &at)?;
            }
            ctx.reference = Some(std::mem::replace(&mut model, next));
        }
        Ok(Run {
            steps,
            input,
            input_metrics,
            model,
        })
    }

    /// `model`'s measurements with `settings` (none without), from the work folder when
    /// they were taken before, else measured and recorded there; `what` names the model.
    fn measure(
        &self,
        settings: Option<&Evaluate>,
        ctx: &Ctx<'_>,
        journal: &mut Journal<Measured>,
        model: &Model,
        hash: &str,
        what: &str,
    ) -> Result<Option<Metrics>> {
        let Some(settings) = settings else {
            return Ok(None);
        };
        let key = cache::metrics_key(&self.work_dir, hash, settings)?;
        if let Some(done) = journal.find(&key) {
            return Ok(Some(done.metrics.clone()));
        }
        self.observer
            .log(Level::Info, format!("{what}: measuring the model"));
        let metrics = settings
            .measure(ctx, model)
            .context(|| format!("{what}: measuring the model"))?;
        journal.append(Measured {
            key,
            metrics: metrics.clone(),
        })?;
        Ok(Some(metrics))
    }
}

/// Saves a step's model atomically (large initializers beside it when needed).
fn save(model: &Model, path: &Path) -> whittle_ir::Result<()> {
    model.save(path, &ExternalData::Auto)
}
