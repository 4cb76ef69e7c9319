//! `fold-batchnorm`: an inference-mode `BatchNormalization` that directly follows a
//! `Conv`, `ConvTranspose`, `Gemm` or `MatMul` with constant weights is folded into that
//! node's weights and bias. With `s = scale / sqrt(var + eps)` and `t = B - mean * s`,
//! output channel `c` of the producer is multiplied by `s[c]` and shifted by `t[c]`.
//!
//! Conditions: the producer's output is read only by the BatchNormalization and is not a
//! graph output; the BatchNormalization's statistics outputs are unused and its
//! parameters are constant 1-D FLOAT/DOUBLE tensors of one value per channel.
//! - `Conv`: weight `[M, C/g, k...]`, row `m` scaled; a missing bias becomes `t`.
//! - `ConvTranspose`: weight `[C, M/g, k...]`; output channel of `W[c, j]` is
//!   `(c / (C/g)) * (M/g) + j`, so every group is handled.
//! - `Gemm`: columns of `B` (rows when `transB=1`) scaled; `C' = beta*C*s + t`
//!   (broadcast to `[M]` or `[rows, M]`) and `beta` becomes 1.
//! - `MatMul` with a constant 2-D weight `[K, M]` becomes `Gemm(A, B*s, t)`, but only when
//!   `A` is known to be 2-D: BatchNormalization normalises axis 1, which is the weight's
//!   output axis only for 2-D outputs `[N, M]`. For 3-D or higher `A` (e.g. `[N, T, K]`)
//!   axis 1 is `T`, not something the weight can absorb, so the node is left unchanged.

use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{attr::make, GraphEdit, Model, NodeAttrs, TensorData};

use super::util::{
    constant, float_tensor, graph_outputs, inferred_types, is_default_domain, is_foldable_float,
    set_constant_input, single_use, take_over_output, use_counts,
};
use super::{Pass, PassStats};
use crate::error::Result;

/// The `fold-batchnorm` pass.
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn description(&self) -> &'static str {
        "fold BatchNormalization into a preceding Conv, ConvTranspose, Gemm or MatMul"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let types = inferred_types(model);
        let mut changes = 0;
        while let Some(fold) = next_fold(model, &types)? {
            apply(model, fold);
            changes += 1;
        }
        Ok(PassStats { changes })
    }
}

/// `model` with every foldable BatchNormalization folded into its producer.
pub fn fold_batchnorm(model: &Model) -> Result<Model> {
    let mut out = model.clone();
    FoldBatchNorm.run(&mut out)?;
    Ok(out)
}

/// A BatchNormalization (node `bn`) to fold into node `producer`.
struct Fold {
    bn: usize,
    producer: usize,
    folded: Folded,
}

/// The producer's new weight, bias and op type.
struct Folded {
    weight: TensorData,
    bias: TensorData,
    /// `Gemm` when a MatMul becomes one.
    new_op: Option<&'static str>,
}

/// Per-channel scale `s` and shift `t` of an inference BatchNormalization.
struct Affine {
    s: Vec<f64>,
    t: Vec<f64>,
}

fn next_fold(
    model: &Model,
    types: &std::collections::HashMap<String, TensorType>,
) -> Result<Option<Fold>> {
    let graph = model.graph();
    let counts = use_counts(graph);
    let outputs = graph_outputs(graph);
    let producers = graph.producers();
    for (bn, node) in graph.node.iter().enumerate() {
        if node.op_type != "BatchNormalization" || !is_default_domain(node) {
            continue;
        }
        let stats_unused = node
            .output
            .iter()
            .skip(1)
            .all(|o| o.is_empty() || (!counts.contains_key(o) && !outputs.contains(o)));
        let x = &node.input[0];
        if !stats_unused || node.int_or("training_mode", 0)? != 0 || !single_use(graph, &counts, x)
        {
            continue;
        }
        let Some(&producer) = producers.get(x) else {
            continue;
        };
        let prod = &graph.node[producer];
        if !is_default_domain(prod) || prod.output[0] != *x {
            continue;
        }
        let Some(affine) = affine(model, node)? else {
            continue;
        };
        if let Some(fold) = fold_into(model, prod, &affine, types)? {
            return Ok(Some(Fold {
                bn,
                producer,
                folded: fold,
            }));
        }
    }
    Ok(None)
}

