//! Export of a QAT state: BatchNormalization folded, then the QDQ model written by the
//! static quantizer's exporter from ranges that reproduce the learned scales.

use std::collections::HashMap;

use whittle_ir::Model;

use super::{fold_batchnorm, params_range, QatState};
use crate::quantize::qdq::relu_aliases;
use crate::quantize::{self, Plan, QuantConfig};
use crate::{PassError, Result};

/// The QDQ model of `state` (same layout as `whittle quantize --mode static --format qdq`)
/// and the plan it followed.
pub fn export_qdq(state: &QatState, cfg: &QuantConfig) -> Result<(Model, Plan)> {
    let folded = fold_batchnorm(&state.model)?;
    let prepared = quantize::prepare(folded, cfg, quantize::WeightSource::Any)?;
    let ranges = export_ranges(state, &prepared.model, cfg, &prepared.plan)?;
    let model = quantize::export_static(&prepared.model, cfg, &prepared.plan.targets, &ranges)?;
    Ok((model, prepared.plan))
}

/// The range of every watched tensor, from the state's parameters.
fn export_ranges(
    state: &QatState,
    model: &Model,
    cfg: &QuantConfig,
    plan: &Plan,
) -> Result<HashMap<String, (f32, f32)>> {
    let aliases = relu_aliases(model, cfg);
    let scheme = cfg.activation_scheme();
    quantize::watched_tensors(model, &plan.targets)
        .into_iter()
        .map(|t| match state.lookup(&t, &aliases) {
            Some((_, p)) => Ok((t, params_range(p, &scheme))),
            None => Err(PassError::Invalid(format!(
                "no learned quantization parameters for tensor '{t}'"
            ))),
        })
        .collect()
}
