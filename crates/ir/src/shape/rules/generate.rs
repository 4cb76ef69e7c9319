//! Operators that produce new tensors: `Shape`, `Size`, `Constant`, `ConstantOfShape`
//! and `Range`, whose values are tracked when small.

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::Result;
use crate::tensor::{checked_numel, TensorData};

use super::Ctx;
use crate::shape::bad;
use crate::shape::seed::{proto_info, tensor_info};
use crate::shape::types::{known, Dim};
use crate::shape::values::{Info, Val};
use crate::shape::MAX_TRACKED;

/// `Shape`: the (start..end) dims of input 0 as tracked int64 values.
pub(super) fn shape(c: &Ctx) -> Result<Vec<Info>> {
    let int64 = Some(DataType::Int64);
    let Some(d) = c.dims(0) else {
        return Ok(vec![Info::new(int64, Some(vec![Dim::Unknown]))]);
    };
    let r = d.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(c.node.int_or("start", 0)?);
    let end = clamp(c.node.int_or("end", r)?).max(start);
    let vals: Vec<Val> = d[start..end].iter().map(Val::of_dim).collect();
    let info = Info::new(int64, Some(vec![Dim::Known(vals.len())]));
    Ok(vec![info.with_data(Some(vals))])
}

/// `Size`: the element count as a tracked int64 scalar.
pub(super) fn size(c: &Ctx) -> Result<Vec<Info>> {
    let n = c.dims(0).and_then(known).and_then(|d| checked_numel(&d));
    let data = n.map(|n| vec![Val::Int(n as i64)]);
    Ok(vec![
        Info::new(Some(DataType::Int64), Some(vec![])).with_data(data)
    ])
}

/// `ConstantOfShape`: a tensor of the given shape filled with `value`.
pub(super) fn constant_of_shape(c: &Ctx) -> Result<Vec<Info>> {
    let (dtype, fill) = match c.node.tensor("value")? {
        Some(t) => {
            let info = proto_info(t)?;
            let fill = info.scalar().cloned().unwrap_or(Val::Unk);
            (info.ty.dtype, fill)
        }
        None => (Some(DataType::Float), Val::Float(0.0)),
    };
    let dims: Option<Vec<Dim>> = c
        .shape_input(0)
        .map(|v| v.iter().map(Val::to_dim).collect());
    let n = dims
        .as_deref()
        .and_then(known)
        .and_then(|d| checked_numel(&d));
    let data = n.filter(|&n| n <= MAX_TRACKED).map(|n| vec![fill; n]);
    Ok(vec![Info::new(dtype, dims).with_data(data)])
}

/// `Constant`: the type and values of whichever `value*` attribute is set.
pub(super) fn constant(c: &Ctx) -> Result<Vec<Info>> {
    let n = c.node;
    let t = if let Some(t) = n.tensor("value")? {
        TensorData::from_proto(t, None)?
    } else if let Some(v) = n.float("value_float")? {
        TensorData::scalar(v)
    } else if let Some(v) = n.floats("value_floats")? {
        TensorData::from_slice(vec![v.len()], &v)?
    } else if let Some(v) = n.int("value_int")? {
        TensorData::scalar(v)
    } else if let Some(v) = n.ints("value_ints")? {
        TensorData::from_slice(vec![v.len()], &v)?
    } else if let Some(v) = n.string("value_string")? {
        TensorData::from_strings(vec![], vec![v.into_bytes()])?
    } else if let Some(v) = n.strings("value_strings")? {
        let len = v.len();
        TensorData::from_strings(vec![len], v.into_iter().map(String::into_bytes).collect())?
    } else {
        return Ok(vec![]);
    };
    Ok(vec![tensor_info(&t)])
}

/// `Range`: length (and values) from tracked scalar start, limit and delta.
pub(super) fn range(c: &Ctx) -> Result<Vec<Info>> {
    let dtype = c.dtype(0);
    let args: Option<Vec<&Val>> = (0..3).map(|i| c.info(i).scalar()).collect();
    let Some(args) = args else {
        return Ok(vec![Info::new(dtype, Some(vec![Dim::Unknown]))]);
    };
    let ints: Option<Vec<i64>> = args.iter().map(|v| v.int()).collect();
    let nums: Option<Vec<f64>> = args.iter().map(|v| v.num()).collect();
    let (len, data) = match (ints, nums) {
        (Some(v), _) if dtype.is_some_and(|d| !d.is_float()) => {
            let (start, limit, delta) = (v[0], v[1], v[2]);
            if delta == 0 {
                return bad("delta is 0");
            }
            let n = ((limit as i128 - start as i128) as f64 / delta as f64)
                .ceil()
                .max(0.0) as usize;
            let vals = (n <= MAX_TRACKED)
                .then(|| (0..n as i64).map(|i| Val::Int(start + i * delta)).collect());
            (Dim::Known(n), vals)
        }
        (_, Some(v)) => {
            if v[2] == 0.0 {
                return bad("delta is 0");
            }
            let n = ((v[1] - v[0]) / v[2]).ceil().max(0.0) as usize;
            let vals = (n <= MAX_TRACKED)
                .then(|| (0..n).map(|i| Val::Float(v[0] + i as f64 * v[2])).collect());
            (Dim::Known(n), vals)
        }
        _ => (Dim::Unknown, None),
    };
    Ok(vec![Info::new(dtype, Some(vec![len])).with_data(data)])
}

#[cfg(test)]
mod tests {
    use crate::dtype::DataType::Float;
    use crate::shape::test_util::{expect, node, scalar, types, value};

    #[test]
    fn ranges() {
        let t = types(
            18,
            vec![value("x", Float, "1,3,20,10")],
            vec![
                scalar("i0", 0i64),
                scalar("i10", 10i64),
                scalar("i3", 3i64),
                scalar("f0", 0f32),
                scalar("f1", 1f32),
                scalar("fq", 0.25f32),
            ],
            vec![
                node("Range", &["i0", "i10", "i3"], &["ri"], vec![]),
                node("Range", &["f0", "f1", "fq"], &["rf"], vec![]),
            ],
        );
        expect(&t, &[("ri", "int64[4]"), ("rf", "float[4]")]);
    }
}
