//! Shape manipulation: `Flatten`, `Reshape`, `Transpose`, `Squeeze`, `Unsqueeze`,
//! `Concat`, `Split`, `Expand` and `Tile`, carrying tracked values where they follow.

use crate::attr::NodeAttrs;
use crate::error::Result;
use crate::tensor::checked_numel;

use super::{Ctx, Param};
use crate::shape::bad;
use crate::shape::dims::{broadcast, mul_dim, norm_axes, norm_axis, product, sum, unify};
use crate::shape::types::{known, Dim};
use crate::shape::values::{broadcast_data, Info, Val};

/// `Flatten` to 2-D around `axis`.
pub(super) fn flatten(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let dims = match x.dims() {
        Some(d) => {
            let axis = c.node.int_or("axis", 1)?;
            let r = d.len() as i64;
            if !(-r..=r).contains(&axis) {
                return bad(format!("axis {axis} is out of range for rank {r}"));
            }
            let a = if axis < 0 { axis + r } else { axis } as usize;
            Some(vec![product(&d[..a]), product(&d[a..])])
        }
        None => Some(vec![Dim::Unknown; 2]),
    };
    Ok(vec![c.like(0, dims).with_data(x.data.clone())])
}

/// Reshape's target given the input dims, resolving 0 (copy) and -1 (infer).
fn reshape_dims(input: Option<&[Dim]>, target: &[Val], allowzero: bool) -> Result<Vec<Dim>> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, v) in target.iter().enumerate() {
        let d = match v {
            Val::Int(-1) if infer_at.is_some() => return bad("shape has more than one -1"),
            Val::Int(-1) => {
                infer_at = Some(i);
                Dim::Unknown
            }
            Val::Int(0) if !allowzero => match input {
                Some(inp) => match inp.get(i) {
                    Some(d) => d.clone(),
                    None => {
                        return bad(format!(
                            "shape copies axis {i} of a rank-{} input",
                            inp.len()
                        ))
                    }
                },
                None => Dim::Unknown,
            },
            Val::Int(n) if *n < 0 => return bad(format!("shape has invalid size {n}")),
            other => other.to_dim(),
        };
        out.push(d);
    }
    let Some(inp) = input else { return Ok(out) };
    if let Some(at) = infer_at {
        out[at] = infer_minus_one(inp, &out, at)?;
    }
    if let (Some(a), Some(b)) = (known(inp), known(&out)) {
        if checked_numel(&a) != checked_numel(&b) {
            return bad(format!("cannot reshape {a:?} to {b:?}"));
        }
    }
    Ok(out)
}

/// The size a -1 at `at` stands for: input elements over the other target sizes,
/// cancelling symbols that appear on both sides.
fn infer_minus_one(input: &[Dim], out: &[Dim], at: usize) -> Result<Dim> {
    let mut syms: Vec<&str> = Vec::new();
    let mut num: u128 = 1;
    for d in input {
        match d {
            Dim::Known(n) => num = num.saturating_mul(*n as u128),
            Dim::Symbol(s) => syms.push(s),
            Dim::Unknown => return Ok(Dim::Unknown),
        }
    }
    let mut den: u128 = 1;
    for d in out
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, d)| d)
    {
        match d {
            Dim::Known(n) => den = den.saturating_mul(*n as u128),
            Dim::Symbol(s) => match syms.iter().position(|x| x == s) {
                Some(p) => {
                    syms.swap_remove(p);
                }
                None => return Ok(Dim::Unknown),
            },
            Dim::Unknown => return Ok(Dim::Unknown),
        }
    }
    if den == 0 {
        // Zero elements fit any size next to a 0; anything else fits none.
        return match num {
            0 => Ok(Dim::Unknown),
            _ => bad("cannot infer -1 next to a 0 size"),
        };
    }
    if !num.is_multiple_of(den) {
        return bad(format!("cannot split {num} elements into blocks of {den}"));
    }
    Ok(match syms.as_slice() {
        [] => Dim::Known((num / den) as usize),
        [s] if num == den => Dim::Symbol(s.to_string()),
        _ => Dim::Unknown,
    })
}

