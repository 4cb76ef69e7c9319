//! Shrinking a trained model (`whittle nas --from MODEL`): a search space whose genome is
//! the share of channels removed from each of the model's prunable channel groups
//! (whittle-passes' structured channel pruning, which keeps channels coupled across
//! residual Adds and Concats together). A candidate is the pruned model, measured like any
//! other and fine-tuned from its trained weights at each rung.

use std::path::Path;

use whittle_ir::Model;
use whittle_passes::prune::channel::{prune_channels, ChannelConfig, ChannelReport, Criterion};

use crate::nas::candidate::content_hash;
use crate::nas::error::{At, NasError, Result};

/// Percent of a group's channels a gene may remove.
pub const PERCENTS: [u32; 4] = [0, 25, 50, 75];

/// The model a pruning search shrinks.
#[derive(Clone, Debug)]
pub struct Source {
    /// The model.
    pub model: Model,
    /// Hash of its file's bytes (part of every candidate's spec).
    pub hash: String,
    /// The first layer of each prunable channel group, in the pass's group order: the
    /// genes' names.
    pub groups: Vec<String>,
}

impl Source {
    /// Loads `--from` `path`; refuses a model without a prunable channel group, saying why
    /// each group the analysis found was left alone.
    pub fn load(path: &Path) -> Result<Self> {
        let at = || format!("reading --from {}", path.display());
        let bytes = std::fs::read(path).at(at)?;
        let model = Model::load(path).at(at)?;
        let report = analyse(&model).at(|| format!("--from {}", path.display()))?;
        if report.groups.is_empty() {
            let why: Vec<String> = (report.skipped.iter())
                .map(|s| format!("{} ({})", s.layers.join(", "), s.reason))
                .collect();
            return Err(NasError::Refused(format!(
                "--from {}: no channel group can be pruned (the stem and the classifier are \
                 kept){}",
                path.display(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; left alone: {}", why.join("; "))
                }
            )));
        }
        Ok(Source {
            model,
            hash: content_hash(&bytes),
            groups: (report.groups.iter())
                .map(|g| g.layers.first().cloned().unwrap_or_default())
                .collect(),
        })
    }
}

/// The channel groups of `model` (nothing removed).
fn analyse(model: &Model) -> whittle_passes::Result<ChannelReport> {
    Ok(prune_channels(model, &config(None), None)?.1)
}

/// L1-ranked per-group pruning, channel counts not rounded.
fn config(group_ratios: Option<Vec<f64>>) -> ChannelConfig {
    ChannelConfig {
        ratio: 0.0,
        criterion: Criterion::L1,
        round_to: 1,
        group_ratios,
        ..ChannelConfig::default()
    }
}

/// `model` with each group losing its gene's percent of channels (lowest L1 norm first).
pub fn prune(model: &Model, genome: &[u32]) -> Result<Model> {
    let ratios = genome.iter().map(|&p| f64::from(p) / 100.0).collect();
    prune_channels(model, &config(Some(ratios)), None)
        .map(|(pruned, _)| pruned)
        .at(|| format!("pruning channels by {genome:?} percent"))
}
