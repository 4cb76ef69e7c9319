//! 2-D convolution (NCHW) forward and backward: 1x1 convolutions as direct GEMMs, depthwise
//! ones with a direct kernel, the rest through im2col + GEMM; col2im for the input gradient
//! and ConvTranspose.
//!
//! Work is split over (image, group) pairs when there are at least as many as threads (each
//! task runs a single-threaded GEMM), otherwise the pairs run in turn on a parallel GEMM.

use super::activation::Activation;
use super::gemm::{gemm_with, Bias, Epilogue, MatRef, Threads};
use super::{check_len, depthwise, direct_conv, dispatch, error, Result};
use rayon::prelude::*;

/// The geometry of a 2-D convolution: input `[n, c_in, h, w]`, weights
/// `[c_out, c_in / groups, kh, kw]`, output `[n, c_out, out_h, out_w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Strides (height, width).
    pub stride: [usize; 2],
    /// Zero padding: top, left, bottom, right (ONNX `pads` order for 2-D).
    pub pads: [usize; 4],
    /// Dilations (height, width).
    pub dilation: [usize; 2],
    /// Groups: `c_in` and `c_out` both divide by it.
    pub groups: usize,
}

impl Conv2dShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        out_size(
            self.h,
            self.pads[0] + self.pads[2],
            self.kh,
            self.dilation[0],
            self.stride[0],
        )
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        out_size(
            self.w,
            self.pads[1] + self.pads[3],
            self.kw,
            self.dilation[1],
            self.stride[1],
        )
    }

    /// Checks that the geometry makes sense: positive strides, dilations, kernel and groups,
    /// channels divisible by the groups, and the dilated kernel within the padded input.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(error("conv2d", m));
        if self.stride.contains(&0) || self.dilation.contains(&0) || self.kh == 0 || self.kw == 0 {
            return fail(format!(
                "{self:?}: strides, dilations and kernel sizes must be positive"
            ));
        }
        if self.groups == 0
            || !self.c_in.is_multiple_of(self.groups)
            || !self.c_out.is_multiple_of(self.groups)
        {
            return fail(format!(
                "{} input and {} output channels do not divide into {} groups",
                self.c_in, self.c_out, self.groups
            ));
        }
        let span_h = self.dilation[0] * (self.kh - 1) + 1;
        let span_w = self.dilation[1] * (self.kw - 1) + 1;
        if self.h + self.pads[0] + self.pads[2] < span_h
            || self.w + self.pads[1] + self.pads[3] < span_w
        {
            return fail(format!(
                "the {span_h}x{span_w} dilated kernel is larger than the padded {}x{} input",
                self.h, self.w
            ));
        }
        Ok(())
    }

    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c_in / self.groups
    }

    /// Output channels per group.
    fn mg(&self) -> usize {
        self.c_out / self.groups
    }

    /// Rows of the im2col matrix of one group: `c_in / groups * kh * kw`.
    fn col_rows(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output positions per channel.
    fn out_plane(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Whether the convolution reads its input as is (1x1 kernel, stride 1, no padding), so
    /// the input of a group already is its im2col matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pads == [0; 4]
    }

    /// Whether every group has one input and one output channel.
    fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.groups == self.c_out
    }

    /// Checks the geometry and the lengths of input, weights and output.
    fn check(&self, kernel: &'static str, x: usize, w: usize, y: usize) -> Result<()> {
        self.validate().map_err(|e| error(kernel, e.message))?;
        check_len(kernel, "input", self.n * self.c_in * self.h * self.w, x)?;
        check_len(kernel, "weights", self.c_out * self.col_rows(), w)?;
        check_len(kernel, "output", self.n * self.c_out * self.out_plane(), y)
    }
}

/// `(size + pads - dilation * (kernel - 1) - 1) / stride + 1`, 0 where the kernel does not fit.
fn out_size(size: usize, pads: usize, kernel: usize, dilation: usize, stride: usize) -> usize {
    let span = dilation * (kernel.max(1) - 1) + 1;
    (size + pads)
        .checked_sub(span)
        .map_or(0, |v| v / stride.max(1) + 1)
}

