//! Direct convolution for dense (one group) convolutions of stride 1 or 2, without im2col.
//!
//! The input of a group of images is copied once per kernel column (and row phase at stride
//! 2), shifted, with zeros where it reads the padding ([`Geometry`]). Read flat, output
//! position `p` of channel `m` is then (at stride 1)
//! `bias[m] + Σ_(c, i, j) w[m][c][i][j] · copy_j[c][p + i * out_w]`: a GEMM whose right-hand
//! matrix is the copies read at one offset per (channel, tap), never materialised. The
//! register tile holds [`MR`] output channels times up to [`NR`] vectors of 16 flat
//! positions, with the weights broadcast from their rows (AVX-512 only; [`applies`] says no
//! elsewhere and the caller keeps im2col + GEMM).

use super::activation::Activation;
use super::conv::{valid_range, with_scratch, Conv2dShape};
use rayon::prelude::*;

/// Output channels per register tile.
const MR: usize = 4;
/// Vectors of [`LANES`] output positions per register tile (`MR * NR` accumulators).
const NR: usize = 6;
/// Vectors of flat positions per chunk of [`Channels::run`].
const CHUNK: usize = 4 * NR;
/// Floats per AVX-512 vector.
const LANES: usize = 16;

/// Whether [`forward`] runs `s`: one group, strides of 1 or 2, dilation 1, a kernel larger
/// than 1x1 (pointwise ones are plain GEMMs already) and an AVX-512 CPU. Measured faster than
/// im2col + GEMM at every such stride-1 shape of LeNet5, zoo:cnn and YOLOv8n (planes 7x7 to
/// 80x80, 1 to 128 input channels), and it stores the input `kw` times (`2 kw` quarter-size
/// copies at stride 2) where im2col stores it `kh * kw` times.
pub(super) fn applies(s: &Conv2dShape) -> bool {
    s.groups == 1
        && s.stride.iter().all(|&v| v <= 2)
        && s.dilation == [1, 1]
        && s.kh * s.kw > 1
        && s.c_in > 0
        && super::has_avx512f()
}

/// Floats of shifted input copies one group of images may take (384 KiB, so that the copies
/// and the weights of a block of output channels stay in a 1 MiB L2 while every block reads
/// them; twice the 192 KiB of 7266570, which gave zoo:cnn's 7x7 layer 5 images a group
/// where 10 let [`Geometry::group_images`] fill whole vectors).
const GROUP_FLOATS: usize = 96 * 1024;

/// The layout of one group of images.
///
/// The input is stored once per kernel column `j` and row phase `f` (`0..stride_h`), shifted
/// and subsampled so that copy `(j, f)` holds input `(t * stride_h + f - pad_top,
/// q * stride_w + j - pad_left)` at its row `t`, column `q`, zeros where that is padding, as
/// rows of `out_w` floats: output `(r, q)` reads tap `(i, j)` at column `q`, row `r + i /
/// stride_h` of copy `(j, i % stride_h)`, so the output rows are dense in the flat positions
/// and no lanes are spent on padding columns. The images of a group are stacked vertically,
/// `block` rows each, output row `r` of image `i` at flat row `i * block + lead + r`. At
/// stride 1 they share their zero rows (the bottom padding of one image is the top padding of
/// the next: `block = h + max(pad_top, pad_bottom)`), or have none between them when
/// [`Geometry::dense`] (`block = h`, masked loads); at stride 2 each image has the
/// `out_h + (kh - 1) / 2` rows its outputs read.
#[derive(Clone, Copy)]
struct Geometry {
    /// Output height and width.
    oh: usize,
    ow: usize,
    /// Row stride: row phases per kernel column.
    sh: usize,
    /// Rows per image in the stack.
    block: usize,
    /// Flat rows before image 0's first output row (`max(pad_top, pad_bottom) - pad_top` at
    /// stride 1, else 0).
    lead: usize,
    /// Images in the group.
    images: usize,
    /// Floats of one channel of one copy: the rows the group's outputs read times `ow`.
    stack_len: usize,
    /// Vectors covering every flat output position of the group.
    vectors: usize,
    /// Floats of the copies, with the slack the last vectors read.
    padded_len: usize,
    /// Kernel rows and top padding.
    kh: usize,
    pt: usize,
    /// Whether the images are stacked without zero rows between them ([`Geometry::dense`]).
    dense: bool,
}

