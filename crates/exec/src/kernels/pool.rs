//! 2-D pooling (NCHW): MaxPool with optional argmax indices, AveragePool, GlobalAveragePool
//! and the backward passes, one plane (image, channel) per rayon task.
//!
//! Every pool walks kernel taps outermost: for a tap, the output positions whose input lies
//! inside the image form one range per row, so the inner loop is a branch-free max or add
//! over a (strided) input row. MaxPool without indices does it in two 1-D passes (rows,
//! then columns).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::{check_len, dispatch, error, lane_sum, Result, PAR_CHUNK};

/// The geometry of a 2-D pool: input `[n, c, h, w]`, output `[n, c, out_h, out_w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Strides (height, width).
    pub stride: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Dilations (height, width).
    pub dilation: [usize; 2],
    /// Round the output size up (ONNX `ceil_mode`): a last partial window is kept when it
    /// starts inside the input or the top/left padding.
    pub ceil_mode: bool,
}

impl Pool2dShape {
    /// Output height.
    pub fn out_h(&self) -> usize {
        self.out_size(0)
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        self.out_size(1)
    }

    fn out_size(&self, axis: usize) -> usize {
        let (size, k) = if axis == 0 {
            (self.h, self.kh)
        } else {
            (self.w, self.kw)
        };
        let (begin, end) = (self.pads[axis], self.pads[axis + 2]);
        let (stride, span) = (
            self.stride[axis].max(1),
            self.dilation[axis] * (k.max(1) - 1) + 1,
        );
        let Some(avail) = (size + begin + end).checked_sub(span) else {
            return 0;
        };
        let mut out = if self.ceil_mode {
            avail.div_ceil(stride)
        } else {
            avail / stride
        } + 1;
        if self.ceil_mode && (out - 1) * stride >= size + begin {
            out -= 1;
        }
        out
    }

    /// Checks positive window, strides and dilations, and the lengths of input and output.
    fn check(&self, kernel: &'static str, x: usize, y: usize) -> Result<()> {
        if self.stride.contains(&0) || self.dilation.contains(&0) || self.kh == 0 || self.kw == 0 {
            return Err(error(
                kernel,
                format!("{self:?}: strides, dilations and window sizes must be positive"),
            ));
        }
        check_len(kernel, "input", self.n * self.c * self.h * self.w, x)?;
        check_len(
            kernel,
            "output",
            self.n * self.c * self.out_h() * self.out_w(),
            y,
        )
    }

    /// Output rows (`axis` 0) or columns (1) whose tap `t` reads inside the input, and the
    /// input index of the first of them.
    fn valid(&self, axis: usize, t: usize) -> (Range<usize>, usize) {
        let (out, size) = if axis == 0 {
            (self.out_h(), self.h)
        } else {
            (self.out_w(), self.w)
        };
        let (stride, offset, pad) = (self.stride[axis], t * self.dilation[axis], self.pads[axis]);
        let lo = pad.saturating_sub(offset).div_ceil(stride);
        let hi = (size + pad)
            .saturating_sub(offset)
            .div_ceil(stride)
            .min(out);
        let lo = lo.min(hi);
        (lo..hi, (lo * stride + offset).saturating_sub(pad))
    }

    /// Number of taps of the window at output index `o` along `axis` that lie inside
    /// `[-pad_begin, size + pad_end)` (with `include_pad`) or inside `[0, size)`.
    fn taps_inside(&self, axis: usize, o: usize, include_pad: bool) -> usize {
        let (size, k) = if axis == 0 {
            (self.h, self.kh)
        } else {
            (self.w, self.kw)
        };
        let (begin, end) = (self.pads[axis], self.pads[axis + 2]);
        let (lo, hi) = if include_pad {
            (0, size + begin + end)
        } else {
            (begin, size + begin)
        };
        (0..k)
            .map(|t| o * self.stride[axis] + t * self.dilation[axis])
            .filter(|p| (lo..hi).contains(p))
            .count()
    }
}

/// Runs `f(plane_index, plane)` over the planes of `y` (`plane` elements each), in parallel
/// when the output is large and the pool has several threads.
fn for_planes(y: &mut [f32], plane: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if plane == 0 {
        return;
    }
    if rayon::current_num_threads() > 1 && y.len() >= PAR_CHUNK / 4 {
        y.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(t, yp)| f(t, yp));
    } else {
        y.chunks_mut(plane).enumerate().for_each(|(t, yp)| f(t, yp));
    }
}

