//! Checkpoints: a directory holding `state.json` (epoch, step, early-stopping state,
//! history, the optimizer settings and what the run trains on) and, for the epoch it names,
//! a folder `epoch-N/` with `model.onnx` (current weights and BatchNormalization statistics)
//! and `optimizer.safetensors` (optimizer state). Resuming from one continues the run
//! bit-exactly.
//!
//! Writing survives a crash at any point: the epoch's folder is written first (every file
//! through a temporary file renamed into place), then `state.json` the same way, which
//! commits the checkpoint; only then are other epochs' folders removed. A process killed
//! mid-write leaves the previous checkpoint loadable.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use whittle_ir::files::write_bytes_atomic;
use whittle_ir::{ExternalData, Model};

use crate::bail;
use crate::error::{Result, TrainError};
use crate::optim::OptimizerConfig;
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
    /// The optimizer settings of the run (resuming with others is refused).
    #[serde(default)]
    pub optimizer: Option<OptimizerConfig>,
    /// What the run trains on (see `TrainConfig::identity`; resuming with other values is
    /// refused).
    #[serde(default)]
    pub identity: BTreeMap<String, String>,
}

const MODEL: &str = "model.onnx";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";
const EPOCH_PREFIX: &str = "epoch-";

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The folder of epoch `epoch`'s files inside checkpoint directory `dir`.
pub fn epoch_folder(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("{EPOCH_PREFIX}{epoch}"))
}

/// The model file of the checkpoint committed in `dir` at `epoch`.
pub fn model_path(dir: &Path, epoch: usize) -> PathBuf {
    epoch_folder(dir, epoch).join(MODEL)
}

/// Whether `name` is one of the entries a checkpoint writes (`state.json`, `epoch-N`).
fn is_checkpoint_entry(name: &str) -> bool {
    name == STATE
        || name
            .strip_prefix(EPOCH_PREFIX)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The checkpoint entries present in `dir` (none when it does not exist).
fn entries(dir: &Path) -> Result<Vec<String>> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for entry in list {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        if is_checkpoint_entry(&name) {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Checks, before training, that checkpoints can go to `dir`: it is a folder (or can be
/// created), it holds no checkpoint unless `force` or it is the `resume` directory, and
/// none of the `protected` paths (with what they are, e.g. "the input model") lies where a
/// checkpoint writes or removes files.
pub fn check_dir(
    dir: &Path,
    resume: Option<&Path>,
    protected: &[(&Path, &str)],
    force: bool,
) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("`checkpoint_dir` {} is a file, not a folder", dir.display());
    }
    let real = |p: &Path| p.canonicalize().ok();
    let dir_real = real(dir);
    for (path, what) in protected {
        let inside = match (&dir_real, path.parent().and_then(real)) {
            (Some(d), Some(parent)) => {
                let file = parent.join(path.file_name().unwrap_or_default());
                file.strip_prefix(d).ok().and_then(|rest| {
                    let first = rest.components().next()?;
                    is_checkpoint_entry(&first.as_os_str().to_string_lossy()).then_some(())
                })
            }
            _ => None,
        };
        if inside.is_some() {
            bail!(
                "`checkpoint_dir` {} would overwrite or remove {what} {}; choose another folder",
                dir.display(),
                path.display()
            );
        }
    }
    let resuming_here = resume.is_some_and(|r| dir_real.is_some() && real(r) == dir_real);
    let existing = entries(dir)?;
    if !existing.is_empty() && !force && !resuming_here {
        bail!(
            "`checkpoint_dir` {} already holds a checkpoint ({}); pass `force` to overwrite it or `resume` {} to continue it",
            dir.display(),
            existing.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// Writes a checkpoint of epoch `state.epoch` into `dir` (created if missing), committing
/// it with `state.json` only once the model and optimizer files are complete, then removes
/// the folders of other epochs.
pub fn save(
    dir: &Path,
    model: &Model,
    optimizer: &HashMap<String, Tensor>,
    state: &TrainState,
) -> Result<()> {
    let folder = epoch_folder(dir, state.epoch);
    if folder.exists() {
        // What an interrupted run left of this epoch (never the committed checkpoint,
        // which is an earlier epoch, unless --force writes over an old run).
        std::fs::remove_dir_all(&folder).map_err(io(&folder))?;
    }
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    model.save(folder.join(MODEL), &ExternalData::Auto)?;
    let path = folder.join(OPTIMIZER);
    let bytes = safetensors::serialize(optimizer, None)
        .map_err(|e| TrainError::Invalid(format!("encoding {}: {e}", path.display())))?;
    write_bytes_atomic(&path, &bytes)?;
    let json = serde_json::to_string_pretty(state)
        .map_err(|e| TrainError::Invalid(format!("encoding {STATE}: {e}")))?;
    write_bytes_atomic(&dir.join(STATE), json.as_bytes())?;
    let keep = format!("{EPOCH_PREFIX}{}", state.epoch);
    for name in entries(dir)? {
        if name != STATE && name != keep {
            // A stale folder left behind is harmless: a later save removes it again.
            let _ = std::fs::remove_dir_all(dir.join(name));
        }
    }
    Ok(())
}

/// Reads the checkpoint committed in `dir` by [`save`].
pub fn load(dir: &Path) -> Result<(Model, HashMap<String, Tensor>, TrainState)> {
    let path = dir.join(STATE);
    if !path.is_file() {
        bail!("{} holds no checkpoint ({STATE} is missing)", dir.display());
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    let folder = epoch_folder(dir, state.epoch);
    let model = Model::load(folder.join(MODEL))?;
    let path = folder.join(OPTIMIZER);
    let optimizer = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    Ok((model, optimizer, state))
}
