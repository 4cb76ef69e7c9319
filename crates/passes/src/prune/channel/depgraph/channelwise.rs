//! Ops that keep channels apart: activations, pools and normalizations.

use whittle_ir::proto::NodeProto;

use super::node_name;
use super::walk::Walk;
use crate::prune::channel::groups::Role;
use crate::Result;

/// Ops that map each channel to itself, reading only their first input as data.
pub(super) const CHANNELWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Erf",
    "Exp",
    "Abs",
    "Neg",
    "Identity",
    "Dropout",
    "Mish",
    "ThresholdedRelu",
    "Sqrt",
    "Reciprocal",
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
];

impl Walk<'_> {
    /// An op that maps each channel to itself: its first input's layout passes on.
    pub(super) fn channelwise(&mut self, node: &NodeProto) -> Result<()> {
        let others: Vec<String> = node.input.iter().skip(1).cloned().collect();
        if others.iter().any(|n| self.layouts.contains_key(n)) {
            self.block_inputs(node, "channels used as a parameter");
        } else if let Some(layout) = self.input_layout(node, 0) {
            self.set_output(node, layout);
        }
        Ok(())
    }

    /// BatchNormalization/InstanceNormalization over axis 1: parameters are per channel.
    pub(super) fn norm(&mut self, node: &NodeProto) -> Result<()> {
        let Some(layout) = self.input_layout(node, 0).filter(|l| l.axis == 1) else {
            self.block_inputs(node, "normalization over a non-channel axis");
            return Ok(());
        };
        for (i, name) in node.input.iter().enumerate().skip(1) {
            if self.weight_dims(name).is_none() {
                self.block_layout(
                    &layout,
                    &format!("'{}' has a non-constant parameter", node_name(node)),
                );
                continue;
            }
            let role = match i {
                1 => Role::Scale,
                2 => Role::PerChannel,
                _ => Role::Statistic,
            };
            self.slice_layout(&layout, node, name, 0, role);
        }
        self.set_output(node, layout);
        Ok(())
    }
}
