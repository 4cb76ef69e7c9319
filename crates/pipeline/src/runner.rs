//! Runs a [`Recipe`]'s steps in order with a work folder: each step's model is saved under
//! its content key ([`crate::cache`]) and a line appended to the [`Journal`]; a rerun
//! loads the models of steps that finished before instead of running them again. The
//! model is written (atomically) before its journal line, so after a kill a rerun repeats
//! at most the step that was interrupted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use whittle_ir::{ExternalData, Model};

use crate::cache;
use crate::error::{Context, Result};
use crate::journal::{Entry, Journal};
use crate::observer::{Level, Observer};
use crate::recipe::Recipe;
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
}

/// The outcome of a run: every step, and the final model.
pub struct Run {
    /// The steps, in order.
    pub steps: Vec<StepRun>,
    /// The last step's model.
    pub model: Model,
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
        let mut journal = Journal::open(&self.work_dir)?;
        let mut model = recipe.model.load()?;
        let mut ctx = Ctx::new(self.observer);
        ctx.seed = recipe.seed;
        ctx.threads = recipe.threads;
        ctx.work_dir = Some(self.work_dir.clone());
        let total = recipe.steps.len();
        let mut steps = Vec::with_capacity(total);
        let mut hash = cache::model_hash(&model);
        // The hash of the model the previous step started from (the reference's).
        let mut reference_hash: Option<String> = None;
        for (i, config) in recipe.steps.iter().enumerate() {
            let step = config.step();
            let index = i + 1;
            let uses_reference = step.uses_reference();
            let key = cache::key(
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
                    });
                    next
                }
            };
            reference_hash = Some(std::mem::replace(&mut hash, cache::model_hash(&next)));
            ctx.reference = Some(std::mem::replace(&mut model, next));
        }
        Ok(Run { steps, model })
    }
}

/// Saves a step's model atomically (large initializers beside it when needed).
fn save(model: &Model, path: &Path) -> whittle_ir::Result<()> {
    model.save(path, &ExternalData::Auto)
}
