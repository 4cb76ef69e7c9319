//! The training graph: `ai.whittle.FakeQuantize` on the activations static quantization
//! watches and on the weights of its targets.

use std::collections::HashMap;

use whittle_exec::ops::fake_quant::DOMAIN;
use whittle_ir::attr::make;
use whittle_ir::graph::GraphEdit;
use whittle_ir::proto::{AttributeProto, OperatorSetIdProto};
use whittle_ir::shape::Dim;
use whittle_ir::{Model, TensorData};

use super::{
    fold_batchnorm, QatState, FAKE_QUANTIZE, LOG_SCALE_SUFFIX, SCALE_SUFFIX, ZERO_POINT_SUFFIX,
};
use crate::quantize::build::Builder;
use crate::quantize::qdq::{relu_aliases, replace_input};
use crate::quantize::scheme::{int_tensor, QParams};
use crate::quantize::{self, QuantConfig, Scheme, Target};
use crate::{PassError, Result};

/// How activation scales are held in the training graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleMode {
    /// Constant scalars (not trained).
    Fixed,
    /// Learned step size: `[1]` tensors holding `ln s` that the trainer updates (an `Exp`
    /// node feeds `s`, which so stays positive), with the LSQ gradient scale
    /// `1 / sqrt(features * qmax)` on `s` where the per-sample feature count is known.
    Learned,
}

/// The training graph of `state`: activations are fake-quantized with the state's
/// parameters, weights with per-step symmetric min/max scales. Activation positions come
/// from the plan of the BatchNormalization-folded model (where the exporter will put them);
/// weights are those of the targets of `state.model` itself.
pub fn training_graph(state: &QatState, cfg: &QuantConfig, mode: ScaleMode) -> Result<Model> {
    let folded = fold_batchnorm(&state.model)?;
    let folded_plan = quantize::plan::plan(&folded, cfg, quantize::WeightSource::Any)?;
    let watched = quantize::watched_tensors(&folded, &folded_plan.targets);
    let aliases = relu_aliases(&folded, cfg);
    let own_plan = quantize::plan::plan(&state.model, cfg, quantize::WeightSource::Any)?;
    let features = per_sample_features(&state.model);
    let mut model = state.model.clone();
    let scheme = cfg.activation_scheme();
    let mut b = Builder::new(model.graph_mut());
    let mut names: Vec<&String> = watched.iter().collect();
    names.sort();
    let mut scales: HashMap<String, (String, String)> = HashMap::new();
    for t in names {
        let (key, p) = state.lookup(t, &aliases).ok_or_else(|| {
            PassError::Invalid(format!("no quantization parameters for tensor '{t}'"))
        })?;
        if !scales.contains_key(&key) {
            let inits = scale_initializers(&mut b, &key, p, &scheme, mode)?;
            scales.insert(key.clone(), inits);
        }
        let (s, z) = &scales[&key];
        let mut attrs = range_attrs(&scheme);
        if let (ScaleMode::Learned, Some(g)) = (mode, features.get(&key)) {
            attrs.push(make::float("grad_scale", lsq_grad_scale(*g, &scheme)));
        }
        fake_quantize_activation(&mut b, t, vec![t.clone(), s.clone(), z.clone()], attrs);
    }
    for t in &own_plan.targets {
        fake_quantize_weight(&mut b, t, cfg)?;
    }
    model.graph_mut().sort_topologically()?;
    add_domain(&mut model);
    Ok(model)
}

/// LSQ's gradient scale `1 / sqrt(features * qmax)`.
fn lsq_grad_scale(features: usize, scheme: &Scheme) -> f32 {
    1.0 / ((features as f64) * scheme.qrange().1 as f64).sqrt() as f32
}

/// Per-sample element count of every value whose shape inference knows it.
fn per_sample_features(model: &Model) -> HashMap<String, usize> {
    let types = whittle_ir::shape::infer(model, &HashMap::new()).unwrap_or_default();
    types
        .into_iter()
        .filter_map(|(name, t)| {
            let dims = t.dims?;
            let known: Option<Vec<usize>> = dims
                .iter()
                .skip(1)
                .map(|d| match d {
                    Dim::Known(n) => Some(*n),
                    _ => None,
                })
                .collect();
            Some((name, known?.iter().product::<usize>().max(1)))
        })
        .collect()
}

