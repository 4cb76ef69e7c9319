//! Depthwise convolution (one input and one output channel per group) forward and backward
//! as direct loops, without im2col or GEMM.
//!
//! Small output planes (MobileNetV3's 1x1 to 7x7 late stages, where most of a 5x5 kernel's
//! taps read padding) run over a table of the (output, input) position pairs each tap joins,
//! built once per call from the geometry: only the valid multiply-adds remain, no range
//! arithmetic per tap and row. Such a plane holds too few positions to fill a vector, so the
//! table kernels work on channel-minor copies of a block of one image's channels
//! (`[position][channel]`): each pair is one multiply-add over a row of channels, sixteen
//! lanes at a time. Wide planes multiply-add shifted input rows into output rows, which
//! vectorises as it is.

use super::activation::Activation;
use super::conv::{valid_range, Conv2dShape};
use super::layout::transpose;
use super::{dispatch, PAR_CHUNK};
use rayon::prelude::*;

/// Output widths up to this run on the pair table; wider ones on shifted rows, whose vector
/// multiply-adds pay once rows are long. In the mobilenetv3-small batch-1 profile (output
/// planes 7x7 down to 1x1) the depthwise share fell from 37% (rows) to 15% (table).
const TABLE_MAX_WIDTH: usize = 8;

/// Whether the pair table serves this geometry (small output planes); the backward kernels
/// exist only for it (wider depthwise planes take the grouped GEMM path).
pub(super) fn uses_table(s: &Conv2dShape) -> bool {
    s.out_w() <= TABLE_MAX_WIDTH
}

/// For each kernel tap, the (output position, input position) pairs within one plane where
/// the tap lands inside the input.
struct TapPairs {
    /// (tap index in the `kh x kw` kernel, its range in `pairs`), taps without pairs left out.
    spans: Vec<(usize, std::ops::Range<usize>)>,
    /// `[output index in the out_h x out_w plane, input index in the h x w plane]`.
    pairs: Vec<[u32; 2]>,
}

impl TapPairs {
    fn new(s: &Conv2dShape) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let (mut spans, mut pairs) = (Vec::new(), Vec::new());
        for i in 0..s.kh {
            let rows = valid_range(oh, s.stride[0], i * s.dilation[0], s.pads[0], s.h);
            for j in 0..s.kw {
                let cols = valid_range(ow, s.stride[1], j * s.dilation[1], s.pads[1], s.w);
                let start = pairs.len();
                for r in rows.clone() {
                    let ih = r * s.stride[0] + i * s.dilation[0] - s.pads[0];
                    for q in cols.clone() {
                        let iw = q * s.stride[1] + j * s.dilation[1] - s.pads[1];
                        pairs.push([(r * ow + q) as u32, (ih * s.w + iw) as u32]);
                    }
                }
                if pairs.len() > start {
                    spans.push((i * s.kw + j, start..pairs.len()));
                }
            }
        }
        TapPairs { spans, pairs }
    }

    /// The taps with pairs, each with its pairs `[output index, input index]`.
    #[inline(always)]
    fn taps(&self) -> impl Iterator<Item = (usize, &[[u32; 2]])> {
        let pairs = &self.pairs;
        self.spans
            .iter()
            .map(move |(tap, span)| (*tap, &pairs[span.clone()]))
    }
}

/// Lanes of a vector: the channel-minor rows are padded to a multiple of this.
const LANES: usize = 16;

/// Channel-minor rows of a block of `cb` channels: row `k` holds position `k` of each
/// channel's plane (or tap `k` of each channel's kernel), padded to whole vectors (the
/// padding lanes hold values no result reads).
struct Rows<'a> {
    cb: usize,
    data: &'a mut [f32],
}

impl<'a> Rows<'a> {
    /// Row length for `cb` channels.
    fn stride(cb: usize) -> usize {
        cb.next_multiple_of(LANES)
    }

    /// The rows of `planes` (`[cb][plane]`), written into `buf` (`plane` padded rows).
    #[inline(always)]
    fn of(planes: &[f32], plane: usize, buf: &'a mut [f32]) -> Self {
        let cb = planes.len() / plane;
        transpose(planes, plane, cb, plane, buf, Self::stride(cb));
        Rows { cb, data: buf }
    }

    #[inline(always)]
    fn row(&self, k: usize) -> &[f32] {
        let n = Self::stride(self.cb);
        &self.data[k * n..][..n]
    }

    #[inline(always)]
    fn row_mut(&mut self, k: usize) -> &mut [f32] {
        let n = Self::stride(self.cb);
        &mut self.data[k * n..][..n]
    }

