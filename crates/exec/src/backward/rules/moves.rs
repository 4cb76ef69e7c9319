//! Rules of the operators whose every output element is a copy of one element of input 0.
//!
//! [`copies`] (Slice, Expand, Tile, GatherElements, GatherND, DepthToSpace, SpaceToDepth)
//! reruns the node's own operator on the positions of input 0 (an int64 tensor counting
//! `0..n` in its shape), so the rule follows the operator's semantics exactly (negative
//! and clamped bounds, steps, broadcasting, block orders), and adds each output gradient
//! into the position its element was copied from. [`gather`] (embedding tables) adds the
//! rows of the output gradient into the table rows its indices name, without a position
//! tensor the size of the table; the indices get no gradient.

use candle_core::Tensor;
use whittle_ir::{DataType, NodeAttrs};

use super::RuleCtx;
use crate::bail;
use crate::error::Result;
use crate::ops::util::{data_axis, wrap_index};
use crate::value::Value;

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// The gradient of input 0 of a copying operator: each output gradient added into the
/// position of input 0 it was copied from (several outputs, as Expand's, add up).
pub(super) fn copies(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?.to_vec();
    let n: usize = shape.iter().product();
    let positions = Tensor::arange(0i64, n as i64, c.exec.device())?.reshape(shape)?;
    let outputs = c.rerun(Value::new(positions, DataType::Int64)?)?;
    let mut dx = vec![0.0f32; n];
    for (out, dy) in outputs.iter().zip(&c.dys) {
        let Some(dy) = dy else {
            continue;
        };
        let from = out.to_i64_vec()?;
        if from.len() != dy.len() {
            bail!(
                "the rerun gave {} positions for a gradient of {} elements",
                from.len(),
                dy.len()
            );
        }
        for (&p, &g) in from.iter().zip(dy) {
            match usize::try_from(p).ok().and_then(|p| dx.get_mut(p)) {
                Some(d) => *d += g,
                None => bail!("the rerun gave position {p} of {n}"),
            }
        }
    }
    Ok(vec![Some(dx)])
}

/// Gather: the output gradient's slabs added into the rows of the data (along `axis`) that
/// the indices name; repeated indices add up.
pub(super) fn gather(c: &mut RuleCtx) -> Grads {
    let shape = c.in_shape(0)?.to_vec();
    let axis = data_axis(c.node.int_or("axis", 0)?, shape.len())?;
    let dim = shape[axis];
    let rows = c
        .input(1)?
        .to_i64_vec()?
        .into_iter()
        .map(|i| wrap_index(i, dim))
        .collect::<Result<Vec<_>>>()?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let dy = c.dy()?;
    if dy.len() != outer * rows.len() * inner {
        bail!(
            "the output gradient has {} elements for {} indices into {shape:?}",
            dy.len(),
            rows.len()
        );
    }
    let mut dx = vec![0.0f32; outer * dim * inner];
    if inner > 0 {
        for (o, slab) in dy.chunks_exact(rows.len().max(1) * inner).enumerate() {
            for (&row, src) in rows.iter().zip(slab.chunks_exact(inner)) {
                let at = (o * dim + row) * inner;
                dx[at..at + inner]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, g)| *d += g);
            }
        }
    }
    Ok(vec![Some(dx)])
}
