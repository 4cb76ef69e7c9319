//! Raising the model's ai.onnx opset to what the quantized operators need.

use serde::Serialize;
use whittle_ir::proto::OperatorSetIdProto;
use whittle_ir::Model;

use crate::{bail, Result};

/// An opset raise done for quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OpsetChange {
    /// The model's ai.onnx opset before.
    pub from: i64,
    /// After.
    pub to: i64,
}

/// Operators whose inputs or attributes changed at the given opset: raising across that
/// version would change their meaning, so such models are refused.
const CHANGED_AT: [(&str, i64); 12] = [
    ("Slice", 10),
    ("TopK", 10),
    ("Upsample", 10),
    ("Pad", 11),
    ("Clip", 11),
    ("Resize", 11),
    ("Squeeze", 13),
    ("Unsqueeze", 13),
    ("Split", 13),
    ("ReduceSum", 13),
    ("Dropout", 12),
    ("BatchNormalization", 14),
];

/// Raises the ai.onnx opset to at least `min`; returns the change made, if any. Refuses,
/// naming the node, when a node's operator changed meaning in between.
pub fn ensure_opset(model: &mut Model, min: i64) -> Result<Option<OpsetChange>> {
    let from = model.opset("").unwrap_or(1);
    if from >= min {
        return Ok(None);
    }
    for node in &model.graph().node {
        let changed = CHANGED_AT
            .iter()
            .find(|(op, v)| *op == node.op_type && from < *v && *v <= min);
        if let Some((op, v)) = changed {
            bail!(
                "the model's opset {from} must rise to {min} for quantization, but node '{}' ({op}) \
                 changed meaning in opset {v}; convert the model to opset {min} first",
                node.name
            );
        }
    }
    let ops = &mut model.proto.opset_import;
    ops.retain(|o| !(o.domain.is_empty() || o.domain == "ai.onnx"));
    ops.push(OperatorSetIdProto {
        domain: String::new(),
        version: min,
    });
    if model.proto.ir_version < 7 {
        model.proto.ir_version = 7;
    }
    Ok(Some(OpsetChange { from, to: min }))
}
