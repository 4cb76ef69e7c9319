//! `collapse-reshapes`: shortens chains of layout operators.
//! - `Reshape(Reshape(X, s1), s2)` reads `X` directly when `s2` is a constant without 0
//!   entries (a 0 copies a size from the intermediate; allowed with `allowzero=1`).
//! - A `Reshape` whose input and output have the same static shape is removed.
//! - `Transpose(Transpose(X, p1), p2)` becomes `Transpose(X, p1∘p2)`; a Transpose with
//!   the identity permutation is removed.
//! - `Squeeze(Unsqueeze(X, a), a)` and `Unsqueeze(Squeeze(X, a), a)` (the same constant
//!   axes, after normalising negative ones) are removed: both give back `X`.
//!
//! An intermediate that loses its last reader is left to `dead-code`; graph output names
//! never change (see [`super::util::alias`]).

use std::collections::HashMap;

use whittle_ir::proto::NodeProto;
use whittle_ir::shape::TensorType;
use whittle_ir::{attr::make, GraphEdit, Model, NodeAttrs};

use super::util::{alias, constant_ints, inferred_types, is_default_domain};
use super::{Pass, PassStats};
use crate::error::Result;

/// The `collapse-reshapes` pass.
pub struct CollapseReshapes;

impl Pass for CollapseReshapes {
    fn name(&self) -> &'static str {
        "collapse-reshapes"
    }

    fn description(&self) -> &'static str {
        "merge Reshape/Transpose chains and drop no-op Reshape/Transpose/Squeeze/Unsqueeze"
    }

    fn run(&self, model: &mut Model) -> Result<PassStats> {
        let types = inferred_types(model);
        let mut changes = 0;
        let mut from = 0;
        while let Some((at, rewrite)) = next_rewrite(model, &types, from)? {
            if apply(model, at, rewrite) {
                changes += 1;
            } else {
                from = at + 1;
            }
        }
        Ok(PassStats { changes })
    }
}

/// One simplification of the node it is found at.
enum Rewrite {
    /// The node's output equals this value: remove the node.
    Alias(String),
    /// The node reads this value instead of its first input (and takes this permutation).
    Bypass(String, Option<Vec<i64>>),
}

type Types = HashMap<String, TensorType>;

fn next_rewrite(model: &Model, types: &Types, from: usize) -> Result<Option<(usize, Rewrite)>> {
    let graph = model.graph();
    let producers = graph.producers();
    for (at, node) in graph.node.iter().enumerate().skip(from) {
        if !is_default_domain(node) || node.input.is_empty() || node.output.is_empty() {
            continue;
        }
        let inner = producers
            .get(&node.input[0])
            .map(|&i| &graph.node[i])
            .filter(|n| is_default_domain(n) && n.output[0] == node.input[0]);
        let found = match node.op_type.as_str() {
            "Reshape" => reshape_rewrite(model, node, inner, types)?,
            "Transpose" => transpose_rewrite(node, inner, types)?,
            "Squeeze" | "Unsqueeze" => squeeze_rewrite(model, node, inner, types)?,
            _ => None,
        };
        if let Some(r) = found {
            return Ok(Some((at, r)));
        }
    }
    Ok(None)
}

fn apply(model: &mut Model, at: usize, rewrite: Rewrite) -> bool {
    let graph = model.graph_mut();
    match rewrite {
        Rewrite::Alias(x) => {
            let out = graph.node[at].output[0].clone();
            alias(graph, at, &out, &x)
        }
        Rewrite::Bypass(x, perm) => {
            let node = &mut graph.node[at];
            node.input[0] = x;
            if let Some(p) = perm {
                node.attribute.retain(|a| a.name != "perm");
                node.attribute.push(make::ints("perm", &p));
            }
            true
        }
    }
}

fn reshape_rewrite(
    model: &Model,
    node: &NodeProto,
    inner: Option<&NodeProto>,
    types: &Types,
) -> Result<Option<Rewrite>> {
    let static_dims = |name: &str| types.get(name).and_then(TensorType::known_dims);
    let (x, y) = (&node.input[0], &node.output[0]);
    if static_dims(x).is_some() && static_dims(x) == static_dims(y) {
        return Ok(Some(Rewrite::Alias(x.clone())));
    }
    let Some(inner) = inner.filter(|n| n.op_type == "Reshape") else {
        return Ok(None);
    };
    let Some(shape) = node
        .input
        .get(1)
        .map(|s| constant_ints(model, s))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    let zero_copies = node.int_or("allowzero", 0)? == 0 && shape.contains(&0);
    Ok((!zero_copies).then(|| Rewrite::Bypass(inner.input[0].clone(), None)))
}

/// The permutation of a Transpose (default: reversed axes, needing the input's rank).
fn perm(node: &NodeProto, types: &Types) -> Result<Option<Vec<i64>>> {
    if let Some(p) = node.ints("perm")? {
        return Ok(Some(p));
    }
    let rank = types.get(&node.input[0]).and_then(TensorType::rank);
    Ok(rank.map(|r| (0..r as i64).rev().collect()))
}

