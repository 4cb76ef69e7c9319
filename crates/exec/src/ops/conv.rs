//! Convolutions: `Conv` and `ConvTranspose` (1-D, 2-D and 3-D) on candle's differentiable
//! im2col + gemm kernels, and the spatial window attributes (`kernel_shape`, `strides`, `pads`,
//! `dilations`, `auto_pad`) shared with the pooling operators.
//!
//! candle takes one padding, stride and dilation for every spatial axis; other cases are
//! rewritten onto it: asymmetric pads pad the input explicitly, per-axis dilations dilate the
//! kernel with zeros, per-axis strides subsample a stride-1 result, and 3-D runs as a sum of
//! 2-D convolutions over the kernel's depth.

use std::collections::HashMap;

use candle_core::{DType, Tensor, WithDType};
use whittle_ir::proto::NodeProto;
use whittle_ir::NodeAttrs;

use super::util::check_size;
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Conv", conv);
    r.add("ConvTranspose", conv_transpose);
}

/// The `auto_pad` policy of convolutions and pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Output size `ceil(input / stride)`, odd padding at the end.
    SameUpper,
    /// Output size `ceil(input / stride)`, odd padding at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    /// Reads the `auto_pad` attribute (default `NOTSET`).
    pub fn from_node(node: &NodeProto) -> Result<Self> {
        Ok(match node.string_or("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => bail!("unknown auto_pad '{other}'"),
        })
    }

    /// Splits a total padding into (begin, end) as `SAME_UPPER` / `SAME_LOWER` do.
    pub fn split(self, total: i64) -> (i64, i64) {
        let half = total.div_euclid(2);
        match self {
            AutoPad::SameLower => (total - half, half),
            _ => (half, total - half),
        }
    }
}

/// Spatial window attributes of a convolution or pool, one entry per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel size per axis.
    pub kernel: Vec<usize>,
    /// Stride per axis.
    pub strides: Vec<usize>,
    /// Dilation per axis.
    pub dilations: Vec<usize>,
    /// Explicit padding at the beginning of each axis.
    pub pads_begin: Vec<usize>,
    /// Explicit padding at the end of each axis.
    pub pads_end: Vec<usize>,
    /// Padding policy.
    pub auto_pad: AutoPad,
}

/// Padding and output size of a window over a concrete input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Padding before each axis.
    pub begin: Vec<usize>,
    /// Padding after each axis (as the attributes or `auto_pad` ask).
    pub end: Vec<usize>,
    /// Further padding after each axis that `ceil_mode` windows reach past `end`.
    pub extra: Vec<usize>,
    /// Output size per axis.
    pub out: Vec<usize>,
}

impl Window {
    /// Reads the window attributes for `n` spatial axes. `kernel` is the kernel shape to
    /// use when the node has no `kernel_shape` attribute (a convolution's weight shape).
    pub fn from_node(node: &NodeProto, n: usize, kernel: Option<&[usize]>) -> Result<Self> {
        let kernel = match (node.ints("kernel_shape")?, kernel) {
            (Some(k), _) => positive(&k, "kernel_shape")?,
            (None, Some(k)) => k.to_vec(),
            (None, None) => bail!("attribute 'kernel_shape' is required"),
        };
        let per_axis = |name: &str| -> Result<Vec<usize>> {
            match node.ints(name)? {
                Some(v) => positive(&v, name),
                None => Ok(vec![1; n]),
            }
        };
        let (strides, dilations) = (per_axis("strides")?, per_axis("dilations")?);
        let pads = match node.ints("pads")? {
            Some(p) if p.iter().any(|&v| v < 0) => bail!("negative pads {p:?}"),
            Some(p) => p.iter().map(|&v| v as usize).collect(),
            None => vec![0; 2 * n],
        };
        if kernel.len() != n || strides.len() != n || dilations.len() != n || pads.len() != 2 * n {
            bail!("window attributes do not match {n} spatial axes");
        }
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads_begin: pads[..n].to_vec(),
            pads_end: pads[n..].to_vec(),
            auto_pad: AutoPad::from_node(node)?,
        })
    }

    /// Number of spatial axes.
    pub fn rank(&self) -> usize {
        self.kernel.len()
    }

    /// Extent of the dilated kernel along axis `i`.
    pub fn extent(&self, i: usize) -> usize {
        self.dilations[i] * (self.kernel[i] - 1) + 1
    }

    /// Padding and output size over spatial input `input`; `ceil_mode` rounds the output
    /// size up (pools), keeping the last window starting inside the input or its padding.
    pub fn resolve(&self, input: &[usize], ceil_mode: bool) -> Result<Resolved> {
        if input.len() != self.rank() {
            bail!(
                "input has {} spatial axes, window {}",
                input.len(),
                self.rank()
            );
        }
        let mut r = Resolved {
            begin: vec![0; input.len()],
            end: vec![0; input.len()],
            extra: vec![0; input.len()],
            out: vec![0; input.len()],
        };
        for (i, &len) in input.iter().enumerate() {
            let (s, ext) = (self.strides[i], self.extent(i));
            if let AutoPad::SameUpper | AutoPad::SameLower = self.auto_pad {
                let out = len.div_ceil(s);
                let total = ((out.max(1) - 1) * s + ext).saturating_sub(len);
                let (b, e) = self.auto_pad.split(total as i64);
                (r.begin[i], r.end[i], r.out[i]) = (b as usize, e as usize, out);
                continue;
            }
            if self.auto_pad == AutoPad::NotSet {
                (r.begin[i], r.end[i]) = (self.pads_begin[i], self.pads_end[i]);
            }
            let span = len + r.begin[i] + r.end[i];
            if span < ext {
                bail!("window extent {ext} exceeds padded input {span} on spatial axis {i}");
            }
            let mut out = if ceil_mode {
                (span - ext).div_ceil(s) + 1
            } else {
                (span - ext) / s + 1
            };
            if ceil_mode && (out - 1) * s >= len + r.begin[i] {
                out -= 1;
            }
            r.extra[i] = ((out - 1) * s + ext).saturating_sub(span);
            r.out[i] = out;
        }
        Ok(r)
    }
}