/// The window's taps that land inside the input, per axis: for each tap, the output
/// indices it reaches and the input index of the first of them ([`Pool2dShape::valid`]),
/// computed once per call (per plane, their divisions were most of a pool over 10x10
/// planes, YOLOv8n's SPPF).
struct Taps {
    rows: Vec<(Range<usize>, usize)>,
    cols: Vec<(Range<usize>, usize)>,
}

impl Taps {
    fn new(s: &Pool2dShape) -> Self {
        Taps {
            rows: (0..s.kh).map(|i| s.valid(0, i)).collect(),
            cols: (0..s.kw).map(|j| s.valid(1, j)).collect(),
        }
    }

    /// Calls `f(out_row, out_cols, in_row_start, in_col_start)` for every tap and output
    /// row where the tap lands inside the input.
    #[inline(always)]
    fn for_each(&self, s: &Pool2dShape, mut f: impl FnMut(usize, Range<usize>, usize, usize)) {
        for (rows, ih0) in &self.rows {
            for (cols, iw0) in &self.cols {
                if cols.is_empty() {
                    continue;
                }
                for (k, r) in rows.clone().enumerate() {
                    f(r, cols.clone(), ih0 + k * s.stride[0], *iw0);
                }
            }
        }
    }
}

/// MaxPool: `y` the maximum of each window (padding never wins); `indices`, when given, the
/// position of the first maximum in the flattened input (ONNX `Indices`, storage order 0).
pub fn max_pool2d(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
    indices: Option<&mut [i64]>,
) -> Result<()> {
    s.check("max_pool2d", x.len(), y.len())?;
    let (ow, plane_in, plane_out) = (s.out_w(), s.h * s.w, s.out_h() * s.out_w());
    let (sw, w) = (s.stride[1], s.w);
    let blocks = is_plain_2x2(s);
    let taps = Taps::new(s);
    match indices {
        None => for_planes(y, plane_out, |t, yp| {
            let xp = &x[t * plane_in..(t + 1) * plane_in];
            if blocks {
                #[cfg(target_arch = "x86_64")]
                if super::has_avx512f() {
                    // SAFETY: the CPU has AVX-512F; `xp` holds the plane under `yp`
                    // (`is_plain_2x2`: 2 rows of `2 * ow` columns per output row).
                    return unsafe { max_2x2_avx512(xp, w, ow, yp) };
                }
                return dispatch(
                    #[inline(always)]
                    || max_2x2(xp, w, ow, yp),
                );
            }
            let mut rows = vec![f32::NEG_INFINITY; s.h * ow];
            dispatch(
                #[inline(always)]
                || max_separable(s, &taps, xp, &mut rows, yp),
            )
        }),
        Some(idx) => {
            check_len("max_pool2d", "indices", y.len(), idx.len())?;
            let run = |t: usize, yp: &mut [f32], ip: &mut [i64]| {
                let xp = &x[t * plane_in..(t + 1) * plane_in];
                if blocks {
                    return arg_max_2x2(xp, w, ow, t * plane_in, yp, ip);
                }
                yp.fill(f32::NEG_INFINITY);
                ip.fill(-1);
                taps.for_each(s, |r, cols, ih, iw0| {
                    let xrow = &xp[ih * w..(ih + 1) * w];
                    for (q, (yv, iv)) in yp[r * ow..(r + 1) * ow][cols.clone()]
                        .iter_mut()
                        .zip(&mut ip[r * ow..(r + 1) * ow][cols])
                        .enumerate()
                    {
                        let iw = iw0 + q * sw;
                        let v = xrow[iw];
                        if v > *yv || *iv < 0 {
                            *yv = v;
                            *iv = (t * plane_in + ih * w + iw) as i64;
                        }
                    }
                });
            };
            if plane_out == 0 {
                return Ok(());
            }
            if rayon::current_num_threads() > 1 && y.len() >= PAR_CHUNK / 4 {
                y.par_chunks_mut(plane_out)
                    .zip(idx.par_chunks_mut(plane_out))
                    .enumerate()
                    .for_each(|(t, (yp, ip))| run(t, yp, ip));
            } else {
                y.chunks_mut(plane_out)
                    .zip(idx.chunks_mut(plane_out))
                    .enumerate()
                    .for_each(|(t, (yp, ip))| run(t, yp, ip));
            }
        }
    }
    Ok(())
}

