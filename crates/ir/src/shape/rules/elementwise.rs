//! Elementwise operators: unary maps, multidirectional broadcasts (arithmetic,
//! comparison, logic, `Where`) and casts.

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::{IrError, Result};

use super::Ctx;
use crate::shape::dims::broadcast;
use crate::shape::types::{known, Dim};
use crate::shape::values::{binop, broadcast_data, cast_val, unop, Info, Val};
use crate::shape::MAX_TRACKED;

/// Operators whose output has the type of input 0.
pub(super) const UNARY: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitwiseNot",
    "Ceil",
    "Celu",
    "Cos",
    "Cosh",
    "CumSum",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LRN",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
    "Clip",
    "InstanceNormalization",
    "GroupNormalization",
    "ReverseSequence",
    "ScatterElements",
    "ScatterND",
    "Scatter",
];

/// Broadcasting operators whose output has the element type of input 0.
pub(super) const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Mod",
    "And",
    "Or",
    "Xor",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
];

/// Broadcasting comparisons (boolean output).
pub(super) const COMPARE: &[&str] = &["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"];

/// Same type as input 0; values follow for the few unary ops tracked.
pub(super) fn unary(c: &Ctx) -> Info {
    let x = c.info(0);
    let data = x
        .data
        .as_ref()
        .map(|d| d.iter().map(|v| unop(c.op(), v)).collect());
    Info::new(x.ty.dtype, x.ty.dims.clone()).with_data(data)
}

/// Multidirectional broadcast of all inputs; values follow when all inputs are tracked.
pub(super) fn broadcast_op(c: &Ctx, dtype: Option<DataType>) -> Result<Vec<Info>> {
    let mut dims: Option<Vec<Dim>> = Some(vec![]);
    for i in 0..c.inputs.len() {
        if let Some(info) = c.input(i) {
            dims = match (dims, info.dims()) {
                (Some(acc), Some(d)) => Some(broadcast(&acc, d)?),
                _ => None,
            };
        }
    }
    let data = dims
        .as_deref()
        .and_then(known)
        .and_then(|out| broadcast_values(c, &out));
    Ok(vec![Info::new(dtype, dims).with_data(data)])
}

/// Elements of a broadcast op whose inputs are all tracked.
fn broadcast_values(c: &Ctx, out: &[usize]) -> Option<Vec<Val>> {
    // Only small results with every input's values known are tracked: check that before
    // broadcasting anything (a tracked bias added to a large activation must cost nothing).
    let n: usize = out.iter().product();
    if n > MAX_TRACKED || c.inputs.iter().any(|i| i.is_none_or(|i| i.data.is_none())) {
        return None;
    }
    let mut args = Vec::new();
    for info in c.inputs.iter() {
        let info = (*info)?;
        let from = known(info.dims()?)?;
        args.push(broadcast_data(info.data.as_ref()?, &from, out));
    }
    match c.op() {
        "Where" if args.len() == 3 => Some(
            (0..n)
                .map(|i| match args[0][i] {
                    Val::Int(0) => args[2][i].clone(),
                    Val::Int(_) => args[1][i].clone(),
                    _ => Val::Unk,
                })
                .collect(),
        ),
        "Mean" | "Where" => None,
        op => {
            let (first, rest) = args.split_first()?;
            Some(
                (0..n)
                    .map(|i| {
                        rest.iter()
                            .fold(first[i].clone(), |acc, r| binop(op, &acc, &r[i]))
                    })
                    .collect(),
            )
        }
    }
}

/// `Cast` to the type of attribute `to`.
pub(super) fn cast(c: &Ctx) -> Result<Vec<Info>> {
    let to = c
        .node
        .int("to")?
        .ok_or_else(|| IrError::invalid("Cast needs attribute 'to'"))?;
    let dtype = DataType::from_code(to as i32)
        .ok_or_else(|| IrError::invalid(format!("Cast to unknown type {to}")))?;
    cast_to(c, Some(dtype))
}

/// A cast of input 0 to `to`, converting tracked values.
pub(super) fn cast_to(c: &Ctx, to: Option<DataType>) -> Result<Vec<Info>> {
    let x = c.info(0);
    let data = to.and_then(|t| Some(x.data.as_ref()?.iter().map(|v| cast_val(v, t)).collect()));
    Ok(vec![Info::new(to, x.ty.dims.clone()).with_data(data)])
}

#[cfg(test)]
mod tests {
    use crate::attr::make;
    use crate::dtype::DataType::{Bool, Float, Int64};
    use crate::shape::test_util::{error, expect, node, types, value};

    #[test]
    fn elementwise_broadcasting_and_casts() {
        let t = types(
            17,
            vec![
                value("a", Float, "N,3,1"),
                value("b", Float, "4"),
                value("m", Float, "M,3,1"),
                value("c", Bool, "3,1"),
                value("i", Int64, "2"),
            ],
            vec![],
            vec![
                node("Relu", &["a"], &["relu"], vec![]),
                node("Add", &["a", "b"], &["add"], vec![]),
                node("Equal", &["a", "b"], &["eq"], vec![]),
                node("Where", &["c", "a", "b"], &["where"], vec![]),
                node("Sum", &["a", "b", "a"], &["sum"], vec![]),
                node("Mul", &["a", "m"], &["mul"], vec![]),
                node("Cast", &["a"], &["cast"], vec![make::int("to", 7)]),
                node("CastLike", &["b", "i"], &["like"], vec![]),
                node("IsNaN", &["a"], &["nan"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("relu", "float[N,3,1]"),
                ("add", "float[N,3,4]"),
                ("eq", "bool[N,3,4]"),
                ("where", "float[N,3,4]"),
                ("sum", "float[N,3,4]"),
                ("mul", "float[?,3,1]"),
                ("cast", "int64[N,3,1]"),
                ("like", "int64[4]"),
                ("nan", "bool[N,3,1]"),
            ],
        );
        let err = error(
            17,
            vec![value("x", Float, "3"), value("y", Float, "2,4")],
            vec![],
            node("Add", &["x", "y"], &["bad"], vec![]),
        );
        assert!(
            err.contains("n_bad") && err.contains("cannot broadcast 3 with 4"),
            "{err}"
        );
    }
}
