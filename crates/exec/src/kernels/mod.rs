//! CPU kernels for the planned executor: plain `f32` slices in, `&mut [f32]` out,
//! contiguous row-major (NCHW for images), shapes as `usize` parameters or small structs.
//!
//! Every kernel checks its slice lengths against the shape it is given and answers a
//! [`KernelError`] instead of panicking. Large work is split with rayon on the *current* pool,
//! so a caller's `ThreadPool::install` decides the thread count. GEMMs go to faer's matmul (measured faster than the `gemm` crate at
//! this project's shapes; `benches/kernels.rs`).

pub mod activation;
pub mod binary;
pub mod conv;
mod depthwise;
mod direct_conv;
pub mod gemm;
mod gemv;
pub mod layout;
pub mod norm;
pub mod pool;
pub mod quant;

use std::fmt;

use rayon::prelude::*;

/// A kernel refused its arguments: `kernel` names it, `message` says which size is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The kernel that refused, e.g. `"gemm"` or `"conv2d"`.
    pub kernel: &'static str,
    /// What was wrong, with the expected and actual sizes.
    pub message: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kernel: {}", self.kernel, self.message)
    }
}

impl std::error::Error for KernelError {}

/// The result of a kernel call.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Fails with a [`KernelError`] when a slice called `what` holds `actual` elements and
/// `expected` were needed.
pub(crate) fn check_len(
    kernel: &'static str,
    what: &str,
    expected: usize,
    actual: usize,
) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError {
            kernel,
            message: format!("{what} has {actual} elements, the shape needs {expected}"),
        })
    }
}

/// A [`KernelError`] for `kernel` with `message`.
pub(crate) fn error(kernel: &'static str, message: impl Into<String>) -> KernelError {
    KernelError {
        kernel,
        message: message.into(),
    }
}

/// Elements per rayon task in the elementwise kernels: below about this a task costs more
/// to schedule than it saves.
pub(crate) const PAR_CHUNK: usize = 16 * 1024;

/// `len` zeros, written in parallel chunks when the pool has several threads: the zero
/// fill of a kernel's output (`vec![0.0; len]`, a serial memset when the allocator reuses
/// memory, or page faults on first touch) otherwise runs on the calling thread alone, about
/// 5% of a 1-thread zoo:cnn training step spent outside the parallel regions.
pub fn zeros(len: usize) -> Vec<f32> {
    if rayon::current_num_threads() == 1 || len < 4 * PAR_CHUNK {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(PAR_CHUNK)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the first `len` elements of the spare capacity were all written just above.
    unsafe { v.set_len(len) };
    v
}

/// A copy of `src`, made in parallel chunks when it is large and the pool has several
/// threads ([`summed`] of one term).
pub fn copied(src: &[f32]) -> Vec<f32> {
    sum_of(&[src], src.len())
}

/// The elementwise sum of `terms` (added in order; each must have the first's length),
/// written in parallel chunks when large and the pool has several threads: a training
/// step's parameter gradients (6 MB for zoo:mobilenetv3-small), the parts of a batch's
/// added, were a serial copy after the sum that one thread made while the other waited.
pub fn summed(terms: &[&[f32]]) -> Result<Vec<f32>> {
    let len = terms.first().map_or(0, |t| t.len());
    for t in terms {
        check_len("sum", "a term", len, t.len())?;
    }
    Ok(sum_of(terms, len))
}

/// [`summed`] of terms of `len` elements each.
fn sum_of(terms: &[&[f32]], len: usize) -> Vec<f32> {
    let fill = |start: usize, out: &mut [std::mem::MaybeUninit<f32>]| {
        let at = start..start + out.len();
        match terms {
            [a] => out.iter_mut().zip(&a[at]).for_each(|(o, x)| {
                o.write(*x);
            }),
            [a, b] => out
                .iter_mut()
                .zip(&a[at.clone()])
                .zip(&b[at])
                .for_each(|((o, x), y)| {
                    o.write(x + y);
                }),
            _ => out.iter_mut().zip(at).for_each(|(o, i)| {
                o.write(terms.iter().fold(0.0, |s, t| s + t[i]));
            }),
        }
    };
    let mut v = Vec::with_capacity(len);
    let out = &mut v.spare_capacity_mut()[..len];
    if rayon::current_num_threads() == 1 || len < 4 * PAR_CHUNK {
        fill(0, out);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(k, c)| fill(k * PAR_CHUNK, c));
    }
    // SAFETY: the first `len` elements of the spare capacity were all written above.
    unsafe { v.set_len(len) };
    v
}

/// Sets `v` to zeros, in parallel chunks when it is large and the pool has several threads.
pub fn fill_zero(v: &mut [f32]) {
    if rayon::current_num_threads() == 1 || v.len() < 4 * PAR_CHUNK {
        v.fill(0.0);
    } else {
        v.par_chunks_mut(PAR_CHUNK).for_each(|c| c.fill(0.0));
    }
}

/// Runs `f` compiled for the widest vector instructions the CPU has (AVX-512, else AVX2 with
/// FMA), so the loops inside it vectorise beyond the SSE2 baseline the workspace builds for.
/// `f` and everything it calls must be inlinable (`#[inline(always)]` helpers, closures).
/// A closure that only calls an `#[inline(always)]` function is best marked
/// `#[inline(always)]` too (`dispatch(#[inline(always)] || scan(xs))`): otherwise LLVM may
/// keep it out of line, compiled for the baseline. Public for the scans outside the executor
/// that run on every calibrated value (the quantization observers and error sums of
/// `whittle-passes`).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512f() {
            // SAFETY: the CPU supports the features `avx512` is compiled for.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `avx2` is compiled for.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Whether the CPU has AVX-512F: [`dispatch`]'s first choice, and the test in front of the
/// kernels written with its intrinsics (direct convolution, matrix-vector products, 2x2
/// MaxPool). `false` off x86_64.
#[inline]
pub(crate) fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Sum of `x` in 16 independent lanes, so it vectorises (a plain `sum` is one serial chain of
/// additions, which the compiler may not reorder).
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}