/// Whether every window of `s` is a whole 2x2 block at stride 2 (no padding, dilation or
/// partial last window): the common CNN pool, which runs on the block loops below (the
/// tap-outermost walk was 9% of a zoo:cnn training step).
fn is_plain_2x2(s: &Pool2dShape) -> bool {
    s.kh == 2
        && s.kw == 2
        && s.stride == [2, 2]
        && s.dilation == [1, 1]
        && s.pads == [0; 4]
        && 2 * s.out_h() <= s.h
        && 2 * s.out_w() <= s.w
}

/// The two input rows under output row `r` of a 2x2 block pool, cut to `2 * ow` columns.
#[inline(always)]
fn block_rows(xp: &[f32], w: usize, ow: usize, r: usize) -> (&[f32], &[f32]) {
    let top = 2 * r * w;
    (&xp[top..top + 2 * ow], &xp[top + w..top + w + 2 * ow])
}

/// [`max_pool2d`] of one plane in 2x2 blocks (the same `max` chain from minus infinity as
/// the tap walk, so NaN is treated alike).
#[inline(always)]
fn max_2x2(xp: &[f32], w: usize, ow: usize, yp: &mut [f32]) {
    for (r, yrow) in yp.chunks_exact_mut(ow).enumerate() {
        let (a, b) = block_rows(xp, w, ow, r);
        for ((yv, a), b) in yrow
            .iter_mut()
            .zip(a.chunks_exact(2))
            .zip(b.chunks_exact(2))
        {
            *yv = f32::NEG_INFINITY.max(a[0]).max(a[1]).max(b[0]).max(b[1]);
        }
    }
}

/// [`max_2x2`] with AVX-512: up to 16 outputs of a row at a time, the two input rows' maxima
/// paired up by two lane permutations (zoo:cnn's two pools at b32: 0.104 -> 0.060 ms and
/// 0.097 -> 0.066 ms against the auto-vectorised loop).
/// Each row max starts from minus infinity and a NaN operand gives way to the other, as in
/// `f32::max`'s chain, so the results are the same.
///
/// # Safety
/// The CPU has AVX-512F, and `xp` has `2 * ow` columns of the two rows under each of the
/// `yp.len() / ow` output rows (rows `w` floats apart).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_2x2_avx512(xp: &[f32], w: usize, ow: usize, yp: &mut [f32]) {
    use std::arch::x86_64::*;
    let lanes = |n: usize| ((1u32 << n) - 1) as u16;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let low = _mm512_set1_ps(f32::NEG_INFINITY);
    for (r, yrow) in yp.chunks_exact_mut(ow).enumerate() {
        let (a, b) = block_rows(xp, w, ow, r);
        for q0 in (0..ow).step_by(16) {
            let n = (ow - q0).min(16);
            let (m0, m1) = (lanes((2 * n).min(16)), lanes((2 * n).saturating_sub(16)));
            // Both halves read inside `a` and `b` (2 * ow long) by their masks.
            let (pa, pb) = (a.as_ptr().add(2 * q0), b.as_ptr().add(2 * q0));
            let half = |m: u16, off: usize| {
                let top = _mm512_max_ps(_mm512_maskz_loadu_ps(m, pa.add(off)), low);
                _mm512_max_ps(_mm512_maskz_loadu_ps(m, pb.add(off)), top)
            };
            let (t0, t1) = (half(m0, 0), half(m1, 16));
            let pairs = _mm512_max_ps(
                _mm512_permutex2var_ps(t0, odd, t1),
                _mm512_permutex2var_ps(t0, even, t1),
            );
            _mm512_mask_storeu_ps(yrow.as_mut_ptr().add(q0), lanes(n), pairs);
        }
    }
}

