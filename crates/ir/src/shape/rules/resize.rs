//! Operators that change sizes along axes: `Resize`/`Upsample` (by scales or sizes)
//! and `Pad`.

use crate::attr::NodeAttrs;
use crate::error::Result;

use super::{Ctx, Param};
use crate::shape::bad;
use crate::shape::dims::{add_to_dim, norm_axes};
use crate::shape::types::{known, Dim};
use crate::shape::values::{Info, Val};

/// Resize and Upsample: sizes, else scales, over the given axes.
pub(super) fn resize(c: &Ctx) -> Result<Vec<Info>> {
    let Some(d) = c.dims(0) else {
        return Ok(vec![c.like(0, None)]);
    };
    let nonempty = |i: usize| c.input(i).filter(|x| x.ty.known_dims() != Some(vec![0]));
    if c.op() == "Upsample" && c.opset < 9 {
        let s = c.node.floats("scales")?;
        let s = s.map(|s| s.iter().map(|&x| x as f64).collect());
        let all: Vec<usize> = (0..d.len()).collect();
        return Ok(vec![c.like(0, Some(scaled(d, &all, s)))]);
    }
    let (scales, sizes) = match (c.op(), c.opset) {
        ("Upsample", _) | (_, 10) => (nonempty(1), None),
        _ => (nonempty(2), nonempty(3)),
    };
    let axes = match c.node.ints("axes")? {
        Some(a) => norm_axes(&a, d.len())?,
        None => (0..d.len()).collect(),
    };
    let dims = match (sizes, scales) {
        (Some(sz), _) => sized(c, d, &axes, sz.ints())?,
        (None, Some(sc)) => scaled(d, &axes, sc.nums()),
        (None, None) => return bad("neither scales nor sizes is given"),
    };
    Ok(vec![c.like(0, Some(dims))])
}

/// Dims scaled by `scales` on `axes` (unknown where the scales are).
fn scaled(d: &[Dim], axes: &[usize], scales: Option<Vec<f64>>) -> Vec<Dim> {
    let mut out = d.to_vec();
    for (k, &a) in axes.iter().enumerate() {
        let s = scales.as_ref().and_then(|s| s.get(k).copied());
        out[a] = match (&d[a], s) {
            (v, Some(1.0)) => v.clone(),
            (Dim::Known(n), Some(s)) if s >= 0.0 => Dim::Known((*n as f64 * s).floor() as usize),
            _ => Dim::Unknown,
        };
    }
    out
}

/// Dims resized to `sizes` on `axes`, honouring `keep_aspect_ratio_policy`.
fn sized(c: &Ctx, d: &[Dim], axes: &[usize], sizes: Option<Vec<i64>>) -> Result<Vec<Dim>> {
    let mut out = d.to_vec();
    let Some(sizes) = sizes else {
        forget(&mut out, axes);
        return Ok(out);
    };
    if sizes.len() != axes.len() {
        return bad(format!("{} sizes for {} axes", sizes.len(), axes.len()));
    }
    let policy = c.node.string_or("keep_aspect_ratio_policy", "stretch")?;
    if policy == "stretch" {
        for (&a, &s) in axes.iter().zip(&sizes) {
            out[a] = Val::Int(s).to_dim();
        }
        return Ok(out);
    }
    let ins: Option<Vec<usize>> = axes
        .iter()
        .map(|&a| known(&d[a..=a]).map(|v| v[0]))
        .collect();
    let Some(ins) = ins else {
        forget(&mut out, axes);
        return Ok(out);
    };
    let ratios = ins.iter().zip(&sizes).map(|(&i, &s)| s as f64 / i as f64);
    let scale = if policy == "not_larger" {
        ratios.fold(f64::INFINITY, f64::min)
    } else {
        ratios.fold(0.0, f64::max)
    };
    for (&a, &i) in axes.iter().zip(&ins) {
        out[a] = Dim::Known((scale * i as f64).round() as usize);
    }
    Ok(out)
}

/// Marks the sizes on `axes` unknown.
fn forget(dims: &mut [Dim], axes: &[usize]) {
    axes.iter().for_each(|&a| dims[a] = Dim::Unknown);
}

/// `Pad` by `pads` (attribute before opset 11, input after) on all or the given axes.
pub(super) fn pad(c: &Ctx) -> Result<Vec<Info>> {
    let Some(d) = c.dims(0) else {
        return Ok(vec![c.like(0, None)]);
    };
    let pads = if c.opset < 11 {
        let p = c.node.ints("pads")?.or(c.node.ints("paddings")?);
        p.map_or(Param::Absent, Param::Ints)
    } else {
        c.param("pads", 1, 11)?
    };
    let axes = match c.info(3).ints() {
        Some(a) if c.opset >= 18 => norm_axes(&a, d.len())?,
        _ => (0..d.len()).collect(),
    };
    let mut dims = d.to_vec();
    match pads {
        Param::Ints(p) if p.len() != 2 * axes.len() => {
            return bad(format!("{} pads for {} axes", p.len(), axes.len()))
        }
        Param::Ints(p) => {
            let n = axes.len();
            for (k, &a) in axes.iter().enumerate() {
                dims[a] = add_to_dim(&d[a], p[k] as i128 + p[k + n] as i128)?;
            }
        }
        _ => forget(&mut dims, &axes),
    }
    Ok(vec![c.like(0, Some(dims))])
}

#[cfg(test)]
mod tests {
    use crate::attr::make;
    use crate::dtype::DataType::Float;
    use crate::shape::test_util::{expect, floats, ints, node, types, value};

    #[test]
    fn resize_and_pad() {
        let t = types(
            18,
            vec![value("x", Float, "1,3,20,10")],
            vec![
                floats("scales", &[1.0, 1.0, 2.0, 2.0]),
                ints("sizes", &[1, 3, 7, 9]),
                ints("hw", &[30, 40]),
                ints("pads", &[0, 0, 1, 2, 0, 0, 1, 2]),
            ],
            vec![
                node("Resize", &["x", "", "scales"], &["up"], vec![]),
                node("Resize", &["x", "", "", "sizes"], &["to"], vec![]),
                node(
                    "Resize",
                    &["x", "", "", "hw"],
                    &["keep"],
                    vec![
                        make::ints("axes", &[2, 3]),
                        make::string("keep_aspect_ratio_policy", "not_larger"),
                    ],
                ),
                node("Pad", &["x", "pads"], &["pd"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("up", "float[1,3,40,20]"),
                ("to", "float[1,3,7,9]"),
                ("keep", "float[1,3,30,15]"),
                ("pd", "float[1,3,22,14]"),
            ],
        );
    }
}
