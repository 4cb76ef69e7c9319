//! Indexing: `Slice`, `Gather` (both carrying tracked values) and `NonZero`.

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::Result;

use super::{Ctx, Param};
use crate::shape::bad;
use crate::shape::dims::{norm_axes, norm_axis};
use crate::shape::types::{known, Dim};
use crate::shape::values::{strides, unravel, Info, Val};

/// Index range of a Slice on one axis: (first index, count); `None` if the size is unknown.
fn slice_range(d: &Dim, start: i64, end: i64, step: i64) -> Option<(i64, i64)> {
    let Dim::Known(n) = d else { return None };
    if *n == 0 {
        return Some((0, 0));
    }
    // i128 keeps extreme starts, ends and steps (INT64_MIN/MAX are common) from overflowing.
    let (n, start, end, step) = (*n as i128, start as i128, end as i128, step as i128);
    let fix = |v: i128, lo: i128, hi: i128| (if v < 0 { v + n } else { v }).clamp(lo, hi);
    let (first, len) = if step > 0 {
        let (s, e) = (fix(start, 0, n), fix(end, 0, n));
        (s, ((e - s).max(0) + step - 1) / step)
    } else {
        let (s, e) = (fix(start, 0, n - 1), fix(end, -1, n - 1));
        (s, ((s - e).max(0) - step - 1) / -step)
    };
    Some((first as i64, len as i64))
}

/// Output size of a Slice on one axis.
fn slice_dim(d: &Dim, start: i64, end: i64, step: i64) -> Dim {
    match slice_range(d, start, end, step) {
        Some((_, len)) => Dim::Known(len as usize),
        None if start == 0 && step == 1 && end >= i32::MAX as i64 => d.clone(),
        None => Dim::Unknown,
    }
}

/// `Slice` by starts, ends, axes and steps (attributes before opset 10, inputs after).
pub(super) fn slice(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let Some(d) = x.dims() else {
        return Ok(vec![c.like(0, None)]);
    };
    let r = d.len();
    let unknown = || Ok(vec![c.like(0, Some(vec![Dim::Unknown; r]))]);
    let get = |attr: &str, i: usize| c.param(attr, i, 10);
    let (starts, ends) = match (get("starts", 1)?, get("ends", 2)?) {
        (Param::Ints(s), Param::Ints(e)) => (s, e),
        _ => return unknown(),
    };
    let axes = match get("axes", 3)? {
        Param::Ints(a) => a,
        Param::Absent => (0..starts.len() as i64).collect(),
        Param::Unknown => return unknown(),
    };
    let steps = match get("steps", 4)? {
        Param::Ints(s) => s,
        Param::Absent => vec![1; starts.len()],
        Param::Unknown => return unknown(),
    };
    let n = starts.len();
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return bad("starts, ends, axes and steps differ in length");
    }
    if steps.contains(&0) {
        return bad("a step is 0");
    }
    let axes = norm_axes(&axes, r)?;
    let mut dims = d.to_vec();
    let mut ranges: Vec<(i64, i64, i64)> = d
        .iter()
        .map(|v| match v {
            Dim::Known(k) => (0, *k as i64, 1),
            _ => (0, 0, 1),
        })
        .collect();
    for (k, &a) in axes.iter().enumerate() {
        dims[a] = slice_dim(&d[a], starts[k], ends[k], steps[k]);
        if let Some((s, len)) = slice_range(&d[a], starts[k], ends[k], steps[k]) {
            ranges[a] = (s, len, steps[k]);
        }
    }
    let data = slice_values(x, &ranges);
    Ok(vec![c.like(0, Some(dims)).with_data(data)])
}

/// Elements of a tracked tensor sliced by per-axis (first, count, step).
fn slice_values(x: &Info, ranges: &[(i64, i64, i64)]) -> Option<Vec<Val>> {
    let data = x.data.as_ref()?;
    let from = known(x.dims()?)?;
    let st = strides(&from);
    let out: Vec<usize> = ranges.iter().map(|r| r.1 as usize).collect();
    let n: usize = out.iter().product();
    let vals = (0..n).map(|i| {
        let idx = unravel(i, &out);
        let j: i64 = (0..out.len())
            .map(|k| (ranges[k].0 + idx[k] as i64 * ranges[k].2) * st[k] as i64)
            .sum();
        data[j as usize].clone()
    });
    Some(vals.collect())
}

