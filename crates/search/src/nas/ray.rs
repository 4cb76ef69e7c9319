//! `--ray ADDRESS`: candidates' jobs on an existing Ray cluster, through Ray's job
//! submission REST API (the dashboard's `POST /api/jobs/`, `GET /api/jobs/{id}`). Each job
//! is a [`JobFile`] in the shared work folder; its entrypoint is this whittle binary with
//! `nas --job FILE`, which writes the outcome beside the file. A batch's jobs are all
//! submitted, then polled until each has finished; the outcomes are read back in order.
//! Ray does the scheduling: whittle keeps no queue of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use whittle_pipeline::{Level, Observer};

use crate::nas::error::{At, NasError, Result};
use crate::nas::runner::{Job, JobFile, Runner};
use crate::nas::trials::{JobSettings, Outcome};

/// Runs jobs on the Ray cluster whose dashboard listens at `address`.
pub struct Ray<'o> {
    /// The dashboard's address, `http://HOST:8265`.
    pub address: String,
    /// The whittle binary the cluster's workers run (a path they can reach).
    pub binary: PathBuf,
    /// The work folder (a path the workers share).
    pub work_dir: PathBuf,
    /// Where submissions are logged.
    pub observer: &'o dyn Observer,
    /// Time between two status polls.
    pub poll: Duration,
}

/// The status of a submitted job (`GET /api/jobs/{id}`).
#[derive(Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    message: Option<String>,
}

impl Ray<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/api/jobs/{path}", self.address.trim_end_matches('/'))
    }

    fn submit(&self, file: &Path) -> Result<String> {
        let entrypoint = format!(
            "{} nas --job {}",
            quote(&self.binary.display().to_string()),
            quote(&file.display().to_string())
        );
        #[derive(Deserialize)]
        struct Submitted {
            submission_id: String,
        }
        let mut response = ureq::post(&self.url(""))
            .send_json(json!({ "entrypoint": entrypoint }))
            .at(|| format!("--ray {}: submitting {}", self.address, file.display()))?;
        let submitted: Submitted = response
            .body_mut()
            .read_json()
            .at(|| format!("--ray {}: reading the submission's answer", self.address))?;
        Ok(submitted.submission_id)
    }

    fn status(&self, id: &str) -> Result<Status> {
        ureq::get(&self.url(id))
            .call()
            .and_then(|mut r| r.body_mut().read_json::<Status>())
            .at(|| format!("--ray {}: status of job {id}", self.address))
    }

    /// The last lines of a job's log, for an error message.
    fn log_tail(&self, id: &str) -> String {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let logs = ureq::get(&self.url(&format!("{id}/logs")))
            .call()
            .and_then(|mut r| r.body_mut().read_json::<Logs>())
            .map(|l| l.logs)
            .unwrap_or_default();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Runner for Ray<'_> {
    fn run(&self, settings: &JobSettings, jobs: &[Job]) -> Result<Vec<Outcome>> {
        let dir = self.work_dir.join("jobs");
        std::fs::create_dir_all(&dir).at(|| format!("creating {}", dir.display()))?;
        let mut submitted = Vec::new();
        for job in jobs {
            let path = JobFile::path(&self.work_dir, job);
            let file = JobFile {
                settings: settings.clone(),
                job: job.clone(),
                work_dir: self.work_dir.clone(),
            };
            let text = serde_json::to_vec_pretty(&file).expect("job files serialize");
            whittle_ir::files::write_bytes_atomic(&path, &text)
                .at(|| format!("writing {}", path.display()))?;
            let id = self.submit(&path)?;
            self.observer
                .log(Level::Info, format!("ray job {id}: {}", job.key()));
            submitted.push((job, id));
        }
        let mut outcomes = Vec::new();
        for (job, id) in submitted {
            let status = loop {
                let s = self.status(&id)?;
                if matches!(s.status.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED") {
                    break s;
                }
                std::thread::sleep(self.poll);
            };
            if status.status != "SUCCEEDED" {
                return Err(NasError::Refused(format!(
                    "--ray {}: job {id} ({}) {}: {}\n{}",
                    self.address,
                    job.key(),
                    status.status,
                    status.message.unwrap_or_default(),
                    self.log_tail(&id)
                )));
            }
            let out = JobFile::outcome_path(&self.work_dir, job);
            let text = std::fs::read_to_string(&out).at(|| {
                format!(
                    "ray job {id} ({}) succeeded but its outcome {} is not readable here \
                     (is --work-dir on a path the cluster shares?)",
                    job.key(),
                    out.display()
                )
            })?;
            outcomes.push(serde_json::from_str(&text).map_err(|e| {
                NasError::Refused(format!("{}: not a job outcome: {e}", out.display()))
            })?);
        }
        Ok(outcomes)
    }
}

/// `s` in single quotes for the entrypoint's shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
