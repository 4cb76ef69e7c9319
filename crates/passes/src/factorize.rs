//! Low-rank factorization of Gemm, MatMul and Conv weights by truncated SVD.
//!
//! A weight seen as a matrix `M` [out, in] (for a Conv: `W` [O, I, kh, kw] reshaped to
//! [O, I·kh·kw]) is approximated by `U_r S_r V_rᵀ`; the layer becomes two layers of
//! rank `r`: `x -> (√S_r V_rᵀ) -> (U_r √S_r) -> y`. Gemm becomes two Gemms (the bias and
//! `alpha`/`beta` stay on the second), MatMul two MatMuls, and a KxK Conv a KxK Conv with
//! `r` output channels followed by a 1x1 Conv back to `O` channels (the bias on the second).
//! The rank comes from a fraction of `min(in, out)` or from the fraction of spectral energy
//! `Σσ²` to keep; layers where `r·(in + out) >= in·out` gain nothing and are skipped.

use serde::Serialize;
use whittle_ir::attr::{make, NodeAttrs};
use whittle_ir::proto::NodeProto;
use whittle_ir::{GraphEdit, Model, TensorData};

use crate::optimize::{util, ModelStats};
use crate::{bail, Result};

/// How the rank of each factorized layer is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RankRule {
    /// `r = ceil(R · min(in, out))`, R in (0, 1].
    Ratio(f64),
    /// The smallest `r` whose singular values keep a fraction E in (0, 1] of `Σσ²`.
    Energy(f64),
}

/// Options of [`factorize`].
#[derive(Clone, Debug)]
pub struct FactorizeConfig {
    /// Rank selection.
    pub rank: RankRule,
    /// Restrict to these layers (node names; unnamed nodes go by their first output).
    pub layers: Option<Vec<String>>,
    /// Skip layers whose factorized form has at least as many weights as the original
    /// (the default; turning it off is only useful to check exactness at full rank).
    pub skip_unprofitable: bool,
}

impl FactorizeConfig {
    /// Factorize every eligible layer with `rank`, skipping unprofitable ones.
    pub fn new(rank: RankRule) -> Self {
        FactorizeConfig {
            rank,
            layers: None,
            skip_unprofitable: true,
        }
    }
}

/// What happened to one candidate layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerFactorization {
    /// Node name (or first output when unnamed).
    pub name: String,
    /// Operator type (Gemm, MatMul, Conv).
    pub op: String,
    /// Input features (for a Conv: input channels · kernel elements).
    #[serde(rename = "in")]
    pub inputs: usize,
    /// Output features (channels).
    #[serde(rename = "out")]
    pub outputs: usize,
    /// Chosen rank (0 when skipped before the SVD).
    pub rank: usize,
    /// Weight elements before.
    pub params_before: u64,
    /// Weight elements after (equal to before when skipped).
    pub params_after: u64,
    /// Why the layer was left as it is.
    pub skipped_reason: Option<String>,
}

/// Result of [`factorize`].
#[derive(Clone, Debug, Serialize)]
pub struct FactorizeReport {
    /// Every candidate layer, factorized or skipped.
    pub layers: Vec<LayerFactorization>,
    /// Parameters (initializer and constant elements) of the whole model before.
    pub params_before: u64,
    /// Parameters of the whole model after.
    pub params_after: u64,
}

/// A weight matrix `[out, in]` of one layer, row-major.
struct WeightMatrix {
    rows: usize,
    cols: usize,
    values: Vec<f64>,
}

/// The two factors: `first` [r, in] and `second` [out, r], row-major.
struct Factors {
    rank: usize,
    first: Vec<f32>,
    second: Vec<f32>,
}

/// Replaces eligible Gemm/MatMul/Conv layers of `model` by low-rank pairs.
pub fn factorize(model: &Model, cfg: &FactorizeConfig) -> Result<(Model, FactorizeReport)> {
    check_rule(cfg.rank)?;
    let candidates = candidates(model, cfg.layers.as_deref())?;
    let mut out = model.clone();
    let mut layers = Vec::new();
    for name in candidates {
        layers.push(factorize_layer(&mut out, &name, cfg)?);
    }
    out.graph_mut().sort_topologically()?;
    let report = FactorizeReport {
        layers,
        params_before: ModelStats::of(model).params,
        params_after: ModelStats::of(&out).params,
    };
    Ok((out, report))
}

fn check_rule(rule: RankRule) -> Result<()> {
    let (flag, v) = match rule {
        RankRule::Ratio(v) => ("rank ratio", v),
        RankRule::Energy(v) => ("energy", v),
    };
    if !(v > 0.0 && v <= 1.0) {
        bail!("{flag} must be in (0, 1], got {v}");
    }
    Ok(())
}