    /// Writes the rows back as planes into `planes` (`[cb][plane]`).
    #[inline(always)]
    fn to_planes(&self, planes: &mut [f32]) {
        let n = Self::stride(self.cb);
        transpose(
            self.data,
            n,
            self.data.len() / n,
            self.cb,
            planes,
            planes.len() / self.cb,
        );
    }
}

/// `y += a * b` element by element (lengths a multiple of [`LANES`]): one vector at a time
/// with AVX-512 (LLVM leaves a loop of sixteen lanes scalar), else the plain loop.
#[inline(always)]
fn mul_add(y: &mut [f32], a: &[f32], b: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512f() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { mul_add_avx512(y, a, b) };
    }
    for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
        *y += a * b;
    }
}

/// [`mul_add`] with AVX-512, over the whole vectors of `y` (`a` and `b` as long).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn mul_add_avx512(y: &mut [f32], a: &[f32], b: &[f32]) {
    use std::arch::x86_64::*;
    let n = y.len().min(a.len()).min(b.len()) / LANES * LANES;
    for k in (0..n).step_by(LANES) {
        let (pa, pb) = (a.as_ptr().add(k), b.as_ptr().add(k));
        let prod = _mm512_mul_ps(_mm512_loadu_ps(pa), _mm512_loadu_ps(pb));
        let py = y.as_mut_ptr().add(k);
        _mm512_storeu_ps(py, _mm512_add_ps(_mm512_loadu_ps(py), prod));
    }
}

/// `buf` (grown as needed) cut into consecutive parts of the given lengths.
fn parts<const N: usize>(buf: &mut Vec<f32>, lens: [usize; N]) -> [&mut [f32]; N] {
    let total = lens.iter().sum();
    if buf.len() < total {
        buf.resize(total, 0.0);
    }
    let mut rest = &mut buf[..];
    lens.map(|len| {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        part
    })
}

/// About `c / parts` channels, a multiple of 8 (half a vector), at most `c`.
fn channel_block(c: usize, parts: usize) -> usize {
    c.div_ceil(parts).next_multiple_of(8).min(c)
}

/// Runs `f(img, c0, out, scratch)` over `out` (`[n][c][plane]`) in blocks of one image's
/// channels (`c0..`, `out` their planes) with a scratch buffer per task: image by image on
/// one thread or for small outputs; else runs of whole images, one per thread, when the
/// batch has an image for each thread; else each image's channels in blocks.
fn for_each_block(
    out: &mut [f32],
    c: usize,
    plane: usize,
    f: impl Fn(usize, usize, &mut [f32], &mut Vec<f32>) + Sync,
) {
    let image = c * plane;
    if image == 0 || out.is_empty() {
        return;
    }
    let images = |first: usize, run: &mut [f32]| {
        let mut scratch = Vec::new();
        dispatch(
            #[inline(always)]
            || {
                for (k, o) in run.chunks_mut(image).enumerate() {
                    f(first + k, 0, o, &mut scratch);
                }
            },
        );
    };
    let threads = rayon::current_num_threads();
    let n = out.len() / image;
    if threads == 1 || out.len() < PAR_CHUNK {
        images(0, out);
    } else if n >= threads {
        let per = n.div_ceil(threads);
        out.par_chunks_mut(per * image)
            .enumerate()
            .for_each(|(b, run)| images(b * per, run));
    } else {
        let cb = channel_block(c, 4 * threads);
        out.par_chunks_mut(image).enumerate().for_each(|(img, o)| {
            o.par_chunks_mut(cb * plane).enumerate().for_each(|(b, o)| {
                let mut scratch = Vec::new();
                dispatch(
                    #[inline(always)]
                    || f(img, b * cb, o, &mut scratch),
                );
            })
        });
    }
}

/// Runs `f(t, c, plane)` for every plane `t` of `out` (planes of `plane` elements, `c` its
/// channel among `channels`), then `finish(block)` on each block of planes; blocks run in
/// parallel when the pool has several threads and `out` is large.
fn for_each_plane(
    out: &mut [f32],
    plane: usize,
    channels: usize,
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
    finish: impl Fn(&mut [f32]) + Sync,
) {
    if plane == 0 || out.is_empty() {
        return;
    }
    let block = |first: usize, block: &mut [f32]| {
        dispatch(
            #[inline(always)]
            || {
                for (k, p) in block.chunks_mut(plane).enumerate() {
                    f(first + k, (first + k) % channels, p);
                }
            },
        );
        finish(block);
    };
    let threads = rayon::current_num_threads();
    if threads > 1 && out.len() >= PAR_CHUNK {
        // About four blocks per thread, whole planes each.
        let per = (out.len() / plane).div_ceil(4 * threads).max(1);
        out.par_chunks_mut(per * plane)
            .enumerate()
            .for_each(|(b, chunk)| block(b * per, chunk));
    } else {
        block(0, out);
    }
}

