//! Output paths: the checks every command makes before it writes a model, and writing one
//! so that a failure leaves no partial file.

use std::path::Path;

use anyhow::{bail, Context};
use whittle_ir::{ExternalData, Model};

/// What `--force` may overwrite when the output path is the command's own input model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputModel {
    /// Never written over (the command reads it while it works, or trains from it).
    Protected,
    /// Written over with `--force`.
    ForceOverwrites,
}

/// Refuses an output that is the input model (per `input`), lies in a missing folder, is a
/// folder, or is an existing file without `--force`. `model` may name something that is
/// not a file (`zoo:NAME`).
pub(crate) fn check_output(
    model: &Path,
    output: &Path,
    force: bool,
    input: InputModel,
) -> anyhow::Result<()> {
    let same = model == output
        || matches!((model.canonicalize(), output.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same && (input == InputModel::Protected || !force) {
        let remedy = match input {
            InputModel::Protected => "choose another path",
            InputModel::ForceOverwrites => "pass --force to overwrite it",
        };
        bail!(
            "the output {} is the input model; {remedy}",
            output.display()
        );
    }
    let folder = output.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(folder) = folder.filter(|f| !f.is_dir()) {
        bail!(
            "the output folder {} does not exist (for {})",
            folder.display(),
            output.display()
        );
    }
    if output.is_dir() {
        bail!("the output {} is a folder, not a file", output.display());
    }
    if output.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", output.display());
    }
    Ok(())
}

/// Writes `model` to `out` atomically (see [`Model::save`]): a failure or a signal leaves
/// no partial model. A model above protobuf's 2 GiB limit keeps its large initializers in
/// `OUT.data` beside it (ONNX external data).
pub(crate) fn save_model(model: &Model, out: &Path) -> anyhow::Result<()> {
    model
        .save(out, &ExternalData::Auto)
        .with_context(|| format!("writing {}", out.display()))
}