/// [`max_pool2d`] with indices of one plane in 2x2 blocks: the first tap (row-major) holding
/// the maximum wins, as in the tap walk; `base` is the plane's flat input offset.
fn arg_max_2x2(xp: &[f32], w: usize, ow: usize, base: usize, yp: &mut [f32], ip: &mut [i64]) {
    for (r, (yrow, irow)) in yp
        .chunks_exact_mut(ow)
        .zip(ip.chunks_exact_mut(ow))
        .enumerate()
    {
        let (a, b) = block_rows(xp, w, ow, r);
        let row_base = base + 2 * r * w;
        for (q, (yv, iv)) in yrow.iter_mut().zip(irow.iter_mut()).enumerate() {
            let taps = [
                (a[2 * q], 0),
                (a[2 * q + 1], 1),
                (b[2 * q], w),
                (b[2 * q + 1], w + 1),
            ];
            let (mut best, mut at) = taps[0];
            for &(v, k) in &taps[1..] {
                if v > best {
                    (best, at) = (v, k);
                }
            }
            *yv = best;
            *iv = (row_base + 2 * q + at) as i64;
        }
    }
}

/// [`max_pool2d`] of one plane in two 1-D passes (a maximum is separable): each input row's
/// maxima over the window's columns into `rows` (`h x out_w`, filled with minus infinity),
/// then each output row the maximum of its window's rows there, `kh + kw` taps per output
/// instead of `kh * kw`. The same `max` from minus infinity as the tap walk, so NaN is
/// skipped alike.
#[inline(always)]
fn max_separable(s: &Pool2dShape, taps: &Taps, xp: &[f32], rows: &mut [f32], yp: &mut [f32]) {
    let (w, ow, sw, sh) = (s.w, s.out_w(), s.stride[1], s.stride[0]);
    // An empty plane (w = 0) has no rows to read: every output stays minus infinity.
    for (xrow, trow) in xp
        .chunks_exact(w.max(1))
        .zip(rows.chunks_exact_mut(ow.max(1)))
    {
        for (cols, iw0) in &taps.cols {
            let trow = &mut trow[cols.clone()];
            if sw == 1 {
                for (t, x) in trow.iter_mut().zip(&xrow[*iw0..]) {
                    *t = t.max(*x);
                }
            } else {
                for (q, t) in trow.iter_mut().enumerate() {
                    *t = t.max(xrow[iw0 + q * sw]);
                }
            }
        }
    }
    yp.fill(f32::NEG_INFINITY);
    for (out_rows, ih0) in &taps.rows {
        for (k, r) in out_rows.clone().enumerate() {
            let src = &rows[(ih0 + k * sh) * ow..][..ow];
            for (y, t) in yp[r * ow..(r + 1) * ow].iter_mut().zip(src) {
                *y = y.max(*t);
            }
        }
    }
}

/// MaxPool's input gradient: `dx[indices[o]] += dy[o]` (indices from [`max_pool2d`]).
pub fn max_pool2d_backward(
    s: &Pool2dShape,
    dy: &[f32],
    indices: &[i64],
    dx: &mut [f32],
) -> Result<()> {
    s.check("max_pool2d_backward", dx.len(), dy.len())?;
    check_len("max_pool2d_backward", "indices", dy.len(), indices.len())?;
    let (plane_in, plane_out) = (s.h * s.w, s.out_h() * s.out_w());
    // Checked inside the parallel scatter: the first output whose index leaves its plane.
    let first_bad = AtomicUsize::new(usize::MAX);
    for_planes(dx, plane_in, |t, dxp| {
        let range = t * plane_out..(t + 1) * plane_out;
        let taps = dy[range.clone()].iter().zip(&indices[range.clone()]);
        for (o, (&g, &i)) in range.zip(taps) {
            if i < 0 {
                continue;
            }
            match (i as usize).checked_sub(t * plane_in) {
                Some(k) if k < plane_in => dxp[k] += g,
                _ => {
                    first_bad.fetch_min(o, Ordering::Relaxed);
                }
            }
        }
    });
    match first_bad.into_inner() {
        usize::MAX => Ok(()),
        o => Err(error(
            "max_pool2d_backward",
            format!(
                "index {} of output {o} lies outside its own input plane",
                indices[o]
            ),
        )),
    }
}

