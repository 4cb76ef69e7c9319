//! Picks the native [`Kernel`] for a node: f32 operands, attributes and constant operands
//! the kernel covers, and the recorded output shape the kernel would produce. Anything else
//! stays on the node's candle operator.

use whittle_ir::proto::NodeProto;
use whittle_ir::{DataType, NodeAttrs};

use super::{Home, Kernel, PlannedValue, ValueId};
use crate::kernels::activation::{Activation, UnaryOp};
use crate::kernels::binary::BinaryOp;
use crate::kernels::conv::Conv2dShape;
use crate::kernels::gemm::MatRef;
use crate::kernels::layout::StridedView;
use crate::kernels::pool::Pool2dShape;
use crate::kernels::quant::QuantParams;
use crate::ops::quant::ParamLayout;
use crate::ops::shape::slice_range;

/// What a node's inputs and output look like to the lowering.
struct Operands<'a> {
    ins: &'a [Option<ValueId>],
    values: &'a [PlannedValue],
    out: &'a [usize],
}

impl Operands<'_> {
    fn shape(&self, i: usize) -> Option<&[usize]> {
        Some(&self.values[(*self.ins.get(i)?)?].shape)
    }

    fn constant(&self, i: usize) -> Option<Vec<f32>> {
        match &self.values[(*self.ins.get(i)?)?].home {
            Home::Const(v) => v.to_f32_vec().ok(),
            _ => None,
        }
    }

    /// Input `i` as constant integers (Slice's starts, ends, axes, steps).
    fn ints(&self, i: usize) -> Option<Vec<i64>> {
        match &self.values[(*self.ins.get(i)?)?].home {
            Home::Const(v) => v.to_i64_vec().ok(),
            _ => None,
        }
    }

    /// Whether input `i` is given.
    fn has(&self, i: usize) -> bool {
        matches!(self.ins.get(i), Some(Some(_)))
    }
}

