//! Where jobs run: [`Local`] runs them one after the other in this process; a cluster
//! runner (`--ray`) submits each as a job that runs the same [`run_job`] in another
//! process. The search hands a runner only jobs whose results its journals lack.

use std::path::PathBuf;

use crate::nas::candidate::Candidate;
use crate::nas::error::Result;
use crate::nas::trials::{run_job, JobSettings, Outcome, Task};
use whittle_pipeline::Observer;

/// One job: a task on a candidate.
#[derive(Clone, Debug)]
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
