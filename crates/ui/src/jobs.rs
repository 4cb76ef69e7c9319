//! Jobs: a recipe run on a blocking thread with its own folder, at most a set number at
//! once. Progress reaches the job through the pipeline's [`Observer`], which keeps each
//! event (numbered, in a history a reloaded page replays) and fans it out to every
//! attached event stream.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::broadcast;
use whittle_ir::ExternalData;
use whittle_pipeline::continual::ContinualReport;
use whittle_pipeline::eval::Metrics;
use whittle_pipeline::recipe::Recipe;
use whittle_pipeline::report::{self, Format, Report};
use whittle_pipeline::runner::{Run, Runner};
use whittle_pipeline::{Event, Observer};
use whittle_search::auto::AutoConfig;

use crate::api::{ApiError, Card, JobView, Progress, Status};

/// File name of a finished job's model in its folder.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of a finished job's HTML report in its folder.
pub const REPORT_FILE: &str = "report.html";
/// Live events a slow stream may fall behind before it skips some.
const STREAM_BUFFER: usize = 1024;

/// What a job has done so far.
struct State {
    status: Status,
    error: Option<String>,
    progress: Progress,
    /// Every event sent, numbered from 1 (runs of progress kept as their latest).
    history: Vec<Arc<Value>>,
    seq: u64,
    result: Option<Card>,
    steps: Option<Value>,
    details: Option<Value>,
}

/// What a job runs.
pub enum Work {
    /// A recipe (the compress and continual forms, or a recipe given as is).
    Recipe(Recipe),
    /// An auto-optimizer search (its work folder and output are set to the job's).
    Auto(Box<AutoConfig>),
}

impl Work {
    /// Keeps the work's files in the job folder `dir`.
    fn place(&mut self, dir: &Path) {
        if let Work::Auto(config) = self {
            config.work_dir = dir.join("work");
            config.output = dir.join(MODEL_FILE);
        }
    }
}

/// What a finished job hands back: its card, each step's report and its kind's figures.
struct Finished {
    card: Card,
    steps: Value,
    details: Option<Value>,
}

/// One recipe run.
pub struct Job {
    /// Its id.
    pub id: String,
    /// Its folder: the runner's work folder, the model and the report.
    pub dir: PathBuf,
    recipe_json: Value,
    work: Work,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Value>>,
}

impl Job {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `GET /api/jobs/{id}` shows.
    pub fn view(&self) -> JobView {
        let state = self.state();
        JobView {
            id: self.id.clone(),
            status: state.status,
            error: state.error.clone(),
            progress: state.progress.clone(),
            events: state.seq,
            recipe: self.recipe_json.clone(),
            result: state.result.clone(),
            steps: state.steps.clone(),
            details: state.details.clone(),
        }
    }

    /// Whether the job has ended (done or failed).
    pub fn finished(&self) -> bool {
        matches!(self.state().status, Status::Done | Status::Failed)
    }

    /// The events so far and a receiver of the later ones, taken together so that none is
    /// missed or repeated; an ended job's history ends with its `done` event.
    pub fn attach(&self) -> (Vec<Arc<Value>>, broadcast::Receiver<Arc<Value>>) {
        let state = self.state();
        (state.history.clone(), self.live.subscribe())
    }

    /// Numbers `body`, records it and sends it to the attached streams.
    fn send(&self, body: Value, update: impl FnOnce(&mut State)) {
        let mut state = self.state();
        update(&mut state);
        state.seq += 1;
        let mut body = body;
        body["seq"] = state.seq.into();
        let body = Arc::new(body);
        let is_progress = |v: &Value| v["event"] == "progress";
        if is_progress(&body) && state.history.last().is_some_and(|v| is_progress(v)) {
            state.history.pop();
        }
        state.history.push(body.clone());
        // No receiver attached is fine: the history keeps the event.
        let _ = self.live.send(body);
    }

