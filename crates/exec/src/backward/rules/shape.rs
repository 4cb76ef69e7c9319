//! Rules of the operators that move elements: Reshape-like views, Transpose, Concat, the
//! mean/sum reductions, and Dropout (its mask recomputed from the forward's seed).

use candle_core::Tensor;
use whittle_ir::NodeAttrs;

use super::elementwise::expand;
use super::{kern, RuleCtx};
use crate::bail;
use crate::error::Result;
use crate::kernels::layout::{gather, StridedView};
use crate::ops::normalize_axis;

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// Identity, Flatten, Reshape, Squeeze, Unsqueeze: the same elements in the same order.
pub(super) fn same_elements(c: &mut RuleCtx) -> Grads {
    Ok(vec![Some(c.take_dy()?)])
}

/// Transpose: the output gradient transposed back.
pub(super) fn transpose(c: &mut RuleCtx) -> Grads {
    let x_shape = c.in_shape(0)?.to_vec();
    let rank = x_shape.len();
    let perm: Vec<usize> = match c.node.ints("perm")? {
        Some(p) => p
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).rev().collect(),
    };
    if perm.len() != rank {
        bail!("perm {perm:?} does not match rank {rank}");
    }
    // The gradient is the output gradient transposed by the inverse permutation.
    let y_shape: Vec<usize> = perm.iter().map(|&p| x_shape[p]).collect();
    let mut inverse = vec![0usize; rank];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    let Some(view) = StridedView::contiguous(&y_shape).permute(&inverse) else {
        bail!("perm {perm:?} is not a permutation of {rank} axes");
    };
    let mut dx = crate::kernels::zeros(view.numel());
    kern(gather(&view, &c.dy()?, &mut dx))?;
    Ok(vec![Some(dx)])
}

/// Concat: the output gradient cut back into the inputs' slabs along the axis.
pub(super) fn concat(c: &mut RuleCtx) -> Grads {
    let shape = c.out_shape(0)?.to_vec();
    let axis = normalize_axis(c.node.int("axis")?.unwrap_or(0), shape.len())?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let row = shape[axis] * inner;
    let dy = c.dy()?;
    let mut offset = 0;
    let mut grads = Vec::new();
    for i in 0..c.node.input.len() {
        let width = c.in_shape(i)?.get(axis).copied().unwrap_or(0) * inner;
        if c.wants(i) {
            let mut g = Vec::with_capacity(outer * width);
            for o in 0..outer {
                g.extend_from_slice(&dy[o * row + offset..o * row + offset + width]);
            }
            grads.push(Some(g));
        } else {
            grads.push(None);
        }
        offset += width;
    }
    Ok(grads)
}

/// ReduceMean and ReduceSum: the output gradient broadcast back over the reduced axes
/// (divided by their size for the mean).
pub(super) fn reduce(c: &mut RuleCtx) -> Grads {
    let x_shape = c.in_shape(0)?.to_vec();
    let rank = x_shape.len();
    let axes_from_input = match c.node.op_type.as_str() {
        "ReduceSum" => c.opset >= 13,
        _ => c.opset >= 18,
    };
    let axes: Vec<i64> = if axes_from_input {
        match c.opt_input(1)? {
            Some(v) => v.to_i64_vec()?,
            None => Vec::new(),
        }
    } else {
        c.node.ints("axes")?.unwrap_or_default()
    };
    let noop = c.node.int_or("noop_with_empty_axes", 0)? != 0;
    let dy = c.dy()?;
    if axes.is_empty() && noop {
        return Ok(vec![Some(dy.into_owned())]);
    }
    let mut kept = x_shape.clone();
    if axes.is_empty() {
        kept.iter_mut().for_each(|d| *d = 1);
    }
    for &a in &axes {
        kept[normalize_axis(a, rank)?] = 1;
    }
    let count = (x_shape.iter().product::<usize>() / kept.iter().product::<usize>().max(1)).max(1);
    let mut dx = expand(&dy, &kept, &x_shape)?.into_owned();
    if c.node.op_type == "ReduceMean" {
        let s = 1.0 / count as f32;
        dx.iter_mut().for_each(|v| *v *= s);
    }
    Ok(vec![Some(dx)])
}

/// Dropout: the output gradient through the forward's mask. Dropout is linear in its input,
/// so the operator run again with the forward's seed on the output gradient gives the
/// input's (kept elements scaled by `1/(1-ratio)`, the others 0).
pub(super) fn dropout(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?.to_vec();
    let dy = Tensor::from_vec(c.take_dy()?, shape, c.exec.device())?;
    let Some(dx) = c.rerun(crate::value::Value::f32(dy)?)?.into_iter().next() else {
        bail!("the operator run again gave no output");
    };
    Ok(vec![Some(dx.to_f32_vec()?)])
}