fn positive(v: &[i64], name: &str) -> Result<Vec<usize>> {
    if v.iter().any(|&x| !(1..=1 << 24).contains(&x)) {
        bail!("attribute '{name}' must hold positive values, got {v:?}");
    }
    Ok(v.iter().map(|&x| x as usize).collect())
}

/// Every kernel offset (multi-index) in row-major order.
pub fn kernel_offsets(kernel: &[usize]) -> Result<Vec<Vec<usize>>> {
    let count: usize = kernel.iter().product();
    if count > 1 << 16 {
        bail!("kernel {kernel:?} is too large");
    }
    let mut all = vec![vec![]];
    for &k in kernel {
        all = all
            .into_iter()
            .flat_map(|prefix| {
                (0..k).map(move |j| {
                    let mut v = prefix.clone();
                    v.push(j);
                    v
                })
            })
            .collect();
    }
    Ok(all)
}

/// The sliding-window taps of a padded input `[N, C, spatial...]`: tap `offset` samples
/// `o * stride + offset * dilation` for every output position `o` of every spatial axis.
///
/// Each tap is a view of one stride phase of the input (`x[..., phase::stride]`), so a
/// strided window gathers the input once per phase instead of once per tap.
pub struct Taps<'a> {
    x: &'a Tensor,
    window: &'a Window,
    out: &'a [usize],
    phases: HashMap<Vec<usize>, Tensor>,
}

impl<'a> Taps<'a> {
    /// Taps of `window` over the padded input `x` for output size `out`.
    pub fn new(x: &'a Tensor, window: &'a Window, out: &'a [usize]) -> Self {
        Taps {
            x,
            window,
            out,
            phases: HashMap::new(),
        }
    }

    /// The input samples of kernel tap `offset`, shaped `[N, C, out...]`.
    pub fn tap(&mut self, offset: &[usize]) -> Result<Tensor> {
        let w = self.window;
        let pos: Vec<usize> = offset
            .iter()
            .zip(&w.dilations)
            .map(|(o, d)| o * d)
            .collect();
        let phase: Vec<usize> = pos.iter().zip(&w.strides).map(|(p, s)| p % s).collect();
        if !self.phases.contains_key(&phase) {
            let mut t = self.x.clone();
            for (i, (&p, &s)) in phase.iter().zip(&w.strides).enumerate() {
                let len = t.dim(i + 2)?;
                t = strided(&t, i + 2, p, s, (len - p).div_ceil(s))?;
            }
            self.phases.insert(phase.clone(), t);
        }
        let mut t = self.phases[&phase].clone();
        for (i, (&p, &s)) in pos.iter().zip(&w.strides).enumerate() {
            t = t.narrow(i + 2, p / s, self.out[i])?;
        }
        Ok(t)
    }

