//! Jobs: a recipe run on a blocking thread with its own folder, at most a set number at
//! once. Progress reaches the job through the pipeline's [`Observer`], which keeps each
//! event (numbered, in a history a reloaded page replays) and fans it out to every
//! attached event stream.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::broadcast;
use whittle_ir::ExternalData;
use whittle_pipeline::recipe::Recipe;
use whittle_pipeline::report::{self, Format};
use whittle_pipeline::runner::{Run, Runner};
use whittle_pipeline::{Event, Observer};

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
}

/// One recipe run.
pub struct Job {
    /// Its id.
    pub id: String,
    /// Its folder: the runner's work folder, the model and the report.
    pub dir: PathBuf,
    recipe_json: Value,
    recipe: Recipe,
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
            Ok((card, steps)) => {
                let result = json!(card);
                self.send(
                    json!({ "event": "done", "status": "done", "result": result }),
                    |s| {
                        s.status = Status::Done;
                        s.result = Some(card);
                        s.steps = Some(steps);
                    },
                )
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

    /// The steps, the final model and the report written to the job's folder.
    fn run_steps(&self) -> anyhow::Result<(Card, Value)> {
        let runner = Runner {
            work_dir: self.dir.join("work"),
            observer: self,
        };
        let run: Run = runner.run(&self.recipe)?;
        run.model
            .save(self.dir.join(MODEL_FILE), &ExternalData::Auto)?;
        let report = run.report(&format!("whittle ui job {}", self.id))?;
        let html = report::render(&report, Format::Html)?;
        whittle_ir::files::write_bytes_atomic(&self.dir.join(REPORT_FILE), html.as_bytes())?;
        let before = run.input_metrics.clone().unwrap_or_default();
        let after = (run.steps.last().and_then(|s| s.metrics.clone())).unwrap_or_default();
        Ok((
            Card::new(&before, &after),
            serde_json::to_value(&run.steps)?,
        ))
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

    /// Starts `recipe` (`recipe_json` as the API shows it) on a blocking thread; refused
    /// when `limit` jobs are unfinished.
    pub fn submit(&self, recipe_json: Value, recipe: Recipe) -> Result<Arc<Job>, ApiError> {
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
            let (live, _) = broadcast::channel(STREAM_BUFFER);
            let job = Arc::new(Job {
                id: id.clone(),
                dir,
                recipe_json,
                recipe,
                state: Mutex::new(State {
                    status: Status::Queued,
                    error: None,
                    progress: Progress::default(),
                    history: Vec::new(),
                    seq: 0,
                    result: None,
                    steps: None,
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
