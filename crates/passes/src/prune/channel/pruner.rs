//! Channel pruning as a [`Pruner`], so the schedule drivers (one-shot, iterative with
//! fine-tuning between steps) serve it like the unstructured methods.

use std::cell::{Cell, RefCell};

use whittle_ir::Model;

use super::{prune_channels, ChannelConfig, ChannelReport, TaylorData};
use crate::prune::{Pruned, Pruner};
use crate::Result;

/// Removes channels; the sparsity a schedule asks for is the fraction of the *original*
/// model's channels removed so far, so iterative steps do not compound.
pub struct ChannelPruner {
    config: ChannelConfig,
    data: Option<TaylorData>,
    reached: Cell<f64>,
    reports: RefCell<Vec<ChannelReport>>,
}

impl ChannelPruner {
    /// A pruner with `config` (its `ratio` is replaced by each step's target); `data`
    /// feeds the Taylor criterion.
    pub fn new(config: ChannelConfig, data: Option<TaylorData>) -> Self {
        ChannelPruner {
            config,
            data,
            reached: Cell::new(0.0),
            reports: RefCell::new(Vec::new()),
        }
    }

    /// The report of every pruning step so far, in order.
    pub fn reports(&self) -> Vec<ChannelReport> {
        self.reports.borrow().clone()
    }
}

impl Pruner for ChannelPruner {
    fn prune(&self, model: &Model, sparsity: f64) -> Result<Pruned> {
        let before = self.reached.get();
        let ratio = (1.0 - (1.0 - sparsity) / (1.0 - before)).max(0.0);
        let cfg = ChannelConfig {
            ratio,
            ..self.config.clone()
        };
        let (model, report) = prune_channels(model, &cfg, self.data.as_ref())?;
        self.reached.set(sparsity);
        let mut notes = vec![format!(
            "channels: parameters {} -> {}, MACs per sample {} -> {}",
            report.params_before, report.params_after, report.macs_before, report.macs_after
        )];
        notes.extend((report.skipped.iter()).map(|s| {
            format!(
                "left {} ({} channels): {}",
                s.layers.join(", "),
                s.channels,
                s.reason
            )
        }));
        self.reports.borrow_mut().push(report);
        Ok(Pruned {
            model,
            masks: Vec::new(),
            notes,
        })
    }
}