    /// Folds `f(accumulator, tap, offset)` over every tap in row-major kernel order; the
    /// accumulator is `None` for the first tap.
    pub fn fold(
        &mut self,
        f: impl Fn(Option<Tensor>, Tensor, &[usize]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for off in kernel_offsets(&self.window.kernel)? {
            let tap = self.tap(&off)?;
            acc = Some(f(acc, tap, &off)?);
        }
        match acc {
            Some(a) => Ok(a),
            None => bail!("empty kernel"),
        }
    }
}

/// `count` elements of `axis` starting at `start`, `step` apart.
fn strided(t: &Tensor, axis: usize, start: usize, step: usize, count: usize) -> Result<Tensor> {
    if step == 1 {
        return Ok(t.narrow(axis, start, count)?);
    }
    let idx: Vec<u32> = (0..count).map(|o| (start + o * step) as u32).collect();
    let idx = Tensor::from_vec(idx, count, t.device())?;
    Ok(t.index_select(&idx, axis)?)
}

/// Pads spatial axes (from axis 2) with `value`: `begin[i]` before and `end[i]` after axis `i + 2`.
pub fn pad_spatial(x: &Tensor, begin: &[usize], end: &[usize], value: f64) -> Result<Tensor> {
    let mut t = x.clone();
    for (i, (&b, &e)) in begin.iter().zip(end).enumerate() {
        t = pad_axis(&t, i + 2, b, e, value)?;
    }
    Ok(t)
}

/// Pads one axis with a constant.
fn pad_axis(t: &Tensor, axis: usize, begin: usize, end: usize, value: f64) -> Result<Tensor> {
    if begin == 0 && end == 0 {
        return Ok(t.clone());
    }
    if value == 0.0 {
        return Ok(t.pad_with_zeros(axis, begin, end)?);
    }
    let block = |len: usize| -> Result<Tensor> {
        let mut dims = t.dims().to_vec();
        dims[axis] = len;
        filled(&dims, value, t)
    };
    Ok(Tensor::cat(&[&block(begin)?, t, &block(end)?], axis)?)
}

/// A tensor of `dims` filled with `value` (saturated to the dtype's range), like `like`.
fn filled(dims: &[usize], value: f64, like: &Tensor) -> Result<Tensor> {
    let dev = like.device();
    Ok(match like.dtype() {
        DType::U8 => Tensor::full(value.clamp(0.0, 255.0) as u8, dims, dev)?,
        DType::I64 => Tensor::full(value as i64, dims, dev)?,
        DType::F64 => Tensor::full(value, dims, dev)?,
        dt => Tensor::full(value as f32, dims, dev)?.to_dtype(dt)?,
    })
}

/// Inserts `factor - 1` zeros between consecutive elements of `axis` (differentiable).
fn dilate(t: &Tensor, axis: usize, factor: usize) -> Result<Tensor> {
    let len = t.dim(axis)?;
    if factor == 1 || len == 0 {
        return Ok(t.clone());
    }
    let mut dims = t.dims().to_vec();
    dims[axis] = len * factor;
    let spread = t
        .unsqueeze(axis + 1)?
        .pad_with_zeros(axis + 1, 0, factor - 1)?
        .reshape(dims)?;
    Ok(spread.narrow(axis, 0, (len - 1) * factor + 1)?)
}

fn all_equal(v: &[usize]) -> bool {
    v.windows(2).all(|w| w[0] == w[1])
}

/// Checks a float convolution's operands and returns `(spatial rank, input channels)`.
fn check_operands(x: &Tensor, w: &Tensor, groups: usize) -> Result<usize> {
    let n = x.rank().saturating_sub(2);
    if !(1..=3).contains(&n) || w.rank() != x.rank() {
        bail!(
            "expects [N, C, d1..dn] input and weight of the same rank with 1 <= n <= 3, got {:?} and {:?}",
            x.dims(),
            w.dims()
        );
    }
    if x.dtype() != w.dtype() || !x.dtype().is_float() {
        bail!("input and weight must share a float dtype");
    }
    if groups == 0 || x.dim(1)? % groups != 0 {
        bail!(
            "group {groups} does not divide {} input channels",
            x.dim(1)?
        );
    }
    Ok(n)
}

/// Runs an N-D (1-D, 2-D or 3-D) float convolution as ONNX `Conv` defines it.
///
/// `x` is `[N, C, d1..dn]`, `w` is `[M, C / groups, k1..kn]`, `bias` is `[M]`; all share
/// one float dtype (quantized convolutions call this with dequantized f32/f64 tensors).
/// `window` gives strides, dilations and padding (explicit or `auto_pad`); its kernel must
/// match `w`'s spatial shape. The result is `[N, M, o1..on]` and is differentiable.
pub fn conv_nd(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    window: &Window,
    groups: usize,
) -> Result<Tensor> {
    let n = check_operands(x, w, groups)?;
    if w.dims()[2..] != window.kernel[..] || w.dim(1)? * groups != x.dim(1)? {
        bail!(
            "weight {:?} does not match kernel {:?} and group {groups}",
            w.dims(),
            window.kernel
        );
    }
    if w.dim(0)? % groups != 0 {
        bail!(
            "group {groups} does not divide {} output channels",
            w.dim(0)?
        );
    }
    let r = window.resolve(&x.dims()[2..], false)?;
    let out_dims = [&[x.dim(0)?, w.dim(0)?], &r.out[..]].concat();
    check_size(&out_dims, x.dtype())?;
    if x.elem_count() == 0 || w.elem_count() == 0 {
        // An empty batch or no channels: a sum over nothing, so only the bias remains.
        return add_bias(Tensor::zeros(out_dims, x.dtype(), x.device())?, bias);
    }
    let symmetric = n < 3 && r.begin == r.end && all_equal(&r.begin);
    let (x, pad) = if symmetric {
        (x.clone(), r.begin[0])
    } else {
        (pad_spatial(x, &r.begin, &r.end, 0.0)?, 0)
    };
    let y = if n == 2 && groups == x.dim(1)? && groups == w.dim(0)? && groups > 1 {
        depthwise(
            &pad_spatial(&x, &[pad; 2], &[pad; 2], 0.0)?,
            w,
            window,
            &r.out,
        )?
    } else if n == 2 {
        im2col_gemm(
            &pad_spatial(&x, &[pad; 2], &[pad; 2], 0.0)?,
            w,
            window,
            &r.out,
            groups,
        )?
    } else {
        conv_padded(&x, w, pad, &window.strides, &window.dilations, groups)?
    };
    add_bias(y, bias)
}

/// A convolution of an input padded by `pad` on every side (padding 0 for 3-D).
fn conv_padded(
    x: &Tensor,
    w: &Tensor,
    pad: usize,
    strides: &[usize],
    dilations: &[usize],
    groups: usize,
) -> Result<Tensor> {
    match strides.len() {
        1 => Ok(x.conv1d(w, pad, strides[0], dilations[0], groups)?),
        2 => conv2d_any(x, w, pad, strides, dilations, groups),
        _ => conv3d(x, w, strides, dilations, groups),
    }
}

/// 2-D convolution with per-axis strides and dilations.
fn conv2d_any(
    x: &Tensor,
    w: &Tensor,
    pad: usize,
    strides: &[usize],
    dilations: &[usize],
    groups: usize,
) -> Result<Tensor> {
    let (w, d) = if all_equal(dilations) {
        (w.clone(), dilations[0])
    } else {
        (dilate(&dilate(w, 2, dilations[0])?, 3, dilations[1])?, 1)
    };
    if all_equal(strides) {
        return Ok(x.conv2d(&w, pad, strides[0], d, groups)?);
    }
    let full = x.conv2d(&w, pad, 1, d, groups)?;
    let mut y = full.clone();
    for (i, &s) in strides.iter().enumerate() {
        let len = full.dim(i + 2)?;
        y = strided(&y, i + 2, 0, s, (len - 1) / s + 1)?;
    }
    Ok(y)
}

/// 3-D convolution of a padded input as a sum over kernel depth of 2-D convolutions,
/// with the output depth folded into the batch.
fn conv3d(
    x: &Tensor,
    w: &Tensor,
    strides: &[usize],
    dilations: &[usize],
    groups: usize,
) -> Result<Tensor> {
    let (n, c, depth, h, wd) = x.dims5()?;
    let kd = w.dim(2)?;
    let out_d = (depth - dilations[0] * (kd - 1) - 1) / strides[0] + 1;
    let mut acc: Option<Tensor> = None;
    for k in 0..kd {
        let xs = strided(x, 2, k * dilations[0], strides[0], out_d)?
            .permute((0, 2, 1, 3, 4))?
            .reshape((n * out_d, c, h, wd))?;
        let wk = w.narrow(2, k, 1)?.squeeze(2)?;
        let y = conv2d_any(&xs, &wk, 0, &strides[1..], &dilations[1..], groups)?;
        acc = Some(match acc {
            Some(a) => (a + y)?,
            None => y,
        });
    }
    let Some(acc) = acc else {
        bail!("empty kernel")
    };
    let (_, m, oh, ow) = acc.dims4()?;
    Ok(acc
        .reshape((n, out_d, m, oh, ow))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?)
}

/// Depthwise 2-D convolution (one filter per channel) of a padded input as a sum of
/// shifted, scaled copies: much cheaper than one gemm per channel.
fn depthwise(x: &Tensor, w: &Tensor, window: &Window, out: &[usize]) -> Result<Tensor> {
    let c = w.dim(0)?;
    Taps::new(x, window, out).fold(|acc, tap, off| {
        let k = w
            .narrow(2, off[0], 1)?
            .narrow(3, off[1], 1)?
            .reshape((1, c, 1, 1))?;
        let term = tap.contiguous()?.broadcast_mul(&k)?;
        Ok(match acc {
            Some(a) => (a + term)?,
            None => term,
        })
    })
}

/// 2-D convolution of a padded input as one matrix product per group: the taps are laid out
/// as columns `[C·K, N·L]` (im2col) and multiplied by the weights `[M, C·K]`. candle's own
/// CPU conv2d is a direct loop and several times slower than this on real models.
fn im2col_gemm(
    x: &Tensor,
    w: &Tensor,
    window: &Window,
    out: &[usize],
    groups: usize,
) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let m = w.dim(0)?;
    let (cg, mg) = (c / groups, m / groups);
    let l: usize = out.iter().product();
    let k: usize = window.kernel.iter().product();
    let cols = match x.dtype() {
        // Outside autograd, lay out the columns with plain row copies.
        DType::F32 if !x.track_op() => im2col_rows::<f32>(x, window, out)?,
        DType::F64 if !x.track_op() => im2col_rows::<f64>(x, window, out)?,
        _ => {
            // Channels first, so every tap is [C, N, out...] and the columns need no transpose.
            let xc = x.transpose(0, 1)?.contiguous()?;
            let mut taps = Taps::new(&xc, window, out);
            let cols: Vec<Tensor> = kernel_offsets(&window.kernel)?
                .iter()
                .map(|off| taps.tap(off))
                .collect::<Result<_>>()?;
            Tensor::stack(&cols, 1)?.reshape((c * k, n * l))?
        }
    };
    let ys = (0..groups)
        .map(|g| {
            let wg = w.narrow(0, g * mg, mg)?.reshape((mg, cg * k))?;
            let colg = cols.narrow(0, g * cg * k, cg * k)?;
            Ok(wg.matmul(&colg)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let y = if groups == 1 {
        ys.into_iter().next().expect("one group")
    } else {
        Tensor::cat(&ys, 0)?
    };
    let mut shape = vec![m, n];
    shape.extend_from_slice(out);
    Ok(y.reshape(shape)?.transpose(0, 1)?.contiguous()?)
}

/// The im2col matrix `[C·Kh·Kw, N·Ho·Wo]` of a padded input `[N, C, H, W]`, built with row
/// copies on the host (not differentiable: used outside autograd only).
fn im2col_rows<T: WithDType>(x: &Tensor, window: &Window, out: &[usize]) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (oh, ow) = (out[0], out[1]);
    let (sh, sw) = (window.strides[0], window.strides[1]);
    let (dh, dw) = (window.dilations[0], window.dilations[1]);
    let (kh, kw) = (window.kernel[0], window.kernel[1]);
    if oh == 0
        || ow == 0
        || (oh - 1) * sh + (kh - 1) * dh >= h
        || (ow - 1) * sw + (kw - 1) * dw >= wd
    {
        bail!("window does not fit the padded input {:?}", x.dims());
    }
    let data = x.flatten_all()?.to_vec1::<T>()?;
    let l = oh * ow;
    let width = n * l;
    let mut cols = vec![T::from_f64(0.0); c * kh * kw * width];
    for (row, dst_row) in cols.chunks_exact_mut(width).enumerate() {
        let (ci, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
        for b in 0..n {
            let plane = &data[(b * c + ci) * h * wd..(b * c + ci + 1) * h * wd];
            for y in 0..oh {
                let src = &plane[(y * sh + i * dh) * wd + j * dw..];
                let dst = &mut dst_row[b * l + y * ow..b * l + (y + 1) * ow];
                if sw == 1 {
                    dst.copy_from_slice(&src[..ow]);
                } else {
                    dst.iter_mut()
                        .enumerate()
                        .for_each(|(x, d)| *d = src[x * sw]);
                }
            }
        }
    }
    Ok(Tensor::from_vec(cols, (c * kh * kw, width), x.device())?)
}

/// Adds a per-channel bias `[M]` to `[N, M, ...]`.
fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(y) };
    let m = y.dim(1)?;
    if b.elem_count() != m {
        bail!("bias has {} elements, expected {m}", b.elem_count());
    }
    let mut shape = vec![1; y.rank()];
    shape[1] = m;
    Ok(y.broadcast_add(&b.to_dtype(y.dtype())?.reshape(shape)?)?)
}

/// Reads `group`.
fn groups(node: &NodeProto) -> Result<usize> {
    let g = node.int_or("group", 1)?;
    if !(1..=1 << 24).contains(&g) {
        bail!("group must be positive, got {g}");
    }
    Ok(g as usize)
}

/// X and W of a float (transposed) convolution, checked, with its window of `n` spatial axes.
fn float_operands<'a>(c: &'a OpCtx) -> Result<(&'a Value, &'a Value, usize, Window)> {
    let (x, w) = (c.input(0)?, c.input(1)?);
    if !x.dtype().is_float() || x.dtype() != w.dtype() {
        bail!(
            "expects float X and W of one type, got {} and {}",
            x.dtype(),
            w.dtype()
        );
    }
    let n = x.rank().saturating_sub(2);
    let window = Window::from_node(c.node, n, w.shape().get(2..))?;
    Ok((x, w, n, window))
}

