//! Structured channel pruning: removes whole output channels of Conv/Gemm/MatMul layers
//! together with every tensor coupled to them, giving a smaller dense model.
//!
//! [`prune_channels`] builds a dependency graph ([`depgraph`]) of coupled channel groups,
//! scores each group's channels ([`Criterion`]), chooses the channels to keep per layer or
//! globally (rounded to multiples of `round_to`) and slices the initializers. Groups the
//! analysis cannot prove safe are left alone and listed in the report with the reason.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use whittle_ir::cost::model_macs;
use whittle_ir::{GraphEdit, Model, TensorData};

use crate::optimize::ModelStats;
use crate::{bail, Result};

mod apply;
mod cost;
pub mod depgraph;
pub mod groups;
mod importance;
pub mod pruner;
mod select;

pub use pruner::ChannelPruner;

/// How channels are ranked.
#[derive(Clone, Debug, PartialEq)]
pub enum Criterion {
    /// Sum of |w| of the weights, biases and BN γ/β producing the channel.
    L1,
    /// Euclidean norm of the same tensors.
    L2,
    /// |γ| of the group's BatchNormalizations (L1 for groups without one).
    BnGamma,
    /// First-order Taylor |Σ w·∂L/∂w| over all coupled tensors (needs [`TaylorData`]).
    Taylor,
    /// Uniform random scores (a baseline).
    Random {
        /// Seed of the scores.
        seed: u64,
    },
}

/// Whether the ratio applies to each group or to all channels together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every group loses `ratio` of its channels.
    PerLayer,
    /// `ratio` of all prunable channels go, lowest normalised importance first.
    Global,
}

/// Options of [`prune_channels`].
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Fraction of channels removed, in [0, 1).
    pub ratio: f64,
    /// Per-layer or global ranking.
    pub scope: Scope,
    /// Importance criterion.
    pub criterion: Criterion,
    /// Kept channel counts are multiples of this (1 disables).
    pub round_to: usize,
    /// Layers whose output channels are never pruned (their input side may shrink);
    /// `None`: the stem (Convs reading a graph input) and the classifier.
    pub protected: Option<Vec<String>>,
    /// Fewest channels a group keeps (at least `round_to` and 1).
    pub min_channels: usize,
    /// The ratio of each prunable group, in the order of [`ChannelReport::groups`]
    /// (per-layer scope only); `None`: `ratio` for every group.
    pub group_ratios: Option<Vec<f64>>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            ratio: 0.5,
            scope: Scope::PerLayer,
            criterion: Criterion::L1,
            round_to: 8,
            protected: None,
            min_channels: 1,
            group_ratios: None,
        }
    }
}

/// A few batches of inputs and labels for the Taylor criterion.
#[derive(Clone, Debug, Default)]
pub struct TaylorData {
    /// `(input batch for the model's first input, labels)` pairs.
    pub batches: Vec<(TensorData, Vec<i64>)>,
}

/// A group that was scored (and possibly pruned).
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    /// Nodes touching the group (a producer first).
    pub layers: Vec<String>,
    /// Channels before.
    pub channels_before: usize,
    /// Channels after.
    pub channels_after: usize,
    /// Criterion used.
    pub criterion: String,
}

/// A group left alone.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedGroup {
    /// Nodes touching the group.
    pub layers: Vec<String>,
    /// Its channels.
    pub channels: usize,
    /// Why it was not pruned.
    pub reason: String,
}

/// Result of [`prune_channels`].
#[derive(Clone, Debug, Serialize)]
pub struct ChannelReport {
    /// Prunable groups.
    pub groups: Vec<GroupReport>,
    /// Unprunable groups.
    pub skipped: Vec<SkippedGroup>,
    /// Parameters (initializer and constant elements) before.
    pub params_before: u64,
    /// Parameters after.
    pub params_after: u64,
    /// MACs of one sample before.
    pub macs_before: u64,
    /// MACs of one sample after.
    pub macs_after: u64,
}