fn affine(model: &Model, bn: &NodeProto) -> Result<Option<Affine>> {
    let mut params = Vec::with_capacity(4);
    for name in bn.input.iter().skip(1).take(4) {
        match constant(model, name)? {
            Some(d) if is_foldable_float(d.dtype()) && d.dims().len() == 1 => {
                params.push(d.to_f64_vec()?)
            }
            _ => return Ok(None),
        }
    }
    let [scale, b, mean, var] = params.as_slice() else {
        return Ok(None);
    };
    let n = scale.len();
    if [b, mean, var].iter().any(|p| p.len() != n) {
        return Ok(None);
    }
    let eps = f64::from(bn.float_or("epsilon", 1e-5)?);
    let s: Vec<f64> = (0..n).map(|c| scale[c] / (var[c] + eps).sqrt()).collect();
    let t = (0..n).map(|c| b[c] - mean[c] * s[c]).collect();
    Ok(Some(Affine { s, t }))
}

/// The folded weight and bias for `prod`, or `None` when it cannot absorb the affine map.
fn fold_into(
    model: &Model,
    prod: &NodeProto,
    affine: &Affine,
    types: &std::collections::HashMap<String, TensorType>,
) -> Result<Option<Folded>> {
    let Some(w) = prod
        .input
        .get(1)
        .map(|n| constant(model, n))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    if !is_foldable_float(w.dtype()) {
        return Ok(None);
    }
    let m = affine.s.len();
    let dims = w.dims().to_vec();
    let bias_in = match prod.input.get(2).filter(|n| !n.is_empty()) {
        Some(name) => match constant(model, name)? {
            Some(b) if is_foldable_float(b.dtype()) => Some(b),
            _ => return Ok(None),
        },
        None => None,
    };
    let channel_of: Box<dyn Fn(usize) -> usize> = match prod.op_type.as_str() {
        "Conv" if dims.first() == Some(&m) => {
            let per_row = w.numel() / m.max(1);
            Box::new(move |i| i / per_row)
        }
        "ConvTranspose" if dims.len() >= 2 => {
            let group = prod.int_or("group", 1)?.max(1) as usize;
            let (c, mg) = (dims[0], dims[1]);
            if mg * group != m || c % group != 0 {
                return Ok(None);
            }
            let k = w.numel() / (c * mg).max(1);
            Box::new(move |i| (i / (mg * k)) / (c / group) * mg + (i / k) % mg)
        }
        "Gemm" | "MatMul" if dims.len() == 2 => {
            let trans_b = prod.op_type == "Gemm" && prod.int_or("transB", 0)? != 0;
            let (rows, cols) = (dims[0], dims[1]);
            if (if trans_b { rows } else { cols }) != m {
                return Ok(None);
            }
            if trans_b {
                Box::new(move |i| i / cols)
            } else {
                Box::new(move |i| i % cols)
            }
        }
        _ => return Ok(None),
    };
    let mut new_op = None;
    let bias = match prod.op_type.as_str() {
        "Conv" | "ConvTranspose" => channel_bias(bias_in.as_ref(), affine, w.dtype())?,
        "Gemm" => gemm_bias(
            bias_in.as_ref(),
            prod.float_or("beta", 1.0)?,
            affine,
            w.dtype(),
        )?,
        _ => {
            let a_rank = types.get(&prod.input[0]).and_then(TensorType::rank);
            if a_rank != Some(2) {
                return Ok(None);
            }
            new_op = Some("Gemm");
            channel_bias(None, affine, w.dtype())?
        }
    };
    let Some(bias) = bias else { return Ok(None) };
    let values = w.to_f64_vec()?;
    let scaled: Vec<f64> = (values.iter().enumerate())
        .map(|(i, v)| v * affine.s[channel_of(i)])
        .collect();
    Ok(Some(Folded {
        weight: float_tensor(w.dtype(), dims, &scaled)?,
        bias,
        new_op,
    }))
}

