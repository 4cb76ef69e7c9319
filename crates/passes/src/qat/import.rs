//! From a QDQ model (as `whittle quantize --mode static` writes it) back to a QAT state:
//! dequantized weights become float initializers again, and each activation's Q/DQ pair
//! is removed with its scale and zero point kept.

use std::collections::HashMap;

use whittle_ir::graph::GraphEdit;
use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::{Model, NodeAttrs, TensorData};

use super::QatState;
use crate::optimize::constant_folding::ConstantFolding;
use crate::optimize::Pass;
use crate::quantize::build::Builder;
use crate::quantize::qdq::replace_input;
use crate::quantize::weights::initializer;
use crate::quantize::QParams;
use crate::{bail, Result};

/// Whether `model` has DequantizeLinear nodes (was quantized in the QDQ layout).
pub fn is_qdq(model: &Model) -> bool {
    model
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "DequantizeLinear")
}

/// The float model and activation parameters of a QDQ model.
pub fn from_qdq(model: &Model) -> Result<QatState> {
    let mut model = model.clone();
    dequantize_constants(model.graph_mut())?;
    // Small 8-bit constants (biases, LayerNormalization parameters, positional tables) are
    // decoded by Cast -> Sub -> Mul chains that keep their names (`compact.rs`): folded
    // back into float initializers, so they train again.
    ConstantFolding.run(&mut model)?;
    let g = model.graph_mut();
    let mut params = HashMap::new();
    while let Some((qi, di)) = next_pair(g) {
        let (q, dq) = (g.node[qi].clone(), g.node[di].clone());
        let p = QParams {
            scale: scalar(g, &q.input[1])? as f32,
            zero_point: match q.input.get(2).filter(|z| !z.is_empty()) {
                Some(z) => scalar(g, z)? as i64,
                None => 0,
            },
        };
        let (x, y) = (&q.input[0], &dq.output[0]);
        // Input pairs (`x -> x_dequantized`) keep x; output pairs (`y_float -> y`) keep y.
        let is_input_pair = y.starts_with(&format!("{x}_dequantized"));
        let is_output = g.output.iter().any(|o| &o.name == y);
        let kept = if g.runtime_inputs().contains(&x.as_str()) || (is_input_pair && !is_output) {
            for n in g.node.iter_mut() {
                replace_input(&mut n.input, y, x);
            }
            x.clone()
        } else {
            g.rename_value(x, y);
            y.clone()
        };
        params.insert(kept, p);
        g.node[qi].output.clear();
        g.node[di].output.clear();
        Builder::new(g).prune();
    }
    Builder::new(g).prune();
    Ok(QatState { model, params })
}

/// The next QuantizeLinear whose output only a DequantizeLinear reads, with that node.
fn next_pair(g: &GraphProto) -> Option<(usize, usize)> {
    let consumers = g.consumers();
    g.node.iter().enumerate().find_map(|(qi, n)| {
        if n.op_type != "QuantizeLinear" || n.output.first().is_none_or(|o| o.is_empty()) {
            return None;
        }
        match consumers.get(&n.output[0]).map(Vec::as_slice) {
            Some(&[di]) if g.node[di].op_type == "DequantizeLinear" => Some((qi, di)),
            _ => None,
        }
    })
}

/// The first value of initializer `name`.
fn scalar(g: &GraphProto, name: &str) -> Result<f64> {
    let t = initializer(g, name)?;
    match t.to_f64_vec()?.first() {
        Some(v) => Ok(*v),
        None => bail!("initializer '{name}' is empty"),
    }
}

/// Replaces every DequantizeLinear of a constant by a float initializer, named as the
/// float weight was before quantization (`W` for `W_quantized`) when that name is free.
fn dequantize_constants(g: &mut GraphProto) -> Result<()> {
    let mut floats = Vec::new();
    for n in g
        .node
        .iter_mut()
        .filter(|n| n.op_type == "DequantizeLinear")
    {
        if g.initializer.iter().any(|t| t.name == n.input[0]) {
            floats.push(n.clone());
            n.output.clear();
        }
    }
    for node in floats {
        let data = dequantize(g, &node)?;
        let out = &node.output[0];
        let name = match node.input[0].strip_suffix("_quantized") {
            Some(base) if !is_used(g, base) => base.to_string(),
            _ => out.clone(),
        };
        for n in g.node.iter_mut() {
            replace_input(&mut n.input, out, &name);
        }
        g.initializer.push(data.to_proto(&name));
    }
    Builder::new(g).prune();
    Ok(())
}

/// Whether a value, initializer or graph interface entry is called `name`.
fn is_used(g: &GraphProto, name: &str) -> bool {
    g.initializer.iter().any(|t| t.name == name)
        || g.input.iter().chain(&g.output).any(|v| v.name == name)
        || g.node
            .iter()
            .any(|n| n.input.iter().chain(&n.output).any(|v| v == name))
}

/// `(q - zero_point) * scale` of a constant DequantizeLinear, per tensor or along `axis`.
fn dequantize(g: &GraphProto, node: &NodeProto) -> Result<TensorData> {
    let q = initializer(g, &node.input[0])?;
    let scales = initializer(g, &node.input[1])?.to_f64_vec()?;
    let zeros = match node.input.get(2).filter(|z| !z.is_empty()) {
        Some(z) => initializer(g, z)?.to_f64_vec()?,
        None => vec![0.0; scales.len()],
    };
    let dims = q.dims().to_vec();
    let (inner, channels) = if scales.len() > 1 {
        let axis = whittle_exec::ops::normalize_axis(node.int_or("axis", 1)?, dims.len())?;
        (dims[axis + 1..].iter().product(), dims[axis])
    } else {
        (1, 1)
    };
    if scales.len() != 1 && scales.len() != channels || zeros.len() != scales.len() {
        bail!(
            "DequantizeLinear '{}': {} scales for a weight of shape {dims:?}",
            node.name,
            scales.len()
        );
    }
    let values: Vec<f32> = q
        .to_f64_vec()?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = if scales.len() == 1 {
                0
            } else {
                (i / inner) % channels
            };
            ((v - zeros[c]) * scales[c]) as f32
        })
        .collect();
    Ok(TensorData::from_slice(dims, &values)?)
}