/// The name a layer goes by in options and reports.
pub fn layer_name(node: &NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

/// Names of the Gemm/MatMul/Conv nodes with a constant weight, restricted to `only`.
fn candidates(model: &Model, only: Option<&[String]>) -> Result<Vec<String>> {
    let graph = model.graph();
    let all: Vec<String> = (graph.node.iter())
        .filter(|n| matches!(n.op_type.as_str(), "Gemm" | "MatMul" | "Conv"))
        .filter(|n| {
            n.input
                .get(1)
                .is_some_and(|w| graph.initializer(w).is_some())
        })
        .map(layer_name)
        .collect();
    let Some(only) = only else { return Ok(all) };
    for name in only {
        if !all.contains(name) {
            bail!(
                "layer '{name}' is not a Gemm, MatMul or Conv with a constant weight (candidates: {})",
                all.join(", ")
            );
        }
    }
    Ok(all.into_iter().filter(|n| only.contains(n)).collect())
}

fn factorize_layer(
    model: &mut Model,
    name: &str,
    cfg: &FactorizeConfig,
) -> Result<LayerFactorization> {
    let graph = model.graph();
    let Some(index) = (0..graph.node.len()).find(|&i| layer_name(&graph.node[i]) == name) else {
        bail!("layer '{name}' disappeared while factorizing");
    };
    let node = graph.node[index].clone();
    let weight = util::constant(model, &node.input[1])?.ok_or_else(|| {
        crate::PassError::Invalid(format!("layer '{name}': weight is not constant"))
    })?;
    let mut entry = LayerFactorization {
        name: name.to_string(),
        op: node.op_type.clone(),
        inputs: 0,
        outputs: 0,
        rank: 0,
        params_before: weight.numel() as u64,
        params_after: weight.numel() as u64,
        skipped_reason: None,
    };
    let matrix = match weight_matrix(&node, &weight) {
        Ok(m) => m,
        Err(reason) => {
            entry.skipped_reason = Some(reason);
            return Ok(entry);
        }
    };
    (entry.inputs, entry.outputs) = (matrix.cols, matrix.rows);
    let factors = svd_factors(&matrix, cfg.rank, name)?;
    entry.rank = factors.rank;
    let after = (factors.rank * (matrix.rows + matrix.cols)) as u64;
    if cfg.skip_unprofitable && after >= entry.params_before {
        entry.skipped_reason = Some(format!(
            "rank {} keeps {after} weights, not fewer than {}",
            factors.rank, entry.params_before
        ));
        return Ok(entry);
    }
    entry.params_after = after;
    replace_layer(model, index, &node, &weight, &factors)?;
    Ok(entry)
}

/// The weight as `[out, in]`, or why the layer cannot be factorized.
fn weight_matrix(
    node: &NodeProto,
    weight: &TensorData,
) -> std::result::Result<WeightMatrix, String> {
    if weight.dtype() != whittle_ir::DataType::Float {
        return Err(format!(
            "weight is {}, only float is factorized",
            weight.dtype()
        ));
    }
    let values = weight.to_f64_vec().map_err(|e| e.to_string())?;
    let dims = weight.dims().to_vec();
    let int = |key: &str, default: i64| node.int_or(key, default).map_err(|e| e.to_string());
    match node.op_type.as_str() {
        "Conv" if int("group", 1)? != 1 => Err("grouped convolution".into()),
        "Conv" if dims.len() >= 3 => {
            let cols = dims[1..].iter().product();
            Ok(WeightMatrix {
                rows: dims[0],
                cols,
                values,
            })
        }
        "Gemm" if int("transA", 0)? != 0 => Err("Gemm with transA".into()),
        "Gemm" if int("transB", 0)? != 0 && dims.len() == 2 => Ok(WeightMatrix {
            rows: dims[0],
            cols: dims[1],
            values,
        }),
        "Gemm" | "MatMul" if dims.len() == 2 => Ok(transposed(dims[0], dims[1], &values)),
        _ => Err(format!("weight of shape {dims:?} is not a matrix")),
    }
}

/// `[rows, cols]` values as the `[cols, rows]` matrix.
fn transposed(rows: usize, cols: usize, values: &[f64]) -> WeightMatrix {
    let mut t = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = values[r * cols + c];
        }
    }
    WeightMatrix {
        rows: cols,
        cols: rows,
        values: t,
    }
}

