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
        && avx512()
}

/// Whether the CPU has AVX-512F.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Floats of shifted input copies one group of images may take (about 192 KiB, so that the
/// copies and the weights of a block of output channels stay in L2 while every block reads
/// them).
const GROUP_FLOATS: usize = 48 * 1024;

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
/// the next: `block = h + max(pad_top, pad_bottom)`); at stride 2 each image has the
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
}

impl Geometry {
    fn new(s: &Conv2dShape, images: usize) -> Self {
        let (oh, ow, sh) = (s.out_h(), s.out_w(), s.stride[0]);
        let (block, lead) = if sh == 1 {
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
        }
    }

    /// Images per group: as many as fit [`GROUP_FLOATS`], at most `n / threads` (rounded up)
    /// so that every thread gets a group.
    fn group_images(s: &Conv2dShape, threads: usize) -> usize {
        let g = Geometry::new(s, 1);
        let per_image = s.kw * g.sh * s.c_in * g.block * g.ow;
        (GROUP_FLOATS / per_image.max(1)).clamp(1, s.n.div_ceil(threads).max(1))
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

    /// The offset of each (channel, kernel row, kernel column) weight in the copies.
    fn offsets(&self, s: &Conv2dShape) -> Offsets {
        let list: Vec<usize> = (0..s.c_in)
            .flat_map(|c| (0..s.kh).flat_map(move |i| (0..s.kw).map(move |j| (c, i, j))))
            .map(|(c, i, j)| {
                let copy = j * self.sh + i % self.sh;
                (copy * s.c_in + c) * self.stack_len + i / self.sh * self.ow
            })
            .collect();
        let max = list.iter().copied().max().unwrap_or(0);
        Offsets { list, max }
    }

    /// Writes the copies of `images` (`[images, c_in, h, w]`) into `padded`.
    fn fill(&self, s: &Conv2dShape, images: &[f32], padded: &mut [f32]) {
        padded.fill(0.0);
        let plane = s.h * s.w;
        if plane == 0 {
            return;
        }
        let (sw, pt) = (s.stride[1], s.pads[0]);
        for j in 0..s.kw {
            let cols = valid_range(self.ow, sw, j, s.pads[1], s.w);
            if cols.is_empty() {
                continue;
            }
            let from = cols.start * sw + j - s.pads[1];
            for f in 0..self.sh {
                for (t, src) in images.chunks_exact(plane).enumerate() {
                    let (img, c) = (t / s.c_in, t % s.c_in);
                    let base = ((j * self.sh + f) * s.c_in + c) * self.stack_len
                        + (img * self.block + self.lead) * self.ow;
                    for (y, row) in src.chunks_exact(s.w).enumerate() {
                        // Input row y is copy row (y + pad_top - f) / stride_h when divisible.
                        let d = (y + pt).wrapping_sub(f);
                        if y + pt < f || d % self.sh != 0 || d / self.sh >= self.block {
                            continue;
                        }
                        let dst =
                            &mut padded[base + d / self.sh * self.ow + cols.start..][..cols.len()];
                        if sw == 1 {
                            dst.copy_from_slice(&row[from..][..cols.len()]);
                        } else {
                            for (q, v) in dst.iter_mut().enumerate() {
                                *v = row[from + q * sw];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The offsets in the copies of the weights of one output channel, and the largest.
struct Offsets {
    list: Vec<usize>,
    max: usize,
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
                g.fill(s, &x[t * group * image_in..][..g.images * image_in], padded);
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
            g.fill(s, &x[img * image_in..][..image_in], padded);
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
        for v0 in (0..g.vectors).step_by(CHUNK) {
            let vectors = CHUNK.min(g.vectors - v0);
            let (lo, len) = (v0 * LANES, vectors * LANES);
            let out = Out {
                segments: &segments,
                starts: &starts[v0..=v0 + vectors],
                plane,
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
/// for its vector `v`), and the floats between two output channels.
struct Out<'a> {
    segments: &'a [Segment],
    starts: &'a [usize],
    plane: usize,
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
        let offsets = &offsets.list;
        // Tiles of even width (14 vectors: 5, 5, 4 rather than 6, 6, 2).
        let width = vectors.div_ceil(vectors.div_ceil(NR));
        let mut v = 0;
        while v < vectors {
            let n = (vectors - v).min(width);
            // SAFETY: the CPU has AVX-512F (`applies`); every load reads
            // `padded[offsets[k] + 16 v .. offsets[k] + 16 (v + n)]`, within `padded` by the
            // assertion above, and every store writes the set lanes of a segment checked above.
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
    use super::{Segment, LANES, MR};
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

    /// One register tile: `MR` channels x `C` vectors of flat positions starting at `src`,
    /// bias added and clamped to `clamp` (a NaN to its low end, as `f32::max` does), stored
    /// by `dst`'s segments.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `src + offsets[k] + 16 C` and `w[r] + offsets.len()` stay inside
    /// their buffers, and every lane `dst` stores inside the output.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const C: usize>(
        src: *const f32,
        offsets: &[usize],
        w: [*const f32; MR],
        (bias, clamp): (&[f32; MR], Option<[f32; 2]>),
        dst: Dst,
    ) {
        let mut acc: [[__m512; C]; MR] = std::array::from_fn(|r| [_mm512_set1_ps(bias[r]); C]);
        for (k, &off) in offsets.iter().enumerate() {
            let p = src.add(off);
            let v: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(p.add(c * LANES)));
            for r in 0..MR {
                let wr = _mm512_set1_ps(*w[r].add(k));
                for c in 0..C {
                    acc[r][c] = _mm512_fmadd_ps(wr, v[c], acc[r][c]);
                }
            }
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
