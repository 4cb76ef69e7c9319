//! From a trained graph back to a float model and the learned activation parameters.

use std::collections::HashMap;

use whittle_exec::ops::fake_quant::DOMAIN;
use whittle_ir::graph::GraphEdit;
use whittle_ir::{Model, TensorData};

use super::{QatState, FAKE_QUANTIZE, LOG_SCALE_SUFFIX, SCALE_SUFFIX, ZERO_POINT_SUFFIX};
use crate::quantize::build::Builder;
use crate::quantize::qdq::replace_input;
use crate::quantize::weights::initializer;
use crate::quantize::QParams;
use crate::{PassError, Result};

/// Removes every fake quantization of `trained` (its trained weights are kept) and reads
/// the learned scale (or log-scale) and zero point of each activation from their initializers.
pub fn strip(trained: &Model) -> Result<QatState> {
    let params = learned_params(trained)?;
    let mut model = trained.clone();
    let g = model.graph_mut();
    while let Some(i) = g.node.iter().position(is_fake_quantize) {
        let node = g.remove_node(i);
        let (Some(x), Some(y)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        if g.output.iter().any(|o| &o.name == y) {
            g.rename_value(x, y);
        } else {
            for n in g.node.iter_mut() {
                replace_input(&mut n.input, y, x);
            }
        }
    }
    Builder::new(g).prune();
    model.proto.opset_import.retain(|o| o.domain != DOMAIN);
    Ok(QatState { model, params })
}

fn is_fake_quantize(n: &whittle_ir::proto::NodeProto) -> bool {
    n.op_type == FAKE_QUANTIZE && n.domain == DOMAIN
}

/// Scale and zero point of every activation fake quantization, by key.
fn learned_params(model: &Model) -> Result<HashMap<String, QParams>> {
    let g = model.graph();
    let mut out = HashMap::new();
    for init in &g.initializer {
        let value = || first_value(&initializer(g, &init.name)?, &init.name);
        let (key, scale) = if let Some(key) = init.name.strip_suffix(SCALE_SUFFIX) {
            (key, value()?)
        } else if let Some(key) = init.name.strip_suffix(LOG_SCALE_SUFFIX) {
            (key, value()?.exp())
        } else {
            continue;
        };
        if !(scale.is_finite() && scale > 0.0) {
            return Err(PassError::Invalid(format!(
                "the learned scale of '{key}' is {scale}, not a positive number"
            )));
        }
        let zp_name = format!("{key}{ZERO_POINT_SUFFIX}");
        let zero_point = first_value(&initializer(g, &zp_name)?, &zp_name)? as i64;
        out.insert(
            key.to_string(),
            QParams {
                scale: scale as f32,
                zero_point,
            },
        );
    }
    Ok(out)
}

fn first_value(t: &TensorData, name: &str) -> Result<f64> {
    t.to_f64_vec()?
        .first()
        .copied()
        .ok_or_else(|| PassError::Invalid(format!("initializer '{name}' is empty")))
}