/// Truncated SVD factors of `m` at the rank `rule` picks.
fn svd_factors(m: &WeightMatrix, rule: RankRule, name: &str) -> Result<Factors> {
    let matrix = nalgebra::DMatrix::from_row_slice(m.rows, m.cols, &m.values);
    let svd =
        nalgebra::linalg::SVD::try_new(matrix, true, true, f64::EPSILON, 0).ok_or_else(|| {
            crate::PassError::Invalid(format!("layer '{name}': SVD did not converge"))
        })?;
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        bail!("layer '{name}': SVD returned no singular vectors");
    };
    let sigma = svd.singular_values.as_slice();
    let rank = choose_rank(sigma, rule);
    let mut first = Vec::with_capacity(rank * m.cols);
    for k in 0..rank {
        let s = sigma[k].sqrt();
        first.extend((0..m.cols).map(|c| (s * v_t[(k, c)]) as f32));
    }
    let mut second = Vec::with_capacity(m.rows * rank);
    for r in 0..m.rows {
        second.extend((0..rank).map(|k| (u[(r, k)] * sigma[k].sqrt()) as f32));
    }
    Ok(Factors {
        rank,
        first,
        second,
    })
}

/// The rank `rule` asks for, given singular values sorted in descending order.
pub fn choose_rank(sigma: &[f64], rule: RankRule) -> usize {
    let full = sigma.len();
    let rank = match rule {
        RankRule::Ratio(r) => (r * full as f64).ceil() as usize,
        RankRule::Energy(e) => {
            let total: f64 = sigma.iter().map(|s| s * s).sum();
            let mut kept = 0.0;
            let mut rank = full;
            for (i, s) in sigma.iter().enumerate() {
                kept += s * s;
                if kept >= e * total * (1.0 - 1e-12) {
                    rank = i + 1;
                    break;
                }
            }
            rank
        }
    };
    rank.clamp(1, full.max(1))
}

/// Replaces node `index` by the two low-rank layers.
fn replace_layer(
    model: &mut Model,
    index: usize,
    node: &NodeProto,
    weight: &TensorData,
    f: &Factors,
) -> Result<()> {
    let graph = model.graph_mut();
    let base = layer_name(node);
    let w1 = graph.fresh_name(&format!("{base}.lowrank_a.weight"));
    let w2 = graph.fresh_name(&format!("{base}.lowrank_b.weight"));
    let hidden = graph.fresh_name(&format!("{base}.lowrank"));
    let out_cols = f.second.len() / f.rank;
    let in_cols = f.first.len() / f.rank;
    let (first_dims, second_dims, first_vals, second_vals) = match node.op_type.as_str() {
        "Conv" => {
            let mut d1 = weight.dims().to_vec();
            d1[0] = f.rank;
            let mut d2 = vec![out_cols, f.rank];
            d2.resize(d1.len(), 1);
            (d1, d2, f.first.clone(), f.second.clone())
        }
        "Gemm" => (
            vec![f.rank, in_cols],
            vec![out_cols, f.rank],
            f.first.clone(),
            f.second.clone(),
        ),
        _ => (
            vec![in_cols, f.rank],
            vec![f.rank, out_cols],
            transpose_f32(f.rank, in_cols, &f.first),
            transpose_f32(out_cols, f.rank, &f.second),
        ),
    };
    let t1 = TensorData::from_slice(first_dims, &first_vals)?.to_proto(&w1);
    let t2 = TensorData::from_slice(second_dims, &second_vals)?.to_proto(&w2);
    graph.initializer.extend([t1, t2]);
    let (first, second) = split_nodes(node, &w1, &w2, &hidden);
    graph.replace_node(index, first);
    graph.insert_node(index + 1, second);
    let old = &node.input[1];
    if !graph.consumers().contains_key(old) {
        graph.initializer.retain(|t| &t.name != old);
    }
    Ok(())
}

fn transpose_f32(rows: usize, cols: usize, v: &[f32]) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// The two nodes replacing `node`: `x -> first(w1) -> hidden -> second(w2, bias) -> y`.
fn split_nodes(node: &NodeProto, w1: &str, w2: &str, hidden: &str) -> (NodeProto, NodeProto) {
    let mut first = node.clone();
    first.name = format!("{}.lowrank_a", layer_name(node));
    first.input = vec![node.input[0].clone(), w1.to_string()];
    first.output = vec![hidden.to_string()];
    let mut second = node.clone();
    second.name = format!("{}.lowrank_b", layer_name(node));
    second.input = vec![hidden.to_string(), w2.to_string()];
    second.input.extend(node.input.get(2).cloned());
    match node.op_type.as_str() {
        // A 1x1 convolution: kernel shape from the weight, default strides and pads.
        "Conv" => second.attribute.clear(),
        "Gemm" => {
            first.attribute = vec![make::int("transB", 1)];
            second.attribute.retain(|a| a.name != "transB");
            second.attribute.push(make::int("transB", 1));
        }
        _ => {}
    }
    (first, second)
}
