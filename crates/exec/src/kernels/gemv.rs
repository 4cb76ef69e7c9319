//! Matrix-vector products (a GEMM whose C is one row or one column) in AVX-512 registers.
//!
//! faer 0.22 runs them on AVX2 (its pulp has no AVX-512 on stable) and on one thread: LeNet5's
//! 3136x200 linear layer at batch 1 (2.5 MB of weights, more than a core's L2) was 17% of a
//! run. Here the matrix is read once, in one of two layouts:
//! - **rows** ([`Form::Axpy`]): `y[j] = sum_i v[i] M[i][j]` with M's rows contiguous (a Gemm's
//!   packed `[k][n]` weights at batch 1): each pass keeps up to 16 vectors of outputs in
//!   registers and streams M's rows, one broadcast of `v[i]` per row;
//! - **dots** ([`Form::Dot`]): `y[j] = M[j] · v` with M's rows contiguous (a pointwise
//!   convolution on a 1x1 plane, weights `[c_out][c_in]`): eight rows per pass share each
//!   vector load of `v`.
//!
//! When the matrix outgrows [`SPLIT_MIN_BYTES`] the outputs are split into one block per pool
//! thread (a second core brings its own bandwidth from L3); smaller products stay on the
//! calling thread. Bias and activation run on each block as it is stored.

use super::gemm::{Epilogue, MatRef, Threads};
use rayon::prelude::*;

/// Bytes of matrix from which a matrix-vector product splits its outputs over the pool.
const SPLIT_MIN_BYTES: usize = 256 * 1024;

/// Lanes of an AVX-512 vector of f32.
const LANES: usize = 16;

/// Vectors of outputs one row pass keeps in registers.
const MAX_VECTORS: usize = 16;

/// Rows one dot pass reads together.
const DOT_ROWS: usize = 8;

/// How the matrix is read (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Axpy,
    Dot,
}

/// The product as `y = M v` or `y = v M` over one contiguous output vector.
#[derive(Clone, Copy)]
struct Gemv<'a> {
    form: Form,
    /// The matrix: rows contiguous, `row_stride` apart (rows are inputs for `Axpy`, outputs
    /// for `Dot`).
    m: &'a [f32],
    row_stride: usize,
    /// The vector, `v_stride` apart.
    v: &'a [f32],
    v_stride: usize,
    /// Length of the reduction.
    k: usize,
    alpha: f32,
    beta: f32,
    /// Whether C is one row (else one column): how the epilogue sees the outputs.
    c_is_row: bool,
    epilogue: Epilogue<'a>,
}

/// Runs `C = act(alpha A·B + beta C + bias)` when C is one row or one column and the CPU has
/// AVX-512F; answers `false` (nothing written) otherwise. Sizes are checked by the caller.
pub(super) fn run(
    threads: Threads,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    epilogue: &Epilogue,
) -> bool {
    if !super::has_avx512f() {
        return false;
    }
    let Some(p) = plan(a, b, alpha, beta, epilogue) else {
        return false;
    };
    // A vector that is not contiguous is gathered once for the dot form's vector loads.
    let gathered: Vec<f32>;
    let p = if p.form == Form::Dot && p.v_stride != 1 {
        gathered = (0..p.k).map(|i| p.v[i * p.v_stride]).collect();
        Gemv {
            v: &gathered,
            v_stride: 1,
            ..p
        }
    } else {
        p
    };
    let bytes = 4 * c.len() * p.k;
    let tasks = rayon::current_num_threads();
    if threads == Threads::Pool && tasks > 1 && bytes >= SPLIT_MIN_BYTES {
        // Two parts per thread, so a thread that starts late leaves its second part to the
        // others.
        let parts = 2 * tasks;
        match p.form {
            Form::Axpy => p.split_reduction(parts, c),
            Form::Dot => {
                let block = c.len().div_ceil(parts).next_multiple_of(DOT_ROWS);
                c.par_chunks_mut(block)
                    .enumerate()
                    .for_each(|(i, y)| p.block(i * block, y));
            }
        }
    } else {
        p.block(0, c);
    }
    true
}