/// The divisor of every output position of an average pool.
fn divisors(s: &Pool2dShape, include_pad: bool) -> Vec<f32> {
    let rows: Vec<usize> = (0..s.out_h())
        .map(|r| s.taps_inside(0, r, include_pad))
        .collect();
    let cols: Vec<usize> = (0..s.out_w())
        .map(|q| s.taps_inside(1, q, include_pad))
        .collect();
    rows.iter()
        .flat_map(|r| cols.iter().map(move |c| 1.0 / (r * c).max(1) as f32))
        .collect()
}

/// AveragePool: the mean of each window over the taps inside the input, or over the taps
/// inside the padded input with `count_include_pad`.
pub fn avg_pool2d(
    s: &Pool2dShape,
    count_include_pad: bool,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    s.check("avg_pool2d", x.len(), y.len())?;
    let (plane_in, plane_out) = (s.h * s.w, s.out_h() * s.out_w());
    let inv = divisors(s, count_include_pad);
    let (ow, sw, w) = (s.out_w(), s.stride[1], s.w);
    let taps = Taps::new(s);
    for_planes(y, plane_out, |t, yp| {
        let xp = &x[t * plane_in..(t + 1) * plane_in];
        yp.fill(0.0);
        dispatch(
            #[inline(always)]
            || {
                taps.for_each(s, |r, cols, ih, iw0| {
                    let xrow = &xp[ih * w..(ih + 1) * w];
                    let yrow = &mut yp[r * ow..(r + 1) * ow][cols];
                    if sw == 1 {
                        for (yv, xv) in yrow.iter_mut().zip(&xrow[iw0..]) {
                            *yv += xv;
                        }
                    } else {
                        for (q, yv) in yrow.iter_mut().enumerate() {
                            *yv += xrow[iw0 + q * sw];
                        }
                    }
                });
                for (yv, d) in yp.iter_mut().zip(&inv) {
                    *yv *= d;
                }
            },
        )
    });
    Ok(())
}

/// AveragePool's input gradient: each `dy` divided by its window's divisor and added to
/// every input position of the window (`dx +=`).
pub fn avg_pool2d_backward(
    s: &Pool2dShape,
    count_include_pad: bool,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    s.check("avg_pool2d_backward", dx.len(), dy.len())?;
    let (ow, plane_in, plane_out) = (s.out_w(), s.h * s.w, s.out_h() * s.out_w());
    let (sw, w) = (s.stride[1], s.w);
    let inv = divisors(s, count_include_pad);
    let taps = Taps::new(s);
    for_planes(dx, plane_in, |t, dxp| {
        let g: Vec<f32> = dy[t * plane_out..(t + 1) * plane_out]
            .iter()
            .zip(&inv)
            .map(|(a, b)| a * b)
            .collect();
        taps.for_each(s, |r, cols, ih, iw0| {
            let xrow = &mut dxp[ih * w..(ih + 1) * w];
            for (q, gv) in g[r * ow..(r + 1) * ow][cols].iter().enumerate() {
                xrow[iw0 + q * sw] += gv;
            }
        });
    });
    Ok(())
}

/// GlobalAveragePool: `y[p]` is the mean of plane `p` of `x` (`planes` planes of `plane`
/// elements, `planes = N * C`).
pub fn global_avg_pool(planes: usize, plane: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("global_avg_pool", "input", planes * plane, x.len())?;
    check_len("global_avg_pool", "output", planes, y.len())?;
    if plane == 0 {
        y.fill(f32::NAN);
        return Ok(());
    }
    let inv = 1.0 / plane as f32;
    // One `dispatch` per block of planes: at small planes (2x2 squeeze-and-excitation
    // inputs) a call per plane, or a rayon item per plane, cost more than the sums.
    let means = |x: &[f32], y: &mut [f32]| {
        dispatch(
            #[inline(always)]
            || {
                // A loop, not a closure, so it is compiled for `dispatch`'s instructions;
                // sixteen lanes only pay from two vectors of elements.
                for (v, xp) in y.iter_mut().zip(x.chunks(plane)) {
                    let sum = if plane < 32 {
                        xp.iter().sum()
                    } else {
                        lane_sum(xp)
                    };
                    *v = sum * inv;
                }
            },
        )
    };
    if rayon::current_num_threads() > 1 && x.len() >= PAR_CHUNK {
        let per = (PAR_CHUNK / plane).max(1);
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per * plane))
            .for_each(|(y, x)| means(x, y));
    } else {
        means(x, y);
    }
    Ok(())
}