    /// Runs the recipe (on the calling thread), calls `release` (freeing the job's slot)
    /// and then records how it ended, so a client that sees the end can submit again.
    fn run(&self, release: impl FnOnce()) {
        self.send(json!({ "event": "status", "status": "running" }), |s| {
            s.status = Status::Running
        });
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_steps()));
        let outcome = outcome.unwrap_or_else(|panic| {
            let what = (panic.downcast_ref::<String>().cloned())
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(anyhow::anyhow!(
                "the job stopped on an internal error: {what}"
            ))
        });
        release();
        match outcome {
            Ok(finished) => {
                let body = json!({ "event": "done", "status": "done", "result": finished.card,
                                   "details": finished.details });
                self.send(body, |s| {
                    s.status = Status::Done;
                    s.result = Some(finished.card);
                    s.steps = Some(finished.steps);
                    s.details = finished.details;
                })
            }
            Err(e) => {
                let error = format!("{e:#}");
                let body = json!({ "event": "done", "status": "failed", "error": error });
                self.send(body, |s| {
                    s.status = Status::Failed;
                    s.error = Some(error);
                })
            }
        }
    }

    /// Runs the job's work; the final model and the HTML report are written to its folder.
    fn run_steps(&self) -> anyhow::Result<Finished> {
        let title = format!("whittle ui job {}", self.id);
        let (report, finished) = match &self.work {
            Work::Recipe(recipe) => self.run_recipe(recipe, &title)?,
            Work::Auto(config) => {
                let outcome = whittle_search::auto::run(config, self)?;
                let report = outcome.report(&title);
                let measured = |m: Option<&whittle_pipeline::report::ModelMetrics>| {
                    m.map(|m| m.metrics.clone()).unwrap_or_default()
                };
                // The baseline first, the best (when a trial gave a model) last.
                let (before, after) = (report.models.first(), report.models.last());
                let finished = Finished {
                    card: Card::new(&measured(before), &measured(after)),
                    steps: Value::Array(Vec::new()),
                    details: Some(serde_json::to_value(outcome.summary())?),
                };
                (report, finished)
            }
        };
        let html = report::render(&report, Format::Html)?;
        whittle_ir::files::write_bytes_atomic(&self.dir.join(REPORT_FILE), html.as_bytes())?;
        Ok(finished)
    }

    /// Runs `recipe` and saves its model; a continual step's report becomes the report's
    /// continual section and the job's details.
    fn run_recipe(&self, recipe: &Recipe, title: &str) -> anyhow::Result<(Report, Finished)> {
        let runner = Runner {
            work_dir: self.dir.join("work"),
            observer: self,
        };
        let run: Run = runner.run(recipe)?;
        run.model
            .save(self.dir.join(MODEL_FILE), &ExternalData::Auto)?;
        let mut report = run.report(title)?;
        let continual = (run.steps.iter().rev())
            .find(|s| s.report.step == "continual")
            .map(|s| serde_json::from_value::<ContinualReport>(s.report.details.clone()))
            .transpose()?;
        let details = continual.as_ref().map(serde_json::to_value).transpose()?;
        report.continual = continual;
        let before: Metrics = run.input_metrics.clone().unwrap_or_default();
        let after = (run.steps.last().and_then(|s| s.metrics.clone())).unwrap_or_default();
        let finished = Finished {
            card: Card::new(&before, &after),
            steps: serde_json::to_value(&run.steps)?,
            details,
        };
        Ok((report, finished))
    }
}

impl Observer for Job {
    fn event(&self, event: &Event) {
        let body = serde_json::to_value(event).unwrap_or_else(|e| {
            json!({ "event": "log",
            "level": "warn", "message": format!("unserializable event: {e}") })
        });
        self.send(body, |s| {
            let p = &mut s.progress;
            match event {
                Event::Begin { task, total } => {
                    (p.task, p.total, p.done, p.message) = (Some(task.clone()), *total, 0, None)
                }
                Event::Progress { done, message } => (p.done, p.message) = (*done, message.clone()),
                Event::End => p.done = p.total.unwrap_or(p.done),
                Event::Log { message, .. } => {
                    if let Some(step) = message.strip_suffix(": running") {
                        p.step = Some(step.to_string());
                    }
                }
            }
        });
    }
}

/// Every job of this server, at most `limit` unfinished at once.
pub struct Jobs {
    dir: PathBuf,
    limit: usize,
    active: Arc<AtomicUsize>,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
}

impl Jobs {
    /// No jobs yet; theirs folders go under `dir`.
    pub fn new(dir: PathBuf, limit: usize) -> Self {
        Jobs {
            dir,
            limit: limit.max(1),
            active: Arc::new(AtomicUsize::new(0)),
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Job>, ApiError> {
        (self.jobs().get(id).cloned()).ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs().values().cloned().collect()
    }

    /// Starts `work` (`recipe_json` as the API shows it) on a blocking thread; refused
    /// when `limit` jobs are unfinished.
    pub fn submit(&self, recipe_json: Value, mut work: Work) -> Result<Arc<Job>, ApiError> {
        let taken = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(ApiError::busy(format!(
                "{} jobs are running, the most this server runs at once (--max-jobs); wait \
                 for one to finish",
                self.limit
            )));
        }
        let job = {
            let mut jobs = self.jobs();
            let id = format!("{:04}", jobs.len() + 1);
            let dir = self.dir.join(format!("job-{id}"));
            work.place(&dir);
            let (live, _) = broadcast::channel(STREAM_BUFFER);
            let job = Arc::new(Job {
                id: id.clone(),
                dir,
                recipe_json,
                work,
                state: Mutex::new(State {
                    status: Status::Queued,
                    error: None,
                    progress: Progress::default(),
                    history: Vec::new(),
                    seq: 0,
                    result: None,
                    steps: None,
                    details: None,
                }),
                live,
            });
            jobs.insert(id, job.clone());
            job
        };
        let (running, active) = (job.clone(), self.active.clone());
        tokio::task::spawn_blocking(move || {
            running.run(|| {
                active.fetch_sub(1, Ordering::SeqCst);
            });
        });
        Ok(job)
    }
}