/// `Reshape` to a tracked target (attribute `shape` before opset 5).
pub(super) fn reshape(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let target: Option<Vec<Val>> = if c.opset < 5 {
        c.node
            .ints("shape")?
            .map(|v| v.into_iter().map(Val::Int).collect())
    } else {
        c.shape_input(1)
    };
    let allowzero = c.node.int_or("allowzero", 0)? != 0;
    let dims = target
        .map(|t| reshape_dims(x.dims(), &t, allowzero))
        .transpose()?;
    Ok(vec![c.like(0, dims).with_data(x.data.clone())])
}

/// `Transpose` by `perm` (reversed axes by default).
pub(super) fn transpose(c: &Ctx) -> Result<Vec<Info>> {
    let Some(x) = c.dims(0) else {
        return Ok(vec![c.like(0, None)]);
    };
    let r = x.len();
    let perm = c
        .node
        .ints("perm")?
        .unwrap_or_else(|| (0..r as i64).rev().collect());
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..r as i64).collect::<Vec<_>>() {
        return bad(format!("perm {perm:?} is not a permutation of rank {r}"));
    }
    let dims = perm.iter().map(|&p| x[p as usize].clone()).collect();
    Ok(vec![c.like(0, Some(dims))])
}

/// `Squeeze` the given axes, or every known 1 when none are given.
pub(super) fn squeeze(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let Some(d) = x.dims() else {
        return Ok(vec![c.like(0, None)]);
    };
    let dims = match c.param("axes", 1, 13)? {
        Param::Unknown => None,
        Param::Absent if d.iter().any(|v| !matches!(v, Dim::Known(_))) => None,
        Param::Absent => Some(d.iter().filter(|v| **v != Dim::Known(1)).cloned().collect()),
        Param::Ints(axes) => {
            let axes = norm_axes(&axes, d.len())?;
            for &a in &axes {
                if let Dim::Known(n) = d[a] {
                    if n != 1 {
                        return bad(format!("cannot squeeze axis {a} of size {n}"));
                    }
                }
            }
            let kept = (0..d.len()).filter(|i| !axes.contains(i));
            Some(kept.map(|i| d[i].clone()).collect())
        }
    };
    Ok(vec![c.like(0, dims).with_data(x.data.clone())])
}

/// `Unsqueeze`: insert 1s at `axes` of the output.
pub(super) fn unsqueeze(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let dims = match (x.dims(), c.param("axes", 1, 13)?) {
        (Some(d), Param::Ints(axes)) => {
            let axes = norm_axes(&axes, d.len() + axes.len())?;
            let mut rest = d.iter();
            let out = (0..d.len() + axes.len())
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::Known(1)
                    } else {
                        rest.next().cloned().unwrap_or(Dim::Unknown)
                    }
                })
                .collect();
            Some(out)
        }
        (Some(_), Param::Absent) => return bad("missing axes"),
        _ => None,
    };
    Ok(vec![c.like(0, dims).with_data(x.data.clone())])
}

/// `Concat` along `axis`, unifying the other axes.
pub(super) fn concat(c: &Ctx) -> Result<Vec<Info>> {
    let axis = c.node.int_or("axis", 0)?;
    let parts: Vec<&Info> = (0..c.inputs.len()).filter_map(|i| c.input(i)).collect();
    let ranked: Vec<&[Dim]> = parts.iter().filter_map(|p| p.dims()).collect();
    let Some(first) = ranked.first() else {
        return Ok(vec![c.like(0, None)]);
    };
    let r = first.len();
    if let Some(other) = ranked.iter().find(|d| d.len() != r) {
        return bad(format!("inputs have ranks {r} and {}", other.len()));
    }
    let a = norm_axis(axis, r)?;
    let mut dims = first.to_vec();
    for d in &ranked[1..] {
        for i in (0..r).filter(|&i| i != a) {
            dims[i] = unify(&dims[i], &d[i], &format!("axis {i}"))?;
        }
    }
    dims[a] = if ranked.len() == parts.len() {
        sum(&ranked.iter().map(|d| &d[a]).collect::<Vec<_>>())
    } else {
        Dim::Unknown
    };
    let data = concat_values(&parts, a);
    Ok(vec![c.like(0, Some(dims)).with_data(data)])
}

