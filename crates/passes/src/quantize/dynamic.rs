//! Dynamic quantization (like onnxruntime's `quantize_dynamic`): int8 weights stored,
//! activations quantized at run time by DynamicQuantizeLinear, products in integers.

use std::collections::HashMap;

use whittle_ir::Model;

use super::build::Builder;
use super::config::QuantConfig;
use super::integer::{integer_product, QuantizedInput};
use super::plan::Target;
use super::weights::target_weight;
use crate::Result;

/// Why Conv weights stay per tensor in dynamic mode.
pub const CONV_PER_TENSOR_NOTE: &str =
    "Conv weights are quantized per tensor: ONNX Runtime's ConvInteger takes one weight zero point";

/// Rewrites every target (Conv, Gemm, MatMul with constant weights) into
/// DynamicQuantizeLinear + ConvInteger/MatMulInteger + float rescale. Conv weights are
/// per tensor (see [`CONV_PER_TENSOR_NOTE`]). `out` is the copy to rewrite
/// ([`super::build::Draft::model`]), weights read from `model`.
pub fn export(
    model: &Model,
    mut out: Model,
    cfg: &QuantConfig,
    targets: &[Target],
) -> Result<Model> {
    let per_tensor = QuantConfig {
        per_channel: false,
        ..cfg.clone()
    };
    let mut b = Builder::new(out.graph_mut());
    let mut shared: HashMap<String, QuantizedInput> = HashMap::new();
    for t in targets {
        let x = &t.activations[0];
        let qx = match shared.get(x) {
            Some(q) => q.clone(),
            None => {
                let q = QuantizedInput {
                    data: b.fresh(&format!("{x}_quantized")),
                    scale: b.fresh(&format!("{x}_scale")),
                    zero_point: b.fresh(&format!("{x}_zero_point")),
                };
                let outs = vec![q.data.clone(), q.scale.clone(), q.zero_point.clone()];
                b.node("DynamicQuantizeLinear", vec![x.clone()], outs, vec![]);
                shared.insert(x.clone(), q.clone());
                q
            }
        };
        let wcfg = if t.op_type == "Conv" {
            &per_tensor
        } else {
            cfg
        };
        let Some(w) = target_weight(model.graph(), t, wcfg, true)? else {
            continue;
        };
        integer_product(model.graph(), &mut b, t, &qx, &w)?;
    }
    b.prune();
    whittle_ir::GraphEdit::sort_topologically(out.graph_mut())?;
    Ok(out)
}