impl Geometry {
    fn new(s: &Conv2dShape, images: usize) -> Self {
        let (oh, ow, sh) = (s.out_h(), s.out_w(), s.stride[0]);
        // One image has no zero rows between images to save: the plain layout.
        let dense = images > 1 && Geometry::dense(s);
        let (block, lead) = if dense {
            (s.h, 0)
        } else if sh == 1 {
            let shared = s.pads[0].max(s.pads[2]);
            (s.h + shared, shared - s.pads[0])
        } else {
            (oh + (s.kh - 1) / sh, 0)
        };
        let out_rows = (images - 1) * block + lead + oh;
        let stack_len = (out_rows + (s.kh - 1) / sh) * ow;
        let vectors = (out_rows * ow).div_ceil(LANES);
        // The last read: the last copy and channel, kernel row kh - 1, lane 16 vectors - 1.
        let padded_len =
            (s.kw * sh * s.c_in - 1) * stack_len + (s.kh - 1) / sh * ow + vectors * LANES;
        Geometry {
            oh,
            ow,
            sh,
            block,
            lead,
            images,
            stack_len,
            vectors,
            padded_len,
            kh: s.kh,
            pt: s.pads[0],
            dense,
        }
    }

    /// Whether the images are stacked `h` rows apart with no zero rows between them: at
    /// stride 1 with `out_h == h` (padding `kh - 1` rows in all) and at least 16 taps per
    /// kernel row (shorter rows cost more in their per-row mask loads than the zero rows
    /// do: zoo:cnn's 1-channel 28x28 layer). A tap then reads the neighbouring image's row
    /// where it should read padding, and [`Geometry::masks`] drops those lanes from its
    /// loads, so no lanes are computed for zero rows (1/8 of the positions at 7x7 with one
    /// row of padding).
    fn dense(s: &Conv2dShape) -> bool {
        s.c_in * s.kw >= 16 && s.stride[0] == 1 && s.kh > 1 && s.pads[0] + s.pads[2] + 1 == s.kh
    }

    /// The lanes each kernel row may read, `[kh][vectors]`: lane `l` of vector `v` (output
    /// row `r` of its image) reads kernel row `i` unless input row `r + i - pad_top` lies
    /// outside the image, where a dense stack holds another image's row. All lanes when not
    /// dense.
    fn masks(&self) -> Vec<u16> {
        let mut masks = vec![u16::MAX; self.kh * self.vectors];
        if !self.dense {
            return masks;
        }
        for (i, row) in masks.chunks_exact_mut(self.vectors).enumerate() {
            // Output rows whose input row r + i - pad_top is outside the image.
            let (top, bottom) = (
                self.pt.saturating_sub(i),
                (self.block + self.pt).saturating_sub(i),
            );
            let outside = (0..top.min(self.block)).chain(bottom..self.block);
            for r in outside.flat_map(|r| (0..self.images).map(move |img| img * self.block + r)) {
                for p in r * self.ow..(r + 1) * self.ow {
                    row[p / LANES] &= !(1 << (p % LANES));
                }
            }
        }
        masks
    }

    /// Images per group: at most as many as fit [`GROUP_FLOATS`] and `n / threads` (rounded
    /// up, so that every thread gets a group), and of those the count that computes the
    /// fewest vectors over the batch (the largest on a tie): at 7x7, 16 images fill whole
    /// vectors where 5 leave 11 lanes of 256 idle.
    fn group_images(s: &Conv2dShape, threads: usize) -> usize {
        let (g, dense) = (Geometry::new(s, 1), Geometry::dense(s));
        let block = if dense { s.h } else { g.block };
        let per_image = s.kw * g.sh * s.c_in * block * g.ow;
        let most = (GROUP_FLOATS / per_image.max(1)).clamp(1, s.n.div_ceil(threads).max(1));
        if !dense {
            return most;
        }
        let vectors = |images: usize| match images {
            0 => 0,
            _ => Geometry::new(s, images).vectors,
        };
        (1..=most)
            .min_by_key(|&k| (s.n / k * vectors(k) + vectors(s.n % k), usize::MAX - k))
            .unwrap_or(1)
    }

