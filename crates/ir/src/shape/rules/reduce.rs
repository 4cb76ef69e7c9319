//! Reductions: `Reduce*`, `ArgMax`/`ArgMin` and `TopK`.

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::Result;

use super::{Ctx, Param};
use crate::shape::bad;
use crate::shape::dims::{norm_axes, norm_axis};
use crate::shape::types::Dim;
use crate::shape::values::{Info, Val};

/// Reductions over `axes` (attribute or input), keeping or dropping the reduced axes.
pub(super) const REDUCE: &[&str] = &[
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// Dims after reducing `axes` (all when `None`), keeping them as 1 or dropping them.
fn reduced(d: &[Dim], axes: &[usize], keep: bool) -> Vec<Dim> {
    (0..d.len())
        .filter_map(|i| match axes.contains(&i) {
            true if keep => Some(Dim::Known(1)),
            true => None,
            false => Some(d[i].clone()),
        })
        .collect()
}

/// `Reduce*` over `axes` (attribute or input), honouring `keepdims` and `noop_with_empty_axes`.
pub(super) fn reduce(c: &Ctx) -> Result<Vec<Info>> {
    let since = if c.op() == "ReduceSum" { 13 } else { 18 };
    let param = c.param("axes", 1, since)?;
    let keep = c.node.int_or("keepdims", 1)? != 0;
    let noop = c.node.int_or("noop_with_empty_axes", 0)? != 0;
    let Some(d) = c.dims(0) else {
        return Ok(vec![c.like(0, None)]);
    };
    let axes: Vec<usize> = match param {
        Param::Ints(a) if !a.is_empty() => norm_axes(&a, d.len())?,
        Param::Unknown if keep => return Ok(vec![c.like(0, Some(vec![Dim::Unknown; d.len()]))]),
        Param::Unknown => return Ok(vec![c.like(0, None)]),
        _ if noop => return Ok(vec![c.like(0, Some(d.to_vec()))]),
        _ => (0..d.len()).collect(),
    };
    Ok(vec![c.like(0, Some(reduced(d, &axes, keep)))])
}

/// `ArgMax`/`ArgMin`: int64 indices with `axis` reduced.
pub(super) fn arg_reduce(c: &Ctx) -> Result<Vec<Info>> {
    let keep = c.node.int_or("keepdims", 1)? != 0;
    let dims = match c.dims(0) {
        Some(d) => {
            let a = norm_axis(c.node.int_or("axis", 0)?, d.len())?;
            Some(reduced(d, &[a], keep))
        }
        None => None,
    };
    Ok(vec![Info::new(Some(DataType::Int64), dims)])
}

/// `TopK`: values and int64 indices with `k` entries along `axis`.
pub(super) fn top_k(c: &Ctx) -> Result<Vec<Info>> {
    let Some(d) = c.dims(0) else {
        return Ok(vec![
            c.like(0, None),
            Info::new(Some(DataType::Int64), None),
        ]);
    };
    let a = norm_axis(c.node.int_or("axis", -1)?, d.len())?;
    let k = if c.opset < 10 {
        c.node.int("k")?
    } else {
        c.info(1).ints().and_then(|v| v.first().copied())
    };
    let mut dims = d.to_vec();
    dims[a] = match (k, &d[a]) {
        (Some(k), Dim::Known(n)) if k < 0 || k as usize > *n => {
            return bad(format!("k = {k} is outside 0..={n}"))
        }
        (Some(k), _) => Val::Int(k).to_dim(),
        (None, _) => Dim::Unknown,
    };
    Ok(vec![
        c.like(0, Some(dims.clone())),
        Info::new(Some(DataType::Int64), Some(dims)),
    ])
}

#[cfg(test)]
mod tests {
    use crate::attr::make;
    use crate::dtype::DataType::{Float, Int64};
    use crate::shape::test_util::{expect, ints, node, types, value};

    #[test]
    fn reductions_and_index_ops() {
        let t = types(
            18,
            vec![value("x", Float, "2,3,4"), value("dyn_axes", Int64, "1")],
            vec![
                ints("last", &[-1]),
                ints("k", &[2]),
                ints("rep", &[2, 1, 3]),
                ints("rep4", &[3, 1, 1, 1]),
            ],
            vec![
                node(
                    "ReduceSum",
                    &["x", "last"],
                    &["rs"],
                    vec![make::int("keepdims", 0)],
                ),
                node("ReduceMean", &["x", "last"], &["rm"], vec![]),
                node(
                    "ReduceMax",
                    &["x"],
                    &["all"],
                    vec![make::int("keepdims", 0)],
                ),
                node(
                    "ReduceMin",
                    &["x"],
                    &["noop"],
                    vec![make::int("noop_with_empty_axes", 1)],
                ),
                node("ReduceL2", &["x", "dyn_axes"], &["dyn"], vec![]),
                node(
                    "ArgMax",
                    &["x"],
                    &["am"],
                    vec![make::int("axis", 1), make::int("keepdims", 0)],
                ),
                node("TopK", &["x", "k"], &["tv", "ti"], vec![]),
                node("Tile", &["x", "rep"], &["tile"], vec![]),
                node("Expand", &["x", "rep4"], &["ex"], vec![]),
                node("Size", &["x"], &["size"], vec![]),
                node(
                    "Shape",
                    &["x"],
                    &["shp"],
                    vec![make::int("start", 1), make::int("end", -1)],
                ),
            ],
        );
        expect(
            &t,
            &[
                ("rs", "float[2,3]"),
                ("rm", "float[2,3,1]"),
                ("all", "float[]"),
                ("noop", "float[2,3,4]"),
                ("dyn", "float[?,?,?]"),
                ("am", "int64[2,4]"),
                ("tv", "float[2,3,2]"),
                ("ti", "int64[2,3,2]"),
                ("tile", "float[4,3,12]"),
                ("ex", "float[3,2,3,4]"),
                ("size", "int64[]"),
                ("shp", "int64[1]"),
            ],
        );
    }
}