fn conv(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, w, _, window) = float_operands(c)?;
    let bias = c.opt_input(2).map(Value::tensor);
    let y = conv_nd(x.tensor(), w.tensor(), bias, &window, groups(c.node)?)?;
    Ok(vec![Value::new(y, x.dtype())?])
}

/// Attributes of `ConvTranspose` beyond the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransposeAttrs {
    /// `output_padding` per spatial axis.
    pub output_padding: Vec<usize>,
    /// `output_shape` (spatial part), when given.
    pub output_shape: Option<Vec<usize>>,
}

impl TransposeAttrs {
    /// Reads `output_padding` and `output_shape` for `n` spatial axes.
    pub fn from_node(node: &NodeProto, n: usize) -> Result<Self> {
        let output_padding = match node.ints("output_padding")? {
            Some(v) if v.len() != n || v.iter().any(|&p| p < 0) => {
                bail!("output_padding {v:?} does not fit {n} spatial axes")
            }
            Some(v) => v.iter().map(|&p| p as usize).collect(),
            None => vec![0; n],
        };
        let output_shape = match node.ints("output_shape")? {
            Some(v) if v.len() < n || v.iter().any(|&p| p < 0) => {
                bail!("output_shape {v:?} does not fit {n} spatial axes")
            }
            Some(v) => Some(v[v.len() - n..].iter().map(|&p| p as usize).collect()),
            None => None,
        };
        Ok(TransposeAttrs {
            output_padding,
            output_shape,
        })
    }

