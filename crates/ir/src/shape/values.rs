//! Tracked tensor values: what is known about a value ([`Info`]) and the elementwise
//! arithmetic, comparison and conversion of its small tracked elements ([`Val`]).

use crate::dtype::DataType;
use crate::tensor::checked_numel;

use super::types::{Dim, TensorType};
use super::MAX_TRACKED;

/// One element of a tracked tensor.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Int(i64),
    Float(f64),
    /// A dimension known only by name (always non-negative).
    Sym(String),
    Unk,
}

impl Val {
    pub(super) fn int(&self) -> Option<i64> {
        match self {
            Val::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub(super) fn num(&self) -> Option<f64> {
        match self {
            Val::Int(v) => Some(*v as f64),
            Val::Float(v) => Some(*v),
            _ => None,
        }
    }

    pub(super) fn of_dim(d: &Dim) -> Val {
        match d {
            Dim::Known(n) => Val::Int(*n as i64),
            Dim::Symbol(s) => Val::Sym(s.clone()),
            Dim::Unknown => Val::Unk,
        }
    }

    pub(super) fn to_dim(&self) -> Dim {
        match self {
            Val::Int(n) if *n >= 0 => Dim::Known(*n as usize),
            Val::Sym(s) => Dim::Symbol(s.clone()),
            _ => Dim::Unknown,
        }
    }
}

/// What is known about one value: its type and, for small tensors, its elements.
#[derive(Clone, Debug, Default)]
pub(super) struct Info {
    pub(super) ty: TensorType,
    /// Row-major elements; present only when every dimension is known.
    pub(super) data: Option<Vec<Val>>,
}

/// The info of a value nothing is known about.
pub(super) static UNKNOWN_INFO: Info = Info {
    ty: TensorType {
        dtype: None,
        dims: None,
    },
    data: None,
};

impl Info {
    pub(super) fn new(dtype: Option<DataType>, dims: Option<Vec<Dim>>) -> Self {
        Info {
            ty: TensorType { dtype, dims },
            data: None,
        }
    }

    /// Attaches `data` when it fits the (fully known) shape.
    pub(super) fn with_data(mut self, data: Option<Vec<Val>>) -> Self {
        let numel = self.ty.known_dims().and_then(|d| checked_numel(&d));
        self.data = data.filter(|v| Some(v.len()) == numel && v.len() <= MAX_TRACKED);
        self
    }

    pub(super) fn dims(&self) -> Option<&[Dim]> {
        self.ty.dims.as_deref()
    }

    /// The elements when all are integers.
    pub(super) fn ints(&self) -> Option<Vec<i64>> {
        self.data.as_ref()?.iter().map(Val::int).collect()
    }

    /// The elements when all are numbers.
    pub(super) fn nums(&self) -> Option<Vec<f64>> {
        self.data.as_ref()?.iter().map(Val::num).collect()
    }

    /// The single element of a one-element tensor.
    pub(super) fn scalar(&self) -> Option<&Val> {
        self.data.as_ref().filter(|d| d.len() == 1).map(|d| &d[0])
    }
}

/// Row-major strides of `dims`.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Multi-index of flat position `i` in `dims`.
pub(super) fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for k in (0..dims.len()).rev() {
        if dims[k] > 0 {
            idx[k] = i % dims[k];
            i /= dims[k];
        }
    }
    idx
}

/// The elements of a tensor of shape `from` broadcast to shape `to`.
pub(super) fn broadcast_data(vals: &[Val], from: &[usize], to: &[usize]) -> Vec<Val> {
    let off = to.len() - from.len();
    let st = strides(from);
    let n: usize = to.iter().product();
    (0..n)
        .map(|i| {
            let idx = unravel(i, to);
            let j: usize = (0..from.len())
                .map(|k| {
                    if from[k] == 1 {
                        0
                    } else {
                        idx[off + k] * st[k]
                    }
                })
                .sum();
            vals[j].clone()
        })
        .collect()
}

/// Elementwise binary arithmetic, comparison and logic on tracked values.
pub(super) fn binop(op: &str, a: &Val, b: &Val) -> Val {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => int_binop(op, *x, *y),
        (Val::Sym(s), other) | (other, Val::Sym(s)) => sym_binop(op, s, other, a == b),
        _ => match (a.num(), b.num()) {
            (Some(x), Some(y)) => float_binop(op, x, y),
            _ => Val::Unk,
        },
    }
}