/// `Gather` along `axis`, checking tracked indices against the axis size.
pub(super) fn gather(c: &Ctx) -> Result<Vec<Info>> {
    let (x, idx) = (c.info(0), c.info(1));
    let (Some(d), Some(q)) = (x.dims(), idx.dims()) else {
        return Ok(vec![c.like(0, None)]);
    };
    let a = norm_axis(c.node.int_or("axis", 0)?, d.len())?;
    let ints = idx.ints();
    if let (Dim::Known(n), Some(ints)) = (&d[a], &ints) {
        let n = *n as i64;
        if let Some(bad_index) = ints.iter().find(|&&i| i < -n || i >= n) {
            return bad(format!("index {bad_index} is out of range for size {n}"));
        }
    }
    let mut dims = d[..a].to_vec();
    dims.extend_from_slice(q);
    dims.extend_from_slice(&d[a + 1..]);
    let data = ints.and_then(|ints| gather_values(x, a, &ints));
    Ok(vec![c.like(0, Some(dims)).with_data(data)])
}

/// `com.microsoft` `GatherBlockQuantized` (what INT4 makes of an embedding's Gather): the
/// shape of a Gather along `gather_axis` of the dequantized data, whose last dimension holds
/// `8 / bits` values per byte when the data is packed into uint8; the scales' element type.
pub(super) fn gather_block_quantized(c: &Ctx) -> Result<Vec<Info>> {
    let dtype = c.dtype(2);
    let (Some(d), Some(q)) = (c.dims(0), c.dims(1)) else {
        return Ok(vec![Info::new(dtype, None)]);
    };
    if d.is_empty() {
        return bad("GatherBlockQuantized needs data of rank 1 or more");
    }
    let a = norm_axis(c.node.int_or("gather_axis", 0)?, d.len())?;
    let mut data = d.to_vec();
    if c.dtype(0) == Some(DataType::Uint8) {
        let bits = c.node.int_or("bits", 4)?;
        if !matches!(bits, 2 | 4 | 8) {
            return bad(format!(
                "GatherBlockQuantized: bits {bits} is not 2, 4 or 8"
            ));
        }
        let last = data.last_mut().expect("not empty");
        *last = match last {
            Dim::Known(n) => Dim::Known(*n * (8 / bits as usize)),
            _ => return Ok(vec![Info::new(dtype, None)]),
        };
    }
    let mut dims = data[..a].to_vec();
    dims.extend_from_slice(q);
    dims.extend_from_slice(&data[a + 1..]);
    Ok(vec![Info::new(dtype, Some(dims))])
}

/// Elements of a Gather of tracked values (indices already checked in range).
fn gather_values(x: &Info, axis: usize, indices: &[i64]) -> Option<Vec<Val>> {
    let data = x.data.as_ref()?;
    let d = known(x.dims()?)?;
    let outer: usize = d[..axis].iter().product();
    let inner: usize = d[axis + 1..].iter().product();
    let n = d[axis] as i64;
    let mut out = Vec::new();
    for o in 0..outer {
        for &i in indices {
            let i = if i < 0 { i + n } else { i } as usize;
            let at = (o * d[axis] + i) * inner;
            out.extend_from_slice(&data[at..at + inner]);
        }
    }
    Some(out)
}

