//! The sliding window of Conv and the pools (kernel, strides, pads, dilations, `auto_pad`)
//! as the kernels' 2-D shapes; a 1-D window is a 2-D one of height 1.

use std::borrow::Cow;

use rayon::prelude::*;

use whittle_ir::proto::NodeProto;
use whittle_ir::NodeAttrs;

use super::linalg::spatial2;
use crate::bail;
use crate::error::Result;
use crate::kernels;
use crate::kernels::conv::Conv2dShape;
use crate::kernels::layout::transpose;
use crate::kernels::pool::Pool2dShape;
use crate::kernels::PAR_CHUNK;

/// A 2-D window: kernel, strides, dilations and pads (top, left, bottom, right).
pub(in crate::backward) struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: [usize; 4],
}

/// A 1-D attribute list as 2-D (`[1, v]`), a 2-D one as it is.
fn two(v: &[i64], what: &str) -> Result<[usize; 2]> {
    let u = |x: i64| {
        usize::try_from(x)
            .map_err(|_| crate::error::ExecError::msg(format!("{what} {v:?} must not be negative")))
    };
    match v {
        [w] => Ok([1, u(*w)?]),
        [h, w] => Ok([u(*h)?, u(*w)?]),
        _ => bail!("{what} {v:?}: only 1-D and 2-D windows have gradients"),
    }
}

impl Window {
    /// The window of `node` over input `x_shape` (NCHW or NCW) with spatial `kernel` sizes.
    pub fn of(node: &NodeProto, x_shape: &[usize], kernel: &[usize]) -> Result<Self> {
        let k: Vec<i64> = kernel.iter().map(|&v| v as i64).collect();
        let kernel = two(&k, "kernel_shape")?;
        let rank = k.len();
        let ones = vec![1i64; rank];
        let stride = two(
            &node.ints("strides")?.unwrap_or_else(|| ones.clone()),
            "strides",
        )?;
        let dilation = two(&node.ints("dilations")?.unwrap_or(ones), "dilations")?;
        let [h, w] = spatial2(x_shape)?;
        let auto = node.string_or("auto_pad", "NOTSET")?;
        let pads = match auto.as_str() {
            "NOTSET" => {
                let p = node.ints("pads")?.unwrap_or_else(|| vec![0; 2 * rank]);
                match p.as_slice() {
                    [b, e] => [0, two(&[*b], "pads")?[1], 0, two(&[*e], "pads")?[1]],
                    [t, l, b, r] => {
                        let [t, l] = two(&[*t, *l], "pads")?;
                        let [b, r] = two(&[*b, *r], "pads")?;
                        [t, l, b, r]
                    }
                    _ => bail!("pads {p:?} do not match a {rank}-D window"),
                }
            }
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" => {
                let total = |size: usize, d: usize| {
                    let out = size.div_ceil(stride[d]);
                    let span = (kernel[d] - 1) * dilation[d] + 1;
                    ((out - 1) * stride[d] + span).saturating_sub(size)
                };
                let (th, tw) = (total(h, 0), total(w, 1));
                if auto == "SAME_UPPER" {
                    [th / 2, tw / 2, th - th / 2, tw - tw / 2]
                } else {
                    [th - th / 2, tw - tw / 2, th / 2, tw / 2]
                }
            }
            other => bail!("auto_pad '{other}' is not one ONNX defines"),
        };
        Ok(Window {
            kernel,
            stride,
            dilation,
            pads,
        })
    }

    /// The convolution of input `x` with weights `w` (`[C_out, C_in / group, k...]`).
    pub fn conv_shape(&self, x: &[usize], w: &[usize], node: &NodeProto) -> Result<Conv2dShape> {
        let [h, wd] = spatial2(x)?;
        let s = Conv2dShape {
            n: x[0],
            c_in: x[1],
            h,
            w: wd,
            c_out: w[0],
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride: self.stride,
            pads: self.pads,
            dilation: self.dilation,
            groups: usize::try_from(node.int_or("group", 1)?).unwrap_or(0),
        };
        super::kern(s.validate())?;
        Ok(s)
    }

    /// The pooling of input `x`.
    pub fn pool_shape(&self, x: &[usize], node: &NodeProto) -> Result<Pool2dShape> {
        let [h, w] = spatial2(x)?;
        Ok(Pool2dShape {
            n: x[0],
            c: x[1],
            h,
            w,
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride: self.stride,
            pads: self.pads,
            dilation: self.dilation,
            ceil_mode: node.int_or("ceil_mode", 0)? != 0,
        })
    }
}

/// Largest plane (output positions per channel) a pointwise convolution is run at as one
/// product of the batch's rows ([`row_product_plane`]).
const ROW_PRODUCT_MAX_PLANE: usize = 4;

/// The plane `p` of convolution `s` when it is a product of rows: one group, a 1x1 kernel,
/// stride 1, no padding, and at most [`ROW_PRODUCT_MAX_PLANE`] positions (a
/// squeeze-and-excitation block's convolutions, pointwise convolutions after the last
/// downsamplings). Its input `[n, c_in, p]` read as `n·p` rows of `c_in` values gives the
/// output rows as `x · wᵀ`: one GEMM over the batch instead of the convolution kernel's
/// per-image products, each of which packs all the weights for `p` columns.
pub(in crate::backward) fn row_product_plane(s: &Conv2dShape) -> Option<usize> {
    let p = s.h * s.w;
    (s.groups == 1 && s.is_pointwise() && (1..=ROW_PRODUCT_MAX_PLANE).contains(&p)).then_some(p)
}

/// `v` (`[n, a, b]`) as `[n, b, a]`: channel-major planes as rows of channels and back
/// (borrowed when `a` or `b` is 1, where both layouts are the same).
pub(in crate::backward) fn swap_inner(
    v: &[f32],
    n: usize,
    a: usize,
    b: usize,
) -> kernels::Result<Cow<'_, [f32]>> {
    if a == 1 || b == 1 {
        return Ok(Cow::Borrowed(v));
    }
    let mut out = vec![0.0; v.len()];
    swap_inner_into(v, n, a, b, &mut out)?;
    Ok(Cow::Owned(out))
}

/// [`swap_inner`] into `out`: one matrix transpose per item, in parallel blocks of items when
/// the pool has several threads and `v` is large.
pub(in crate::backward) fn swap_inner_into(
    v: &[f32],
    n: usize,
    a: usize,
    b: usize,
    out: &mut [f32],
) -> kernels::Result<()> {
    let item = a * b;
    kernels::check_len("swap_inner", "input", n * item, v.len())?;
    kernels::check_len("swap_inner", "output", n * item, out.len())?;
    if item == 0 {
        return Ok(());
    }
    let swap = |(src, dst): (&[f32], &mut [f32])| transpose(src, b, a, b, dst, a);
    if rayon::current_num_threads() > 1 && v.len() >= PAR_CHUNK {
        let per = (PAR_CHUNK / item).max(1);
        v.par_chunks(per * item)
            .zip(out.par_chunks_mut(per * item))
            .for_each(|(v, out)| v.chunks(item).zip(out.chunks_mut(item)).for_each(swap));
    } else {
        v.chunks(item).zip(out.chunks_mut(item)).for_each(swap);
    }
    Ok(())
}
