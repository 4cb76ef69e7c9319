//! Data movement without arithmetic: one strided gather serves Transpose, Slice, the outputs
//! of Split and nearest-neighbour Resize by whole factors, each described as a
//! [`StridedView`] of its input; [`transpose`] swaps the two axes of a row-major matrix in
//! registers where the gather would copy one element at a time (the channel-minor rows of
//! the depthwise kernels, the pointwise convolutions' layout swaps in training).

use super::{check_len, error, Result, PAR_CHUNK};
use rayon::prelude::*;

/// A view of a contiguous input: element `i` (an index into `dims`) of the view is input
/// element `offset + Σ i[d] * strides[d]`. A stride may be negative (Slice with a negative
/// step) or zero (an axis repeated, as nearest Resize repeats each input element).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedView {
    /// Sizes of the view's axes.
    pub dims: Vec<usize>,
    /// Input elements between neighbours along each axis.
    pub strides: Vec<isize>,
    /// Input element of the view's first element.
    pub offset: usize,
}

impl StridedView {
    /// The whole of a contiguous row-major input of shape `shape`.
    pub fn contiguous(shape: &[usize]) -> Self {
        let mut strides = vec![1isize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1] as isize;
        }
        StridedView {
            dims: shape.to_vec(),
            strides,
            offset: 0,
        }
    }

    /// Number of elements in the view.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The view with its axes reordered: axis `d` of the result is axis `perm[d]` of this
    /// one (ONNX Transpose). `None` unless `perm` is a permutation of the axes.
    pub fn permute(&self, perm: &[usize]) -> Option<Self> {
        let mut seen = vec![false; self.dims.len()];
        if perm.len() != seen.len() {
            return None;
        }
        for &p in perm {
            if std::mem::replace(seen.get_mut(p)?, true) {
                return None;
            }
        }
        Some(StridedView {
            dims: perm.iter().map(|&p| self.dims[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// The view narrowed along `axis` to `len` elements, starting at `start` and `step`
    /// apart (ONNX Slice after clamping: `start` lies inside the axis when `len > 0`, and so
    /// does every element taken). `None` when an element would fall outside the axis.
    pub fn narrow(&self, axis: usize, start: usize, len: usize, step: isize) -> Option<Self> {
        let size = *self.dims.get(axis)?;
        if len > 0 {
            let last = start as isize + (len as isize - 1) * step;
            if start >= size || last < 0 || last >= size as isize {
                return None;
            }
        }
        let mut v = self.clone();
        if len > 0 {
            v.offset = (v.offset as isize + start as isize * v.strides[axis]) as usize;
        }
        v.dims[axis] = len;
        v.strides[axis] *= step;
        Some(v)
    }

    /// The view with each element of `axis` repeated `times` times in place (a new axis of
    /// stride 0 right after it): nearest Resize by a whole factor is one of these per axis.
    pub fn repeat(&self, axis: usize, times: usize) -> Option<Self> {
        if axis >= self.dims.len() {
            return None;
        }
        let mut v = self.clone();
        v.dims.insert(axis + 1, times);
        v.strides.insert(axis + 1, 0);
        Some(v)
    }

    /// The same element order with size-1 axes dropped and neighbouring axes merged where
    /// the outer one steps over exactly the inner one, so the copy loops run as long as they
    /// can.
    fn simplified(&self) -> Self {
        let mut dims: Vec<usize> = Vec::with_capacity(self.dims.len());
        let mut strides: Vec<isize> = Vec::with_capacity(self.dims.len());
        for (&d, &s) in self.dims.iter().zip(&self.strides) {
            if d == 1 {
                continue;
            }
            match (dims.last_mut(), strides.last_mut()) {
                (Some(ld), Some(ls)) if *ls == s * d as isize => {
                    *ld *= d;
                    *ls = s;
                }
                _ => {
                    dims.push(d);
                    strides.push(s);
                }
            }
        }
        StridedView {
            dims,
            strides,
            offset: self.offset,
        }
    }

    /// The smallest and largest input element the view reads (`None` when it is empty).
    fn extent(&self) -> Option<(isize, isize)> {
        if self.numel() == 0 {
            return None;
        }
        let (mut lo, mut hi) = (self.offset as isize, self.offset as isize);
        for (&d, &s) in self.dims.iter().zip(&self.strides) {
            let reach = (d as isize - 1) * s;
            if reach < 0 {
                lo += reach;
            } else {
                hi += reach;
            }
        }
        Some((lo, hi))
    }
}

/// `y` = the elements of `view` over the contiguous input `x`, in row-major order of the
/// view's axes. Fails when the view reads outside `x` or `y` does not hold the view.
pub fn gather(view: &StridedView, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("gather", "output", view.numel(), y.len())?;
    if view.dims.len() != view.strides.len() {
        return Err(error(
            "gather",
            format!(
                "{} sizes but {} strides",
                view.dims.len(),
                view.strides.len()
            ),
        ));
    }
    let Some((lo, hi)) = view.extent() else {
        return Ok(());
    };
    if lo < 0 || hi >= x.len() as isize {
        return Err(error(
            "gather",
            format!(
                "the view reads elements {lo}..={hi} of an input of {}",
                x.len()
            ),
        ));
    }
    let v = view.simplified();
    // Each block is the last axis (a run copied at one stride), or the last two when the
    // last repeats one element (nearest Resize: each element of a row filled in `times`
    // times); the other axes walk the blocks like an odometer.
    let rank = v.dims.len();
    let pair = rank >= 2 && v.strides[rank - 1] == 0;
    let (run, run_stride, times) = match (pair, rank) {
        (true, _) => (v.dims[rank - 2], v.strides[rank - 2], v.dims[rank - 1]),
        (false, 0) => (1, 1, 1),
        (false, _) => (v.dims[rank - 1], v.strides[rank - 1], 1),
    };
    let block_len = run * times;
    let outer = &v.dims[..rank.saturating_sub(1 + pair as usize)];
    let outer_strides = &v.strides[..outer.len()];
    let rows = |first: usize, blocks: &mut [f32]| {
        let mut index = vec![0usize; outer.len()];
        let mut rest = first;
        let mut at = v.offset as isize;
        for d in (0..outer.len()).rev() {
            index[d] = rest % outer[d];
            rest /= outer[d];
            at += index[d] as isize * outer_strides[d];
        }
        for out in blocks.chunks_mut(block_len) {
            copy_block(x, at, run_stride, times, out);
            for d in (0..outer.len()).rev() {
                index[d] += 1;
                at += outer_strides[d];
                if index[d] < outer[d] {
                    break;
                }
                at -= outer[d] as isize * outer_strides[d];
                index[d] = 0;
            }
        }
    };
    if rayon::current_num_threads() > 1 && y.len() >= PAR_CHUNK {
        let rows_per_task = (PAR_CHUNK / block_len).max(1);
        y.par_chunks_mut(rows_per_task * block_len)
            .enumerate()
            .for_each(|(t, block)| rows(t * rows_per_task, block));
    } else {
        rows(0, y);
    }
    Ok(())
}

/// `out` = `out.len() / times` input elements from `at`, `stride` apart, each written
/// `times` times in a row (positions checked by [`gather`]).
#[inline]
fn copy_block(x: &[f32], at: isize, stride: isize, times: usize, out: &mut [f32]) {
    let at = at as usize;
    match (stride, times) {
        (1, 1) => out.copy_from_slice(&x[at..at + out.len()]),
        (0, _) => out.fill(x[at]),
        (_, 1) => {
            for (q, o) in out.iter_mut().enumerate() {
                *o = x[(at as isize + q as isize * stride) as usize];
            }
        }
        _ => {
            for (q, o) in out.chunks_mut(times).enumerate() {
                o.fill(x[(at as isize + q as isize * stride) as usize]);
            }
        }
    }
}

/// Sets `dst[q * ld + r] = src[r * ls + q]` for `r < rows`, `q < cols`: the transpose of a
/// `rows x cols` matrix with rows `ls` apart into one with rows `ld` apart.
#[inline(always)]
pub(crate) fn transpose(
    src: &[f32],
    ls: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    ld: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let (src, dst) = (
        &src[..(rows - 1) * ls + cols],
        &mut dst[..(cols - 1) * ld + rows],
    );
    if (cols == 1 && ls == 1) || (rows == 1 && ld == 1) {
        // One plane position (or one channel): the rows are already in place.
        dst.copy_from_slice(src);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512f() {
        // SAFETY: the CPU has AVX-512F; `src` and `dst` reach the last element read and
        // written (checked by the slicing above).
        return unsafe { transpose_avx512(src, ls, rows, cols, dst, ld) };
    }
    for q in 0..cols {
        for r in 0..rows {
            dst[q * ld + r] = src[r * ls + q];
        }
    }
}

/// [`transpose`] in blocks of 16 x 16 held in registers: up to 16 rows of up to 16 columns
/// loaded (masked at the edges), transposed by four rounds of lane interleaves, stored as
/// up to 16 rows of the output. Strided scalar copies cost ~1 ns an element, more than the
/// depthwise multiply-adds they serve.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `(rows - 1) * ls + cols` elements and `dst`
/// `(cols - 1) * ld + rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(
    src: &[f32],
    ls: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    ld: usize,
) {
    use std::arch::x86_64::*;
    let lanes = |n: usize| ((1u32 << n) - 1) as u16;
    let (ps, pd) = (_mm512_castpd_ps, _mm512_castps_pd);
    let mut v = [_mm512_setzero_ps(); 16];
    let mut t = [_mm512_setzero_ps(); 16];
    for r0 in (0..rows).step_by(16) {
        let nr = (rows - r0).min(16);
        for q0 in (0..cols).step_by(16) {
            let nq = (cols - q0).min(16);
            for (k, vk) in v.iter_mut().enumerate() {
                *vk = if k < nr {
                    _mm512_maskz_loadu_ps(lanes(nq), src.as_ptr().add((r0 + k) * ls + q0))
                } else {
                    _mm512_setzero_ps()
                };
            }
            // Pairs of rows interleaved by elements, then by element pairs: `v[4a + j]`'s
            // 128-bit lane `k` holds column `4k + j` of rows `4a..4a + 4`.
            for a in 0..8 {
                t[2 * a] = _mm512_unpacklo_ps(v[2 * a], v[2 * a + 1]);
                t[2 * a + 1] = _mm512_unpackhi_ps(v[2 * a], v[2 * a + 1]);
            }
            for a in 0..4 {
                let (b, c) = (4 * a, 4 * a + 2);
                v[b] = ps(_mm512_unpacklo_pd(pd(t[b]), pd(t[c])));
                v[b + 1] = ps(_mm512_unpackhi_pd(pd(t[b]), pd(t[c])));
                v[b + 2] = ps(_mm512_unpacklo_pd(pd(t[b + 1]), pd(t[c + 1])));
                v[b + 3] = ps(_mm512_unpackhi_pd(pd(t[b + 1]), pd(t[c + 1])));
            }
            // Then 128-bit lanes gathered in two rounds: `v[j]` becomes column `j`.
            for h in 0..2 {
                for j in 0..4 {
                    let (a, b) = (v[8 * h + j], v[8 * h + 4 + j]);
                    t[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                    t[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
                }
            }
            for j in 0..8 {
                v[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
                v[8 + j] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[8 + j]);
            }
            for (j, vj) in v.iter().enumerate().take(nq) {
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add((q0 + j) * ld + r0), lanes(nr), *vj);
            }
        }
    }
}