/// Prunes `cfg.ratio` of the channels of `model`; `data` is needed by [`Criterion::Taylor`].
pub fn prune_channels(
    model: &Model,
    cfg: &ChannelConfig,
    data: Option<&TaylorData>,
) -> Result<(Model, ChannelReport)> {
    check_config(cfg)?;
    let protected = cfg
        .protected
        .clone()
        .unwrap_or_else(|| default_protected(model));
    let dep = depgraph::analyze(model, &protected)?;
    let prunable: Vec<(usize, &groups::Group)> = dep
        .groups
        .roots()
        .filter(|(_, g)| g.blocked.is_none())
        .collect();
    check_group_ratios(cfg, prunable.len())?;
    let tensors = importance::load_tensors(model, prunable.iter().map(|(_, g)| *g))?;
    let grads = match (&cfg.criterion, data) {
        (Criterion::Taylor, Some(d)) => Some(importance::taylor_gradients(
            model,
            d,
            &tensors.keys().cloned().collect(),
        )?),
        (Criterion::Taylor, None) => {
            bail!("the Taylor criterion needs data (a few labelled batches)")
        }
        _ => None,
    };
    let mut scored = Vec::new();
    let mut labels = Vec::new();
    for (id, group) in &prunable {
        let (scores, label) =
            importance::score_group(group, *id, &cfg.criterion, &tensors, grads.as_ref())?;
        scored.push(select::Scored {
            id: *id,
            scores,
            segments: group.segments,
        });
        labels.push(label);
    }
    let kept = select::select(&scored, cfg);
    let pruned = apply::apply(model, &dep, &kept)?;
    let groups = (prunable.iter().zip(labels))
        .map(|((id, g), criterion)| GroupReport {
            layers: g.layers.clone(),
            channels_before: g.width,
            channels_after: kept.get(id).map_or(g.width, Vec::len),
            criterion,
        })
        .collect();
    let report = ChannelReport {
        groups,
        skipped: skipped(&dep),
        params_before: ModelStats::of(model).params,
        params_after: ModelStats::of(&pruned).params,
        macs_before: model_macs(model, &HashMap::new())?,
        macs_after: model_macs(&pruned, &HashMap::new())?,
    };
    Ok((pruned, report))
}

fn check_config(cfg: &ChannelConfig) -> Result<()> {
    if !(0.0..1.0).contains(&cfg.ratio) {
        bail!(
            "pruning ratio must be in [0, 1) (a layer is never pruned to zero), got {}",
            cfg.ratio
        );
    }
    if cfg.round_to == 0 {
        bail!("round_to must be at least 1");
    }
    Ok(())
}

fn check_group_ratios(cfg: &ChannelConfig, groups: usize) -> Result<()> {
    let Some(ratios) = &cfg.group_ratios else {
        return Ok(());
    };
    if cfg.scope == Scope::Global {
        bail!("per-group ratios need the per-layer scope, not global");
    }
    if ratios.len() != groups {
        bail!(
            "{} per-group ratios given; the model has {groups} prunable channel groups",
            ratios.len()
        );
    }
    if let Some(r) = ratios.iter().find(|r| !(0.0..1.0).contains(*r)) {
        bail!("per-group pruning ratio must be in [0, 1), got {r}");
    }
    Ok(())
}

fn skipped(dep: &depgraph::DepGraph) -> Vec<SkippedGroup> {
    (dep.groups.roots())
        .filter_map(|(_, g)| {
            Some(SkippedGroup {
                layers: g.layers.clone(),
                channels: g.width,
                reason: g.blocked.clone()?,
            })
        })
        .collect()
}

/// The stem (Convs reading a graph input) and the classifier (the last Gemm/MatMul whose
/// output is a graph output).
pub fn default_protected(model: &Model) -> Vec<String> {
    let graph = model.graph();
    let inputs: HashSet<&str> = graph.runtime_inputs().into_iter().collect();
    let outputs: HashSet<&str> = graph.output.iter().map(|v| v.name.as_str()).collect();
    let stem = (graph.node.iter()).filter(|n| {
        n.op_type == "Conv" && n.input.first().is_some_and(|x| inputs.contains(x.as_str()))
    });
    let head = (graph.node.iter().rev())
        .filter(|n| matches!(n.op_type.as_str(), "Gemm" | "MatMul"))
        .filter(|n| n.output.iter().any(|o| outputs.contains(o.as_str())))
        .take(1);
    stem.chain(head).map(depgraph::node_name).collect()
}