/// `NonZero`: int64 indices, one row per input axis, one column per non-zero element.
pub(super) fn non_zero(c: &Ctx) -> Info {
    let rank = c.dims(0).map_or(Dim::Unknown, |d| Dim::Known(d.len()));
    Info::new(Some(DataType::Int64), Some(vec![rank, Dim::Unknown]))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::attr::make;
    use crate::dtype::DataType::{Float, Int64};
    use crate::shape::infer;
    use crate::shape::test_util::{error, expect, ints, model, node, scalar, types, value};

    #[test]
    fn gather_block_quantized_unpacks_the_embedding_width() {
        // An INT4 word embedding of 30522 x 384 packed two per byte, its scales in FP32,
        // gathered by token ids [B, S], then a float MatMul: shapes flow past it.
        let mut gbq = node(
            "GatherBlockQuantized",
            &["emb_q4", "ids", "scales"],
            &["e"],
            vec![make::int("block_size", 32), make::int("quantize_axis", 1)],
        );
        gbq.domain = "com.microsoft".into();
        let t = types(
            17,
            vec![
                value("emb_q4", crate::dtype::DataType::Uint8, "30522,192"),
                value("ids", Int64, "B,S"),
                value("scales", Float, "30522,12"),
                value("w", Float, "384,16"),
            ],
            vec![],
            vec![gbq.clone(), node("MatMul", &["e", "w"], &["y"], vec![])],
        );
        expect(&t, &[("e", "float[B,S,384]"), ("y", "float[B,S,16]")]);
        gbq.attribute.push(make::int("bits", 3));
        let e = error(
            17,
            vec![
                value("emb_q4", crate::dtype::DataType::Uint8, "30522,192"),
                value("ids", Int64, "B,S"),
            ],
            vec![],
            gbq,
        );
        assert!(e.contains("bits 3 is not 2, 4 or 8"), "{e}");
    }

    #[test]
    fn slicing_splitting_and_gathering() {
        let t = types(
            13,
            vec![
                value("x", Float, "10,20,30"),
                value("bx", Float, "B,20"),
                value("g", Float, "5,6,7"),
                value("i", Int64, "2,3"),
            ],
            vec![
                ints("st", &[0, -5]),
                ints("en", &[i64::MAX, -1]),
                ints("ax", &[0, 2]),
                ints("one", &[1]),
                ints("neg_st", &[-1]),
                ints("neg_en", &[i64::MIN]),
                ints("ax1", &[1]),
                ints("step2", &[-2]),
                ints("zero", &[0]),
                ints("big", &[i64::MAX]),
                scalar("two", 2i64),
                ints("sp", &[8, 12]),
                ints("sh_st", &[1]),
                ints("sh_en", &[3]),
            ],
            vec![
                node("Slice", &["x", "st", "en", "ax"], &["s1"], vec![]),
                node(
                    "Slice",
                    &["x", "neg_st", "neg_en", "ax1", "step2"],
                    &["s2"],
                    vec![],
                ),
                node("Slice", &["bx", "zero", "big"], &["s3"], vec![]),
                node("Gather", &["g", "i"], &["g1"], vec![make::int("axis", 1)]),
                node("Gather", &["g", "two"], &["g2"], vec![]),
                node(
                    "Split",
                    &["x", "sp"],
                    &["p1", "p2"],
                    vec![make::int("axis", 1)],
                ),
                node("Shape", &["x"], &["shape"], vec![]),
                node("Slice", &["shape", "sh_st", "sh_en"], &["tail"], vec![]),
                node("ConstantOfShape", &["tail"], &["zeros"], vec![]),
                node("Concat", &["x", "x"], &["cat"], vec![make::int("axis", -1)]),
                node(
                    "Concat",
                    &["bx", "bx"],
                    &["cat2"],
                    vec![make::int("axis", 1)],
                ),
                node("Squeeze", &["s2"], &["nosq"], vec![]),
                node("Unsqueeze", &["g2", "one"], &["unsq"], vec![]),
                node("Squeeze", &["unsq", "one"], &["sq"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("s1", "float[10,20,4]"),
                ("s2", "float[10,10,30]"),
                ("s3", "float[B,20]"),
                ("g1", "float[5,2,3,7]"),
                ("g2", "float[6,7]"),
                ("p1", "float[10,8,30]"),
                ("p2", "float[10,12,30]"),
                ("tail", "int64[2]"),
                ("zeros", "float[20,30]"),
                ("cat", "float[10,20,60]"),
                ("cat2", "float[B,40]"),
                ("nosq", "float[10,10,30]"),
                ("unsq", "float[6,1,7]"),
                ("sq", "float[6,7]"),
            ],
        );
        let tile_err = infer(
            &model(
                13,
                vec![value("g", Float, "5,6,7")],
                vec![ints("r", &[3])],
                vec![node("Tile", &["g", "r"], &["y"], vec![])],
            ),
            &HashMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(tile_err.contains("1 repeats for rank 3"), "{tile_err}");
    }

    #[test]
    fn slice_ranges_survive_extreme_bounds() {
        assert_eq!(slice_range(&Dim::Known(0), -1, i64::MIN, -1), Some((0, 0)));
        assert_eq!(
            slice_range(&Dim::Known(10), 0, i64::MAX, i64::MAX),
            Some((0, 1))
        );
        assert_eq!(
            slice_range(&Dim::Known(10), -1, i64::MIN, i64::MIN),
            Some((9, 1))
        );
        assert_eq!(slice_range(&Dim::Known(10), 8, 2, -3), Some((8, 2)));
        assert_eq!(slice_range(&Dim::Symbol("N".into()), 0, 5, 1), None);
    }
}