fn transpose_rewrite(
    node: &NodeProto,
    inner: Option<&NodeProto>,
    types: &Types,
) -> Result<Option<Rewrite>> {
    let Some(outer) = perm(node, types)? else {
        return Ok(None);
    };
    if outer.iter().enumerate().all(|(i, &p)| p == i as i64) {
        return Ok(Some(Rewrite::Alias(node.input[0].clone())));
    }
    let Some(inner) = inner.filter(|n| n.op_type == "Transpose") else {
        return Ok(None);
    };
    let Some(first) = perm(inner, types)? else {
        return Ok(None);
    };
    if first.len() != outer.len() || outer.iter().any(|&p| p < 0 || p as usize >= first.len()) {
        return Ok(None);
    }
    let composed = outer.iter().map(|&p| first[p as usize]).collect();
    Ok(Some(Rewrite::Bypass(
        inner.input[0].clone(),
        Some(composed),
    )))
}

/// Constant axes of a Squeeze/Unsqueeze (attribute before opset 13, input from 13).
fn axes(model: &Model, node: &NodeProto) -> Result<Option<Vec<i64>>> {
    match node.input.get(1).filter(|n| !n.is_empty()) {
        Some(name) => constant_ints(model, name),
        None => Ok(node.ints("axes")?),
    }
}

fn squeeze_rewrite(
    model: &Model,
    node: &NodeProto,
    inner: Option<&NodeProto>,
    types: &Types,
) -> Result<Option<Rewrite>> {
    let opposite = if node.op_type == "Squeeze" {
        "Unsqueeze"
    } else {
        "Squeeze"
    };
    let Some(inner) = inner.filter(|n| n.op_type == opposite) else {
        return Ok(None);
    };
    let (Some(a), Some(b)) = (axes(model, inner)?, axes(model, node)?) else {
        return Ok(None);
    };
    // Both axis lists index the higher-rank tensor: the Squeeze's input / Unsqueeze's output.
    let wide = if opposite == "Unsqueeze" {
        &node.input[0]
    } else {
        &node.output[0]
    };
    let rank = types.get(wide).and_then(TensorType::rank);
    let normalise = |v: Vec<i64>| -> Option<Vec<i64>> {
        let mut v: Vec<i64> = v
            .into_iter()
            .map(|x| {
                if x < 0 {
                    rank.map(|r| x + r as i64)
                } else {
                    Some(x)
                }
            })
            .collect::<Option<_>>()?;
        v.sort_unstable();
        Some(v)
    };
    let same = !a.is_empty() && normalise(a).is_some_and(|a| Some(a) == normalise(b));
    Ok(same.then(|| Rewrite::Alias(inner.input[0].clone())))
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;

    fn transpose(x: &str, y: &str, p: &[i64]) -> NodeProto {
        let mut n = node("Transpose", &[x], &[y]);
        n.attribute.push(make::ints("perm", p));
        n
    }

    #[test]
    fn chains_collapse() {
        let mut m = model(
            vec![
                node("Reshape", &["x", "s6"], &["r1"]),
                node("Reshape", &["r1", "s32"], &["r2"]),
                transpose("r2", "t1", &[1, 0]),
                transpose("t1", "t2", &[1, 0]),
                node("Unsqueeze", &["t2", "ax0"], &["u"]),
                node("Squeeze", &["u", "axm3"], &["q"]),
                node("Reshape", &["q", "s32"], &["y"]),
            ],
            vec![value("x", &[2, 3])],
            vec![value("y", &[3, 2])],
            vec![
                ints("s6", &[6]),
                ints("s32", &[3, 2]),
                ints("ax0", &[0]),
                ints("axm3", &[-3]),
            ],
        );
        let stats = CollapseReshapes.run(&mut m).unwrap();
        assert!(stats.changes >= 4, "{stats:?}");
        super::super::dead_code::DeadCode.run(&mut m).unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(ops(&m), vec![("Reshape".into(), s(&["y"]))]);
        assert_eq!(m.graph().node[0].input, s(&["x", "s32"]));
    }

    #[test]
    fn transposes_compose_and_zero_shapes_stay() {
        let mut m = model(
            vec![
                transpose("x", "t1", &[0, 2, 1]),
                transpose("t1", "t2", &[2, 0, 1]),
                node("Reshape", &["t2", "s"], &["r1"]),
                node("Reshape", &["r1", "z"], &["y"]),
            ],
            vec![typed_value("x", whittle_ir::DataType::Float, &[2, 3, 4])],
            vec![value("y", &[3, 8])],
            vec![ints("s", &[24]), ints("z", &[3, 0])],
        );
        m.graph_mut().output[0].r#type = None;
        CollapseReshapes.run(&mut m).unwrap();
        let g = m.graph();
        assert_eq!(g.node[1].input[0], "x");
        assert_eq!(g.node[1].ints("perm").unwrap(), Some(vec![1, 0, 2]));
        assert_eq!(g.node[3].input[0], "r1", "a 0 in the shape copies from r1");
    }
}