/// Elements of a concatenation along `axis` when every part is tracked.
fn concat_values(parts: &[&Info], axis: usize) -> Option<Vec<Val>> {
    let shapes: Vec<Vec<usize>> = parts
        .iter()
        .map(|p| known(p.dims()?))
        .collect::<Option<_>>()?;
    let datas: Vec<&Vec<Val>> = parts
        .iter()
        .map(|p| p.data.as_ref())
        .collect::<Option<_>>()?;
    let outer: usize = shapes[0][..axis].iter().product();
    let chunks: Vec<usize> = shapes.iter().map(|s| s[axis..].iter().product()).collect();
    let mut out = Vec::new();
    for o in 0..outer {
        for (d, &ch) in datas.iter().zip(&chunks) {
            out.extend_from_slice(&d[o * ch..(o + 1) * ch]);
        }
    }
    Some(out)
}

/// `Split` into given sizes, else near-equal parts.
pub(super) fn split(c: &Ctx) -> Result<Vec<Info>> {
    let n_out = c.node.output.len();
    let Some(x) = c.dims(0) else {
        return Ok(vec![c.like(0, None); n_out]);
    };
    let a = norm_axis(c.node.int_or("axis", 0)?, x.len())?;
    let sizes: Vec<Dim> = match c.param("split", 1, 13)? {
        Param::Ints(v) => {
            if v.len() != n_out {
                return bad(format!("{} split sizes for {n_out} outputs", v.len()));
            }
            if let Dim::Known(d) = x[a] {
                if v.iter().sum::<i64>() != d as i64 {
                    return bad(format!("split sizes {v:?} do not add up to {d}"));
                }
            }
            v.iter().map(|&s| Val::Int(s).to_dim()).collect()
        }
        Param::Unknown => vec![Dim::Unknown; n_out],
        Param::Absent => even_split(&x[a], n_out)?,
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut d = x.to_vec();
            d[a] = s;
            c.like(0, Some(d))
        })
        .collect())
}

/// Sizes of `n` near-equal chunks of `d` (the last one smaller, as opset 18 allows).
fn even_split(d: &Dim, n: usize) -> Result<Vec<Dim>> {
    match d {
        _ if n == 1 => Ok(vec![d.clone()]),
        Dim::Known(total) if n > 0 => {
            let chunk = total.div_ceil(n);
            let Some(last) = total.checked_sub(chunk * (n - 1)) else {
                return bad(format!("cannot split {total} into {n} parts"));
            };
            let mut v = vec![Dim::Known(chunk); n - 1];
            v.push(Dim::Known(last));
            Ok(v)
        }
        _ => Ok(vec![Dim::Unknown; n]),
    }
}

/// `Expand`: broadcast input 0 with the target shape.
pub(super) fn expand(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let target = c.shape_input(1);
    let dims = match (x.dims(), &target) {
        (Some(d), Some(t)) => {
            let t: Vec<Dim> = t.iter().map(Val::to_dim).collect();
            Some(broadcast(d, &t)?)
        }
        _ => None,
    };
    let data = dims.as_deref().and_then(known).and_then(|out| {
        let from = known(x.dims()?)?;
        Some(broadcast_data(x.data.as_ref()?, &from, &out))
    });
    Ok(vec![c.like(0, dims).with_data(data)])
}

