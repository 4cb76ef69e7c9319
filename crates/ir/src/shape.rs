//! Static shape and type inference.
//!
//! [`infer`] walks the graph in topological order and gives every value a [`TensorType`]:
//! an element type and dimensions that are known numbers, named symbols or unknown.
//! Like ONNX's data propagation, it also tracks the *values* of small tensors computed
//! from shapes (`Shape -> Gather -> Unsqueeze -> Concat` chains, constants, simple
//! arithmetic), so the targets of `Reshape`, `Expand`, `ConstantOfShape`, `Slice`,
//! `Range`, `Resize`, `Tile` and friends resolve. Operators without a rule get unknown
//! outputs; statically impossible graphs (mismatched MatMul dimensions, Concat of
//! different ranks, ...) are errors naming the node. [`annotate`] writes the result
//! into a model's `value_info`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::{IrError, Result};
use crate::graph::GraphEdit;
use crate::model::Model;
use crate::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::{checked_numel, TensorData};

/// Tensors with at most this many elements have their values tracked.
const MAX_TRACKED: usize = 4096;

/// Opset assumed for the default domain when a model does not import it.
const DEFAULT_OPSET: i64 = 21;

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Known(usize),
    /// A named size (`dim_param`), equal wherever the same name appears.
    Symbol(String),
    /// Nothing is known about the size.
    Unknown,
}

/// The inferred type of a value: element type and dimensions, each possibly unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorType {
    /// Element type (`None`: unknown).
    pub dtype: Option<DataType>,
    /// Dimensions (`None`: unknown rank).
    pub dims: Option<Vec<Dim>>,
}

impl TensorType {
    /// A fully known type.
    pub fn known(dtype: DataType, dims: &[usize]) -> Self {
        TensorType {
            dtype: Some(dtype),
            dims: Some(dims.iter().map(|&d| Dim::Known(d)).collect()),
        }
    }

    /// Rank, when known.
    pub fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    /// The dimensions when every one of them is a known number.
    pub fn known_dims(&self) -> Option<Vec<usize>> {
        known(self.dims.as_deref()?)
    }

    /// The type of a `ValueInfoProto` (non-tensor types are unknown; a `dim_param` of
    /// `?` is an unknown size, not a symbol).
    pub fn from_value_info(vi: &ValueInfoProto) -> Self {
        let Some(type_proto::Value::TensorType(t)) =
            vi.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return TensorType::default();
        };
        let dims = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                    // Some exporters (Paddle) write "?" for every unknown size.
                    Some(dimension::Value::DimParam(p)) if !p.is_empty() && p != "?" => {
                        Dim::Symbol(p.clone())
                    }
                    _ => Dim::Unknown,
                })
                .collect()
        });
        TensorType {
            dtype: DataType::from_code(t.elem_type),
            dims,
        }
    }

    /// This type as a `TypeProto` (unknown element type is written as 0, UNDEFINED).
    pub fn to_type_proto(&self) -> TypeProto {
        let shape = self.dims.as_ref().map(|dims| TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dimension {
                    value: match d {
                        Dim::Known(n) => Some(dimension::Value::DimValue(*n as i64)),
                        Dim::Symbol(s) => Some(dimension::Value::DimParam(s.clone())),
                        Dim::Unknown => None,
                    },
                    denotation: String::new(),
                })
                .collect(),
        });
        TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: self.dtype.map_or(0, DataType::code),
                shape,
            })),
            denotation: String::new(),
        }
    }

    /// Fills what this type leaves unknown from `other` (element type, rank, single dims).
    fn fill_from(&mut self, other: &TensorType) {
        self.dtype = self.dtype.or(other.dtype);
        match (&mut self.dims, &other.dims) {
            (None, Some(theirs)) => self.dims = Some(theirs.clone()),
            (Some(mine), Some(theirs)) if mine.len() == theirs.len() => {
                for (m, t) in mine.iter_mut().zip(theirs) {
                    if *m == Dim::Unknown {
                        *m = t.clone();
                    }
                }
            }
            _ => {}
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// Formats like `float[N,1,28,28]`; `?` marks an unknown type or dimension, `[*]` an
/// unknown rank.
impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d}")?,
            None => f.write_str("?")?,
        }
        match &self.dims {
            None => f.write_str("[*]"),
            Some(dims) => {
                let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
                write!(f, "[{}]", parts.join(","))
            }
        }
    }
}

/// Infers the type of every value of the main graph: graph inputs (from their
/// `ValueInfo`, with `overrides` replacing an input's shape), initializers and node
/// outputs. A symbol an override fixes (e.g. `batch` in `[batch,3,H,W]`) takes that
/// value in every graph input that uses it. Declared `value_info` and graph outputs
/// fill in what inference leaves unknown.
pub fn infer(
    model: &Model,
    overrides: &HashMap<String, Vec<usize>>,
) -> Result<HashMap<String, TensorType>> {
    let graph = model.graph();
    let bindings = bind_symbols(graph, overrides)?;
    let mut infos = seed(graph, overrides, &bindings)?;
    let declared: HashMap<&str, TensorType> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .map(|vi| {
            let ty = substitute(TensorType::from_value_info(vi), &bindings);
            (vi.name.as_str(), ty)
        })
        .collect();
    for i in graph.topological_order()? {
        let node = &graph.node[i];
        let opset = model.opset(&node.domain).unwrap_or(DEFAULT_OPSET);
        let outs = infer_node(node, opset, &infos).map_err(|e| in_node(node, e))?;
        let mut outs = outs.into_iter();
        for name in &node.output {
            let mut info = outs.next().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            if let Some(d) = declared.get(name.as_str()) {
                info.ty.fill_from(d);
            }
            infos.insert(name.clone(), info);
        }
    }
    Ok(infos.into_iter().map(|(k, v)| (k, v.ty)).collect())
}

