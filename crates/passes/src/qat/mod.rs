//! Quantization-aware training (QAT) graphs: fake quantization inserted where static INT8
//! quantization puts its Q/DQ pairs, and the export back to the same QDQ layout.
//!
//! A QAT run alternates between two forms of the model:
//! - a [`QatState`]: the float model plus one [`QParams`] per quantized activation (keyed
//!   by the tensor whose range the static exporter uses for it);
//! - a training graph ([`insert::training_graph`]): the float model with
//!   `ai.whittle.FakeQuantize` on every watched activation (the same tensors as
//!   [`quantize::watched_tensors`]) and on every target's weight (symmetric min/max, per
//!   channel with `per_channel`), which the trainer trains.
//!   With [`insert::ScaleMode::Learned`] (LSQ) the activation step sizes are trained too;
//!   weight scales always follow the weights' min/max, as the exporter quantizes them.
//!
//! [`strip::strip`] turns a trained graph back into a state (learned scales read from the
//! scale or log-scale initializers); [`export::export_qdq`] folds BatchNormalization and writes the
//! model with [`quantize::qdq::export`], exactly as `whittle quantize --mode static` does,
//! from ranges that reproduce the learned scales. [`import::from_qdq`] turns a model
//! quantized by `whittle quantize` back into a state, so QAT can start from PTQ.

pub mod export;
pub mod import;
pub mod insert;
pub mod strip;

use std::collections::HashMap;

use whittle_exec::Value;
use whittle_ir::Model;

pub use crate::optimize::fold_batchnorm::fold_batchnorm;
use crate::quantize::{self, QParams, QuantConfig, Scheme};
use crate::Result;

/// Suffix of the initializer holding an activation's fake-quantization scale.
pub const SCALE_SUFFIX: &str = "_fq_scale";
/// Suffix of the initializer holding the logarithm of an activation's learned (LSQ) step
/// size: the trainer updates `ln s`, and an `Exp` node feeds `s` to the fake quantization,
/// so the step size stays positive and an optimizer step changes it by a ratio.
pub const LOG_SCALE_SUFFIX: &str = "_fq_log_scale";
/// Suffix of the initializer holding an activation's fake-quantization zero point.
pub const ZERO_POINT_SUFFIX: &str = "_fq_zero_point";
/// Operator type of fake quantization (domain [`whittle_exec::ops::fake_quant::DOMAIN`]).
pub const FAKE_QUANTIZE: &str = "FakeQuantize";

/// A float model and the quantization parameters of its activations.
#[derive(Clone, Debug)]
pub struct QatState {
    /// The float model (opset raised as static quantization needs).
    pub model: Model,
    /// Parameters by tensor name (the tensor whose range the exporter reads).
    pub params: HashMap<String, QParams>,
}

impl QatState {
    /// Calibrates `model` (BatchNormalization folded by [`quantize::calibrated`], as at
    /// export) on `calib` with the config's method and keeps the parameters of every
    /// watched activation.
    pub fn calibrate<I>(model: &Model, cfg: &QuantConfig, calib: I) -> Result<Self>
    where
        I: IntoIterator<Item = HashMap<String, Value>>,
    {
        let model = quantize::prepare(model.clone(), cfg, quantize::WeightSource::Any)?.model;
        let (_, calibration) = quantize::calibrated(&model, cfg, calib)?;
        let scheme = cfg.activation_scheme();
        let params = calibration
            .ranges
            .iter()
            .map(|(name, (lo, hi))| (name.clone(), scheme.params(*lo, *hi)))
            .collect();
        Ok(QatState { model, params })
    }

    /// The parameters fake quantization of `tensor` uses: those of the tensor the exporter
    /// takes its range from (`aliases`: a Relu's input -> its output), else its own, else
    /// those of the Relu input it is the alias of (a QDQ model quantizes only that one).
    pub fn lookup(
        &self,
        tensor: &str,
        aliases: &HashMap<String, String>,
    ) -> Option<(String, QParams)> {
        let source = aliases
            .iter()
            .find(|(_, y)| *y == tensor)
            .map(|(x, _)| x.as_str());
        let key = aliases.get(tensor).map(String::as_str);
        [key, Some(tensor), source]
            .into_iter()
            .flatten()
            .find_map(|k| self.params.get(k).map(|p| (k.to_string(), *p)))
    }
}

/// The float range whose parameters under `scheme` are `p` again: `[(qmin - z) s, (qmax - z) s]`.
pub fn params_range(p: QParams, scheme: &Scheme) -> (f32, f32) {
    let (qmin, qmax) = scheme.qrange();
    (
        (qmin - p.zero_point) as f32 * p.scale,
        (qmax - p.zero_point) as f32 * p.scale,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::QuantType;

    #[test]
    fn params_range_round_trips_through_scheme_params() {
        for scheme in [
            Scheme::activations(QuantType::Uint8),
            Scheme::activations(QuantType::Int8),
        ] {
            for (lo, hi) in [(-1.0f32, 3.0), (0.0, 6.5), (-0.3, 0.01)] {
                let p = scheme.params(lo, hi);
                let (a, b) = params_range(p, &scheme);
                let q = scheme.params(a, b);
                assert_eq!(q.zero_point, p.zero_point, "{lo} {hi}");
                assert!((q.scale - p.scale).abs() <= p.scale * 1e-6, "{q:?} {p:?}");
            }
        }
    }
}
