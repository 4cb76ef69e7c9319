//! Checkpoints: a directory with `model.onnx` (current weights and BatchNormalization
//! statistics), `optimizer.safetensors` (optimizer state) and `state.json` (epoch, step,
//! early-stopping state, history). Resuming from one continues the run bit-exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use whittle_ir::{ExternalData, Model};

use crate::error::{Result, TrainError};
use crate::trainer::EpochReport;

/// Progress of a run, saved with each checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Best monitored validation value so far.
    pub best: Option<f64>,
    /// Epoch (1-based) of the best value.
    pub best_epoch: usize,
    /// Epochs since the best value.
    pub bad_epochs: usize,
    /// One report per completed epoch.
    pub history: Vec<EpochReport>,
}

const MODEL: &str = "model.onnx";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a checkpoint into `dir` (created if missing).
pub fn save(
    dir: &Path,
    model: &Model,
    optimizer: &HashMap<String, Tensor>,
    state: &TrainState,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    model.save(dir.join(MODEL), &ExternalData::Auto)?;
    candle_core::safetensors::save(optimizer, dir.join(OPTIMIZER))?;
    let json = serde_json::to_string_pretty(state)
        .map_err(|e| TrainError::Invalid(format!("encoding {STATE}: {e}")))?;
    let path = dir.join(STATE);
    std::fs::write(&path, json).map_err(io(&path))
}

/// Reads a checkpoint written by [`save`].
pub fn load(dir: &Path) -> Result<(Model, HashMap<String, Tensor>, TrainState)> {
    let model = Model::load(dir.join(MODEL))?;
    let optimizer = candle_core::safetensors::load(dir.join(OPTIMIZER), &Device::Cpu)?;
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state = serde_json::from_str(&text)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    Ok((model, optimizer, state))
}