/// The kernels `w` (`[c][taps]`) as rows of taps (`[taps][c]`), with a vector of padding
/// after the last so that a padded row of any block of channels can be read.
fn kernel_rows(w: &[f32], c: usize, taps: usize) -> Vec<f32> {
    let mut wt = vec![0.0; taps * c + LANES];
    transpose(w, taps, c, taps, &mut wt, c);
    wt
}

/// `y = act(depthwise_conv(x, w) + bias)`; `s` is depthwise (`groups == c_in == c_out`) and
/// the lengths are checked by the caller.
pub(super) fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) {
    let (c, hw, taps, p) = (s.c_in, s.h * s.w, s.kh * s.kw, s.out_h() * s.out_w());
    if !uses_table(s) {
        for_each_plane(
            y,
            p,
            c,
            #[inline(always)]
            |t, c, yp| {
                yp.fill(bias.map_or(0.0, |b| b[c]));
                rows_forward(s, &x[t * hw..][..hw], &w[c * taps..][..taps], yp);
            },
            |block| act.apply_slice(block),
        );
        return;
    }
    let table = TapPairs::new(s);
    let wt = kernel_rows(w, c, taps);
    for_each_block(
        y,
        c,
        p,
        #[inline(always)]
        |img, c0, yb, scratch| {
            let cb = yb.len() / p;
            let n = Rows::stride(cb);
            let [xbuf, ybuf] = parts(scratch, [hw * n, p * n]);
            let xt = Rows::of(&x[(img * c + c0) * hw..][..cb * hw], hw, xbuf);
            let mut yt = Rows { cb, data: ybuf };
            for k in 0..p {
                let row = yt.row_mut(k);
                match bias {
                    Some(b) => row[..cb].copy_from_slice(&b[c0..c0 + cb]),
                    None => row.fill(0.0),
                }
            }
            for (tap, pairs) in table.taps() {
                let wr = &wt[tap * c + c0..][..n];
                for &[o, i] in pairs {
                    mul_add(yt.row_mut(o as usize), wr, xt.row(i as usize));
                }
            }
            yt.to_planes(yb);
            act.apply_slice(yb);
        },
    );
}

/// `y += conv(x)` for one plane by shifted rows: for each tap, a multiply-add of an input row
/// into an output row over the positions where it lands in the input.
#[inline(always)]
fn rows_forward(s: &Conv2dShape, xp: &[f32], wc: &[f32], yp: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    for i in 0..s.kh {
        let rows = valid_range(oh, s.stride[0], i * s.dilation[0], s.pads[0], s.h);
        for j in 0..s.kw {
            let cols = valid_range(ow, s.stride[1], j * s.dilation[1], s.pads[1], s.w);
            if cols.is_empty() {
                continue;
            }
            let wv = wc[i * s.kw + j];
            let iw0 = cols.start * s.stride[1] + j * s.dilation[1] - s.pads[1];
            for r in rows.clone() {
                let ih = r * s.stride[0] + i * s.dilation[0] - s.pads[0];
                let xrow = &xp[ih * s.w..(ih + 1) * s.w];
                let yrow = &mut yp[r * ow..(r + 1) * ow][cols.clone()];
                if s.stride[1] == 1 {
                    let xs = &xrow[iw0..iw0 + yrow.len()];
                    yrow.iter_mut().zip(xs).for_each(|(yv, xv)| *yv += wv * xv);
                } else {
                    for (q, yv) in yrow.iter_mut().enumerate() {
                        *yv += wv * xrow[iw0 + q * s.stride[1]];
                    }
                }
            }
        }
    }
}

/// The input gradient of a depthwise convolution with a small output plane ([`uses_table`]):
/// `dx` (`[n, c, h, w]`) is overwritten.
pub(super) fn backward_input(s: &Conv2dShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (c, hw, taps, p) = (s.c_in, s.h * s.w, s.kh * s.kw, s.out_h() * s.out_w());
    let table = TapPairs::new(s);
    let wt = kernel_rows(w, c, taps);
    for_each_block(
        dx,
        c,
        hw,
        #[inline(always)]
        |img, c0, dxb, scratch| {
            let cb = dxb.len() / hw;
            let n = Rows::stride(cb);
            let [dybuf, dxbuf] = parts(scratch, [p * n, hw * n]);
            let dyt = Rows::of(&dy[(img * c + c0) * p..][..cb * p], p, dybuf);
            dxbuf.fill(0.0);
            let mut dxt = Rows { cb, data: dxbuf };
            for (tap, pairs) in table.taps() {
                let wr = &wt[tap * c + c0..][..n];
                for &[o, i] in pairs {
                    mul_add(dxt.row_mut(i as usize), wr, dyt.row(o as usize));
                }
            }
            dxt.to_planes(dxb);
        },
    );
}