/// The output positions `o` in `0..out` whose input index `o * stride + offset - pad` falls in
/// `0..size`, as a range.
pub(super) fn valid_range(
    out: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    size: usize,
) -> std::ops::Range<usize> {
    // o * stride + offset >= pad  <=>  o >= ceil((pad - offset) / stride)
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    // o * stride + offset - pad < size  <=>  o < ceil((size + pad - offset) / stride)
    let hi = (size + pad)
        .saturating_sub(offset)
        .div_ceil(stride)
        .min(out);
    lo.min(hi)..hi
}

/// Whether (image, group) pairs should run as parallel tasks rather than in turn.
fn split_tasks(tasks: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && tasks >= threads
}

/// The GEMM's threads inside a task (one) or for the whole pool.
fn inner_threads(split: bool) -> Threads {
    if split {
        Threads::One
    } else {
        Threads::current()
    }
}

/// Runs `task(t, block, scratch)` for every `block` of `out` (`out.len() / block_len` of them),
/// in parallel when there are enough, each with a scratch buffer of `scratch_len` floats.
fn for_each_task(
    out: &mut [f32],
    block_len: usize,
    scratch_len: usize,
    task: impl Fn(usize, &mut [f32], &mut [f32], Threads) -> Result<()> + Sync + Send,
) -> Result<()> {
    if block_len == 0 {
        return Ok(());
    }
    let split = split_tasks(out.len() / block_len);
    let par = inner_threads(split);
    if split {
        out.par_chunks_mut(block_len)
            .enumerate()
            .try_for_each(|(t, b)| with_scratch(scratch_len, |scratch| task(t, b, scratch, par)))
    } else {
        with_scratch(scratch_len, |scratch| {
            out.chunks_mut(block_len)
                .enumerate()
                .try_for_each(|(t, b)| task(t, b, scratch, par))
        })
    }
}

thread_local! {
    /// Each thread's im2col / GEMM scratch, kept from call to call (as large as the largest
    /// asked for on that thread).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch buffer, whose contents are left over
/// from earlier calls (every user overwrites it: im2col writes each element, the GEMMs into
/// it have `beta == 0`). Fresh zeroed buffers per call cost page clearing and memset (about
/// 8% of a 2-thread zoo:cnn step with `clear_page_erms` and memset together). A nested call
/// on the same thread (rayon work stealing inside `f`) gets a buffer of its own.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|cell| cell.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|cell| {
        let mut kept = cell.borrow_mut();
        if kept.len() < buf.len() {
            *kept = buf;
        }
    });
    out
}