/// The product of `a` (`m x k`) and `b` (`k x n`) as a matrix-vector one, when `m` or `n` is 1
/// and the matrix has contiguous rows in one of the two forms.
fn plan<'a>(
    a: MatRef<'a>,
    b: MatRef<'a>,
    alpha: f32,
    beta: f32,
    epilogue: &Epilogue<'a>,
) -> Option<Gemv<'a>> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let (form, mat, row_stride, v, v_stride) = if m == 1 {
        // y = a_row · B: the vector is A's row; B's rows hold the outputs (axpy) or its
        // columns do (dots).
        let (v, vs) = (a.data(), a.col_stride());
        if b.col_stride() == 1 && n > 1 {
            (Form::Axpy, b.data(), b.row_stride(), v, vs)
        } else if b.row_stride() == 1 {
            (Form::Dot, b.data(), b.col_stride(), v, vs)
        } else {
            return None;
        }
    } else if n == 1 {
        // y = A · b_col: A's rows are dots (A row-major) or its columns are rows (A^T).
        let (v, vs) = (b.data(), b.row_stride());
        if a.col_stride() == 1 {
            (Form::Dot, a.data(), a.row_stride(), v, vs)
        } else if a.row_stride() == 1 {
            (Form::Axpy, a.data(), a.col_stride(), v, vs)
        } else {
            return None;
        }
    } else {
        return None;
    };
    Some(Gemv {
        form,
        m: mat,
        row_stride,
        v,
        v_stride,
        k,
        alpha,
        beta,
        c_is_row: m == 1,
        epilogue: *epilogue,
    })
}