    /// Where the lanes of each vector of flat positions land in the group's output
    /// (`[images, count, oh, ow]`): the lanes of vector `v` are `segments[starts[v]..starts[v
    /// + 1]]`, one [`Segment`] per image the vector meets (none for lanes in zero rows).
    fn segments(&self, count: usize) -> (Vec<Segment>, Vec<usize>) {
        let plane = self.oh * self.ow;
        let (mut segments, mut starts) = (Vec::new(), vec![0]);
        for v in 0..self.vectors {
            let p0 = v * LANES;
            let row0 = (p0 / self.ow).saturating_sub(self.lead);
            for img in row0 / self.block..self.images {
                let first = (img * self.block + self.lead) * self.ow;
                if first >= p0 + LANES {
                    break;
                }
                let (a, z) = (first.max(p0), (first + plane).min(p0 + LANES));
                if a < z {
                    let mask = ((1u32 << (z - p0)) - (1u32 << (a - p0))) as u16;
                    let off = (img * count * plane + p0) as isize - first as isize;
                    segments.push(Segment { mask, off });
                }
            }
            starts.push(segments.len());
        }
        (segments, starts)
    }

    /// The offset in the copies of each (kernel row, channel, kernel column) tap with the
    /// index of its weight, grouped by kernel row when dense (its rows read under different
    /// masks), else in the weights' order as one group.
    fn offsets(&self, s: &Conv2dShape) -> Offsets {
        let (c_in, kh, kw) = (s.c_in, s.kh, s.kw);
        let mut list = Vec::with_capacity(c_in * kh * kw);
        // The taps of channel `c`, kernel row `i` (plain loops: at batch 1 building the list
        // was 3% of YOLOv8n's 128-channel 10x10 layer as a chain of iterator adapters).
        let mut push = |c: usize, i: usize| {
            let (phase, row) = (i % self.sh, i / self.sh * self.ow);
            for j in 0..kw {
                let copy = j * self.sh + phase;
                list.push(Tap {
                    off: (copy * c_in + c) * self.stack_len + row,
                    weight: (c * kh + i) * kw + j,
                });
            }
        };
        if self.dense {
            (0..kh).for_each(|i| (0..c_in).for_each(|c| push(c, i)));
        } else {
            (0..c_in).for_each(|c| (0..kh).for_each(|i| push(c, i)));
        }
        let max = list.iter().map(|t| t.off).max().unwrap_or(0);
        let per_row = s.c_in * s.kw;
        let rows = match self.dense {
            true => (0..s.kh).map(|i| (i, (i + 1) * per_row)).collect(),
            false => vec![(0, list.len())],
        };
        // What `tiles` relies on, checked here once rather than on every call.
        assert!(list.iter().all(|t| t.weight < list.len()));
        assert!(rows.iter().all(|&(i, end)| i < s.kh && end <= list.len()));
        Offsets { list, rows, max }
    }

    /// Writes the copies of `images` (`[images, c_in, h, w]`) into `padded`, one stack (a copy
    /// of one channel) at a time, the stacks shared out over the pool when `parallel` (at
    /// batch 1 the copies come before the split of the output channels: made on one thread,
    /// they were a third of YOLOv8n's stride-2 layers with few input channels at 2 threads).
    fn fill(&self, s: &Conv2dShape, images: &[f32], padded: &mut [f32], parallel: bool) {
        let plane = s.h * s.w;
        if self.dense && self.ow == s.w && plane > 0 {
            self.fill_dense(s, images, padded);
            return;
        }
        let copies = s.kw * self.sh * s.c_in * self.stack_len;
        let (stacks, slack) = padded.split_at_mut(copies);
        slack.fill(0.0);
        if self.stack_len == 0 {
            return;
        }
        let stack = |(t, stack): (usize, &mut [f32])| self.fill_stack(s, images, t, stack);
        if parallel && copies >= 2 * super::PAR_CHUNK && rayon::current_num_threads() > 1 {
            let per_task = super::PAR_CHUNK.div_ceil(self.stack_len);
            stacks
                .par_chunks_mut(self.stack_len)
                .with_min_len(per_task)
                .enumerate()
                .for_each(stack);
        } else {
            stacks
                .chunks_mut(self.stack_len)
                .enumerate()
                .for_each(stack);
        }
    }