/// `y = act(conv(x, w) + bias)`: `x` `[n, c_in, h, w]`, `w` `[c_out, c_in / groups, kh, kw]`,
/// `bias` `[c_out]`, `y` `[n, c_out, out_h, out_w]`.
pub fn conv2d(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<()> {
    s.check("conv2d", x.len(), w.len(), y.len())?;
    if let Some(b) = bias {
        check_len("conv2d", "bias", s.c_out, b.len())?;
    }
    if y.is_empty() {
        return Ok(());
    }
    if s.is_depthwise() && !s.is_pointwise() {
        depthwise::forward(s, x, w, bias, act, y);
        return Ok(());
    }
    if direct_conv::applies(s) {
        direct_conv::forward(s, x, w, bias, act, y);
        return Ok(());
    }
    let (cg, mg, k, p) = (s.cg(), s.mg(), s.col_rows(), s.out_plane());
    let scratch = if s.is_pointwise() { 0 } else { k * p };
    for_each_task(y, mg * p, scratch, |t, yb, col, par| {
        let (img, g) = (t / s.groups, t % s.groups);
        let xg = &x[(img * s.c_in + g * cg) * s.h * s.w..][..cg * s.h * s.w];
        let cols = if s.is_pointwise() {
            xg
        } else {
            im2col_with(s, xg, col, par == Threads::Pool);
            &*col
        };
        let ep = Epilogue {
            bias: bias.map_or(Bias::None, |b| Bias::PerRow(&b[g * mg..(g + 1) * mg])),
            activation: act,
        };
        let wg = MatRef::row_major(&w[g * mg * k..(g + 1) * mg * k], mg, k)?;
        gemm_with(par, wg, MatRef::row_major(cols, k, p)?, yb, 1.0, 0.0, &ep)
    })
}

/// The im2col matrix of one image and one group: `image_group` is `[c_in / groups, h, w]`,
/// `col` is `[c_in / groups * kh * kw, out_h * out_w]` (row `(c * kh + i) * kw + j` holds
/// input channel `c` shifted by kernel tap `(i, j)`, zeros where it reads the padding).
pub fn im2col(s: &Conv2dShape, image_group: &[f32], col: &mut [f32]) {
    im2col_with(s, image_group, col, rayon::current_num_threads() > 1);
}

/// [`im2col`], parallel over input channels when `parallel` and the matrix is large.
fn im2col_with(s: &Conv2dShape, image_group: &[f32], col: &mut [f32], parallel: bool) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let taps = s.kh * s.kw;
    // Stride 1 with as many output columns as input columns ("same" width): a tap's valid
    // rows are one contiguous shifted copy of the input plane, then the columns that wrapped
    // around a row edge are zeroed, instead of a copy and two fills per output row.
    let flat = s.stride == [1, 1] && s.dilation[1] == 1 && ow == s.w;
    let channel = |c: usize, rows: &mut [f32]| {
        let xc = &image_group[c * s.h * s.w..(c + 1) * s.h * s.w];
        if flat {
            for (tap, plane) in rows.chunks_mut(oh * ow).enumerate() {
                im2col_flat_tap(s, xc, tap, plane);
            }
            return;
        }
        for (tap, row) in rows.chunks_mut(oh * ow).enumerate() {
            let (i, j) = (tap / s.kw, tap % s.kw);
            let valid_r = valid_range(oh, s.stride[0], i * s.dilation[0], s.pads[0], s.h);
            let valid_c = valid_range(ow, s.stride[1], j * s.dilation[1], s.pads[1], s.w);
            for (r, out) in row.chunks_mut(ow).enumerate() {
                if !valid_r.contains(&r) || valid_c.is_empty() {
                    out.fill(0.0);
                    continue;
                }
                let ih = r * s.stride[0] + i * s.dilation[0] - s.pads[0];
                let xrow = &xc[ih * s.w..(ih + 1) * s.w];
                out[..valid_c.start].fill(0.0);
                out[valid_c.end..].fill(0.0);
                let iw0 = valid_c.start * s.stride[1] + j * s.dilation[1] - s.pads[1];
                if s.stride[1] == 1 {
                    out[valid_c.clone()].copy_from_slice(&xrow[iw0..iw0 + valid_c.len()]);
                } else {
                    for (q, o) in out[valid_c.clone()].iter_mut().enumerate() {
                        *o = xrow[iw0 + q * s.stride[1]];
                    }
                }
            }
        }
    };
    let per_channel = taps * oh * ow;
    if per_channel == 0 {
        return;
    }
    if parallel && col.len() >= super::PAR_CHUNK {
        col.par_chunks_mut(per_channel)
            .enumerate()
            .for_each(|(c, rows)| channel(c, rows));
    } else {
        col.chunks_mut(per_channel)
            .enumerate()
            .for_each(|(c, rows)| channel(c, rows));
    }
}

/// One tap's `[out_h, out_w]` plane of the im2col matrix of channel `xc` when the stride is 1,
/// the width dilation 1 and `out_w == w`: output `(r, q)` reads input
/// `(r + i * dilation_h - pad_top, q + j - pad_left)`, so the valid rows are a contiguous run
/// of the input shifted by a constant, except the columns that fall off a row's edge.
fn im2col_flat_tap(s: &Conv2dShape, xc: &[f32], tap: usize, plane: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (i, j) = (tap / s.kw, tap % s.kw);
    let rows = valid_range(oh, 1, i * s.dilation[0], s.pads[0], s.h);
    let cols = valid_range(ow, 1, j, s.pads[1], s.w);
    plane[..rows.start * ow].fill(0.0);
    plane[rows.end * ow..].fill(0.0);
    if rows.is_empty() {
        return;
    }
    let run = &mut plane[rows.start * ow..rows.end * ow];
    if cols.is_empty() {
        run.fill(0.0);
        return;
    }
    // Input index of the run's first element, as a signed offset (it may start before the
    // plane or end after it by less than a row; those elements are edge columns).
    let start = ((rows.start + i * s.dilation[0] - s.pads[0]) * s.w) as isize + j as isize
        - s.pads[1] as isize;
    let lo = (-start).max(0) as usize;
    let hi = (run.len() as isize)
        .min(xc.len() as isize - start)
        .max(lo as isize) as usize;
    run[..lo].fill(0.0);
    run[hi..].fill(0.0);
    let from = (start + lo as isize) as usize;
    run[lo..hi].copy_from_slice(&xc[from..from + (hi - lo)]);
    if cols.start > 0 || cols.end < ow {
        for row in run.chunks_mut(ow) {
            for v in &mut row[..cols.start] {
                *v = 0.0;
            }
            for v in &mut row[cols.end..] {
                *v = 0.0;
            }
        }
    }
}

