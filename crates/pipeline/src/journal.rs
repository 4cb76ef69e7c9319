//! The pipeline's journals in the work folder, one JSON line per record: `journal.jsonl`
//! holds every finished step (its cache key, report and time), `metrics.jsonl` the
//! measurements of models (keyed by model and settings). Each append rewrites the file
//! atomically, so a kill leaves a journal as it was before or after the line, never half a
//! line.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Context, PipelineError, Result};
use crate::eval::Metrics;
use crate::step::StepReport;

/// The step journal's file name in the work folder.
pub const FILE: &str = "journal.jsonl";

/// A line of a journal, found by its key.
pub trait Record: Serialize + DeserializeOwned {
    /// The journal's file name in the work folder.
    const FILE: &'static str;
    /// The content key the record is found by.
    fn key(&self) -> &str;
}

/// One finished step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The content key of the step's result (see [`crate::cache::key`]).
    pub key: String,
    /// The step's position in its recipe, from 1.
    pub index: usize,
    /// The step's kind.
    pub step: String,
    /// Seconds the step took.
    pub seconds: f64,
    /// What it did.
    pub report: StepReport,
}

impl Record for Entry {
    const FILE: &'static str = FILE;
    fn key(&self) -> &str {
        &self.key
    }
}

/// The measurements of one model with one set of settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measured {
    /// See [`crate::cache::metrics_key`].
    pub key: String,
    /// What was measured.
    pub metrics: Metrics,
}

impl Record for Measured {
    const FILE: &'static str = "metrics.jsonl";
    fn key(&self) -> &str {
        &self.key
    }
}

/// The records of one of a work folder's journals.
pub struct Journal<R: Record> {
    path: PathBuf,
    entries: Vec<R>,
}

impl<R: Record> Journal<R> {
    /// Reads the journal of `work_dir` (empty when there is none yet).
    pub fn open(work_dir: &Path) -> Result<Self> {
        let path = work_dir.join(R::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
        };
        let entries = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    PipelineError::invalid(
                        format!("{} line {}", path.display(), i + 1),
                        format!("{e}; delete the work folder to start afresh"),
                    )
                })
            })
            .collect::<Result<Vec<R>>>()?;
        Ok(Journal { path, entries })
    }

    /// The latest record with `key`, if any.
    pub fn find(&self, key: &str) -> Option<&R> {
        self.entries.iter().rev().find(|e| e.key() == key)
    }

    /// Every record, oldest first.
    pub fn entries(&self) -> &[R] {
        &self.entries
    }

    /// Appends `entry`, rewriting the file atomically.
    pub fn append(&mut self, entry: R) -> Result<()> {
        self.entries.push(entry);
        let mut text = String::new();
        for e in &self.entries {
            let line = serde_json::to_string(e)
                .map_err(|err| PipelineError::invalid("a journal entry", err.to_string()))?;
            text.push_str(&line);
            text.push('\n');
        }
        whittle_ir::files::write_bytes_atomic(&self.path, text.as_bytes())
            .context(|| format!("writing {}", self.path.display()))
    }
}