/// The `qmin`/`qmax` attributes of `scheme`.
fn range_attrs(scheme: &Scheme) -> Vec<AttributeProto> {
    let (qmin, qmax) = scheme.qrange();
    vec![make::int("qmin", qmin), make::int("qmax", qmax)]
}

/// Scale and zero-point initializers of activation `key`.
fn scale_initializers(
    b: &mut Builder,
    key: &str,
    p: QParams,
    scheme: &Scheme,
    mode: ScaleMode,
) -> Result<(String, String)> {
    let (scale, dims) = match mode {
        ScaleMode::Fixed => {
            let scale = TensorData::from_slice(vec![], &[p.scale])?;
            (b.constant(&format!("{key}{SCALE_SUFFIX}"), &scale), vec![])
        }
        ScaleMode::Learned => {
            let log = TensorData::from_slice(vec![1], &[p.scale.ln()])?;
            let log = b.constant(&format!("{key}{LOG_SCALE_SUFFIX}"), &log);
            let scale = b.fresh(&format!("{key}{SCALE_SUFFIX}"));
            b.node("Exp", vec![log], vec![scale.clone()], vec![]);
            (scale, vec![1])
        }
    };
    let zero = int_tensor(scheme.qtype.dtype(), dims, &[p.zero_point])?;
    Ok((
        scale,
        b.constant(&format!("{key}{ZERO_POINT_SUFFIX}"), &zero),
    ))
}

/// Fake-quantizes activation `t`: its readers read the fake-quantized value (a graph
/// output keeps its name, its producer writes a renamed float value).
fn fake_quantize_activation(
    b: &mut Builder,
    t: &str,
    mut inputs: Vec<String>,
    attrs: Vec<AttributeProto>,
) {
    let is_output = b.graph.output.iter().any(|o| o.name == t);
    let fq = b.fresh(&format!("{t}_fake_quantized"));
    if is_output {
        b.graph.rename_value(t, &fq);
        b.graph
            .output
            .iter_mut()
            .filter(|o| o.name == fq)
            .for_each(|o| o.name = t.into());
        inputs[0] = fq;
        fake_quantize_node(b, inputs, t.to_string(), attrs);
    } else {
        for n in b.graph.node.iter_mut() {
            replace_input(&mut n.input, t, &fq);
        }
        fake_quantize_node(b, inputs, fq, attrs);
    }
}

/// Fake-quantizes the weight of target `t` (symmetric min/max, per channel when configured).
fn fake_quantize_weight(b: &mut Builder, t: &Target, cfg: &QuantConfig) -> Result<()> {
    let Some((w, axis)) = &t.weight else {
        return Ok(());
    };
    let mut attrs = range_attrs(&cfg.weight_scheme());
    if cfg.per_channel {
        attrs.push(make::int("axis", *axis as i64));
    }
    let fq = b.fresh(&format!("{w}_fake_quantized"));
    replace_input(&mut b.graph.node[t.node].input, w, &fq);
    fake_quantize_node(b, vec![w.clone()], fq, attrs);
    Ok(())
}

fn fake_quantize_node(
    b: &mut Builder,
    inputs: Vec<String>,
    output: String,
    attrs: Vec<AttributeProto>,
) {
    b.node(FAKE_QUANTIZE, inputs, vec![output], attrs);
    if let Some(n) = b.graph.node.last_mut() {
        n.domain = DOMAIN.into();
    }
}

/// Declares the `ai.whittle` opset.
fn add_domain(model: &mut Model) {
    let proto = &mut model.proto;
    if !proto.opset_import.iter().any(|o| o.domain == DOMAIN) {
        proto.opset_import.push(OperatorSetIdProto {
            domain: DOMAIN.into(),
            version: 1,
        });
    }
}