fn int_binop(op: &str, x: i64, y: i64) -> Val {
    if let Some(v) = compare(op, Some(x.cmp(&y))) {
        return v;
    }
    let v = match op {
        "Add" | "Sum" => x.checked_add(y),
        "Sub" => x.checked_sub(y),
        "Mul" => x.checked_mul(y),
        "Div" => x.checked_div(y),
        "Pow" => u32::try_from(y).ok().and_then(|e| x.checked_pow(e)),
        "Max" => Some(x.max(y)),
        "Min" => Some(x.min(y)),
        "And" => Some((x != 0 && y != 0) as i64),
        "Or" => Some((x != 0 || y != 0) as i64),
        "Xor" => Some(((x != 0) != (y != 0)) as i64),
        _ => None,
    };
    v.map_or(Val::Unk, Val::Int)
}

fn float_binop(op: &str, x: f64, y: f64) -> Val {
    if let Some(v) = compare(op, x.partial_cmp(&y)) {
        return v;
    }
    Val::Float(match op {
        "Add" | "Sum" => x + y,
        "Sub" => x - y,
        "Mul" => x * y,
        "Div" => x / y,
        "Pow" => x.powf(y),
        "Max" => x.max(y),
        "Min" => x.min(y),
        _ => return Val::Unk,
    })
}

/// A comparison op's boolean result for operands ordered `ord` (`None`: NaN involved).
fn compare(op: &str, ord: Option<std::cmp::Ordering>) -> Option<Val> {
    use std::cmp::Ordering::*;
    let b = match op {
        "Equal" => ord == Some(Equal),
        "Less" => ord == Some(Less),
        "LessOrEqual" => matches!(ord, Some(Less | Equal)),
        "Greater" => ord == Some(Greater),
        "GreaterOrEqual" => matches!(ord, Some(Greater | Equal)),
        _ => return None,
    };
    Some(Val::Int(b as i64))
}

/// Arithmetic with a named dimension `s` (which is never negative); `same` when both
/// operands are the same symbol.
fn sym_binop(op: &str, s: &str, other: &Val, same: bool) -> Val {
    let sym = || Val::Sym(s.to_string());
    match (op, other) {
        ("Mul" | "Div", Val::Int(1)) | ("Add" | "Sub", Val::Int(0)) => sym(),
        ("Equal", _) if same => Val::Int(1),
        ("Equal", Val::Int(n)) if *n < 0 => Val::Int(0),
        _ => Val::Unk,
    }
}

/// Elementwise unary operations on tracked values.
pub(super) fn unop(op: &str, v: &Val) -> Val {
    match (op, v) {
        ("Neg", Val::Int(x)) => x.checked_neg().map_or(Val::Unk, Val::Int),
        ("Abs", Val::Int(x)) => x.checked_abs().map_or(Val::Unk, Val::Int),
        ("Abs", Val::Sym(_)) => v.clone(),
        ("Not", Val::Int(x)) => Val::Int((*x == 0) as i64),
        ("Neg", Val::Float(x)) => Val::Float(-x),
        ("Abs", Val::Float(x)) => Val::Float(x.abs()),
        ("Floor", Val::Float(x)) => Val::Float(x.floor()),
        ("Ceil", Val::Float(x)) => Val::Float(x.ceil()),
        ("Sqrt", Val::Float(x)) => Val::Float(x.sqrt()),
        ("Reciprocal", Val::Float(x)) => Val::Float(1.0 / x),
        _ => Val::Unk,
    }
}

/// A tracked value converted by ONNX `Cast` to `to`.
pub(super) fn cast_val(v: &Val, to: DataType) -> Val {
    match v {
        _ if to == DataType::Bool => match v.num() {
            Some(x) => Val::Int((x != 0.0) as i64),
            None => Val::Unk,
        },
        Val::Int(x) if to.is_float() => Val::Float(*x as f64),
        Val::Float(x) if to == DataType::Float => Val::Float(*x as f32 as f64),
        Val::Float(x) if to.is_integer() && x.is_finite() => Val::Int(x.trunc() as i64),
        Val::Int(_) | Val::Sym(_) if to.is_integer() => v.clone(),
        Val::Float(_) if to.is_float() => v.clone(),
        _ => Val::Unk,
    }
}