/// The inverse gather of [`im2col`]: adds every element of `col` back to the input position
/// it was read from (`image_group += col2im(col)`); padding positions are dropped.
pub fn col2im(s: &Conv2dShape, col: &[f32], image_group: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let taps = s.kh * s.kw;
    if oh * ow == 0 {
        return;
    }
    // Each tap's valid output rows and columns depend on the shape alone.
    let ranges: Vec<_> = (0..taps)
        .map(|tap| {
            let (i, j) = (tap / s.kw, tap % s.kw);
            (
                valid_range(oh, s.stride[0], i * s.dilation[0], s.pads[0], s.h),
                valid_range(ow, s.stride[1], j * s.dilation[1], s.pads[1], s.w),
            )
        })
        .collect();
    dispatch(
        #[inline(always)]
        || {
            for (c, xc) in image_group.chunks_mut(s.h * s.w).enumerate().take(s.cg()) {
                for (tap, (valid_r, valid_c)) in ranges.iter().enumerate() {
                    if valid_c.is_empty() {
                        continue;
                    }
                    let (i, j) = (tap / s.kw, tap % s.kw);
                    let row = &col[(c * taps + tap) * oh * ow..][..oh * ow];
                    let iw0 = valid_c.start * s.stride[1] + j * s.dilation[1] - s.pads[1];
                    for r in valid_r.clone() {
                        let ih = r * s.stride[0] + i * s.dilation[0] - s.pads[0];
                        let src = &row[r * ow..(r + 1) * ow][valid_c.clone()];
                        let xrow = &mut xc[ih * s.w..(ih + 1) * s.w];
                        if s.stride[1] == 1 {
                            // Contiguous: a vectorised add of the shifted row.
                            let dst = &mut xrow[iw0..iw0 + src.len()];
                            dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                        } else {
                            for (q, v) in src.iter().enumerate() {
                                xrow[iw0 + q * s.stride[1]] += v;
                            }
                        }
                    }
                }
            }
        },
    );
}

/// The input gradient: `dx = col2im(W_g^T · dy_g)` per image and group (overwrites `dx`).
/// `dy` is `[n, c_out, out_h, out_w]`, `dx` `[n, c_in, h, w]`.
pub fn conv2d_backward_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    s.check("conv2d_backward_input", dx.len(), w.len(), dy.len())?;
    if s.is_depthwise() && !s.is_pointwise() && depthwise::uses_table(s) {
        depthwise::backward_input(s, dy, w, dx);
        return Ok(());
    }
    let (cg, mg, k, p) = (s.cg(), s.mg(), s.col_rows(), s.out_plane());
    let scratch = if s.is_pointwise() { 0 } else { k * p };
    for_each_task(dx, cg * s.h * s.w, scratch, |t, dxb, col, par| {
        let (img, g) = (t / s.groups, t % s.groups);
        let dyg = MatRef::row_major(&dy[(img * s.c_out + g * mg) * p..][..mg * p], mg, p)?;
        let wg = MatRef::row_major(&w[g * mg * k..(g + 1) * mg * k], mg, k)?;
        if s.is_pointwise() {
            return gemm_with(par, wg.t(), dyg, dxb, 1.0, 0.0, &Epilogue::NONE);
        }
        gemm_with(par, wg.t(), dyg, col, 1.0, 0.0, &Epilogue::NONE)?;
        dxb.fill(0.0);
        col2im(s, col, dxb);
        Ok(())
    })
}

