//! Rules of the operators that move elements: Reshape-like views, Transpose, Concat, the
//! mean/sum reductions, and Dropout (its mask recomputed from the forward's seed).

use candle_core::{DType, Tensor};
use whittle_ir::NodeAttrs;

use super::elementwise::expand;
use super::RuleCtx;
use crate::bail;
use crate::error::Result;
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
    let y_shape: Vec<usize> = perm.iter().map(|&p| x_shape[p]).collect();
    let mut y_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        y_strides[d] = y_strides[d + 1] * y_shape[d + 1];
    }
    // The step in the output gradient of one step along each input axis.
    let mut step = vec![0usize; rank];
    for (i, &p) in perm.iter().enumerate() {
        step[p] = y_strides[i];
    }
    let dy = c.dy()?;
    let total: usize = x_shape.iter().product();
    let mut dx = vec![0.0; total];
    let mut index = vec![0usize; rank];
    let mut at = 0usize;
    for v in dx.iter_mut() {
        *v = dy[at];
        for d in (0..rank).rev() {
            index[d] += 1;
            at += step[d];
            if index[d] < x_shape[d] {
                break;
            }
            at -= step[d] * index[d];
            index[d] = 0;
        }
    }
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

/// Dropout: the output gradient through the forward's mask, recomputed by running the
/// operator with the forward's seed on ones (which gives the mask scaled by `1/(1-ratio)`).
pub(super) fn dropout(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?.to_vec();
    let ones = crate::value::Value::f32(Tensor::ones(shape, DType::F32, c.exec.device())?)?;
    let scale = c
        .rerun(ones)?
        .into_iter()
        .next()
        .map(|v| v.to_f32_vec())
        .transpose()?
        .unwrap_or_default();
    let mut dx = c.take_dy()?;
    if scale.len() != dx.len() {
        bail!(
            "the recomputed mask has {} elements for {}",
            scale.len(),
            dx.len()
        );
    }
    dx.iter_mut().zip(&scale).for_each(|(d, s)| *d *= s);
    Ok(vec![Some(dx)])
}