/// The kernel for `node` (default-domain opset `opset`) reading `ins` and writing one
/// value of shape `out` and type `out_dtype`, if one covers it.
pub fn kernel_for(
    node: &NodeProto,
    opset: i64,
    ins: &[Option<ValueId>],
    values: &[PlannedValue],
    out: &[usize],
    out_dtype: DataType,
) -> Option<Kernel> {
    if node.domain.is_empty()
        && matches!(node.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear")
    {
        let o = Operands { ins, values, out };
        return quant(node, &o, out_dtype);
    }
    // Slice and Resize read integer or scale parameters besides their f32 data.
    let data = match node.op_type.as_str() {
        "Slice" | "Resize" => 1,
        _ => ins.len(),
    };
    let f32s = ins
        .iter()
        .take(data)
        .flatten()
        .all(|&i| values[i].dtype == DataType::Float);
    if !node.domain.is_empty() || !f32s || !matches!(ins.first(), Some(Some(_))) {
        return None;
    }
    let o = Operands { ins, values, out };
    let kernel = match node.op_type.as_str() {
        "MatMul" => matmul(&o),
        "Gemm" => gemm(node, &o),
        "Conv" => conv(node, &o),
        "MaxPool" | "AveragePool" => pool(node, &o),
        "GlobalAveragePool" => {
            let s = o.shape(0)?;
            (s.len() >= 3).then(|| Kernel::GlobalAvgPool {
                planes: s[0] * s[1],
                plane: s[2..].iter().product(),
            })
        }
        "Softmax" | "LogSoftmax" => softmax(node, opset, &o),
        "LayerNormalization" => layer_norm(node, &o),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" => binary(node, &o),
        "Concat" => concat(node, &o),
        "Transpose" => transpose(node, &o),
        "Slice" => slice(node, opset, &o),
        "Resize" => resize(node, opset, &o),
        op => unary(node, op, &o).map(Kernel::Unary),
    }?;
    // The recorded output must have the kernel's element count.
    let produced = match &kernel {
        Kernel::Binary { a, b, .. } => crate::kernels::binary::broadcast_shape(a, b).ok()?,
        Kernel::MatMul { a, b } => crate::kernels::gemm::matmul_shape(a, b).ok()?,
        _ => out.to_vec(),
    };
    (produced == out).then_some(kernel)
}

/// The 8- and 16-bit types whose values the plan keeps in f32 buffers.
fn exact_in_f32(dtype: DataType) -> bool {
    matches!(
        dtype,
        DataType::Int8 | DataType::Uint8 | DataType::Int16 | DataType::Uint16
    )
}

/// QuantizeLinear (f32 to an 8- or 16-bit type) or DequantizeLinear (back to f32) with
/// constant f32 scale and constant zero point, per tensor, per axis or blocked, where the
/// output keeps the input's shape.
fn quant(node: &NodeProto, o: &Operands, out_dtype: DataType) -> Option<Kernel> {
    let x = (*o.ins.first()?)?;
    let (x_dtype, data) = (o.values[x].dtype, o.shape(0)?);
    let quantize = node.op_type == "QuantizeLinear";
    let q_dtype = if quantize { out_dtype } else { x_dtype };
    let float = if quantize { x_dtype } else { out_dtype };
    if float != DataType::Float || !exact_in_f32(q_dtype) || data != o.out {
        return None;
    }
    let s = (*o.ins.get(1)?)?;
    if o.values[s].dtype != DataType::Float || o.ins.len() > 3 {
        return None;
    }
    let zp = o.ins.get(2).copied().flatten();
    match zp {
        Some(z) if o.values[z].dtype != q_dtype => return None,
        Some(_) => {}
        None => {
            // Without a zero point the quantized type is output_dtype (uint8 by default).
            let code = node.int_or("output_dtype", 0).ok()?;
            let declared = match code {
                0 => DataType::Uint8,
                c => DataType::from_code(i32::try_from(c).ok()?)?,
            };
            if quantize && declared != q_dtype {
                return None;
            }
        }
    }
    let (axis, block) = (
        node.int_or("axis", 1).ok()?,
        node.int_or("block_size", 0).ok()?,
    );
    let layout = ParamLayout::new(data, &o.values[s].shape, axis, block).ok()?;
    let constants = match (o.constant(1), zp) {
        (Some(scales), None) => Some((vec![0; scales.len()], scales)),
        (Some(scales), Some(_)) => o.ints(2).map(|z| (z, scales)),
        (None, _) => None,
    };
    let Some((zero_points, scales)) = constants else {
        return Some(Kernel::QuantizeWith {
            quantize,
            dtype: q_dtype,
            axis,
            block,
            inputs: if zp.is_some() { 3 } else { 2 },
        });
    };
    let params = QuantParams::new(layout, scales, zero_points, q_dtype).ok()?;
    Some(match quantize {
        true => Kernel::Quantize(params),
        false => Kernel::Dequantize(params),
    })
}

fn matmul(o: &Operands) -> Option<Kernel> {
    let b = o.shape(1)?;
    if let (Some(w), 2) = (o.constant(1), b.len()) {
        return Some(Kernel::dense(MatRef::row_major(&w, b[0], b[1]).ok()?));
    }
    let a = o.shape(0)?;
    (a.len() >= 2 && b.len() >= 2).then(|| Kernel::MatMul {
        a: a.to_vec(),
        b: b.to_vec(),
    })
}

/// Gemm with runtime A (not transposed), constant B, and C absent or a constant row.
fn gemm(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    let alpha = node.float_or("alpha", 1.0).ok()?;
    let beta = node.float_or("beta", 1.0).ok()?;
    let b = o.shape(1)?;
    if node.int_or("transA", 0).ok()? != 0 || b.len() != 2 {
        return None;
    }
    let mut w = o.constant(1)?;
    w.iter_mut().for_each(|x| *x *= alpha);
    let m = MatRef::row_major(&w, b[0], b[1]).ok()?;
    let m = if node.int_or("transB", 0).ok()? != 0 {
        m.t()
    } else {
        m
    };
    let n = m.cols();
    let mut k = Kernel::dense(m);
    if o.has(2) {
        let c = o.shape(2)?;
        if c.iter().product::<usize>() != n || c.last() != Some(&n) {
            return None;
        }
        let bias = o.constant(2)?.into_iter().map(|x| x * beta).collect();
        k.fuse_bias(bias).then_some(())?;
    }
    Some(k)
}

/// Explicit 2-D pads (auto_pad NOTSET or VALID).
fn pads2d(node: &NodeProto) -> Option<[usize; 4]> {
    match node.string_or("auto_pad", "NOTSET").ok()?.as_str() {
        "NOTSET" => {}
        "VALID" => return Some([0; 4]),
        _ => return None,
    }
    match node.ints("pads").ok()? {
        None => Some([0; 4]),
        Some(p) if p.len() == 4 && p.iter().all(|&v| v >= 0) => {
            Some([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
        }
        Some(_) => None,
    }
}

/// A 2-D attribute pair (strides, dilations), 1 when absent.
fn pair(node: &NodeProto, name: &str) -> Option<[usize; 2]> {
    match node.ints(name).ok()? {
        None => Some([1, 1]),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
            Some([v[0] as usize, v[1] as usize])
        }
        Some(_) => None,
    }
}

fn conv(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    let (x, w) = (o.shape(0)?, o.shape(1)?);
    if x.len() != 4 || w.len() != 4 {
        return None;
    }
    let shape = Conv2dShape {
        n: x[0],
        c_in: x[1],
        h: x[2],
        w: x[3],
        c_out: w[0],
        kh: w[2],
        kw: w[3],
        stride: pair(node, "strides")?,
        pads: pads2d(node)?,
        dilation: pair(node, "dilations")?,
        groups: usize::try_from(node.int_or("group", 1).ok()?).ok()?,
    };
    shape.validate().ok()?;
    let fits = w[1] * shape.groups == x[1] && [x[0], w[0], shape.out_h(), shape.out_w()] == o.out;
    let bias = match o.has(2) {
        true => Some(o.constant(2)?),
        false => None,
    };
    fits.then_some(())?;
    Some(Kernel::Conv {
        shape,
        weight: o.constant(1)?,
        bias,
        act: Activation::None,
    })
}

fn pool(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    let x = o.shape(0)?;
    let k = node.ints("kernel_shape").ok()??;
    if x.len() != 4 || k.len() != 2 || k.iter().any(|&v| v < 1) || node.output.len() > 1 {
        return None;
    }
    let shape = Pool2dShape {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        kh: k[0] as usize,
        kw: k[1] as usize,
        stride: pair(node, "strides")?,
        pads: pads2d(node)?,
        dilation: pair(node, "dilations")?,
        ceil_mode: node.int_or("ceil_mode", 0).ok()? != 0,
    };
    if [x[0], x[1], shape.out_h(), shape.out_w()] != o.out {
        return None;
    }
    Some(match node.op_type.as_str() {
        "MaxPool" => Kernel::MaxPool(shape),
        _ => Kernel::AvgPool {
            shape,
            count_include_pad: node.int_or("count_include_pad", 0).ok()? != 0,
        },
    })
}

/// Softmax over one axis (opset 13+), or over the trailing axes from `axis` (the 2-D
/// coercion of earlier opsets).
fn softmax(node: &NodeProto, opset: i64, o: &Operands) -> Option<Kernel> {
    let x = o.shape(0)?;
    let default = if opset < 13 { 1 } else { -1 };
    let axis = axis_of(node.int_or("axis", default).ok()?, x.len())?;
    let (cols, inner) = match opset < 13 {
        true => (x[axis..].iter().product(), 1),
        false => (x[axis], x[axis + 1..].iter().product()),
    };
    Some(Kernel::Softmax {
        cols,
        inner,
        log: node.op_type == "LogSoftmax",
    })
}

/// `axis` (negative: counted from the end) as an index into `rank` axes.
fn axis_of(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank)
}

/// A Transpose node's `perm` over `rank` axes (default: the axes reversed); `Ok(None)` when an
/// axis is negative (the operator says why).
pub(crate) fn transpose_perm(
    node: &NodeProto,
    rank: usize,
) -> whittle_ir::Result<Option<Vec<usize>>> {
    Ok(match node.ints("perm")? {
        Some(p) => p.iter().map(|&a| usize::try_from(a).ok()).collect(),
        None => Some((0..rank).rev().collect()),
    })
}

/// Transpose by `perm` (default: the axes reversed).
fn transpose(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    let x = o.shape(0)?;
    let perm = transpose_perm(node, x.len()).ok()??;
    let view = StridedView::contiguous(x).permute(&perm)?;
    (view.dims == o.out).then_some(Kernel::Gather(view))
}

/// Slice with constant starts, ends, axes and steps (inputs from opset 10, attributes
/// before), clamped as the operator says.
fn slice(node: &NodeProto, opset: i64, o: &Operands) -> Option<Kernel> {
    let x = o.shape(0)?;
    let (starts, ends, axes, steps) = if opset < 10 {
        let (starts, ends) = (node.ints("starts").ok()??, node.ints("ends").ok()??);
        (starts, ends, node.ints("axes").ok()?, None)
    } else {
        let opt = |i| match o.has(i) {
            true => o.ints(i).map(Some),
            false => Some(None),
        };
        (o.ints(1)?, o.ints(2)?, opt(3)?, opt(4)?)
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return None;
    }
    let mut view = StridedView::contiguous(x);
    for i in 0..n {
        let axis = axis_of(axes[i], x.len())?;
        let (start, step, len) = slice_range(x[axis], starts[i], ends[i], steps[i]).ok()?;
        let start = usize::try_from(start).unwrap_or(0);
        view = view.narrow(axis, start, len, isize::try_from(step).ok()?)?;
    }
    (view.dims == o.out).then_some(Kernel::Gather(view))
}

/// Nearest Resize (opset 11+, `asymmetric` coordinates, `floor` rounding) by a whole factor
/// per axis: output index `i` reads input index `i / factor`, a repeat of each element.
fn resize(node: &NodeProto, opset: i64, o: &Operands) -> Option<Kernel> {
    let x = o.shape(0)?;
    let attr = |name, default| node.string_or(name, default).ok();
    let nearest = attr("mode", "nearest")? == "nearest"
        && attr("coordinate_transformation_mode", "half_pixel")? == "asymmetric"
        && attr("nearest_mode", "round_prefer_floor")? == "floor"
        && node.ints("axes").ok()?.is_none()
        && node.int_or("antialias", 0).ok()? == 0;
    if opset < 11 || !nearest || o.out.len() != x.len() {
        return None;
    }
    let mut factors = Vec::with_capacity(x.len());
    for (&i, &out) in x.iter().zip(o.out) {
        factors.push((i > 0 && out % i == 0).then(|| out / i)?);
    }
    // The given scales must be those factors (sizes are, by the recorded output shape).
    if o.has(2) && !o.has(3) {
        let scales = o.constant(2)?;
        let same = scales.len() == factors.len()
            && scales.iter().zip(&factors).all(|(&s, &f)| s == f as f32);
        same.then_some(())?;
    } else if !o.has(3) || attr("keep_aspect_ratio_policy", "stretch")? != "stretch" {
        return None;
    }
    let mut view = StridedView::contiguous(x);
    for axis in (0..x.len()).rev() {
        if factors[axis] > 1 {
            view = view.repeat(axis, factors[axis])?;
        }
    }
    Some(Kernel::Gather(view))
}

/// The kernels of a Split along `axis`: one [`Kernel::Gather`] per output, each the
/// stretch of the input its recorded shape takes, in order.
pub fn split(node: &NodeProto, input: &PlannedValue, outs: &[&[usize]]) -> Option<Vec<Kernel>> {
    let x = &input.shape;
    if !node.domain.is_empty() || input.dtype != DataType::Float {
        return None;
    }
    let axis = axis_of(node.int_or("axis", 0).ok()?, x.len())?;
    let whole = StridedView::contiguous(x);
    let mut start = 0;
    let mut kernels = Vec::with_capacity(outs.len());
    for out in outs {
        let same_rest = out.len() == x.len() && (0..x.len()).all(|d| d == axis || out[d] == x[d]);
        if !same_rest || start + out[axis] > x[axis] {
            return None;
        }
        let view = whole.narrow(axis, start, out[axis], 1)?;
        start += out[axis];
        kernels.push(Kernel::Gather(view));
    }
    (start == x[axis]).then_some(kernels)
}

fn layer_norm(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    let x = o.shape(0)?;
    let axis = axis_of(node.int_or("axis", -1).ok()?, x.len())?;
    if node.output.iter().skip(1).any(|n| !n.is_empty()) {
        return None;
    }
    let cols: usize = x[axis..].iter().product();
    let scale = o.constant(1)?;
    let bias = match o.has(2) {
        true => Some(o.constant(2)?),
        false => None,
    };
    let sized = scale.len() == cols && bias.as_ref().is_none_or(|b| b.len() == cols);
    sized.then(|| Kernel::LayerNorm {
        cols,
        scale,
        bias,
        eps: node.float_or("epsilon", 1e-5).unwrap_or(1e-5),
    })
}

/// Concat of given (non-omitted) inputs along an axis; the output shape is checked below.
fn concat(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    let rank = o.out.len() as i64;
    let axis = node.int("axis").ok()??;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) || o.ins.iter().any(Option::is_none) {
        return None;
    }
    let axis = axis as usize;
    let mut along = 0;
    let mut rows = Vec::with_capacity(o.ins.len());
    for i in 0..o.ins.len() {
        let s = o.shape(i)?;
        if s.len() != o.out.len()
            || s[..axis] != o.out[..axis]
            || s[axis + 1..] != o.out[axis + 1..]
        {
            return None;
        }
        along += s[axis];
        rows.push(s[axis..].iter().product());
    }
    (along == o.out[axis]).then(|| Kernel::Concat {
        outer: o.out[..axis].iter().product(),
        rows,
    })
}

