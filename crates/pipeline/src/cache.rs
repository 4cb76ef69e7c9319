//! Content keys of intermediate models: the SHA-256 of the parent model's bytes, the
//! step's configuration, the data sources it reads (each SPEC and the contents of the files
//! it names), the model files it reads besides its input (a teacher) and, for a step that
//! compares with it, the reference model's bytes. Equal keys mean the step would compute
//! the same model. Measurements are keyed alike, by the model and the settings.

mod files;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use whittle_ir::Model;

use crate::error::{PipelineError, Result};
use crate::step::evaluate::Evaluate;
use crate::step::{Step, StepConfig};
use files::FileHashes;

/// The hex SHA-256 of a model's encoded bytes.
pub fn model_hash(model: &Model) -> String {
    hex(&Sha256::digest(model.to_bytes()))
}

/// The key of `step`'s result on the model whose hash is `parent` (see [`model_hash`]),
/// with `reference`'s hash when the step reads the reference model. The hashes of the
/// files the step reads are remembered in `work_dir` (see [`files`]).
pub fn key(
    work_dir: &Path,
    parent: &str,
    step: &StepConfig,
    reference: Option<&str>,
) -> Result<String> {
    let config = json(step)?;
    let step = step.step();
    let read = files_read(work_dir, step)?;
    let parts = [parent, &config, reference.unwrap_or("")];
    Ok(digest(
        parts.into_iter().chain(read.iter().map(String::as_str)),
    ))
}

/// The key of `settings`' measurements of the model whose hash is `model`.
pub fn metrics_key(work_dir: &Path, model: &str, settings: &Evaluate) -> Result<String> {
    let read = files_read(work_dir, settings)?;
    let parts = [model, "evaluate", &json(settings)?];
    Ok(digest(
        parts.into_iter().chain(read.iter().map(String::as_str)),
    ))
}

/// Each data SPEC of `step` followed by the hash of its files' contents, then the hash of
/// each model file it reads.
fn files_read(work_dir: &Path, step: &dyn Step) -> Result<Vec<String>> {
    let mut hashes = FileHashes::open(work_dir);
    let mut parts = Vec::new();
    for spec in step.data_specs() {
        parts.push(spec.to_string());
        parts.push(hashes.spec(spec)?);
    }
    for file in step.model_files() {
        parts.push(hashes.file(file)?);
    }
    hashes.save()?;
    Ok(parts)
}

fn json(config: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(config)
        .map_err(|e| PipelineError::invalid("a step's configuration", e.to_string()))
}

/// The hex SHA-256 of `parts`, each length-prefixed so that no two different part lists
/// hash alike.
fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize())
}

/// Where the model of `key` is kept in `work_dir`.
pub fn model_path(work_dir: &Path, key: &str) -> PathBuf {
    work_dir.join(format!("{key}.onnx"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