    /// Signed (begin, end) cropping of the unpadded transposed convolution per axis, whose
    /// full size is `(input - 1) * stride + extent`.
    pub fn crops(&self, w: &Window, input: &[usize]) -> Vec<(i64, i64)> {
        (0..input.len())
            .map(|i| {
                let full = ((input[i] as i64 - 1) * w.strides[i] as i64) + w.extent(i) as i64;
                let target = match (&self.output_shape, w.auto_pad) {
                    (Some(shape), _) => Some(shape[i] as i64),
                    (None, AutoPad::SameUpper | AutoPad::SameLower) => {
                        Some((input[i] * w.strides[i]) as i64)
                    }
                    _ => None,
                };
                let op = self.output_padding[i] as i64;
                match (target, w.auto_pad) {
                    (Some(t), AutoPad::SameUpper) => AutoPad::SameUpper.split(full + op - t),
                    (Some(t), _) => AutoPad::SameLower.split(full + op - t),
                    (None, AutoPad::Valid) => (0, 0),
                    (None, _) => (w.pads_begin[i] as i64, w.pads_end[i] as i64),
                }
            })
            .collect()
    }
}

/// Runs an N-D (1-D, 2-D or 3-D) float transposed convolution as ONNX `ConvTranspose`
/// defines it: `x` is `[N, C, d1..dn]`, `w` is `[C, M / groups, k1..kn]`, `bias` is `[M]`.
pub fn conv_transpose_nd(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    window: &Window,
    attrs: &TransposeAttrs,
    groups: usize,
) -> Result<Tensor> {
    let n = check_operands(x, w, groups)?;
    if w.dims()[2..] != window.kernel[..] || w.dim(0)? != x.dim(1)? {
        bail!(
            "weight {:?} does not match kernel {:?} and input",
            w.dims(),
            window.kernel
        );
    }
    let input = &x.dims()[2..];
    let crops = attrs.crops(window, input);
    let mut dims = vec![x.dim(0)?, w.dim(1)? * groups];
    for (i, &(b, e)) in crops.iter().enumerate() {
        let full = (input[i] - 1) * window.strides[i] + window.extent(i);
        let len = full as i64 + attrs.output_padding[i] as i64 - b - e;
        if len < 1 {
            bail!("transposed convolution output size {len} on spatial axis {i} is invalid");
        }
        dims.push(full.max(len as usize));
    }
    check_size(&dims, x.dtype())?;
    let mut y = grouped(x, w, groups, |x, w| {
        transpose_full(x, w, &window.strides, &window.dilations[..n])
    })?;
    for (i, &(b, e)) in crops.iter().enumerate() {
        let len = y.dim(i + 2)? as i64 + attrs.output_padding[i] as i64 - b - e;
        y = crop(&y, i + 2, b, len as usize)?;
    }
    add_bias(y, bias)
}

