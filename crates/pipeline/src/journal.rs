//! The pipeline's journal: one JSON line per finished step (its cache key, report and
//! time) in `journal.jsonl` of the work folder. Each append rewrites the file atomically,
//! so a kill leaves the journal as it was before or after the line, never half a line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, PipelineError, Result};
use crate::step::StepReport;

/// The journal's file name in the work folder.
pub const FILE: &str = "journal.jsonl";

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

/// The entries of a work folder's journal.
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl Journal {
    /// Reads the journal of `work_dir` (empty when there is none yet).
    pub fn open(work_dir: &Path) -> Result<Journal> {
        let path = work_dir.join(FILE);
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
            .collect::<Result<Vec<Entry>>>()?;
        Ok(Journal { path, entries })
    }

    /// The entry of the step whose result has `key`, if it finished before.
    pub fn find(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends `entry`, rewriting the file atomically.
    pub fn append(&mut self, entry: Entry) -> Result<()> {
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