    /// Stack `t` of [`Geometry::fill`]: copy `(j, f)` of channel `c` (`t = (j * stride_h +
    /// f) * c_in + c`) for every image of the group, zeros where it reads the padding.
    fn fill_stack(&self, s: &Conv2dShape, images: &[f32], t: usize, stack: &mut [f32]) {
        // Zeroed whole, then written (a stack is in cache: zeroing only what the rows leave
        // out was slower, in many short fills).
        stack.fill(0.0);
        let plane = s.h * s.w;
        let (copy, c) = (t / s.c_in, t % s.c_in);
        let (j, f) = (copy / self.sh, copy % self.sh);
        let (sw, pt) = (s.stride[1], s.pads[0]);
        let cols = valid_range(self.ow, sw, j, s.pads[1], s.w);
        if plane == 0 || cols.is_empty() {
            return;
        }
        let from = cols.start * sw + j - s.pads[1];
        for img in 0..self.images {
            let src = &images[(img * s.c_in + c) * plane..][..plane];
            let base = (img * self.block + self.lead) * self.ow;
            for (y, row) in src.chunks_exact(s.w).enumerate() {
                // Input row y is copy row (y + pad_top - f) / stride_h when divisible.
                let d = (y + pt).wrapping_sub(f);
                if y + pt < f || d % self.sh != 0 || (self.sh > 1 && d / self.sh >= self.block) {
                    continue;
                }
                let dst = &mut stack[base + d / self.sh * self.ow + cols.start..][..cols.len()];
                gather(dst, &row[from..], sw);
            }
        }
    }
}

/// `dst[q] = src[q * step]`: a slice copy at step 1, a vectorised deinterleave at step 2
/// (the stride-2 copies; element by element it was most of their time).
fn gather(dst: &mut [f32], src: &[f32], step: usize) {
    match step {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            let pairs = dst.len().min(src.len() / 2);
            let (head, tail) = dst.split_at_mut(pairs);
            super::dispatch(
                #[inline(always)]
                || {
                    for (v, p) in head.iter_mut().zip(src.chunks_exact(2)) {
                        *v = p[0];
                    }
                },
            );
            if let Some(v) = tail.first_mut() {
                *v = src[2 * pairs];
            }
        }
        _ => {
            for (q, v) in dst.iter_mut().enumerate() {
                *v = src[q * step];
            }
        }
    }
}

impl Geometry {
    /// [`Geometry::fill`] for a dense stack whose rows are as wide as the input's (padding
    /// `kw - 1` columns in all): copy `j` of an image's channel is the channel's plane read
    /// flat from `j - pad_left` on, one slice copy, with the columns that fall outside the
    /// image zeroed; only the zero rows, those columns and the slack are written with zeros.
    fn fill_dense(&self, s: &Conv2dShape, images: &[f32], padded: &mut [f32]) {
        let (plane, w, pl) = (s.h * s.w, s.w, s.pads[1]);
        let body = self.images * plane;
        let copies = s.kw * s.c_in * self.stack_len;
        for (t, stack) in padded[..copies]
            .chunks_exact_mut(self.stack_len)
            .enumerate()
        {
            let (j, c) = (t / s.c_in, t % s.c_in);
            let (top, rest) = stack.split_at_mut(self.pt * w);
            let (rows, bottom) = rest.split_at_mut(body);
            top.fill(0.0);
            bottom.fill(0.0);
            for (img, dst) in rows.chunks_exact_mut(plane).enumerate() {
                let src = &images[(img * s.c_in + c) * plane..][..plane];
                // dst[k] = src[k + j - pad_left] where that column is inside the image.
                if j.abs_diff(pl) >= w {
                    dst.fill(0.0);
                } else if j >= pl {
                    let d = j - pl;
                    dst[..plane - d].copy_from_slice(&src[d..]);
                    for row in dst.chunks_exact_mut(w) {
                        row[w - d..].fill(0.0);
                    }
                } else {
                    let d = pl - j;
                    dst[d..].copy_from_slice(&src[..plane - d]);
                    for row in dst.chunks_exact_mut(w) {
                        row[..d].fill(0.0);
                    }
                }
            }
        }
        padded[copies..].fill(0.0);
    }
}

/// The taps of one output channel in the order the tile reads them, grouped by kernel row,
/// and the largest offset.
struct Offsets {
    list: Vec<Tap>,
    /// `(kernel row, end)`: `list[previous end..end]` are the taps of that kernel row.
    rows: Vec<(usize, usize)>,
    max: usize,
}

/// One tap: where it reads the copies and the index of its weight in an output channel's
/// row of `c_in * kh * kw` weights.
#[derive(Clone, Copy)]
struct Tap {
    off: usize,
    weight: usize,
}

