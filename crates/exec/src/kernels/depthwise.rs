//! Depthwise convolution (one input and one output channel per group) forward and backward
//! as direct loops, without im2col or GEMM.
//!
//! Small output planes (MobileNetV3's 1x1 to 7x7 late stages, where most of a 5x5 kernel's
//! taps read padding) run over a table of the (output, input) position pairs each tap joins,
//! built once per call from the geometry: per plane only the valid multiply-adds remain, no
//! range arithmetic per tap and row. Wide planes multiply-add shifted input rows into output
//! rows, which vectorises.

use super::activation::Activation;
use super::conv::{valid_range, Conv2dShape};
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
/// the tap lands inside the input: tap `t`'s pairs are `pairs[spans[t].1.clone()]`.
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

    /// Calls `f(w, o, i)` for every pair `(o, i)` with `w` its tap's weight in the channel's
    /// kernel `wc`: the forward adds `w * x[i]` to `y[o]`, the input gradient `w * dy[o]` to
    /// `dx[i]`.
    #[inline(always)]
    fn each_pair(&self, wc: &[f32], mut f: impl FnMut(f32, usize, usize)) {
        for (tap, span) in &self.spans {
            let wv = wc[*tap];
            for &[o, i] in &self.pairs[span.clone()] {
                f(wv, o as usize, i as usize);
            }
        }
    }

    /// `dw += Σ dy[o] x[i]` per tap for one plane.
    #[inline(always)]
    fn backward_weight(&self, x: &[f32], dy: &[f32], dw: &mut [f32]) {
        for (tap, span) in &self.spans {
            let mut acc = 0.0;
            for &[o, i] in &self.pairs[span.clone()] {
                acc += dy[o as usize] * x[i as usize];
            }
            dw[*tap] += acc;
        }
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
    let (hw, taps, p) = (s.h * s.w, s.kh * s.kw, s.out_h() * s.out_w());
    let table = uses_table(s).then(|| TapPairs::new(s));
    for_each_plane(
        y,
        p,
        s.c_in,
        #[inline(always)]
        |t, c, yp| {
            let (xp, wc) = (&x[t * hw..(t + 1) * hw], &w[c * taps..(c + 1) * taps]);
            yp.fill(bias.map_or(0.0, |b| b[c]));
            match &table {
                Some(table) => table.each_pair(wc, |wv, o, i| yp[o] += wv * xp[i]),
                None => rows_forward(s, xp, wc, yp),
            }
        },
        |block| act.apply_slice(block),
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
    let (hw, taps, p) = (s.h * s.w, s.kh * s.kw, s.out_h() * s.out_w());
    let table = TapPairs::new(s);
    for_each_plane(
        dx,
        hw,
        s.c_in,
        #[inline(always)]
        |t, c, dxp| {
            dxp.fill(0.0);
            let dyp = &dy[t * p..(t + 1) * p];
            table.each_pair(&w[c * taps..][..taps], |wv, o, i| dxp[i] += wv * dyp[o]);
        },
        |_| {},
    );
}

/// The weight gradient of a depthwise convolution with a small output plane ([`uses_table`]):
/// `dw` (`[c, 1, kh, kw]`) is overwritten with the sum over the batch.
pub(super) fn backward_weight(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (taps, p) = (s.kh * s.kw, s.out_h() * s.out_w());
    let table = TapPairs::new(s);
    // One task per channel's kernel when the batch holds enough work to share out.
    if rayon::current_num_threads() > 1 && s.n * s.c_in * p * taps >= PAR_CHUNK {
        dw.par_chunks_mut(taps).enumerate().for_each(|(c, dwc)| {
            dispatch(
                #[inline(always)]
                || weight_channel(s, &table, x, dy, c, dwc),
            )
        });
    } else {
        dispatch(
            #[inline(always)]
            || {
                dw.chunks_mut(taps)
                    .enumerate()
                    .for_each(|(c, dwc)| weight_channel(s, &table, x, dy, c, dwc))
            },
        );
    }
}

/// `dwc` (channel `c`'s kernel) set to `Σ dy[o] x[i]` per tap over the batch's planes.
#[inline(always)]
fn weight_channel(
    s: &Conv2dShape,
    table: &TapPairs,
    x: &[f32],
    dy: &[f32],
    c: usize,
    dwc: &mut [f32],
) {
    let (hw, p) = (s.h * s.w, s.out_h() * s.out_w());
    dwc.fill(0.0);
    for img in 0..s.n {
        let t = img * s.c_in + c;
        table.backward_weight(&x[t * hw..(t + 1) * hw], &dy[t * p..(t + 1) * p], dwc);
    }
}