impl Gemv<'_> {
    /// The row form with its rows (the reduction) split into `parts` contiguous blocks, each
    /// summed into a buffer of its own as a rayon task, then added up into `y`. Each task
    /// streams one contiguous block of the matrix: splitting the outputs instead (every task
    /// reading a strip of every row) was 0.028 ms against 0.020 for LeNet5's 3136x200 at 2
    /// threads (one thread: 0.031).
    fn split_reduction(&self, parts: usize, y: &mut [f32]) {
        let n = y.len();
        let rows = self.k.div_ceil(parts);
        let mut sums = vec![0f32; parts * n];
        sums.par_chunks_mut(n).enumerate().for_each(|(t, part)| {
            let k0 = (t * rows).min(self.k);
            let k = rows.min(self.k - k0);
            if k == 0 {
                // More parts than rows: this one's sum stays zero.
                return;
            }
            let p = Gemv {
                m: &self.m[k0 * self.row_stride..],
                v: &self.v[k0 * self.v_stride..],
                k,
                alpha: 1.0,
                beta: 0.0,
                epilogue: Epilogue::NONE,
                ..*self
            };
            // SAFETY: as in `block`.
            unsafe { avx512::axpy(&p, 0, part) };
        });
        for (j, v) in y.iter_mut().enumerate() {
            let sum: f32 = sums.iter().skip(j).step_by(n).sum();
            *v = if self.beta == 0.0 {
                self.alpha * sum
            } else {
                self.alpha * sum + self.beta * *v
            };
        }
        self.finish(0, y);
    }

    /// Outputs `j0..j0 + y.len()` into `y`, epilogue included.
    fn block(&self, j0: usize, y: &mut [f32]) {
        // SAFETY: `run` checked AVX-512F; `MatRef` keeps every element its sizes and strides
        // name inside its slice, and the kernels read only those (masked tails).
        unsafe {
            match self.form {
                Form::Axpy => avx512::axpy(self, j0, y),
                Form::Dot => avx512::dots(self, j0, y),
            }
        }
        self.finish(j0, y);
    }

    /// Bias and activation on outputs `j0..j0 + y.len()`: columns of C's one row, or rows
    /// of its one column.
    fn finish(&self, j0: usize, y: &mut [f32]) {
        if self.c_is_row {
            self.epilogue.cols(j0, y.len()).apply(y, y.len(), 0);
        } else {
            self.epilogue.apply(y, 1, j0);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Gemv;

    pub(super) unsafe fn axpy(_: &Gemv, _: usize, _: &mut [f32]) {
        unreachable!("has_avx512f() is false off x86_64")
    }

    pub(super) unsafe fn dots(_: &Gemv, _: usize, _: &mut [f32]) {
        unreachable!("has_avx512f() is false off x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Gemv, DOT_ROWS, LANES, MAX_VECTORS};
    use std::arch::x86_64::*;

    /// `alpha * acc + beta * y` into `y` (masked to `mask`'s lanes; `y` is not read when
    /// `beta` is 0, so NaNs in it do not leak).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(acc: __m512, y: *mut f32, mask: __mmask16, alpha: f32, beta: f32) {
        let mut r = _mm512_mul_ps(acc, _mm512_set1_ps(alpha));
        if beta != 0.0 {
            let old = _mm512_maskz_loadu_ps(mask, y);
            r = _mm512_fmadd_ps(old, _mm512_set1_ps(beta), r);
        }
        _mm512_mask_storeu_ps(y, mask, r);
    }

    /// The mask of the first `n` lanes (`n <= 16`).
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Row form for outputs `j0..j0 + y.len()`: passes of at most [`MAX_VECTORS`] vectors.
    ///
    /// # Safety
    /// AVX-512F; `p.m` holds rows `0..p.k` of `j0 + y.len()` elements `p.row_stride` apart
    /// and `p.v` the `p.k` vector elements `p.v_stride` apart.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy(p: &Gemv, j0: usize, y: &mut [f32]) {
        let vectors = y.len().div_ceil(LANES);
        let passes = vectors.div_ceil(MAX_VECTORS);
        let per_pass = vectors.div_ceil(passes);
        let mut j = 0;
        while j < y.len() {
            let cols = (per_pass * LANES).min(y.len() - j);
            let (m, out) = (p.m.as_ptr().add(j0 + j), y.as_mut_ptr().add(j));
            macro_rules! pass {
                ($($v:literal)*) => {
                    match cols.div_ceil(LANES) {
                        $($v => axpy_pass::<$v>(p, m, cols, out),)*
                        _ => unreachable!("at most {MAX_VECTORS} vectors per pass"),
                    }
                };
            }
            pass!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
            j += cols;
        }
    }

    /// One row pass of `V` vectors (`cols` outputs, the last vector masked) at `m`, stored
    /// at `out`. Up to 8 vectors keep two sets of accumulators (even and odd rows), so at
    /// least 8 chains of multiply-adds are in flight.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn axpy_pass<const V: usize>(p: &Gemv, m: *const f32, cols: usize, out: *mut f32) {
        let tail = lanes(cols - (V - 1) * LANES);
        let sets = if V <= 8 { 2 } else { 1 };
        let mut acc = [[_mm512_setzero_ps(); V]; 2];
        let row = |acc: &mut [__m512; V], i: usize| {
            let x = _mm512_set1_ps(*p.v.as_ptr().add(i * p.v_stride));
            let r = m.add(i * p.row_stride);
            for (c, a) in acc.iter_mut().enumerate() {
                let w = if c + 1 < V {
                    _mm512_loadu_ps(r.add(c * LANES))
                } else {
                    _mm512_maskz_loadu_ps(tail, r.add(c * LANES))
                };
                *a = _mm512_fmadd_ps(x, w, *a);
            }
        };
        let mut i = 0;
        while i + sets <= p.k {
            for (s, set) in acc.iter_mut().enumerate().take(sets) {
                row(set, i + s);
            }
            i += sets;
        }
        if i < p.k {
            row(&mut acc[0], i);
        }
        let [even, odd] = acc;
        for (c, (e, o)) in even.into_iter().zip(odd).enumerate() {
            let sum = _mm512_add_ps(e, o);
            let mask = if c + 1 < V { lanes(LANES) } else { tail };
            store(sum, out.add(c * LANES), mask, p.alpha, p.beta);
        }
    }

    /// Dot form for outputs `j0..j0 + y.len()`: passes of [`DOT_ROWS`] rows, then 4, 2, 1.
    ///
    /// # Safety
    /// AVX-512F; `p.m` holds rows `j0..j0 + y.len()` of `p.k` contiguous elements
    /// `p.row_stride` apart and `p.v` the `p.k` contiguous vector elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots(p: &Gemv, j0: usize, y: &mut [f32]) {
        let mut j = 0;
        while j < y.len() {
            let (m, out) = (
                p.m.as_ptr().add((j0 + j) * p.row_stride),
                y.as_mut_ptr().add(j),
            );
            j += match y.len() - j {
                r if r >= DOT_ROWS => dot_pass::<DOT_ROWS>(p, m, out),
                r if r >= 4 => dot_pass::<4>(p, m, out),
                r if r >= 2 => dot_pass::<2>(p, m, out),
                _ => dot_pass::<1>(p, m, out),
            };
        }
    }

    /// `R` rows from `m` dotted with the vector, stored at `out`; answers `R`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dot_pass<const R: usize>(p: &Gemv, m: *const f32, out: *mut f32) -> usize {
        let mut acc = [_mm512_setzero_ps(); R];
        let step = |acc: &mut [__m512; R], i: usize, mask: __mmask16| {
            let x = _mm512_maskz_loadu_ps(mask, p.v.as_ptr().add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                let w = _mm512_maskz_loadu_ps(mask, m.add(r * p.row_stride + i));
                *a = _mm512_fmadd_ps(w, x, *a);
            }
        };
        let mut i = 0;
        while i + LANES <= p.k {
            step(&mut acc, i, lanes(LANES));
            i += LANES;
        }
        if i < p.k {
            step(&mut acc, i, lanes(p.k - i));
        }
        let mut sums = [0f32; R];
        for (s, a) in sums.iter_mut().zip(acc) {
            *s = _mm512_reduce_add_ps(a);
        }
        let r = _mm512_maskz_loadu_ps(lanes(R), sums.as_ptr());
        store(r, out, lanes(R), p.alpha, p.beta);
        R
    }
}