/// `b * s + t` per channel (`b` = 0 when missing).
fn channel_bias(
    b: Option<&TensorData>,
    affine: &Affine,
    dtype: whittle_ir::DataType,
) -> Result<Option<TensorData>> {
    let m = affine.s.len();
    let b = match b {
        Some(b) if b.numel() != m => return Ok(None),
        Some(b) => b.to_f64_vec()?,
        None => vec![0.0; m],
    };
    let v: Vec<f64> = (0..m).map(|c| b[c] * affine.s[c] + affine.t[c]).collect();
    Ok(Some(float_tensor(dtype, vec![m], &v)?))
}

/// `beta * C * s + t` broadcast to `[M]` or `[rows, M]`.
fn gemm_bias(
    c: Option<&TensorData>,
    beta: f32,
    affine: &Affine,
    dtype: whittle_ir::DataType,
) -> Result<Option<TensorData>> {
    let Some(c) = c else {
        return channel_bias(None, affine, dtype);
    };
    let m = affine.s.len();
    let (rows, cols) = match c.dims() {
        [] => (1, 1),
        [n] => (1, *n),
        [r, n] => (*r, *n),
        _ => return Ok(None),
    };
    if cols != 1 && cols != m {
        return Ok(None);
    }
    let values = c.to_f64_vec()?;
    let beta = f64::from(beta);
    let out: Vec<f64> = (0..rows * m)
        .map(|i| {
            let (r, ch) = (i / m, i % m);
            let v = values[r * cols + if cols == 1 { 0 } else { ch }];
            beta * v * affine.s[ch] + affine.t[ch]
        })
        .collect();
    let dims = if c.dims().len() == 2 {
        vec![rows, m]
    } else {
        vec![m]
    };
    Ok(Some(float_tensor(dtype, dims, &out)?))
}