/// The lanes of one vector of flat positions that belong to one image: lane `l` (for each
/// set bit `l` of `mask`) of output channel `ch` goes to `y[off + l + ch * oh * ow]`.
#[derive(Clone, Copy)]
struct Segment {
    mask: u16,
    off: isize,
}

/// `y = act(conv(x, w) + bias)` for a shape [`applies`] accepts (the caller has checked the
/// lengths). Parallel over groups of images when there are at least as many as threads, else
/// over blocks of output channels of each image in turn.
pub(super) fn forward(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) {
    let threads = rayon::current_num_threads();
    let group = Geometry::group_images(s, threads);
    let conv = Channels {
        w,
        k: s.c_in * s.kh * s.kw,
        bias,
        act,
    };
    let image_in = s.c_in * s.h * s.w;
    let image_out = s.c_out * s.out_h() * s.out_w();
    if threads == 1 || s.n >= threads {
        let run = |(t, yg): (usize, &mut [f32])| {
            let g = Geometry::new(s, yg.len() / image_out);
            let offsets = g.offsets(s);
            with_scratch(g.padded_len, |padded| {
                g.fill(
                    s,
                    &x[t * group * image_in..][..g.images * image_in],
                    padded,
                    false,
                );
                conv.run(&g, padded, &offsets, 0, yg);
            })
        };
        if threads == 1 {
            y.chunks_mut(group * image_out).enumerate().for_each(run);
        } else {
            y.par_chunks_mut(group * image_out)
                .enumerate()
                .for_each(run);
        }
        return;
    }
    // Fewer images than threads: share each image's output channels out in blocks of MR.
    let per_task = s.c_out.div_ceil(threads).div_ceil(MR) * MR;
    let g = Geometry::new(s, 1);
    let offsets = g.offsets(s);
    for (img, yi) in y.chunks_mut(image_out).enumerate() {
        with_scratch(g.padded_len, |padded| {
            g.fill(s, &x[img * image_in..][..image_in], padded, true);
            let (padded, offsets) = (&*padded, &offsets);
            yi.par_chunks_mut(per_task * g.oh * g.ow)
                .enumerate()
                .for_each(|(t, yb)| conv.run(&g, padded, offsets, t * per_task, yb));
        });
    }
}

/// Everything the channel blocks of one call share.
struct Channels<'a> {
    /// Weights `[c_out, k]`.
    w: &'a [f32],
    /// Weights per output channel, `c_in * kh * kw`.
    k: usize,
    bias: Option<&'a [f32]>,
    act: Activation,
}

impl Channels<'_> {
    /// Output channels `m0..m0 + count` of the group's images into `y`
    /// (`[images, count, oh, ow]`; `count` is `c_out` unless the group is one image).
    /// [`CHUNK`] vectors of flat positions at a time (the copies they read stay in cache while
    /// every block of `MR` channels passes), stored straight into `y` by their [`Segment`]s.
    fn run(&self, g: &Geometry, padded: &[f32], offsets: &Offsets, m0: usize, y: &mut [f32]) {
        let plane = g.oh * g.ow;
        let count = y.len() / (g.images * plane);
        // Relu and Clip are clamps done on the registers; the other activations run over
        // the stored rows.
        let (clamp, after) = match self.act {
            Activation::Relu => (Some([0.0, f32::INFINITY]), Activation::None),
            Activation::Clip(lo, hi) => (Some([lo, hi]), Activation::None),
            other => (None, other),
        };
        let (segments, starts) = g.segments(count);
        let masks = g.masks();
        // Chunks of even length (25 vectors: 13 and 12 rather than 24 and 1).
        let chunk = g.vectors.div_ceil(g.vectors.div_ceil(CHUNK).max(1));
        for v0 in (0..g.vectors).step_by(chunk.max(1)) {
            let vectors = chunk.min(g.vectors - v0);
            let (lo, len) = (v0 * LANES, vectors * LANES);
            let out = Out {
                segments: &segments,
                starts: &starts[v0..=v0 + vectors],
                plane,
                masks: &masks[v0..],
                mask_rows: g.vectors,
            };
            for b in 0..count.div_ceil(MR) {
                let rows = MR.min(count - b * MR);
                // Rows past the block repeat its last channel; their results are not stored.
                let row = |r: usize| m0 + b * MR + r.min(rows - 1);
                let weights: [&[f32]; MR] =
                    std::array::from_fn(|r| &self.w[row(r) * self.k..][..self.k]);
                let bias: [f32; MR] = std::array::from_fn(|r| self.bias.map_or(0.0, |v| v[row(r)]));
                let ep = (bias, clamp);
                tiles(
                    &padded[lo..],
                    offsets,
                    &weights,
                    ep,
                    &out,
                    rows,
                    &mut y[b * MR * plane..],
                );
            }
            if after == Activation::None {
                continue;
            }
            for img in 0..g.images {
                // The image's output positions in flat terms, clipped to this chunk.
                let first = (img * g.block + g.lead) * g.ow;
                let (a, z) = (first.max(lo), (first + plane).min(lo + len));
                for ch in (a < z).then_some(0..count).into_iter().flatten() {
                    after.apply_slice(&mut y[(img * count + ch) * plane + a - first..][..z - a]);
                }
            }
        }
    }
}