/// Writes inferred types of intermediate values (node outputs that are not graph
/// outputs) into the graph's `value_info`, replacing earlier entries of the same names.
/// Values of unknown element type are left out.
pub fn annotate(model: &mut Model, types: &HashMap<String, TensorType>) {
    let graph = model.graph_mut();
    let outputs: HashSet<String> = graph.output.iter().map(|v| v.name.clone()).collect();
    let names: Vec<String> = graph.node.iter().flat_map(|n| n.output.clone()).collect();
    let mut existing: HashMap<String, usize> = (graph.value_info.iter().enumerate())
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    for name in names {
        let Some(ty) = types.get(&name).filter(|t| t.dtype.is_some()) else {
            continue;
        };
        if name.is_empty() || outputs.contains(&name) {
            continue;
        }
        let proto = Some(ty.to_type_proto());
        match existing.get(&name) {
            Some(&i) => graph.value_info[i].r#type = proto,
            None => {
                existing.insert(name.clone(), graph.value_info.len());
                graph.value_info.push(ValueInfoProto {
                    name,
                    r#type: proto,
                    ..Default::default()
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Seeding: inputs, overrides and initializers.

/// Values of the symbols that `overrides` fix in the graph inputs.
fn bind_symbols(
    graph: &GraphProto,
    overrides: &HashMap<String, Vec<usize>>,
) -> Result<HashMap<String, usize>> {
    let runtime: HashSet<&str> = graph.runtime_inputs().into_iter().collect();
    let mut bindings = HashMap::new();
    for (name, shape) in overrides {
        if !runtime.contains(name.as_str()) {
            return Err(IrError::invalid(format!(
                "shape override for '{name}', which is not a graph input"
            )));
        }
        let vi = graph.input.iter().find(|v| &v.name == name);
        let declared = vi.map(TensorType::from_value_info).and_then(|t| t.dims);
        let Some(declared) = declared else { continue };
        if declared.len() != shape.len() {
            return Err(IrError::invalid(format!(
                "shape override {shape:?} for input '{name}' has rank {}, the input has rank {}",
                shape.len(),
                declared.len()
            )));
        }
        for (d, &v) in declared.iter().zip(shape) {
            match d {
                Dim::Known(k) if *k != v => {
                    return Err(IrError::invalid(format!(
                        "shape override {shape:?} for input '{name}' contradicts its fixed size {k}"
                    )))
                }
                Dim::Symbol(s) => {
                    if let Some(old) = bindings.insert(s.clone(), v).filter(|&o| o != v) {
                        return Err(IrError::invalid(format!(
                            "shape overrides give symbol '{s}' two values, {old} and {v}"
                        )));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(bindings)
}

/// Replaces bound symbols by their values.
fn substitute(mut ty: TensorType, bindings: &HashMap<String, usize>) -> TensorType {
    for d in ty.dims.iter_mut().flatten() {
        if let Dim::Symbol(s) = d {
            if let Some(&v) = bindings.get(s.as_str()) {
                *d = Dim::Known(v);
            }
        }
    }
    ty
}

/// Infos of the graph inputs and initializers.
fn seed(
    graph: &GraphProto,
    overrides: &HashMap<String, Vec<usize>>,
    bindings: &HashMap<String, usize>,
) -> Result<HashMap<String, Info>> {
    let mut infos = HashMap::new();
    for vi in &graph.input {
        let mut ty = substitute(TensorType::from_value_info(vi), bindings);
        if let Some(shape) = overrides.get(&vi.name) {
            ty.dims = Some(shape.iter().map(|&d| Dim::Known(d)).collect());
        }
        infos.insert(vi.name.clone(), Info { ty, data: None });
    }
    for t in &graph.initializer {
        infos.insert(t.name.clone(), initializer_info(t)?);
    }
    Ok(infos)
}

/// The info of an initializer, decoding its values only when it is small.
fn initializer_info(t: &TensorProto) -> Result<Info> {
    let bad = |r: String| IrError::bad_tensor(&t.name, r);
    let dtype = DataType::from_code(t.data_type)
        .ok_or_else(|| bad(format!("unknown data_type {}", t.data_type)))?;
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>>>()?;
    if checked_numel(&dims).is_some_and(|n| n <= MAX_TRACKED) {
        return Ok(tensor_info(&TensorData::from_proto(t, None)?));
    }
    Ok(Info::new(
        Some(dtype),
        Some(dims.into_iter().map(Dim::Known).collect()),
    ))
}

/// The info of a host tensor, with its values when small and numeric.
fn tensor_info(t: &TensorData) -> Info {
    let dims = t.dims().iter().map(|&d| Dim::Known(d)).collect();
    let info = Info::new(Some(t.dtype()), Some(dims));
    let data = if t.numel() > MAX_TRACKED {
        None
    } else if t.dtype().is_float() {
        t.to_f64_vec()
            .ok()
            .map(|v| v.into_iter().map(Val::Float).collect())
    } else {
        t.to_i64_vec()
            .ok()
            .map(|v| v.into_iter().map(Val::Int).collect())
    };
    info.with_data(data)
}

/// Prefixes an error of a rule with the node it concerns.
fn in_node(node: &NodeProto, e: IrError) -> IrError {
    match e {
        IrError::Invalid(msg) => {
            IrError::Invalid(format!("node '{}' ({}): {msg}", node.name, node.op_type))
        }
        IrError::BadTensor { name, reason } if name.is_empty() => {
            IrError::Invalid(format!("node '{}' ({}): {reason}", node.name, node.op_type))
        }
        other => other,
    }
}

/// Shorthand for a contradiction found by a rule.
fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(IrError::invalid(msg))
}

// ---------------------------------------------------------------------------------------
// Tracked values.

/// One element of a tracked tensor.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Float(f64),
    /// A dimension known only by name (always non-negative).
    Sym(String),
    Unk,
}

impl Val {
    fn int(&self) -> Option<i64> {
        match self {
            Val::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn num(&self) -> Option<f64> {
        match self {
            Val::Int(v) => Some(*v as f64),
            Val::Float(v) => Some(*v),
            _ => None,
        }
    }

    fn of_dim(d: &Dim) -> Val {
        match d {
            Dim::Known(n) => Val::Int(*n as i64),
            Dim::Symbol(s) => Val::Sym(s.clone()),
            Dim::Unknown => Val::Unk,
        }
    }

    fn to_dim(&self) -> Dim {
        match self {
            Val::Int(n) if *n >= 0 => Dim::Known(*n as usize),
            Val::Sym(s) => Dim::Symbol(s.clone()),
            _ => Dim::Unknown,
        }
    }
}

/// What is known about one value: its type and, for small tensors, its elements.
#[derive(Clone, Debug, Default)]
struct Info {
    ty: TensorType,
    /// Row-major elements; present only when every dimension is known.
    data: Option<Vec<Val>>,
}

static UNKNOWN_INFO: Info = Info {
    ty: TensorType {
        dtype: None,
        dims: None,
    },
    data: None,
};

impl Info {
    fn new(dtype: Option<DataType>, dims: Option<Vec<Dim>>) -> Self {
        Info {
            ty: TensorType { dtype, dims },
            data: None,
        }
    }

    /// Attaches `data` when it fits the (fully known) shape.
    fn with_data(mut self, data: Option<Vec<Val>>) -> Self {
        let numel = self.ty.known_dims().and_then(|d| checked_numel(&d));
        self.data = data.filter(|v| Some(v.len()) == numel && v.len() <= MAX_TRACKED);
        self
    }

    fn dims(&self) -> Option<&[Dim]> {
        self.ty.dims.as_deref()
    }

    /// The elements when all are integers.
    fn ints(&self) -> Option<Vec<i64>> {
        self.data.as_ref()?.iter().map(Val::int).collect()
    }

    /// The elements when all are numbers.
    fn nums(&self) -> Option<Vec<f64>> {
        self.data.as_ref()?.iter().map(Val::num).collect()
    }

    /// The single element of a one-element tensor.
    fn scalar(&self) -> Option<&Val> {
        self.data.as_ref().filter(|d| d.len() == 1).map(|d| &d[0])
    }
}

/// The dimensions when every one is a known number.
fn known(dims: &[Dim]) -> Option<Vec<usize>> {
    dims.iter()
        .map(|d| match d {
            Dim::Known(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Multi-index of flat position `i` in `dims`.
fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
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
fn broadcast_data(vals: &[Val], from: &[usize], to: &[usize]) -> Vec<Val> {
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
fn binop(op: &str, a: &Val, b: &Val) -> Val {
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
fn unop(op: &str, v: &Val) -> Val {
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
fn cast_val(v: &Val, to: DataType) -> Val {
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

// ---------------------------------------------------------------------------------------
// Dimension algebra.

/// Broadcasts two dimensions (numpy rules), or explains why they cannot be.
fn broadcast_dim(a: &Dim, b: &Dim) -> Result<Dim> {
    use Dim::*;
    Ok(match (a, b) {
        (Known(1), x) | (x, Known(1)) => x.clone(),
        (Known(x), Known(y)) if x != y => return bad(format!("cannot broadcast {x} with {y}")),
        (Known(x), _) | (_, Known(x)) => Known(*x),
        (Symbol(x), Symbol(y)) if x == y => a.clone(),
        _ => Unknown,
    })
}

/// Broadcasts two shapes (numpy rules).
fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let r = a.len().max(b.len());
    let one = Dim::Known(1);
    let at = |s: &[Dim], i: usize| -> Dim {
        (i + s.len())
            .checked_sub(r)
            .map_or(one.clone(), |j| s[j].clone())
    };
    (0..r)
        .map(|i| broadcast_dim(&at(a, i), &at(b, i)))
        .collect()
}

/// The common value of two dimensions that must be equal.
fn unify(a: &Dim, b: &Dim, what: &str) -> Result<Dim> {
    use Dim::*;
    Ok(match (a, b) {
        (Known(x), Known(y)) if x != y => return bad(format!("{what}: {x} and {y} differ")),
        (Known(_), _) | (Symbol(_), Unknown) => a.clone(),
        _ => b.clone(),
    })
}

/// Product of dimensions (a lone symbol times ones stays that symbol).
fn product(dims: &[Dim]) -> Dim {
    let mut n: usize = 1;
    let mut sym = None;
    for d in dims {
        match d {
            Dim::Known(k) => n = n.saturating_mul(*k),
            Dim::Symbol(s) if sym.is_none() => sym = Some(s),
            _ => return Dim::Unknown,
        }
    }
    match sym {
        None => Dim::Known(n),
        Some(s) if n == 1 => Dim::Symbol(s.clone()),
        Some(_) => Dim::Unknown,
    }
}

/// Sum of dimensions, known only when all are.
fn sum(dims: &[&Dim]) -> Dim {
    match dims {
        [one] => (*one).clone(),
        _ => dims
            .iter()
            .try_fold(0usize, |acc, d| match d {
                Dim::Known(k) => acc.checked_add(*k),
                _ => None,
            })
            .map_or(Dim::Unknown, Dim::Known),
    }
}

/// `d + delta`, an error when negative; `delta == 0` keeps symbols.
fn add_to_dim(d: &Dim, delta: i128) -> Result<Dim> {
    match d {
        _ if delta == 0 => Ok(d.clone()),
        Dim::Known(k) => match usize::try_from(*k as i128 + delta) {
            Ok(v) => Ok(Dim::Known(v)),
            Err(_) => bad(format!("size {k} changed by {delta} is out of range")),
        },
        _ => Ok(Dim::Unknown),
    }
}

/// Normalises a possibly negative axis against `rank`.
fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        bad(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Normalises distinct axes against `rank`.
fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let out = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    let unique: HashSet<usize> = out.iter().copied().collect();
    if unique.len() != out.len() {
        return bad(format!("axes {axes:?} repeat an axis"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Per-node inference.

/// An integer list given by an attribute (old opsets) or an input (newer ones).
enum Param {
    Absent,
    Unknown,
    Ints(Vec<i64>),
}

/// A node being inferred, with what is known about its inputs.
struct Ctx<'a> {
    node: &'a NodeProto,
    opset: i64,
    inputs: Vec<Option<&'a Info>>,
}

impl<'a> Ctx<'a> {
    fn op(&self) -> &str {
        &self.node.op_type
    }

    fn input(&self, i: usize) -> Option<&'a Info> {
        self.inputs.get(i).copied().flatten()
    }

    fn info(&self, i: usize) -> &'a Info {
        self.input(i).unwrap_or(&UNKNOWN_INFO)
    }

    fn dims(&self, i: usize) -> Option<&'a [Dim]> {
        self.info(i).dims()
    }

    fn dtype(&self, i: usize) -> Option<DataType> {
        self.info(i).ty.dtype
    }

    /// Integer list from attribute `attr` before opset `since`, from input `input` after.
    fn param(&self, attr: &str, input: usize, since: i64) -> Result<Param> {
        if self.opset < since {
            return Ok(self.node.ints(attr)?.map_or(Param::Absent, Param::Ints));
        }
        Ok(match self.input(input) {
            None => Param::Absent,
            Some(info) => info.ints().map_or(Param::Unknown, Param::Ints),
        })
    }

    /// Output with input `i`'s element type and the given dims.
    fn like(&self, i: usize, dims: Option<Vec<Dim>>) -> Info {
        Info::new(self.dtype(i), dims)
    }
}

/// Outputs of one node (fewer than its outputs when the rest are unknown).
fn infer_node(node: &NodeProto, opset: i64, infos: &HashMap<String, Info>) -> Result<Vec<Info>> {
    if !node.domain.is_empty() && node.domain != "ai.onnx" {
        return Ok(vec![]);
    }
    let inputs = node
        .input
        .iter()
        .map(|n| (!n.is_empty()).then(|| infos.get(n).unwrap_or(&UNKNOWN_INFO)))
        .collect();
    let c = Ctx {
        node,
        opset,
        inputs,
    };
    rule(&c)
}

const UNARY: &[&str] = &[
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

const BROADCAST: &[&str] = &[
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

const COMPARE: &[&str] = &["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"];

const REDUCE: &[&str] = &[
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

fn rule(c: &Ctx) -> Result<Vec<Info>> {
    use DataType::*;
    match c.op() {
        "Identity" => Ok(vec![c.info(0).clone()]),
        op if UNARY.contains(&op) => Ok(vec![unary(c)]),
        "IsNaN" | "IsInf" => Ok(vec![Info::new(Some(Bool), c.dims(0).map(<[_]>::to_vec))]),
        op if BROADCAST.contains(&op) => broadcast_op(c, c.dtype(0)),
        op if COMPARE.contains(&op) => broadcast_op(c, Some(Bool)),
        "Where" => broadcast_op(c, c.dtype(1)),
        "Cast" => cast(c),
        "CastLike" => cast_to(c, c.dtype(1)),
        "Conv" => conv(c, 1, c.dtype(0)),
        "ConvInteger" => conv(c, 1, Some(Int32)),
        "QLinearConv" => conv(c, 3, c.dtype(7)),
        "ConvTranspose" => conv_transpose(c),
        "MaxPool" | "AveragePool" | "LpPool" => pool(c),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool(c),
        "BatchNormalization" => batch_norm(c),
        "LayerNormalization" => layer_norm(c),
        "Gemm" => gemm(c),
        "MatMul" => matmul(c, 1, c.dtype(0)),
        "MatMulInteger" => matmul(c, 1, Some(Int32)),
        "QLinearMatMul" => matmul(c, 3, c.dtype(7)),
        "Flatten" => flatten(c),
        "Reshape" => reshape(c),
        "Transpose" => transpose(c),
        "Squeeze" => squeeze(c),
        "Unsqueeze" => unsqueeze(c),
        "Concat" => concat(c),
        "Split" => split(c),
        "Slice" => slice(c),
        "Gather" => gather(c),
        "GatherElements" => Ok(vec![c.like(0, c.dims(1).map(<[_]>::to_vec))]),
        "Expand" => expand(c),
        "Tile" => tile(c),
        "Shape" => shape(c),
        "Size" => size(c),
        "ConstantOfShape" => constant_of_shape(c),
        "Constant" => constant(c),
        "Range" => range(c),
        op if REDUCE.contains(&op) => reduce(c),
        "ArgMax" | "ArgMin" => arg_reduce(c),
        "Dropout" => dropout(c),
        "Resize" | "Upsample" => resize(c),
        "Pad" => pad(c),
        "QuantizeLinear" => quantize(c),
        "DequantizeLinear" => Ok(vec![c.like(1, c.dims(0).map(<[_]>::to_vec))]),
        "DynamicQuantizeLinear" => Ok(vec![
            Info::new(Some(Uint8), c.dims(0).map(<[_]>::to_vec)),
            Info::new(Some(Float), Some(vec![])),
            Info::new(Some(Uint8), Some(vec![])),
        ]),
        "TopK" => top_k(c),
        "NonZero" => Ok(vec![Info::new(
            Some(Int64),
            Some(vec![
                c.dims(0).map_or(Dim::Unknown, |d| Dim::Known(d.len())),
                Dim::Unknown,
            ]),
        )]),
        _ => Ok(vec![]),
    }
}

/// Same type as input 0; values follow for the few unary ops tracked.
fn unary(c: &Ctx) -> Info {
    let x = c.info(0);
    let data = x
        .data
        .as_ref()
        .map(|d| d.iter().map(|v| unop(c.op(), v)).collect());
    Info::new(x.ty.dtype, x.ty.dims.clone()).with_data(data)
}

/// Multidirectional broadcast of all inputs; values follow when all inputs are tracked.
fn broadcast_op(c: &Ctx, dtype: Option<DataType>) -> Result<Vec<Info>> {
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
    let mut args = Vec::new();
    for info in c.inputs.iter() {
        let info = (*info)?;
        let from = known(info.dims()?)?;
        args.push(broadcast_data(info.data.as_ref()?, &from, out));
    }
    let n: usize = out.iter().product();
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

fn cast(c: &Ctx) -> Result<Vec<Info>> {
    let to = c
        .node
        .int("to")?
        .ok_or_else(|| IrError::invalid("Cast needs attribute 'to'"))?;
    let dtype = DataType::from_code(to as i32)
        .ok_or_else(|| IrError::invalid(format!("Cast to unknown type {to}")))?;
    cast_to(c, Some(dtype))
}

fn cast_to(c: &Ctx, to: Option<DataType>) -> Result<Vec<Info>> {
    let x = c.info(0);
    let data = to.and_then(|t| Some(x.data.as_ref()?.iter().map(|v| cast_val(v, t)).collect()));
    Ok(vec![Info::new(to, x.ty.dims.clone()).with_data(data)])
}

// --- convolution and pooling -------------------------------------------------------------

/// Sliding-window attributes of a Conv or pool over `kernel.len()` spatial axes.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    pads: Vec<i64>,
    dilations: Vec<i64>,
    auto_pad: String,
    ceil_mode: bool,
}

impl Window {
    fn read(node: &NodeProto, kernel: Vec<i64>) -> Result<Window> {
        let n = kernel.len();
        let get = |name: &str, len: usize, default: i64| -> Result<Vec<i64>> {
            let v = node.ints(name)?.unwrap_or_else(|| vec![default; len]);
            if v.len() != len {
                return bad(format!("'{name}' has {} entries, expected {len}", v.len()));
            }
            Ok(v)
        };
        let w = Window {
            strides: get("strides", n, 1)?,
            pads: get("pads", 2 * n, 0)?,
            dilations: get("dilations", n, 1)?,
            auto_pad: node.string_or("auto_pad", "NOTSET")?,
            ceil_mode: node.int_or("ceil_mode", 0)? != 0,
            kernel,
        };
        if w.kernel
            .iter()
            .chain(&w.strides)
            .chain(&w.dilations)
            .any(|&v| v < 1)
        {
            return bad("kernel sizes, strides and dilations must be positive");
        }
        Ok(w)
    }

    /// Kernel extent of axis `i` with dilation.
    fn extent(&self, i: usize) -> i128 {
        (self.kernel[i] as i128 - 1) * self.dilations[i] as i128 + 1
    }

    /// Explicit padding (begin + end) of axis `i`, `None` under SAME auto-padding.
    fn total_pad(&self, i: usize) -> Option<i128> {
        match self.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => None,
            "VALID" => Some(0),
            _ => Some(self.pads[i] as i128 + self.pads[i + self.kernel.len()] as i128),
        }
    }

    /// Output size of spatial axis `i` for an input of size `d`.
    fn out_dim(&self, i: usize, d: &Dim) -> Result<Dim> {
        let s = self.strides[i] as i128;
        let Some(pad) = self.total_pad(i) else {
            return Ok(match d {
                _ if s == 1 => d.clone(),
                Dim::Known(n) => Dim::Known(n.div_ceil(s as usize)),
                _ => Dim::Unknown,
            });
        };
        let ext = self.extent(i);
        let Dim::Known(n) = d else {
            let same = s == 1 && ext - 1 == pad;
            return Ok(if same { d.clone() } else { Dim::Unknown });
        };
        let padded = *n as i128 + pad;
        if padded < ext {
            return bad(format!(
                "kernel extent {ext} exceeds the padded input size {padded}"
            ));
        }
        let span = padded - ext;
        let mut out = if self.ceil_mode {
            (span + s - 1) / s + 1
        } else {
            span / s + 1
        };
        // The last window must start inside the input or its left padding.
        let begin = if self.auto_pad == "VALID" {
            0
        } else {
            self.pads[i] as i128
        };
        if self.ceil_mode && (out - 1) * s >= *n as i128 + begin {
            out -= 1;
        }
        Ok(Dim::Known(out as usize))
    }
}

/// Spatial kernel from attribute `kernel_shape` or the weight's known dims.
fn kernel_of(c: &Ctx, w: Option<&[Dim]>) -> Result<Option<Vec<i64>>> {
    if let Some(k) = c.node.ints("kernel_shape")? {
        return Ok(Some(k));
    }
    Ok(w.and_then(|w| known(w.get(2..)?))
        .map(|k| k.into_iter().map(|v| v as i64).collect()))
}

/// Output spatial dims of a windowed op over `x`'s spatial dims.
fn spatial(c: &Ctx, x: &[Dim], kernel: Option<Vec<i64>>) -> Result<Vec<Dim>> {
    let n = x.len() - 2;
    let Some(kernel) = kernel else {
        return Ok(vec![Dim::Unknown; n]);
    };
    if kernel.len() != n {
        return bad(format!(
            "kernel has {} axes, the input {n} spatial axes",
            kernel.len()
        ));
    }
    let w = Window::read(c.node, kernel)?;
    (0..n).map(|i| w.out_dim(i, &x[i + 2])).collect()
}

/// Input 0's dims, checked to be `[N, C, spatial...]`.
fn nchw<'a>(c: &Ctx<'a>) -> Result<Option<&'a [Dim]>> {
    match c.dims(0) {
        Some(x) if x.len() < 3 => bad(format!("input rank {} is below 3", x.len())),
        other => Ok(other),
    }
}

/// Conv, ConvInteger and QLinearConv (weights at input `wi`).
fn conv(c: &Ctx, wi: usize, dtype: Option<DataType>) -> Result<Vec<Info>> {
    let Some(x) = nchw(c)? else {
        return Ok(vec![Info::new(dtype, None)]);
    };
    let w = c.dims(wi);
    let group = c.node.int_or("group", 1)?;
    if group < 1 {
        return bad(format!("group {group} is not positive"));
    }
    if let Some(w) = w {
        if w.len() != x.len() {
            return bad(format!(
                "weight rank {} differs from input rank {}",
                w.len(),
                x.len()
            ));
        }
        if let (Dim::Known(cx), Dim::Known(cw)) = (&x[1], &w[1]) {
            if *cx as i128 != *cw as i128 * group as i128 {
                return bad(format!(
                    "input has {cx} channels, weights expect {cw} x group {group}"
                ));
            }
        }
    }
    let m = w.map_or(Dim::Unknown, |w| w[0].clone());
    let mut dims = vec![x[0].clone(), m];
    dims.extend(spatial(c, x, kernel_of(c, w)?)?);
    Ok(vec![Info::new(dtype, Some(dims))])
}

fn conv_transpose(c: &Ctx) -> Result<Vec<Info>> {
    let Some(x) = nchw(c)? else {
        return Ok(vec![c.like(0, None)]);
    };
    let n = x.len() - 2;
    let w = c.dims(1);
    let group = c.node.int_or("group", 1)?;
    let m = match w.map(|w| &w[1]) {
        Some(Dim::Known(k)) => mul_dim(*k, group)?,
        _ => Dim::Unknown,
    };
    let mut dims = vec![x[0].clone(), m];
    if let Some(shape) = c.node.ints("output_shape")? {
        let tail = shape.get(shape.len().saturating_sub(n)..).unwrap_or(&[]);
        dims.extend(tail.iter().map(|&v| Val::Int(v).to_dim()));
        return Ok(vec![c.like(0, Some(dims))]);
    }
    let Some(kernel) = kernel_of(c, w)? else {
        dims.extend(vec![Dim::Unknown; n]);
        return Ok(vec![c.like(0, Some(dims))]);
    };
    let win = Window::read(c.node, kernel)?;
    let out_pad = c.node.ints("output_padding")?.unwrap_or_else(|| vec![0; n]);
    for i in 0..n {
        let extra = *out_pad.get(i).unwrap_or(&0) as i128;
        dims.push(transposed_dim(&win, i, &x[i + 2], extra)?);
    }
    Ok(vec![c.like(0, Some(dims))])
}

/// Output size of ConvTranspose on spatial axis `i` for input size `d`.
fn transposed_dim(win: &Window, i: usize, d: &Dim, out_pad: i128) -> Result<Dim> {
    let Dim::Known(v) = d else {
        return Ok(Dim::Unknown);
    };
    let s = win.strides[i];
    match win.total_pad(i) {
        None => mul_dim(*v, s),
        Some(pad) => {
            let grown = s as i128 * (*v as i128 - 1) + out_pad;
            add_to_dim(&Dim::Known(0), grown + win.extent(i) - pad)
        }
    }
}

/// `n * k` as a dimension; an error when negative or too large.
fn mul_dim(n: usize, k: i64) -> Result<Dim> {
    match usize::try_from(k).ok().and_then(|k| n.checked_mul(k)) {
        Some(v) => Ok(Dim::Known(v)),
        None => bad(format!("size {n} times {k} is out of range")),
    }
}

fn pool(c: &Ctx) -> Result<Vec<Info>> {
    let kernel = c
        .node
        .ints("kernel_shape")?
        .ok_or_else(|| IrError::invalid("missing attribute 'kernel_shape'"))?;
    let dims = match nchw(c)? {
        Some(x) => {
            let mut d = x[..2].to_vec();
            d.extend(spatial(c, x, Some(kernel))?);
            Some(d)
        }
        None => None,
    };
    Ok(vec![
        c.like(0, dims.clone()),
        Info::new(Some(DataType::Int64), dims),
    ])
}

fn global_pool(c: &Ctx) -> Result<Vec<Info>> {
    let dims = nchw(c)?.map(|x| {
        let mut d = x[..2].to_vec();
        d.resize(x.len(), Dim::Known(1));
        d
    });
    Ok(vec![c.like(0, dims)])
}

// --- normalisation and dense layers ------------------------------------------------------

fn batch_norm(c: &Ctx) -> Result<Vec<Info>> {
    let stats = Info::new(c.dtype(3), c.dims(3).map(<[_]>::to_vec));
    let mut outs = vec![c.like(0, c.dims(0).map(<[_]>::to_vec))];
    outs.extend(std::iter::repeat_n(
        stats,
        c.node.output.len().saturating_sub(1),
    ));
    Ok(outs)
}

fn layer_norm(c: &Ctx) -> Result<Vec<Info>> {
    let stash = c.node.int_or("stash_type", 1)?;
    let stats_type = DataType::from_code(stash as i32);
    let x = c.dims(0);
    let stats = match x {
        Some(x) => {
            let axis = norm_axis(c.node.int_or("axis", -1)?, x.len())?;
            let mut d = x[..axis].to_vec();
            d.resize(x.len(), Dim::Known(1));
            Some(d)
        }
        None => None,
    };
    Ok(vec![
        c.like(0, x.map(<[_]>::to_vec)),
        Info::new(stats_type, stats.clone()),
        Info::new(stats_type, stats),
    ])
}

/// A 2-D operand of Gemm as (rows, cols), optionally transposed.
fn matrix<'a>(dims: &'a [Dim], trans: bool, which: &str) -> Result<(&'a Dim, &'a Dim)> {
    match dims {
        [r, k] if trans => Ok((k, r)),
        [r, k] => Ok((r, k)),
        _ => bad(format!("{which} has rank {}, expected 2", dims.len())),
    }
}

fn gemm(c: &Ctx) -> Result<Vec<Info>> {
    let (Some(a), Some(b)) = (c.dims(0), c.dims(1)) else {
        return Ok(vec![c.like(0, Some(vec![Dim::Unknown; 2]))]);
    };
    let (m, ka) = matrix(a, c.node.int_or("transA", 0)? != 0, "A")?;
    let (kb, n) = matrix(b, c.node.int_or("transB", 0)? != 0, "B")?;
    unify(ka, kb, "inner dimensions")?;
    let out = vec![m.clone(), n.clone()];
    if let Some(cd) = c.dims(2) {
        broadcast(&out, cd)?;
    }
    Ok(vec![c.like(0, Some(out))])
}

/// Output dims of a numpy-style matrix product.
fn matmul_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return bad("MatMul operands must have rank 1 or more");
    }
    let (ra, rb) = (a.len(), b.len());
    let (m, ka) = if ra == 1 {
        (None, &a[0])
    } else {
        (Some(&a[ra - 2]), &a[ra - 1])
    };
    let (kb, n) = if rb == 1 {
        (&b[0], None)
    } else {
        (&b[rb - 2], Some(&b[rb - 1]))
    };
    unify(ka, kb, "inner dimensions")?;
    let mut out = broadcast(&a[..ra.saturating_sub(2)], &b[..rb.saturating_sub(2)])?;
    out.extend(m.cloned());
    out.extend(n.cloned());
    Ok(out)
}

/// MatMul, MatMulInteger and QLinearMatMul (second operand at input `bi`).
fn matmul(c: &Ctx, bi: usize, dtype: Option<DataType>) -> Result<Vec<Info>> {
    let dims = match (c.dims(0), c.dims(bi)) {
        (Some(a), Some(b)) => Some(matmul_dims(a, b)?),
        _ => None,
    };
    Ok(vec![Info::new(dtype, dims)])
}

// --- shape manipulation --------------------------------------------------------------

fn flatten(c: &Ctx) -> Result<Vec<Info>> {
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

fn reshape(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let target: Option<Vec<Val>> = if c.opset < 5 {
        c.node
            .ints("shape")?
            .map(|v| v.into_iter().map(Val::Int).collect())
    } else {
        let t = c.info(1);
        t.data.clone().or_else(|| match t.dims() {
            Some([Dim::Known(n)]) => Some(vec![Val::Unk; *n]),
            _ => None,
        })
    };
    let allowzero = c.node.int_or("allowzero", 0)? != 0;
    let dims = target
        .map(|t| reshape_dims(x.dims(), &t, allowzero))
        .transpose()?;
    Ok(vec![c.like(0, dims).with_data(x.data.clone())])
}

fn transpose(c: &Ctx) -> Result<Vec<Info>> {
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

fn squeeze(c: &Ctx) -> Result<Vec<Info>> {
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

fn unsqueeze(c: &Ctx) -> Result<Vec<Info>> {
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

fn concat(c: &Ctx) -> Result<Vec<Info>> {
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

fn split(c: &Ctx) -> Result<Vec<Info>> {
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

fn slice(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let Some(d) = x.dims() else {
        return Ok(vec![c.like(0, None)]);
    };
    let r = d.len();
    let get = |attr: &str, i: usize| c.param(attr, i, 10);
    let (starts, ends) = match (get("starts", 1)?, get("ends", 2)?) {
        (Param::Ints(s), Param::Ints(e)) => (s, e),
        _ => return Ok(vec![c.like(0, Some(vec![Dim::Unknown; r]))]),
    };
    let axes = match get("axes", 3)? {
        Param::Ints(a) => a,
        Param::Absent => (0..starts.len() as i64).collect(),
        Param::Unknown => return Ok(vec![c.like(0, Some(vec![Dim::Unknown; r]))]),
    };
    let steps = match get("steps", 4)? {
        Param::Ints(s) => s,
        Param::Absent => vec![1; starts.len()],
        Param::Unknown => return Ok(vec![c.like(0, Some(vec![Dim::Unknown; r]))]),
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

fn gather(c: &Ctx) -> Result<Vec<Info>> {
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

/// A shape given as input `i`: its tracked values, or unknowns when only its length is known.
fn shape_input(c: &Ctx, i: usize) -> Option<Vec<Val>> {
    let info = c.info(i);
    info.data.clone().or_else(|| match info.dims() {
        Some([Dim::Known(n)]) => Some(vec![Val::Unk; *n]),
        _ => None,
    })
}

fn expand(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let target = shape_input(c, 1);
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

fn tile(c: &Ctx) -> Result<Vec<Info>> {
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

fn shape(c: &Ctx) -> Result<Vec<Info>> {
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

fn size(c: &Ctx) -> Result<Vec<Info>> {
    let n = c.dims(0).and_then(known).and_then(|d| checked_numel(&d));
    let data = n.map(|n| vec![Val::Int(n as i64)]);
    Ok(vec![
        Info::new(Some(DataType::Int64), Some(vec![])).with_data(data)
    ])
}

fn constant_of_shape(c: &Ctx) -> Result<Vec<Info>> {
    let (dtype, fill) = match c.node.tensor("value")? {
        Some(t) => {
            let info = tensor_info(&TensorData::from_proto(t, None)?);
            let fill = info.scalar().cloned().unwrap_or(Val::Unk);
            (info.ty.dtype, fill)
        }
        None => (Some(DataType::Float), Val::Float(0.0)),
    };
    let dims: Option<Vec<Dim>> = shape_input(c, 0).map(|v| v.iter().map(Val::to_dim).collect());
    let n = dims
        .as_deref()
        .and_then(known)
        .and_then(|d| checked_numel(&d));
    let data = n.filter(|&n| n <= MAX_TRACKED).map(|n| vec![fill; n]);
    Ok(vec![Info::new(dtype, dims).with_data(data)])
}

fn constant(c: &Ctx) -> Result<Vec<Info>> {
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

fn range(c: &Ctx) -> Result<Vec<Info>> {
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

// --- reductions ------------------------------------------------------------------

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

fn reduce(c: &Ctx) -> Result<Vec<Info>> {
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

fn arg_reduce(c: &Ctx) -> Result<Vec<Info>> {
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

fn top_k(c: &Ctx) -> Result<Vec<Info>> {
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

// --- miscellany ------------------------------------------------------------------

fn dropout(c: &Ctx) -> Result<Vec<Info>> {
    let x = c.info(0);
    let dims = x.ty.dims.clone();
    Ok(vec![x.clone(), Info::new(Some(DataType::Bool), dims)])
}

/// Resize and Upsample: sizes, else scales, over the given axes.
fn resize(c: &Ctx) -> Result<Vec<Info>> {
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
        axes.iter().for_each(|&a| out[a] = Dim::Unknown);
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
        axes.iter().for_each(|&a| out[a] = Dim::Unknown);
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

fn pad(c: &Ctx) -> Result<Vec<Info>> {
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
        _ => axes.iter().for_each(|&a| dims[a] = Dim::Unknown),
    }
    Ok(vec![c.like(0, Some(dims))])
}

fn quantize(c: &Ctx) -> Result<Vec<Info>> {
    let attr = c.node.int_or("output_dtype", 0)?;
    let dtype = match c.input(2) {
        Some(zp) => zp.ty.dtype,
        None if attr != 0 => DataType::from_code(attr as i32),
        None => Some(DataType::Uint8),
    };
    Ok(vec![Info::new(dtype, c.dims(0).map(<[_]>::to_vec))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::make;
    use crate::proto::{AttributeProto, ModelProto, OperatorSetIdProto};
    use std::path::PathBuf;
    use DataType::{Bool, Float, Int64, Int8, Uint8};

    /// Dims written like `N,3,?,28` (empty: a scalar).
    fn parse_dims(s: &str) -> Vec<Dim> {
        if s.is_empty() {
            return vec![];
        }
        s.split(',')
            .map(|d| match (d, d.parse()) {
                (_, Ok(n)) => Dim::Known(n),
                ("?", _) => Dim::Unknown,
                _ => Dim::Symbol(d.to_string()),
            })
            .collect()
    }

    /// A graph input or value info; `dims` as in [`parse_dims`], `*` for unknown rank.
    fn value(name: &str, dtype: DataType, dims: &str) -> ValueInfoProto {
        let ty = TensorType {
            dtype: Some(dtype),
            dims: (dims != "*").then(|| parse_dims(dims)),
        };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(ty.to_type_proto()),
            ..Default::default()
        }
    }

    fn node(op: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: format!("n_{}", outs[0]),
            op_type: op.into(),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> TensorProto {
        TensorData::from_slice(vec![v.len()], v)
            .unwrap()
            .to_proto(name)
    }

    fn floats(name: &str, v: &[f32]) -> TensorProto {
        TensorData::from_slice(vec![v.len()], v)
            .unwrap()
            .to_proto(name)
    }

    fn scalar<T: crate::tensor::Element>(name: &str, v: T) -> TensorProto {
        TensorData::scalar(v).to_proto(name)
    }

    fn model(
        opset: i64,
        inputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
        nodes: Vec<NodeProto>,
    ) -> Model {
        Model::new(ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(GraphProto {
                name: "g".into(),
                node: nodes,
                initializer: inits,
                input: inputs,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Inferred types (displayed) of every value.
    fn types(
        opset: i64,
        inputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
        nodes: Vec<NodeProto>,
    ) -> HashMap<String, String> {
        let m = model(opset, inputs, inits, nodes);
        let t = infer(&m, &HashMap::new()).unwrap();
        t.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }

    /// The error inferring a model with one node.
    fn error(
        opset: i64,
        inputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
        n: NodeProto,
    ) -> String {
        let m = model(opset, inputs, inits, vec![n]);
        infer(&m, &HashMap::new()).unwrap_err().to_string()
    }

    fn expect(t: &HashMap<String, String>, want: &[(&str, &str)]) {
        for (name, ty) in want {
            assert_eq!(
                t.get(*name).map(String::as_str),
                Some(*ty),
                "value '{name}'"
            );
        }
    }

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

    #[test]
    fn convolutions_and_pools() {
        let x = || value("x", Float, "N,3,32,32");
        let t = types(
            17,
            vec![
                x(),
                value("w", Float, "8,3,3,3"),
                value("wg", Float, "6,1,3,3"),
                value("x1", Float, "1,1,3"),
                value("x4", Float, "1,1,4,4"),
                value("x56", Float, "1,1,5,6"),
                value("x78", Float, "1,1,7,8"),
            ],
            vec![],
            vec![
                node(
                    "Conv",
                    &["x", "w"],
                    &["c1"],
                    vec![
                        make::ints("pads", &[1, 1, 1, 1]),
                        make::ints("strides", &[2, 2]),
                    ],
                ),
                node(
                    "Conv",
                    &["x", "w"],
                    &["c2"],
                    vec![make::ints("dilations", &[2, 2])],
                ),
                node("Conv", &["x", "wg"], &["c3"], vec![make::int("group", 3)]),
                node(
                    "Conv",
                    &["x", "w"],
                    &["c4"],
                    vec![
                        make::string("auto_pad", "SAME_UPPER"),
                        make::ints("strides", &[3, 3]),
                    ],
                ),
                node(
                    "MaxPool",
                    &["x"],
                    &["p1", "idx"],
                    vec![
                        make::ints("kernel_shape", &[2, 2]),
                        make::ints("strides", &[2, 2]),
                    ],
                ),
                // ORT and the ONNX reference give 2 here (the last window would start in the
                // right padding); onnx.shape_inference 1.23 says 3.
                node(
                    "MaxPool",
                    &["x1"],
                    &["p2"],
                    vec![
                        make::ints("kernel_shape", &[2]),
                        make::ints("strides", &[2]),
                        make::ints("pads", &[1, 1]),
                        make::int("ceil_mode", 1),
                    ],
                ),
                node(
                    "MaxPool",
                    &["x4"],
                    &["p3"],
                    vec![
                        make::ints("kernel_shape", &[3, 3]),
                        make::ints("strides", &[2, 2]),
                        make::int("ceil_mode", 1),
                    ],
                ),
                node(
                    "AveragePool",
                    &["x56"],
                    &["p4"],
                    vec![
                        make::ints("kernel_shape", &[3, 3]),
                        make::ints("strides", &[2, 2]),
                        make::string("auto_pad", "SAME_UPPER"),
                    ],
                ),
                node(
                    "MaxPool",
                    &["x78"],
                    &["p5"],
                    vec![
                        make::ints("kernel_shape", &[3, 3]),
                        make::ints("dilations", &[2, 2]),
                    ],
                ),
                node("GlobalAveragePool", &["x"], &["gap"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("c1", "float[N,8,16,16]"),
                ("c2", "float[N,8,28,28]"),
                ("c3", "float[N,6,30,30]"),
                ("c4", "float[N,8,11,11]"),
                ("p1", "float[N,3,16,16]"),
                ("idx", "int64[N,3,16,16]"),
                ("p2", "float[1,1,2]"),
                ("p3", "float[1,1,2,2]"),
                ("p4", "float[1,1,3,3]"),
                ("p5", "float[1,1,3,4]"),
                ("gap", "float[N,3,1,1]"),
            ],
        );
        let err = error(
            17,
            vec![x(), value("w", Float, "8,4,3,3")],
            vec![],
            node("Conv", &["x", "w"], &["y"], vec![]),
        );
        assert!(err.contains("n_y") && err.contains("3 channels"), "{err}");
    }

    #[test]
    fn conv_transpose_follows_the_spec_examples() {
        let t = types(
            17,
            vec![value("x", Float, "1,1,3,3"), value("w", Float, "1,2,3,3")],
            vec![],
            vec![
                node("ConvTranspose", &["x", "w"], &["y1"], vec![]),
                node(
                    "ConvTranspose",
                    &["x", "w"],
                    &["y2"],
                    vec![
                        make::ints("strides", &[3, 2]),
                        make::ints("output_padding", &[1, 1]),
                    ],
                ),
                node(
                    "ConvTranspose",
                    &["x", "w"],
                    &["y3"],
                    vec![
                        make::ints("strides", &[3, 2]),
                        make::ints("output_shape", &[10, 8]),
                    ],
                ),
                node(
                    "ConvTranspose",
                    &["x", "w"],
                    &["y4"],
                    vec![
                        make::ints("strides", &[2, 2]),
                        make::string("auto_pad", "SAME_UPPER"),
                    ],
                ),
            ],
        );
        expect(
            &t,
            &[
                ("y1", "float[1,2,5,5]"),
                ("y2", "float[1,2,10,8]"),
                ("y3", "float[1,2,10,8]"),
                ("y4", "float[1,2,6,6]"),
            ],
        );
    }

    #[test]
    fn matrix_products_norms_and_activations() {
        let t = types(
            17,
            vec![
                value("a4", Float, "2,1,3,4"),
                value("b3", Float, "5,4,6"),
                value("v", Float, "4"),
                value("m", Float, "3,4"),
                value("bm", Float, "4,6"),
                value("h", Float, "B,S,384"),
                value("w", Float, "384,1536"),
                value("ga", Float, "4,3"),
                value("gb", Float, "5,4"),
                value("q", Uint8, "B,S,384"),
                value("qw", Uint8, "384,8"),
                value("s", Float, ""),
                value("zp", Uint8, ""),
            ],
            vec![],
            vec![
                node("MatMul", &["a4", "b3"], &["mm1"], vec![]),
                node("MatMul", &["v", "bm"], &["mm2"], vec![]),
                node("MatMul", &["m", "v"], &["mm3"], vec![]),
                node("MatMul", &["h", "w"], &["mm4"], vec![]),
                node(
                    "Gemm",
                    &["ga", "gb"],
                    &["gemm"],
                    vec![make::int("transA", 1), make::int("transB", 1)],
                ),
                node("MatMulInteger", &["q", "qw"], &["mmi"], vec![]),
                node(
                    "QLinearMatMul",
                    &["q", "s", "zp", "qw", "s", "zp", "s", "zp"],
                    &["qmm"],
                    vec![],
                ),
                node(
                    "LayerNormalization",
                    &["h", "v", "v"],
                    &["ln", "mean", "inv"],
                    vec![],
                ),
                node(
                    "BatchNormalization",
                    &["a4", "v", "v", "v", "v"],
                    &["bn"],
                    vec![],
                ),
                node(
                    "InstanceNormalization",
                    &["a4", "v", "v"],
                    &["inorm"],
                    vec![],
                ),
                node("Softmax", &["h"], &["sm"], vec![]),
                node("Dropout", &["h"], &["drop", "mask"], vec![]),
                node("Clip", &["h"], &["clip"], vec![]),
                node("Erf", &["h"], &["erf"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("mm1", "float[2,5,3,6]"),
                ("mm2", "float[6]"),
                ("mm3", "float[3]"),
                ("mm4", "float[B,S,1536]"),
                ("gemm", "float[3,5]"),
                ("mmi", "int32[B,S,8]"),
                ("qmm", "uint8[B,S,8]"),
                ("ln", "float[B,S,384]"),
                ("mean", "float[B,S,1]"),
                ("bn", "float[2,1,3,4]"),
                ("inorm", "float[2,1,3,4]"),
                ("sm", "float[B,S,384]"),
                ("drop", "float[B,S,384]"),
                ("mask", "bool[B,S,384]"),
                ("clip", "float[B,S,384]"),
                ("erf", "float[B,S,384]"),
            ],
        );
        let err = error(
            17,
            vec![value("a", Float, "2,3"), value("b", Float, "4,5")],
            vec![],
            node("MatMul", &["a", "b"], &["y"], vec![]),
        );
        assert!(
            err.contains("n_y") && err.contains("3 and 4 differ"),
            "{err}"
        );
    }

    /// The transformer pattern: a Reshape target built by Shape -> Gather -> Unsqueeze -> Concat.
    fn attention_reshape() -> Model {
        model(
            13,
            vec![value("h", Float, "B,S,384")],
            vec![
                scalar("zero", 0i64),
                scalar("one", 1i64),
                ints("ax0", &[0]),
                ints("heads", &[12]),
                ints("dh", &[32]),
                ints("copy", &[0, 0, 12, -1]),
                ints("flat", &[-1, 384]),
            ],
            vec![
                node("Shape", &["h"], &["shape"], vec![]),
                node(
                    "Gather",
                    &["shape", "zero"],
                    &["b"],
                    vec![make::int("axis", 0)],
                ),
                node(
                    "Gather",
                    &["shape", "one"],
                    &["s"],
                    vec![make::int("axis", 0)],
                ),
                node("Unsqueeze", &["b", "ax0"], &["ub"], vec![]),
                node("Unsqueeze", &["s", "ax0"], &["us"], vec![]),
                node(
                    "Concat",
                    &["ub", "us", "heads", "dh"],
                    &["target"],
                    vec![make::int("axis", 0)],
                ),
                node("Reshape", &["h", "target"], &["split"], vec![]),
                node("Reshape", &["h", "copy"], &["split2"], vec![]),
                node("Reshape", &["h", "flat"], &["rows"], vec![]),
                node(
                    "Transpose",
                    &["split"],
                    &["t"],
                    vec![make::ints("perm", &[0, 2, 1, 3])],
                ),
                node("Transpose", &["split"], &["rev"], vec![]),
                node("Flatten", &["split"], &["f1"], vec![]),
                node("Flatten", &["split"], &["f2"], vec![make::int("axis", 2)]),
                node("ConstantOfShape", &["shape"], &["zeros"], vec![]),
                node("Mul", &["s", "one"], &["s_times_1"], vec![]),
                node("Unsqueeze", &["s_times_1", "ax0"], &["us1"], vec![]),
                node("Expand", &["zero", "us1"], &["ex"], vec![]),
            ],
        )
    }

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

    #[test]
    fn absurd_attributes_are_errors_not_panics() {
        let x = || vec![value("x", Float, "1,2,8,8"), value("w", Float, "2,2,3,3")];
        let huge = i64::MAX;
        let cases = [
            node(
                "MaxPool",
                &["x"],
                &["y"],
                vec![make::ints("kernel_shape", &[huge, 1])],
            ),
            node(
                "MaxPool",
                &["x"],
                &["y"],
                vec![
                    make::ints("kernel_shape", &[3, 3]),
                    make::ints("pads", &[-huge, 0, -huge, 0]),
                ],
            ),
            node(
                "ConvTranspose",
                &["x", "w"],
                &["y"],
                vec![make::ints("strides", &[huge, huge])],
            ),
            node(
                "ConvTranspose",
                &["x", "w"],
                &["y"],
                vec![make::int("group", -3)],
            ),
            node("Tile", &["x", "reps"], &["y"], vec![]),
        ];
        for n in cases {
            let err = error(13, x(), vec![ints("reps", &[1, 1, huge, 2])], n);
            assert!(err.contains("n_y"), "{err}");
        }
        // Huge but representable padding is simply a big output.
        let t = types(
            13,
            x(),
            vec![],
            vec![node(
                "MaxPool",
                &["x"],
                &["y"],
                vec![
                    make::ints("kernel_shape", &[1, 1]),
                    make::ints("pads", &[0, 0, huge, 0]),
                ],
            )],
        );
        expect(&t, &[("y", &format!("float[1,2,{},8]", 8 + huge as u64))]);
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

    #[test]
    fn ranges_resize_pad_and_quantization() {
        let t = types(
            18,
            vec![value("x", Float, "1,3,20,10"), value("q", Int8, "4,5")],
            vec![
                scalar("i0", 0i64),
                scalar("i10", 10i64),
                scalar("i3", 3i64),
                scalar("f0", 0f32),
                scalar("f1", 1f32),
                scalar("fq", 0.25f32),
                floats("scales", &[1.0, 1.0, 2.0, 2.0]),
                ints("sizes", &[1, 3, 7, 9]),
                ints("hw", &[30, 40]),
                ints("pads", &[0, 0, 1, 2, 0, 0, 1, 2]),
                scalar("s", 0.5f32),
                scalar("zp8", 0i8),
            ],
            vec![
                node("Range", &["i0", "i10", "i3"], &["ri"], vec![]),
                node("Range", &["f0", "f1", "fq"], &["rf"], vec![]),
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
                node("QuantizeLinear", &["x", "s", "zp8"], &["qi8"], vec![]),
                node("QuantizeLinear", &["x", "s"], &["qu8"], vec![]),
                node("DequantizeLinear", &["q", "s", "zp8"], &["dq"], vec![]),
                node(
                    "DynamicQuantizeLinear",
                    &["x"],
                    &["dy", "dys", "dyz"],
                    vec![],
                ),
            ],
        );
        expect(
            &t,
            &[
                ("ri", "int64[4]"),
                ("rf", "float[4]"),
                ("up", "float[1,3,40,20]"),
                ("to", "float[1,3,7,9]"),
                ("keep", "float[1,3,30,15]"),
                ("pd", "float[1,3,22,14]"),
                ("qi8", "int8[1,3,20,10]"),
                ("qu8", "uint8[1,3,20,10]"),
                ("dq", "float[4,5]"),
                ("dy", "uint8[1,3,20,10]"),
                ("dys", "float[]"),
                ("dyz", "uint8[]"),
            ],
        );
    }

    #[test]
    fn integer_convolutions() {
        let t = types(
            13,
            vec![
                value("x", Uint8, "1,3,8,8"),
                value("w", Uint8, "4,3,3,3"),
                value("s", Float, ""),
                value("zp", Uint8, ""),
            ],
            vec![],
            vec![
                node("ConvInteger", &["x", "w"], &["ci"], vec![]),
                node(
                    "QLinearConv",
                    &["x", "s", "zp", "w", "s", "zp", "s", "zp"],
                    &["qc"],
                    vec![make::ints("pads", &[1, 1, 1, 1])],
                ),
            ],
        );
        expect(&t, &[("ci", "int32[1,4,6,6]"), ("qc", "uint8[1,4,8,8]")]);
    }

    #[test]
    fn unknown_ops_declared_types_and_overrides() {
        let mut m = model(
            17,
            vec![value("a", Float, "N,3"), value("b", Float, "N,5")],
            vec![],
            vec![
                node("FancyOp", &["a"], &["f"], vec![]),
                node("Relu", &["f"], &["r"], vec![]),
                node("FancyOp", &["b"], &["d"], vec![]),
            ],
        );
        m.graph_mut().value_info.push(value("d", Float, "N,7"));
        let t = infer(&m, &HashMap::new()).unwrap();
        assert_eq!(t["f"].to_string(), "?[*]");
        assert_eq!(t["r"].to_string(), "?[*]");
        assert_eq!(t["d"].to_string(), "float[N,7]");

        // Fixing N through 'a' fixes it in 'b' and in declared types too.
        let t = infer(&m, &HashMap::from([("a".to_string(), vec![2, 3])])).unwrap();
        assert_eq!(t["b"], TensorType::known(Float, &[2, 5]));
        assert_eq!(t["d"], TensorType::known(Float, &[2, 7]));

        for (name, shape, want) in [
            ("zz", vec![1], "not a graph input"),
            ("a", vec![2], "has rank 1"),
            ("a", vec![2, 4], "contradicts its fixed size 3"),
        ] {
            let err = infer(&m, &HashMap::from([(name.to_string(), shape)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn display_and_annotate() {
        let ty = TensorType {
            dtype: Some(Float),
            dims: Some(parse_dims("N,1,?,28")),
        };
        assert_eq!(ty.to_string(), "float[N,1,?,28]");
        assert_eq!(TensorType::known(Int64, &[]).to_string(), "int64[]");
        assert_eq!(TensorType::default().to_string(), "?[*]");
        let written = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Float.code(),
                    shape: Some(TensorShapeProto {
                        dim: ["?", "N"]
                            .map(|p| Dimension {
                                value: Some(dimension::Value::DimParam(p.into())),
                                denotation: String::new(),
                            })
                            .to_vec(),
                    }),
                })),
                denotation: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(
            TensorType::from_value_info(&written).to_string(),
            "float[?,N]"
        );

        let mut m = attention_reshape();
        m.graph_mut().output.push(value("rows", Float, "?,384"));
        let t = infer(&m, &HashMap::new()).unwrap();
        annotate(&mut m, &t);
        let vi = &m.graph().value_info;
        let find = |n: &str| {
            vi.iter()
                .find(|v| v.name == n)
                .map(TensorType::from_value_info)
        };
        assert_eq!(find("split").unwrap().to_string(), "float[B,S,12,32]");
        assert_eq!(find("rows"), None, "graph outputs are not value_info");
        assert_eq!(find("h"), None, "graph inputs are not value_info");
        let count = vi.len();
        assert_eq!(count, m.graph().node.len() - 1);
        // Annotating twice replaces rather than duplicates.
        annotate(&mut m, &t);
        assert_eq!(m.graph().value_info.len(), count);
        assert_eq!(infer(&m, &HashMap::new()).unwrap(), t);
    }

    // --- real models -------------------------------------------------------------------

    fn real_model(file: &str) -> Model {
        let dir = std::env::var_os("WHITTLE_ASSETS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/whittle-assets"))
            })
            .expect("set WHITTLE_ASSETS to the assets folder");
        let path = dir.join("models").join(file);
        assert!(
            path.is_file(),
            "missing {}: set WHITTLE_ASSETS to the folder holding models/ (default ~/.cache/whittle-assets)",
            path.display()
        );
        Model::load(&path).unwrap()
    }

    fn overrides(pairs: &[(&str, &[usize])]) -> HashMap<String, Vec<usize>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    /// Every value has a known element type and fully known dims.
    fn assert_all_known(t: &HashMap<String, TensorType>) {
        for (name, ty) in t {
            assert!(
                ty.dtype.is_some() && ty.known_dims().is_some(),
                "{name}: {ty}"
            );
        }
    }

    #[test]
    fn lenet5_symbolic_and_fixed_batch() {
        let m = real_model("mnist_lenet5.onnx");
        let t = infer(&m, &HashMap::new()).unwrap();
        assert_eq!(t["input"].to_string(), "float[N,1,28,28]");
        assert_eq!(t["f"].to_string(), "float[N,3136]");
        assert_eq!(t["logits"].to_string(), "float[N,10]");
        let t = infer(&m, &overrides(&[("input", &[1, 1, 28, 28])])).unwrap();
        assert_all_known(&t);
        assert_eq!(t["p1"], TensorType::known(Float, &[1, 32, 14, 14]));
        assert_eq!(t["logits"], TensorType::known(Float, &[1, 10]));
    }

    /// Expectations below were checked against onnxruntime's actual outputs; ONNX's own
    /// `infer_shapes(data_prop=True)` leaves the Slice/Expand ones partly unknown.
    #[test]
    fn minilm_with_fixed_input_ids() {
        let m = real_model("paraphrase-MiniLM-L3-v2.onnx");
        let t = infer(&m, &overrides(&[("input_ids", &[2, 16])])).unwrap();
        assert_all_known(&t);
        let layer0 = "/model/model.0/auto_model/encoder/layer.0";
        for (name, dtype, dims) in [
            ("onnx::Shape_422", Float, &[2, 16, 384][..]),
            ("output", Int64, &[2, 16]),
            ("461", Float, &[2, 384]),
            (
                "/model/model.0/auto_model/embeddings/Slice_output_0",
                Int64,
                &[1, 16],
            ),
            ("/model/model.0/auto_model/Expand_output_0", Int64, &[2, 16]),
            (
                &format!("{layer0}/attention/self/Reshape_output_0"),
                Float,
                &[2, 16, 12, 32],
            ),
            (
                &format!("{layer0}/attention/self/Softmax_output_0"),
                Float,
                &[2, 12, 16, 16],
            ),
            (
                &format!("{layer0}/intermediate/dense/MatMul_output_0"),
                Float,
                &[2, 16, 1536],
            ),
            ("/model/model.1/Expand_output_0", Int64, &[2, 16, 384]),
        ] {
            assert_eq!(t[name], TensorType::known(dtype, dims), "{name}");
        }
    }

    #[test]
    fn yolov8n_at_320() {
        let m = real_model("yolov8n-320.onnx");
        let t = infer(&m, &overrides(&[("images", &[1, 3, 320, 320])])).unwrap();
        assert_all_known(&t);
        for (name, dims) in [
            ("output0", &[1, 22, 2100][..]),
            ("/model.0/conv/Conv_output_0", &[1, 16, 160, 160]),
            ("/model.9/Concat_output_0", &[1, 512, 10, 10]),
            ("/model.10/Resize_output_0", &[1, 256, 20, 20]),
            ("/model.22/Range_output_0", &[40]),
            ("/model.22/Concat_22_output_0", &[2100, 2]),
            ("/model.22/dfl/Softmax_output_0", &[1, 16, 4, 2100]),
        ] {
            assert_eq!(t[name], TensorType::known(Float, dims), "{name}");
        }
    }
}
