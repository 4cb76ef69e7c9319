//! Content keys of intermediate models: the SHA-256 of the parent model's bytes, the
//! step's configuration, the data sources it reads and (for a step that compares with it)
//! the reference model's bytes. Equal keys mean the step would compute the same model.
//! Measurements are keyed alike, by the model and the settings.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use whittle_ir::Model;

use crate::error::{PipelineError, Result};
use crate::step::evaluate::Evaluate;
use crate::step::StepConfig;

/// The hex SHA-256 of a model's encoded bytes.
pub fn model_hash(model: &Model) -> String {
    hex(&Sha256::digest(model.to_bytes()))
}

/// The key of `step`'s result on the model whose hash is `parent` (see [`model_hash`]),
/// with `reference`'s hash when the step reads the reference model.
pub fn key(parent: &str, step: &StepConfig, reference: Option<&str>) -> Result<String> {
    let config = json(step)?;
    let parts = [parent, &config, reference.unwrap_or("")];
    Ok(digest(parts.into_iter().chain(step.step().data_specs())))
}

/// The key of `settings`' measurements of the model whose hash is `model`.
pub fn metrics_key(model: &str, settings: &Evaluate) -> Result<String> {
    Ok(digest([model, "evaluate", &json(settings)?]))
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