/// `Tile`: each axis times its repeat count.
pub(super) fn tile(c: &Ctx) -> Result<Vec<Info>> {
    let Some(d) = c.dims(0) else {
        return Ok(vec![c.like(0, None)]);
    };
    let dims = match c.info(1).ints() {
        Some(reps) if reps.len() != d.len() => {
            return bad(format!("{} repeats for rank {}", reps.len(), d.len()))
        }
        Some(reps) => d
            .iter()
            .zip(&reps)
            .map(|(v, &k)| match (v, k) {
                (_, k) if k < 0 => bad(format!("negative repeat {k}")),
                (_, 1) => Ok(v.clone()),
                (Dim::Known(n), k) => mul_dim(*n, k),
                _ => Ok(Dim::Unknown),
            })
            .collect::<Result<_>>()?,
        None => vec![Dim::Unknown; d.len()],
    };
    Ok(vec![c.like(0, Some(dims))])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::attr::make;
    use crate::dtype::DataType::{Float, Int64};
    use crate::shape::test_util::{
        attention_reshape, error, expect, ints, node, scalar, types, value,
    };
    use crate::shape::{infer, TensorType};

    #[test]
    fn shape_arithmetic_resolves_reshape_targets() {
        let m = attention_reshape();
        let t = infer(&m, &HashMap::new()).unwrap();
        let show = |n: &str| t[n].to_string();
        assert_eq!(show("target"), "int64[4]");
        assert_eq!(show("split"), "float[B,S,12,32]");
        assert_eq!(show("split2"), "float[B,S,12,32]");
        assert_eq!(show("rows"), "float[?,384]");
        assert_eq!(show("t"), "float[B,12,S,32]");
        assert_eq!(show("rev"), "float[32,12,S,B]");
        assert_eq!(show("f1"), "float[B,?]");
        assert_eq!(show("f2"), "float[?,384]");
        assert_eq!(show("zeros"), "float[B,S,384]");
        assert_eq!(show("ex"), "int64[S]");

        let fixed = HashMap::from([("h".to_string(), vec![2, 16, 384])]);
        let t = infer(&m, &fixed).unwrap();
        assert_eq!(t["split"], TensorType::known(Float, &[2, 16, 12, 32]));
        assert_eq!(t["rows"], TensorType::known(Float, &[32, 384]));
        assert_eq!(t["f1"], TensorType::known(Float, &[2, 6144]));

        let err = error(
            13,
            vec![value("x", Float, "2,3")],
            vec![ints("to", &[4])],
            node("Reshape", &["x", "to"], &["y"], vec![]),
        );
        assert!(
            err.contains("n_y") && err.contains("cannot reshape"),
            "{err}"
        );
    }

    #[test]
    fn contradictions_in_shape_ops_name_the_node() {
        let x = || vec![value("x", Float, "3,4"), value("r", Float, "3,4,5")];
        let cases = [
            (
                node("Concat", &["x", "r"], &["y"], vec![make::int("axis", 0)]),
                "ranks 2 and 3",
            ),
            (
                node("Gather", &["x", "nine"], &["y"], vec![]),
                "index 9 is out of range",
            ),
            (
                node("Split", &["x", "sp"], &["y", "z"], vec![]),
                "do not add up to 3",
            ),
            (
                node("Squeeze", &["x", "one"], &["y"], vec![]),
                "cannot squeeze axis 1 of size 4",
            ),
            (node("TopK", &["x", "k"], &["y", "z"], vec![]), "k = 7"),
        ];
        for (n, want) in cases {
            let inits = vec![
                scalar("nine", 9i64),
                ints("sp", &[1, 1]),
                ints("one", &[1]),
                ints("k", &[7]),
            ];
            let err = error(13, x(), inits, n);
            assert!(err.contains("n_y") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn opset_dependent_axes_and_older_attributes() {
        let t = types(
            11,
            vec![value("x", Float, "3,1,4"), value("pads", Int64, "6")],
            vec![],
            vec![
                node("Squeeze", &["x"], &["sq"], vec![make::ints("axes", &[1])]),
                node(
                    "Unsqueeze",
                    &["sq"],
                    &["un"],
                    vec![make::ints("axes", &[0, -1])],
                ),
                node(
                    "ReduceMean",
                    &["x"],
                    &["rm"],
                    vec![make::ints("axes", &[-1]), make::int("keepdims", 0)],
                ),
                node(
                    "Split",
                    &["x"],
                    &["a", "b"],
                    vec![make::int("axis", 2), make::ints("split", &[1, 3])],
                ),
                // Pads only known at run time: the rank stays, the sizes do not.
                node("Pad", &["x", "pads"], &["pd"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("sq", "float[3,4]"),
                ("un", "float[1,3,4,1]"),
                ("rm", "float[3,1]"),
                ("a", "float[3,1,1]"),
                ("b", "float[3,1,3]"),
                ("pd", "float[?,?,?]"),
            ],
        );
        let slice = vec![
            make::ints("starts", &[1]),
            make::ints("ends", &[3]),
            make::ints("axes", &[2]),
        ];
        let t = types(
            2,
            vec![value("x", Float, "3,1,4")],
            vec![],
            vec![
                node(
                    "Pad",
                    &["x"],
                    &["pd"],
                    vec![make::ints("pads", &[0, 1, 1, 0, 1, 1])],
                ),
                node("Slice", &["x"], &["sl"], slice),
            ],
        );
        expect(&t, &[("pd", "float[3,3,6]"), ("sl", "float[3,1,2]")]);
    }
}