/// The weight gradient of a depthwise convolution with a small output plane ([`uses_table`]):
/// `dw` (`[c, 1, kh, kw]`) is overwritten with the sum over the batch. The channels split
/// into one block per thread when the batch holds enough work to share out; each block sums
/// over the whole batch in image order, so the result does not depend on the thread count.
pub(super) fn backward_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (c, taps, p) = (s.c_in, s.kh * s.kw, s.out_h() * s.out_w());
    let table = TapPairs::new(s);
    let block = |c0: usize, dwb: &mut [f32]| {
        dispatch(
            #[inline(always)]
            || weight_block(s, &table, x, dy, c0, dwb),
        )
    };
    let threads = rayon::current_num_threads();
    if threads > 1 && s.n * c * p * taps >= PAR_CHUNK {
        let cb = channel_block(c, threads);
        dw.par_chunks_mut(cb * taps)
            .enumerate()
            .for_each(|(b, dwb)| block(b * cb, dwb));
    } else {
        block(0, dw);
    }
}

/// `dwb` (the kernels of channels `c0..`) set to `Σ dy[o] x[i]` per tap over the batch, one
/// image's sum per tap added at a time.
#[inline(always)]
fn weight_block(
    s: &Conv2dShape,
    table: &TapPairs,
    x: &[f32],
    dy: &[f32],
    c0: usize,
    dwb: &mut [f32],
) {
    let (c, hw, taps, p) = (s.c_in, s.h * s.w, s.kh * s.kw, s.out_h() * s.out_w());
    let cb = dwb.len() / taps;
    let n = Rows::stride(cb);
    let mut scratch = Vec::new();
    let [xbuf, dybuf, acc, dwbuf] = parts(&mut scratch, [hw * n, p * n, n, taps * n]);
    dwbuf.fill(0.0);
    let mut dwt = Rows { cb, data: dwbuf };
    for img in 0..s.n {
        let t = img * c + c0;
        let xt = Rows::of(&x[t * hw..][..cb * hw], hw, &mut xbuf[..]);
        let dyt = Rows::of(&dy[t * p..][..cb * p], p, &mut dybuf[..]);
        for (tap, pairs) in table.taps() {
            add_pair_products(dwt.row_mut(tap), pairs, &dyt, &xt, acc);
        }
    }
    dwt.to_planes(dwb);
}

/// `d += Σ a.row(o) * b.row(i)` over `pairs` (`[o, i]`), each lane's sum taken in pair order
/// before it is added to `d` (`acc`, a row's length, is scratch).
#[inline(always)]
fn add_pair_products(d: &mut [f32], pairs: &[[u32; 2]], a: &Rows, b: &Rows, acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512f() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { add_pair_products_avx512(d, pairs, a, b) };
    }
    acc.fill(0.0);
    for &[o, i] in pairs {
        mul_add(acc, a.row(o as usize), b.row(i as usize));
    }
    d.iter_mut().zip(acc.iter()).for_each(|(d, a)| *d += a);
}

/// [`add_pair_products`] with AVX-512: a vector of lanes at a time, its sum in a register
/// (a sum row in memory made each pair wait for the last one's store).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn add_pair_products_avx512(d: &mut [f32], pairs: &[[u32; 2]], a: &Rows, b: &Rows) {
    use std::arch::x86_64::*;
    for k in (0..d.len() / LANES * LANES).step_by(LANES) {
        let mut acc = _mm512_setzero_ps();
        for &[o, i] in pairs {
            let (ra, rb) = (a.row(o as usize), b.row(i as usize));
            let prod = _mm512_mul_ps(
                _mm512_loadu_ps(ra[k..k + LANES].as_ptr()),
                _mm512_loadu_ps(rb[k..k + LANES].as_ptr()),
            );
            acc = _mm512_add_ps(acc, prod);
        }
        let pd = d[k..k + LANES].as_mut_ptr();
        _mm512_storeu_ps(pd, _mm512_add_ps(_mm512_loadu_ps(pd), acc));
    }
}