/// Applies `f` per channel group (input channels of `x`, dimension 0 of `w`), concatenating
/// the results along channels.
fn grouped(
    x: &Tensor,
    w: &Tensor,
    groups: usize,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if groups == 1 {
        return f(x, w);
    }
    let xs = x.chunk(groups, 1)?;
    let ws = w.chunk(groups, 0)?;
    let parts = xs
        .iter()
        .zip(&ws)
        .map(|(x, w)| f(x, w))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

/// The unpadded transposed convolution: size `(input - 1) * stride + extent` per axis.
fn transpose_full(
    x: &Tensor,
    w: &Tensor,
    strides: &[usize],
    dilations: &[usize],
) -> Result<Tensor> {
    match strides.len() {
        1 => Ok(x.conv_transpose1d(w, 0, 0, strides[0], dilations[0], 1)?),
        2 => transpose2d_any(x, w, strides, dilations),
        _ => transpose3d(x, w, strides, dilations),
    }
}

/// 2-D transposed convolution with per-axis strides (zero-stuffed input) and dilations
/// (zero-dilated kernel).
fn transpose2d_any(
    x: &Tensor,
    w: &Tensor,
    strides: &[usize],
    dilations: &[usize],
) -> Result<Tensor> {
    let (w, d) = if all_equal(dilations) {
        (w.clone(), dilations[0])
    } else {
        (dilate(&dilate(w, 2, dilations[0])?, 3, dilations[1])?, 1)
    };
    let (x, s) = if all_equal(strides) {
        (x.clone(), strides[0])
    } else {
        (dilate(&dilate(x, 2, strides[0])?, 3, strides[1])?, 1)
    };
    Ok(x.contiguous()?
        .conv_transpose2d(&w.contiguous()?, 0, 0, s, d)?)
}

/// 3-D transposed convolution: per kernel depth a 2-D transposed convolution with the input
/// depth folded into the batch, spread along depth by the stride and shifted by the tap.
fn transpose3d(x: &Tensor, w: &Tensor, strides: &[usize], dilations: &[usize]) -> Result<Tensor> {
    let (n, c, depth, h, wd) = x.dims5()?;
    let kd = w.dim(2)?;
    let xs = x.permute((0, 2, 1, 3, 4))?.reshape((n * depth, c, h, wd))?;
    let full_d = (depth - 1) * strides[0] + dilations[0] * (kd - 1) + 1;
    let mut acc: Option<Tensor> = None;
    for k in 0..kd {
        let wk = w.narrow(2, k, 1)?.squeeze(2)?;
        let y = transpose2d_any(&xs, &wk, &strides[1..], &dilations[1..])?;
        let (_, m, oh, ow) = y.dims4()?;
        let y = y.reshape((n, depth, m, oh, ow))?.permute((0, 2, 1, 3, 4))?;
        let y = dilate(&y, 2, strides[0])?;
        let before = k * dilations[0];
        let after = full_d - before - y.dim(2)?;
        let y = y.pad_with_zeros(2, before, after)?;
        acc = Some(match acc {
            Some(a) => (a + y)?,
            None => y,
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => bail!("empty kernel"),
    }
}

/// `len` elements of `axis` starting at signed `begin`; positions outside are zeros.
fn crop(t: &Tensor, axis: usize, begin: i64, len: usize) -> Result<Tensor> {
    let size = t.dim(axis)? as i64;
    let front = (-begin).max(0) as usize;
    let back = (begin + len as i64 - size).max(0) as usize;
    let padded = t.pad_with_zeros(axis, front, back)?;
    Ok(padded.narrow(axis, (begin + front as i64) as usize, len)?)
}

fn conv_transpose(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, w, n, window) = float_operands(c)?;
    let attrs = TransposeAttrs::from_node(c.node, n)?;
    let bias = c.opt_input(2).map(Value::tensor);
    let y = conv_transpose_nd(
        x.tensor(),
        w.tensor(),
        bias,
        &window,
        &attrs,
        groups(c.node)?,
    )?;
    Ok(vec![Value::new(y, x.dtype())?])
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use candle_core::Device;
    use whittle_ir::attr::make;
    use whittle_ir::proto::{
        AttributeProto, GraphProto, ModelProto, OperatorSetIdProto, ValueInfoProto,
    };
    use whittle_ir::Model;

    use super::*;
    use crate::executor::Executor;

    /// Runs one node of the default domain (opset 19) on `inputs`, returning `outputs` values.
    pub(crate) fn run_node(
        op: &str,
        attrs: Vec<AttributeProto>,
        inputs: Vec<Value>,
        outputs: usize,
    ) -> Result<Vec<Value>> {
        let ins: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}")).collect();
        let outs: Vec<String> = (0..outputs).map(|i| format!("out{i}")).collect();
        let info = |n: &String| ValueInfoProto {
            name: n.clone(),
            ..Default::default()
        };
        let node = NodeProto {
            op_type: op.into(),
            input: ins.clone(),
            output: outs.clone(),
            attribute: attrs,
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![node],
            input: ins.iter().map(info).collect(),
            output: outs.iter().map(info).collect(),
            ..Default::default()
        };
        let model = Model::new(ModelProto {
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 19,
            }],
            ..Default::default()
        });
        let feeds: HashMap<String, Value> = ins.into_iter().zip(inputs).collect();
        let mut res = Executor::new(&model)?.run(feeds)?;
        outs.iter()
            .map(|n| {
                res.remove(n)
                    .ok_or_else(|| crate::error::ExecError::msg("missing"))
            })
            .collect()
    }

    /// A float32 value of `shape` holding `0, 1, 2, ...`.
    pub(crate) fn arange(shape: &[usize]) -> Value {
        let n: usize = shape.iter().product();
        let t = Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap();
        Value::f32(t.reshape(shape).unwrap()).unwrap()
    }

    /// A float32 value of `shape` holding ones.
    pub(crate) fn ones(shape: &[usize]) -> Value {
        Value::f32(Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()).unwrap()
    }

    /// Every element of a value as f32.
    pub(crate) fn flat(v: &Value) -> Vec<f32> {
        v.to_f64_vec().unwrap().iter().map(|&x| x as f32).collect()
    }

    fn window(attrs: Vec<AttributeProto>, n: usize) -> Window {
        let node = NodeProto {
            attribute: attrs,
            ..Default::default()
        };
        Window::from_node(&node, n, Some(&vec![3; n])).unwrap()
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_at_the_requested_end() {
        let strides = make::ints("strides", &[2]);
        let upper = window(
            vec![make::string("auto_pad", "SAME_UPPER"), strides.clone()],
            1,
        );
        let r = upper.resolve(&[4], false).unwrap();
        assert_eq!((r.begin, r.end, r.out), (vec![0], vec![1], vec![2]));
        let lower = window(
            vec![make::string("auto_pad", "SAME_LOWER"), strides.clone()],
            1,
        );
        let r = lower.resolve(&[4], false).unwrap();
        assert_eq!((r.begin, r.end, r.out), (vec![1], vec![0], vec![2]));
        let valid = window(vec![make::string("auto_pad", "VALID"), strides], 1);
        assert_eq!(valid.resolve(&[5], false).unwrap().out, vec![2]);
    }

    #[test]
    fn explicit_pads_and_dilations_set_the_output_size() {
        let w = window(
            vec![
                make::ints("pads", &[1, 0, 2, 0]),
                make::ints("dilations", &[2, 1]),
            ],
            2,
        );
        // (5 + 1 + 2 - 5) / 1 + 1 = 4 rows; (5 - 3) + 1 = 3 columns.
        assert_eq!(w.resolve(&[5, 5], false).unwrap().out, vec![4, 3]);
        assert!(w.resolve(&[1, 1], false).is_err());
        let bad = NodeProto {
            attribute: vec![make::ints("pads", &[1, 1])],
            ..Default::default()
        };
        assert!(Window::from_node(&bad, 2, Some(&[3, 3])).is_err());
    }

    #[test]
    fn conv_matches_the_onnx_examples() {
        // ONNX Conv examples: 5x5 (and 7x5) ramps with a 3x3 kernel of ones.
        let y = run_node(
            "Conv",
            vec![make::ints("pads", &[1, 1, 1, 1])],
            vec![arange(&[1, 1, 5, 5]), ones(&[1, 1, 3, 3])],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 5, 5]);
        assert_eq!(flat(&y[0])[..5], [12.0, 21.0, 27.0, 33.0, 24.0]);
        let attrs = vec![
            make::ints("pads", &[1, 0, 1, 0]),
            make::ints("strides", &[2, 2]),
        ];
        let y = run_node(
            "Conv",
            attrs,
            vec![arange(&[1, 1, 7, 5]), ones(&[1, 1, 3, 3])],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 4, 2]);
        assert_eq!(
            flat(&y[0]),
            [21.0, 33.0, 99.0, 117.0, 189.0, 207.0, 171.0, 183.0]
        );
    }

    #[test]
    fn conv3d_sums_every_tap() {
        // x = 9d + 3h + w; a 2x2x2 window of ones sums to 8 (9d + 3h + w) + 52.
        let y = run_node(
            "Conv",
            vec![],
            vec![arange(&[1, 1, 3, 3, 3]), ones(&[1, 1, 2, 2, 2])],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 2, 2, 2]);
        assert_eq!(
            flat(&y[0]),
            [52.0, 60.0, 76.0, 84.0, 124.0, 132.0, 148.0, 156.0]
        );
    }

    #[test]
    fn depthwise_matches_grouped_gemm() {
        let x = arange(&[1, 3, 6, 5]).tensor().affine(0.1, -1.0).unwrap();
        let w = arange(&[3, 1, 3, 3]).tensor().affine(0.05, -0.5).unwrap();
        let win = window(
            vec![
                make::ints("strides", &[2, 1]),
                make::ints("pads", &[1, 0, 1, 2]),
            ],
            2,
        );
        let fast = conv_nd(&x, &w, None, &win, 3).unwrap();
        let r = win.resolve(&[6, 5], false).unwrap();
        let padded = pad_spatial(&x, &r.begin, &r.end, 0.0).unwrap();
        let slow = conv2d_any(&padded, &w, 0, &[2, 1], &[1, 1], 3).unwrap();
        let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn conv_transpose_matches_the_onnx_example() {
        let y = run_node(
            "ConvTranspose",
            vec![],
            vec![arange(&[1, 1, 3, 3]), ones(&[1, 2, 3, 3])],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[1, 2, 5, 5]);
        let first: Vec<f32> = flat(&y[0])[..10].to_vec();
        assert_eq!(first, [0.0, 1.0, 3.0, 3.0, 2.0, 3.0, 8.0, 15.0, 12.0, 7.0]);
    }

    #[test]
    fn output_shape_decides_transposed_padding() {
        let node = NodeProto {
            attribute: vec![
                make::ints("output_shape", &[10, 8]),
                make::ints("strides", &[3, 2]),
            ],
            ..Default::default()
        };
        let w = Window::from_node(&node, 2, Some(&[3, 3])).unwrap();
        let attrs = TransposeAttrs::from_node(&node, 2).unwrap();
        // Full sizes 9 and 7: one extra row and column of zeros at the end.
        assert_eq!(attrs.crops(&w, &[3, 3]), vec![(0, -1), (0, -1)]);
    }
}