/// The weight (and bias) gradient: `dw_g = Σ_n dy_{n,g} · im2col(x_{n,g})^T`,
/// `db[c] = Σ dy[., c, ., .]` (both overwritten). `x` `[n, c_in, h, w]`, `dy`
/// `[n, c_out, out_h, out_w]`, `dw` `[c_out, c_in / groups, kh, kw]`, `db` `[c_out]`.
pub fn conv2d_backward_weight(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    s.check("conv2d_backward_weight", x.len(), dw.len(), dy.len())?;
    let (mg, k, p) = (s.mg(), s.col_rows(), s.out_plane());
    if let Some(db) = db {
        check_len("conv2d_backward_weight", "bias gradient", s.c_out, db.len())?;
        for (c, d) in db.iter_mut().enumerate() {
            *d = (0..s.n)
                .map(|i| dy[(i * s.c_out + c) * p..][..p].iter().sum::<f32>())
                .sum();
        }
    }
    if s.is_depthwise() && !s.is_pointwise() && depthwise::uses_table(s) {
        depthwise::backward_weight(s, x, dy, dw);
        return Ok(());
    }
    let scratch = if s.is_pointwise() { 0 } else { k * p };
    let threads = rayon::current_num_threads();
    if s.groups < threads && s.n >= threads && !dw.is_empty() {
        // Too few groups to share out: each worker sums the terms of a run of images into
        // its own gradient, and the partial gradients are added in worker order.
        let per_worker = s.n.div_ceil(threads);
        let partials = (0..s.n.div_ceil(per_worker))
            .into_par_iter()
            .map(|w| {
                let mut part = vec![0.0f32; dw.len()];
                with_scratch(scratch, |col| {
                    for (g, dwb) in part.chunks_mut(mg * k).enumerate() {
                        for img in w * per_worker..((w + 1) * per_worker).min(s.n) {
                            add_weight_term(s, x, dy, (img, g), dwb, col, Threads::One)?;
                        }
                    }
                    Ok(())
                })?;
                Ok(part)
            })
            .collect::<Result<Vec<_>>>()?;
        dw.fill(0.0);
        for part in partials {
            dw.iter_mut().zip(part).for_each(|(d, v)| *d += v);
        }
        return Ok(());
    }
    // One task per group: its weight gradient is the sum over images.
    for_each_task(dw, mg * k, scratch, |g, dwb, col, par| {
        dwb.fill(0.0);
        (0..s.n).try_for_each(|img| add_weight_term(s, x, dy, (img, g), dwb, col, par))
    })
}

/// Adds image `img`'s term of group `g`'s weight gradient, `dy_{img,g} · im2col(x_{img,g})^T`,
/// to `dwb` (`[c_out / groups, col_rows]`), with `col` as im2col scratch.
fn add_weight_term(
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    (img, g): (usize, usize),
    dwb: &mut [f32],
    col: &mut [f32],
    par: Threads,
) -> Result<()> {
    let (cg, mg, k, p) = (s.cg(), s.mg(), s.col_rows(), s.out_plane());
    let dyg = MatRef::row_major(&dy[(img * s.c_out + g * mg) * p..][..mg * p], mg, p)?;
    let xg = &x[(img * s.c_in + g * cg) * s.h * s.w..][..cg * s.h * s.w];
    let cols = if s.is_pointwise() {
        xg
    } else {
        im2col_with(s, xg, col, par == Threads::Pool);
        &*col
    };
    let colm = MatRef::row_major(cols, k, p)?;
    gemm_with(par, dyg, colm.t(), dwb, 1.0, 1.0, &Epilogue::NONE)
}

/// ConvTranspose as the input gradient of a convolution: `s` describes the convolution whose
/// *input* is this operator's output `y` (`[n, c_in, h, w]`, output padding included in `h`
/// and `w`) and whose output has `x`'s shape; `w` is ConvTranspose's
/// `[c_out, c_in / groups, kh, kw]` weight in `s`'s terms; `bias` has `c_in` values.
pub fn conv_transpose2d(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    conv2d_backward_input(s, x, w, y)?;
    if let Some(b) = bias {
        check_len("conv_transpose2d", "bias", s.c_in, b.len())?;
        for (t, plane) in y.chunks_mut(s.h * s.w).enumerate() {
            let v = b[t % s.c_in];
            plane.iter_mut().for_each(|e| *e += v);
        }
    }
    Ok(())
}