/// Where the vectors of one chunk go: its [`Segment`]s (`segments[starts[v]..starts[v + 1]]`
/// for its vector `v`), and the floats between two output channels; and the lanes its
/// vectors read for each kernel row (`masks[i * mask_rows + v]`, [`Geometry::masks`]).
struct Out<'a> {
    segments: &'a [Segment],
    starts: &'a [usize],
    plane: usize,
    masks: &'a [u16],
    mask_rows: usize,
}

/// Stores into `y` (whose channel 0 is the block's first)
/// `bias[r] + Σ_k weights[r][k] · padded[offsets[k] + p]` for every flat position `p` of the
/// chunk's vectors (`out.starts.len() - 1`) and channels `r < rows`, clamped to `[lo, hi]` when `clamp` is
/// `Some` (Relu, Clip), up to [`NR`] vectors at a time.
fn tiles(
    padded: &[f32],
    offsets: &Offsets,
    weights: &[&[f32]; MR],
    (bias, clamp): ([f32; MR], Option<[f32; 2]>),
    out: &Out,
    rows: usize,
    y: &mut [f32],
) {
    let vectors = out.starts.len() - 1;
    let flat = vectors * LANES;
    assert!(weights.iter().all(|w| w.len() == offsets.list.len()));
    assert!(offsets.max + flat <= padded.len());
    // `Geometry::offsets` checked every tap's weight index and every row's range.
    let kh = offsets.rows.iter().map(|&(i, _)| i + 1).max().unwrap_or(0);
    assert!(kh == 0 || (kh - 1) * out.mask_rows + vectors <= out.masks.len());
    assert!((1..=MR).contains(&rows));
    let segs = &out.segments[out.starts[0]..out.starts[vectors]];
    // Every stored lane: `off + l + r * plane` for a set bit `l` and `r < rows`.
    assert!(segs.iter().all(|s| {
        let (l0, l1) = (s.mask.trailing_zeros(), 16 - s.mask.leading_zeros());
        let (a, z) = (s.off + l0 as isize, s.off + l1 as isize);
        a >= 0 && z as usize + (rows - 1) * out.plane <= y.len()
    }));
    #[cfg(target_arch = "x86_64")]
    {
        let w = weights.map(|w| w.as_ptr());
        // Tiles of even width (14 vectors: 5, 5, 4 rather than 6, 6, 2).
        let width = vectors.div_ceil(vectors.div_ceil(NR));
        let mut v = 0;
        while v < vectors {
            let n = (vectors - v).min(width);
            // SAFETY: the CPU has AVX-512F (`applies`); every load reads
            // `padded[off + 16 v .. off + 16 (v + n)]` for a tap's offset, within `padded` by
            // the assertion above, every weight index (`Geometry::offsets`) and mask (above)
            // lies inside its slice, and every store writes the set lanes of a segment checked
            // above.
            unsafe {
                let src = padded.as_ptr().add(v * LANES);
                let dst = avx512::Dst {
                    y: y.as_mut_ptr(),
                    segments: out.segments,
                    starts: &out.starts[v..=v + n],
                    plane: out.plane,
                    rows,
                };
                let ep = (&bias, clamp);
                let masks = avx512::Masks {
                    at: out.masks.as_ptr().add(v),
                    rows: out.mask_rows,
                };
                let offsets = (offsets, masks);
                match n {
                    6 => avx512::tile::<6>(src, offsets, w, ep, dst),
                    5 => avx512::tile::<5>(src, offsets, w, ep, dst),
                    4 => avx512::tile::<4>(src, offsets, w, ep, dst),
                    3 => avx512::tile::<3>(src, offsets, w, ep, dst),
                    2 => avx512::tile::<2>(src, offsets, w, ep, dst),
                    _ => avx512::tile::<1>(src, offsets, w, ep, dst),
                }
            }
            v += n;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Offsets, Segment, LANES, MR};
    use std::arch::x86_64::*;

    /// Where one register tile's lanes go: lane `l` of vector `c`, channel `r < rows`, to
    /// `y + off + l + r * plane` for each segment `segments[starts[c]..starts[c + 1]]` whose
    /// mask has bit `l`.
    pub(super) struct Dst<'a> {
        pub y: *mut f32,
        pub segments: &'a [Segment],
        pub starts: &'a [usize],
        pub plane: usize,
        pub rows: usize,
    }

    /// Adds the products of `taps` to `acc`, the loads masked by `m` when `MASKED`, the
    /// weights at each tap's index when `INDEXED`, else at the tap's place in `taps`.
    #[inline(always)]
    unsafe fn taps_into<const C: usize, const MASKED: bool, const INDEXED: bool>(
        acc: &mut [[__m512; C]; MR],
        src: *const f32,
        taps: &[super::Tap],
        m: [__mmask16; C],
        w: [*const f32; MR],
    ) {
        for (k, tap) in taps.iter().enumerate() {
            let p = src.add(tap.off);
            // Not indexed: `taps` is the one group of all taps, in the weights' order.
            let k = if INDEXED { tap.weight } else { k };
            let v: [__m512; C] = std::array::from_fn(|c| match MASKED {
                true => _mm512_maskz_loadu_ps(m[c], p.add(c * LANES)),
                false => _mm512_loadu_ps(p.add(c * LANES)),
            });
            for r in 0..MR {
                let wr = _mm512_set1_ps(*w[r].add(k));
                for c in 0..C {
                    acc[r][c] = _mm512_fmadd_ps(wr, v[c], acc[r][c]);
                }
            }
        }
    }

    /// The lanes the tile's vector `c` reads for kernel row `i`: `*at.add(i * rows + c)`.
    pub(super) struct Masks {
        pub at: *const u16,
        pub rows: usize,
    }

    /// One register tile: `MR` channels x `C` vectors of flat positions starting at `src`,
    /// each tap's loads masked by its kernel row's lanes (masked-off lanes read as zero),
    /// bias added and clamped to `clamp` (a NaN to its low end, as `f32::max` does), stored
    /// by `dst`'s segments.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `src + off + 16 C` and `w[r] + weight` stay inside their buffers
    /// for every tap, the masks of every kernel row and vector lie inside theirs, and every
    /// lane `dst` stores inside the output.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const C: usize>(
        src: *const f32,
        (offsets, masks): (&Offsets, Masks),
        w: [*const f32; MR],
        (bias, clamp): (&[f32; MR], Option<[f32; 2]>),
        dst: Dst,
    ) {
        let mut acc: [[__m512; C]; MR] = std::array::from_fn(|r| [_mm512_set1_ps(bias[r]); C]);
        let mut start = 0;
        for &(i, end) in &offsets.rows {
            let taps = &offsets.list[start..end];
            if offsets.rows.len() == 1 {
                // One group (not dense): every lane, no masks to load.
                taps_into::<C, false, false>(&mut acc, src, taps, [u16::MAX; C], w);
                break;
            }
            let m: [__mmask16; C] = std::array::from_fn(|c| *masks.at.add(i * masks.rows + c));
            if m.iter().all(|&m| m == u16::MAX) {
                taps_into::<C, false, true>(&mut acc, src, taps, m, w);
            } else {
                taps_into::<C, true, true>(&mut acc, src, taps, m, w);
            }
            start = end;
        }
        if let Some([lo, hi]) = clamp {
            let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            // `max(a, lo)` answers `lo` where `a` is NaN.
            acc.iter_mut()
                .flatten()
                .for_each(|a| *a = _mm512_min_ps(_mm512_max_ps(*a, lo), hi));
        }
        for c in 0..C {
            for s in &dst.segments[dst.starts[c]..dst.starts[c + 1]] {
                // Lane 0's address may lie before `y` (masked off): wrapping arithmetic.
                let base = dst.y.wrapping_offset(s.off);
                for (r, row) in acc.iter().enumerate() {
                    if r < dst.rows {
                        let p = base.wrapping_add(r * dst.plane);
                        _mm512_mask_storeu_ps(p, s.mask, row[c]);
                    }
                }
            }
        }
    }
}