fn apply(model: &mut Model, fold: Fold) {
    let graph = model.graph_mut();
    set_constant_input(graph, fold.producer, 1, &fold.folded.weight);
    set_constant_input(graph, fold.producer, 2, &fold.folded.bias);
    let prod = &mut graph.node[fold.producer];
    if let Some(op) = fold.folded.new_op {
        prod.op_type = op.to_string();
        prod.attribute.clear();
    }
    if prod.op_type == "Gemm" {
        prod.attribute.retain(|a| a.name != "beta");
        prod.attribute.push(make::float("beta", 1.0));
    }
    take_over_output(graph, fold.producer, fold.bn);
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::super::verify::compare;
    use super::*;
    use whittle_ir::proto::TensorProto;

    /// A BatchNormalization `x -> y` over `m` channels and its four parameters.
    fn bn(x: &str, y: &str, m: usize) -> (NodeProto, Vec<TensorProto>) {
        let var: Vec<f32> = (0..m).map(|c| 0.5 + c as f32 * 0.25).collect();
        let params = vec![
            weight(&format!("{y}_scale"), &[m], 1.2),
            weight(&format!("{y}_b"), &[m], 0.3),
            weight(&format!("{y}_mean"), &[m], -0.1),
            TensorData::from_slice(vec![m], &var)
                .unwrap()
                .to_proto(&format!("{y}_var")),
        ];
        let names: Vec<String> = params.iter().map(|t| t.name.clone()).collect();
        let mut inputs = vec![x];
        inputs.extend(names.iter().map(String::as_str));
        let mut node = node("BatchNormalization", &inputs, &[y]);
        node.attribute.push(make::float("epsilon", 1e-3));
        (node, params)
    }

    /// Folds, checks the node list, and checks outputs against the unfolded model.
    fn fold_and_check(before: Model, want: &[&str]) -> Model {
        let mut after = before.clone();
        FoldBatchNorm.run(&mut after).unwrap();
        super::super::dead_code::DeadCode.run(&mut after).unwrap();
        assert_eq!(after.op_types(), want);
        for d in compare(&before, &after, &Default::default()).unwrap() {
            assert!(d.relative_diff < 1e-6, "{d:?}");
        }
        after
    }

    #[test]
    fn conv_without_bias_absorbs_batchnorm() {
        let (norm, params) = bn("c", "n", 3);
        let mut inits = vec![weight("w", &[3, 2, 1, 1], 0.0)];
        inits.extend(params);
        let before = model(
            vec![
                node("Conv", &["x", "w"], &["c"]),
                norm,
                node("Relu", &["n"], &["y"]),
            ],
            vec![value("x", &[1, 2, 4, 4])],
            vec![value("y", &[1, 3, 4, 4])],
            inits,
        );
        let after = fold_and_check(before.clone(), &["Conv", "Relu"]);
        let conv = &after.graph().node[0];
        assert_eq!(conv.output, ["n"]);
        let get = |m: &Model, n: &str| constant(m, n).unwrap().unwrap().to_f64_vec().unwrap();
        let (w, w2, b2) = (
            get(&before, "w"),
            get(&after, &conv.input[1]),
            get(&after, &conv.input[2]),
        );
        let (scale, var, mean, beta) = (
            get(&before, "n_scale"),
            get(&before, "n_var"),
            get(&before, "n_mean"),
            get(&before, "n_b"),
        );
        let s1 = scale[1] / (var[1] + 1e-3f32 as f64).sqrt();
        assert!(
            (w2[2] - w[2] * s1).abs() < 1e-6,
            "row 1 of W is scaled by s[1]"
        );
        assert!((b2[1] - (beta[1] - mean[1] * s1)).abs() < 1e-6);
    }

    #[test]
    fn grouped_conv_transpose_absorbs_batchnorm() {
        let (norm, params) = bn("c", "y", 6);
        let mut inits = vec![weight("w", &[4, 3, 2, 2], 0.0), weight("bias", &[6], 0.5)];
        inits.extend(params);
        let mut deconv = node("ConvTranspose", &["x", "w", "bias"], &["c"]);
        deconv.attribute.push(make::int("group", 2));
        let before = model(
            vec![deconv, norm],
            vec![value("x", &[1, 4, 3, 3])],
            vec![value("y", &[1, 6, 4, 4])],
            inits,
        );
        fold_and_check(before, &["ConvTranspose"]);
    }

    #[test]
    fn gemm_with_trans_b_and_bias_absorbs_batchnorm() {
        let (norm, params) = bn("g", "y", 4);
        let mut inits = vec![weight("w", &[4, 3], 0.0), weight("c", &[1, 4], 0.2)];
        inits.extend(params);
        let mut gemm = node("Gemm", &["x", "w", "c"], &["g"]);
        gemm.attribute.extend([
            make::int("transB", 1),
            make::float("beta", 0.5),
            make::float("alpha", 2.0),
        ]);
        let before = model(
            vec![gemm, norm],
            vec![value("x", &[2, 3])],
            vec![value("y", &[2, 4])],
            inits,
        );
        let after = fold_and_check(before, &["Gemm"]);
        assert_eq!(after.graph().node[0].float_or("beta", 0.0).unwrap(), 1.0);
    }

    #[test]
    fn matmul_folds_only_for_two_dimensional_inputs() {
        let (norm, params) = bn("h", "y", 4);
        let mut inits = vec![weight("w", &[3, 4], 0.0)];
        inits.extend(params);
        let before = model(
            vec![node("MatMul", &["x", "w"], &["h"]), norm],
            vec![value("x", &[5, 3])],
            vec![value("y", &[5, 4])],
            inits.clone(),
        );
        fold_and_check(before, &["Gemm"]);
        let (norm, _) = bn("h", "y", 4);
        let mut three_d = model(
            vec![node("MatMul", &["x", "w"], &["h"]), norm],
            vec![value("x", &[2, 4, 3])],
            vec![value("y", &[2, 4, 4])],
            inits,
        );
        assert_eq!(FoldBatchNorm.run(&mut three_d).unwrap().changes, 0);
    }

    #[test]
    fn shared_intermediates_are_not_folded() {
        let (norm, params) = bn("c", "n", 3);
        let mut inits = vec![weight("w", &[3, 2, 1, 1], 0.0)];
        inits.extend(params);
        let mut m = model(
            vec![
                node("Conv", &["x", "w"], &["c"]),
                norm,
                node("Add", &["n", "c"], &["y"]),
            ],
            vec![value("x", &[1, 2, 4, 4])],
            vec![value("y", &[1, 3, 4, 4])],
            inits,
        );
        assert_eq!(FoldBatchNorm.run(&mut m).unwrap().changes, 0);
    }
}
