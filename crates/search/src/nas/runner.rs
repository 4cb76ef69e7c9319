//! Where jobs run: [`Local`] runs them one after the other in this process;
//! [`crate::nas::ray::Ray`] (`--ray`) writes each as a [`JobFile`] and submits it to a Ray
//! cluster, where `whittle nas --job FILE` runs the same [`run_job`] in another process
//! ([`run_file`]) and writes the outcome beside it. The search hands a runner only jobs
//! whose results its journals lack; only the search writes the journals.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use whittle_pipeline::Observer;

use crate::nas::candidate::Candidate;
use crate::nas::error::{At, NasError, Result};
use crate::nas::trials::{proxy_key, run_job, trained_key, JobSettings, Outcome, Task};

/// One job: a task on a candidate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The candidate.
    pub candidate: Candidate,
    /// What to do.
    pub task: Task,
    /// Whether the task is the last rung's training (its model is kept).
    pub last_rung: bool,
}

impl Job {
    /// `task` on `candidate`.
    pub fn new(candidate: &Candidate, task: Task, last_rung: bool) -> Self {
        Job {
            candidate: candidate.clone(),
            task,
            last_rung,
        }
    }

    /// The key of the job's result: the candidate's id, `ID-naswot` or `ID-rRUNG`.
    pub fn key(&self) -> String {
        match self.task {
            Task::Measure => self.candidate.id.clone(),
            Task::Proxy => proxy_key(&self.candidate.id),
            Task::Train(rung) => trained_key(&self.candidate.id, rung.index),
        }
    }
}

/// Everything a job needs in another process (`whittle nas --job FILE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFile {
    /// The search's settings of every job.
    pub settings: JobSettings,
    /// The job.
    pub job: Job,
    /// The search's work folder (shared with the cluster).
    pub work_dir: PathBuf,
}

impl JobFile {
    /// Where the job file of `job` lies in `work_dir`: `jobs/KEY.json`.
    pub fn path(work_dir: &Path, job: &Job) -> PathBuf {
        work_dir.join("jobs").join(format!("{}.json", job.key()))
    }

    /// Where its outcome is written: `jobs/KEY.out.json`.
    pub fn outcome_path(work_dir: &Path, job: &Job) -> PathBuf {
        work_dir
            .join("jobs")
            .join(format!("{}.out.json", job.key()))
    }
}

/// Runs the job of the [`JobFile`] at `path` and writes its outcome (JSON) beside it.
pub fn run_file(observer: &dyn Observer, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).at(|| format!("reading job {}", path.display()))?;
    let file: JobFile = serde_json::from_str(&text).map_err(|e| {
        NasError::Refused(format!(
            "{}: not a whittle nas job file: {e}",
            path.display()
        ))
    })?;
    let j = &file.job;
    whittle_bench::bench::set_executor_threads(file.settings.threads);
    let outcome = run_job(
        observer,
        &file.settings,
        &j.candidate,
        j.task,
        j.last_rung,
        &file.work_dir,
    )?;
    let out = JobFile::outcome_path(&file.work_dir, j);
    let json = serde_json::to_vec(&outcome).expect("outcomes serialize");
    whittle_ir::files::write_bytes_atomic(&out, &json).at(|| format!("writing {}", out.display()))
}

/// Runs jobs and returns their outcomes, in the jobs' order.
pub trait Runner {
    /// Runs every job of `jobs` with `settings`.
    fn run(&self, settings: &JobSettings, jobs: &[Job]) -> Result<Vec<Outcome>>;
}

/// Runs jobs one after the other in this process.
pub struct Local<'o> {
    /// Where the jobs' progress goes.
    pub observer: &'o dyn Observer,
    /// The work folder.
    pub work_dir: PathBuf,
}

impl Runner for Local<'_> {
    fn run(&self, settings: &JobSettings, jobs: &[Job]) -> Result<Vec<Outcome>> {
        jobs.iter()
            .map(|j| {
                run_job(
                    self.observer,
                    settings,
                    &j.candidate,
                    j.task,
                    j.last_rung,
                    &self.work_dir,
                )
            })
            .collect()
    }
}
