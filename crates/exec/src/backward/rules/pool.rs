//! Rules of the pools: MaxPool (the gradient goes to each window's arg-max, recomputed from
//! the kept input), AveragePool and GlobalAveragePool (spread evenly).

use rayon::prelude::*;
use whittle_ir::NodeAttrs;

use super::window::Window;
use super::{kern, RuleCtx};
use crate::bail;
use crate::error::Result;
use crate::kernels::pool::{avg_pool2d_backward, max_pool2d, max_pool2d_backward, Pool2dShape};
use crate::kernels::PAR_CHUNK;

/// Gradients of a node, one per input.
type Grads = Result<Vec<Option<Vec<f32>>>>;

/// The pool's 2-D shape, checked against the output the forward produced.
fn pool_shape(c: &RuleCtx) -> Result<Pool2dShape> {
    let x_shape = c.in_shape(0)?;
    let kernel: Vec<usize> = match c.node.ints("kernel_shape")? {
        Some(k) => k.iter().map(|&v| v.max(0) as usize).collect(),
        None => bail!("kernel_shape is required"),
    };
    let s = Window::of(c.node, x_shape, &kernel)?.pool_shape(x_shape, c.node)?;
    if [s.out_h(), s.out_w()] != super::linalg::spatial2(c.out_shape(0)?)? {
        bail!(
            "the output shape {:?} disagrees with the attributes",
            c.out_shape(0)?
        );
    }
    Ok(s)
}

/// MaxPool: each output gradient added to the input element its window picked (the arg-max
/// the forward kernel kept, else recomputed from the kept input).
pub(super) fn max_pool(c: &mut RuleCtx) -> Grads {
    let s = pool_shape(c)?;
    let recomputed;
    let indices = match c.node.output.first().and_then(|o| c.rec.argmax.get(o)) {
        Some(kept) => kept,
        None => {
            let out: usize = c.out_shape(0)?.iter().product();
            let (mut y, mut idx) = (vec![0.0; out], vec![0i64; out]);
            let x = c.input(0)?;
            kern(x.with_f32(|x| max_pool2d(&s, x, &mut y, Some(&mut idx)))?)?;
            recomputed = idx;
            &recomputed
        }
    };
    let mut dx = c.zeros(c.in_shape(0)?.iter().product());
    kern(max_pool2d_backward(&s, &c.dy()?, indices, &mut dx))?;
    Ok(vec![Some(dx)])
}

/// AveragePool: each output gradient spread over its window.
pub(super) fn average_pool(c: &mut RuleCtx) -> Grads {
    let s = pool_shape(c)?;
    let include_pad = c.node.int_or("count_include_pad", 0)? != 0;
    let mut dx = c.zeros(c.in_shape(0)?.iter().product());
    kern(avg_pool2d_backward(&s, include_pad, &c.dy()?, &mut dx))?;
    Ok(vec![Some(dx)])
}

/// GlobalAveragePool: each plane's output gradient spread over the plane.
pub(super) fn global_average_pool(c: &mut RuleCtx) -> Grads {
    let x_shape = c.in_shape(0)?;
    let plane: usize = x_shape.iter().skip(2).product();
    if plane == 1 {
        // Each output is its one input (squeeze-and-excitation after 1x1 planes).
        return Ok(vec![Some(c.take_dy()?)]);
    }
    let dy = c.dy()?;
    let mut dx = c.for_overwrite(x_shape.iter().product());
    if plane > 0 {
        let scale = 1.0 / plane as f32;
        // Whole blocks of planes per task: at 2x2 planes one task per plane cost more than
        // the fill.
        dx.par_chunks_mut(plane)
            .zip(dy.par_iter())
            .with_min_len((PAR_CHUNK / plane).max(1))
            .for_each(|(d, g)| d.fill(g * scale));
    }
    Ok(vec![Some(dx)])
}