fn binary(node: &NodeProto, o: &Operands) -> Option<Kernel> {
    if o.ins.len() != 2 || !o.has(1) {
        return None;
    }
    Some(Kernel::Binary {
        op: BinaryOp::of_op_type(&node.op_type)?,
        a: o.shape(0)?.to_vec(),
        b: o.shape(1)?.to_vec(),
    })
}

/// The unary map a node computes: activations and elementwise functions, with constant
/// attributes or inputs (Clip bounds).
fn unary(node: &NodeProto, op: &str, o: &Operands) -> Option<UnaryOp> {
    let act = |a| Some(UnaryOp::Act(a));
    match op {
        "Relu" => act(Activation::Relu),
        "Sigmoid" => act(Activation::Sigmoid),
        "Tanh" => act(Activation::Tanh),
        "HardSwish" => act(Activation::HardSwish),
        "LeakyRelu" => act(Activation::LeakyRelu(node.float_or("alpha", 0.01).ok()?)),
        "HardSigmoid" => act(Activation::HardSigmoid {
            alpha: node.float_or("alpha", 0.2).ok()?,
            beta: node.float_or("beta", 0.5).ok()?,
        }),
        "Gelu" => match node.string_or("approximate", "none").ok()?.as_str() {
            "none" => act(Activation::Gelu),
            "tanh" => act(Activation::GeluTanh),
            _ => None,
        },
        "Clip" => {
            let bound = |i: usize, attr: &str, default: f32| match o.has(i) {
                true => o.constant(i).and_then(|v| (v.len() == 1).then(|| v[0])),
                false => node.float_or(attr, default).ok(),
            };
            let (lo, hi) = (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?);
            act(Activation::Clip(lo, hi))
        }
        "Exp" => Some(UnaryOp::Exp),
        "Erf" => Some(UnaryOp::Erf),
        "Neg" => Some(UnaryOp::Neg),
        "Abs" => Some(UnaryOp::Abs),
        "Sqrt" => Some(UnaryOp::Sqrt),
        "Reciprocal" => Some(UnaryOp::Reciprocal),
        "Log" => Some(UnaryOp::Log),
        _ => None,
    }
}
