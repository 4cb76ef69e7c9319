//! Reading weights and biases out of the graph and quantizing them for a target node.

use std::collections::HashMap;

use whittle_ir::graph::GraphEdit;
use whittle_ir::proto::GraphProto;
use whittle_ir::TensorData;

use super::config::QuantConfig;
use super::plan::Target;
use super::scheme::{QParams, QuantizedWeight, Scheme};
use crate::{PassError, Result};

/// The float initializer `name`.
pub fn initializer(g: &GraphProto, name: &str) -> Result<TensorData> {
    let proto = g
        .initializer(name)
        .ok_or_else(|| PassError::Invalid(format!("'{name}' is not an initializer")))?;
    Ok(TensorData::from_proto(proto, None)?)
}

/// A 2-D float tensor transposed.
pub fn transpose_2d(t: &TensorData) -> Result<TensorData> {
    let (r, c) = match t.dims() {
        [r, c] => (*r, *c),
        d => crate::bail!("expected a 2-D weight, got shape {d:?}"),
    };
    let v: Vec<f32> = t.to_vec()?;
    let out: Vec<f32> = (0..c * r).map(|i| v[(i % r) * c + i / r]).collect();
    Ok(TensorData::from_slice(vec![c, r], &out)?)
}

/// The target's weight quantized per the config (per channel along its axis, or per tensor),
/// transposed to `[K, N]` first when `as_kn` and the node is a Gemm with `transB`.
pub fn target_weight(
    g: &GraphProto,
    t: &Target,
    cfg: &QuantConfig,
    as_kn: bool,
) -> Result<Option<QuantizedWeight>> {
    let Some((name, axis)) = &t.weight else {
        return Ok(None);
    };
    let mut w = initializer(g, name)?;
    let mut axis = *axis;
    if as_kn && t.op_type == "Gemm" && axis == 0 {
        w = transpose_2d(&w)?;
        axis = 1;
    }
    let axis = cfg.per_channel.then_some(axis);
    super::scheme::quantize_weight(name, &w, &cfg.weight_scheme(), axis).map(Some)
}

/// [`target_weight`] of each of `targets` with a weight, by node index, quantized in
/// parallel (a weight per thread; large ones split their loops over the threads too).
pub fn target_weights(
    g: &GraphProto,
    targets: &[&Target],
    cfg: &QuantConfig,
    as_kn: bool,
) -> Result<HashMap<usize, QuantizedWeight>> {
    use rayon::prelude::*;
    targets
        .par_iter()
        .filter_map(|t| {
            Some(
                target_weight(g, t, cfg, as_kn)
                    .transpose()?
                    .map(|w| (t.node, w)),
            )
        })
        .collect()
}

/// Params of activation `x` from its calibrated range.
pub fn range_params(
    ranges: &HashMap<String, (f32, f32)>,
    x: &str,
    scheme: &Scheme,
) -> Result<QParams> {
    let (lo, hi) = ranges
        .get(x)
        .ok_or_else(|| PassError::Invalid(format!("no calibration range for tensor '{x}'")))?;
    Ok(scheme.params(*lo, *hi))
}
