//! Activations (the fused epilogue of GEMM and convolution) and unary maps.
//!
//! Every function here is branch-free on its element (both sides of a select are computed),
//! so loops over slices vectorise; `exp`, `tanh` and `erf` are polynomial/rational
//! approximations accurate to a few ulp instead of libm calls, which do not vectorise.

use super::{check_len, dispatch, Result, PAR_CHUNK};
use rayon::prelude::*;

/// An activation applied element by element after a GEMM or convolution (or on its own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu(f32),
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x * sigmoid(x)` (Swish).
    Silu,
    /// `0.5 x (1 + erf(x / sqrt 2))`, ONNX Gelu's default.
    Gelu,
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, ONNX Gelu `approximate="tanh"`.
    GeluTanh,
    /// `max(0, min(1, alpha x + beta))`.
    HardSigmoid {
        /// Slope (ONNX default 0.2).
        alpha: f32,
        /// Offset (ONNX default 0.5).
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 0.5))`.
    HardSwish,
    /// `tanh(x)`.
    Tanh,
}

/// A unary map: an [`Activation`] or one of the elementwise functions that are not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// An activation.
    Act(Activation),
    /// `e^x`.
    Exp,
    /// The error function.
    Erf,
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `sqrt(x)`.
    Sqrt,
    /// `1 / x`.
    Reciprocal,
    /// Natural logarithm.
    Log,
}

impl Activation {
    /// This activation at `x`.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(alpha) => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Clip(lo, hi) => x.max(lo).min(hi),
            Activation::Sigmoid => sigmoid_f32(x),
            Activation::Silu => x * sigmoid_f32(x),
            Activation::Gelu => 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // sqrt(2 / pi)
                0.5 * x * (1.0 + tanh_f32(C * (x + 0.044_715 * x * x * x)))
            }
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => tanh_f32(x),
        }
    }

    /// Applies this activation to every element of `y` in place (one vectorised pass per
    /// variant; nothing to do for [`Activation::None`]).
    pub fn apply_slice(self, y: &mut [f32]) {
        // One monomorphic loop per variant: the match is outside the loop.
        match self {
            Activation::None => {}
            Activation::Relu => map_slice(y, |x| Activation::Relu.apply(x)),
            Activation::LeakyRelu(a) => map_slice(y, |x| Activation::LeakyRelu(a).apply(x)),
            Activation::Clip(lo, hi) => map_slice(y, |x| Activation::Clip(lo, hi).apply(x)),
            Activation::Sigmoid => map_slice(y, sigmoid_f32),
            Activation::Silu => map_slice(y, |x| Activation::Silu.apply(x)),
            Activation::Gelu => map_slice(y, |x| Activation::Gelu.apply(x)),
            Activation::GeluTanh => map_slice(y, |x| Activation::GeluTanh.apply(x)),
            Activation::HardSigmoid { alpha, beta } => {
                map_slice(y, |x| Activation::HardSigmoid { alpha, beta }.apply(x))
            }
            Activation::HardSwish => map_slice(y, |x| Activation::HardSwish.apply(x)),
            Activation::Tanh => map_slice(y, tanh_f32),
        }
    }
}

impl UnaryOp {
    /// This map at `x`.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Act(a) => a.apply(x),
            UnaryOp::Exp => exp_f32(x),
            UnaryOp::Erf => erf_f32(x),
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Reciprocal => 1.0 / x,
            UnaryOp::Log => x.ln(),
        }
    }

    /// Applies this map to every element of `y` in place, one vectorised loop.
    fn apply_slice(self, y: &mut [f32]) {
        match self {
            UnaryOp::Act(a) => a.apply_slice(y),
            UnaryOp::Exp => map_slice(y, exp_f32),
            UnaryOp::Erf => map_slice(y, erf_f32),
            UnaryOp::Neg => map_slice(y, |x| -x),
            UnaryOp::Abs => map_slice(y, f32::abs),
            UnaryOp::Sqrt => map_slice(y, f32::sqrt),
            UnaryOp::Reciprocal => map_slice(y, |x| 1.0 / x),
            UnaryOp::Log => map_slice(y, f32::ln),
        }
    }
}

/// `y = f(y)` element by element, vectorised for the CPU at hand.
#[inline(always)]
pub(crate) fn map_slice(y: &mut [f32], f: impl Fn(f32) -> f32) {
    dispatch(
        #[inline(always)]
        || {
            for v in y.iter_mut() {
                *v = f(*v);
            }
        },
    )
}

/// Elements per block of [`unary_chain`]: small enough to stay in L1 between the maps.
const CHAIN_BLOCK: usize = 2048;

/// `y = op(x)` element by element, parallel over chunks of [`PAR_CHUNK`] elements.
pub fn unary(op: UnaryOp, x: &[f32], y: &mut [f32]) -> Result<()> {
    unary_chain(&[op], x, y)
}

/// `y = op(y)` in place, parallel over chunks.
pub fn unary_in_place(op: UnaryOp, y: &mut [f32]) {
    for_chunks(y, |block| op.apply_slice(block));
}

/// `y = ops[n-1](...ops[0](x))` in one pass over memory: each block of `x` is copied to `y`
/// and every map runs on it while it is in cache.
pub fn unary_chain(ops: &[UnaryOp], x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("unary", "output", x.len(), y.len())?;
    let run = |xs: &[f32], ys: &mut [f32]| {
        for (xb, yb) in xs.chunks(CHAIN_BLOCK).zip(ys.chunks_mut(CHAIN_BLOCK)) {
            yb.copy_from_slice(xb);
            for op in ops {
                op.apply_slice(yb);
            }
        }
    };
    if x.len() <= PAR_CHUNK || rayon::current_num_threads() == 1 {
        run(x, y);
    } else {
        x.par_chunks(PAR_CHUNK)
            .zip(y.par_chunks_mut(PAR_CHUNK))
            .for_each(|(xs, ys)| run(xs, ys));
    }
    Ok(())
}

/// Runs `f` on blocks of `y`, in parallel when `y` is large and the pool has several threads.
pub(crate) fn for_chunks(y: &mut [f32], f: impl Fn(&mut [f32]) + Sync + Send) {
    if y.len() <= PAR_CHUNK || rayon::current_num_threads() == 1 {
        f(y);
    } else {
        y.par_chunks_mut(PAR_CHUNK).for_each(f);
    }
}

/// `e^x` to about 2 ulp (Cephes' `expf` polynomial with a branch-free range reduction);
/// overflows to `inf` above 88.72 and flushes to 0 below -87.33 like a normal-only `expf`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.336_55, 88.722_83);
    // Round to nearest by adding and removing 1.5 * 2^23 (|xc * LOG2E| < 2^22): one add and
    // one subtract in every instruction set, where `round` may become a library call.
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = xc * LOG2E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2^n in two halves, so n = 128 (x near 88.72) does not overflow the exponent field.
    // n as an integer: the low bits of `shifted` (1.5 * 2^23 + n, one unit per ulp), where
    // `n as i32` (a saturating cast) made the whole function 2.3x slower under AVX-512.
    let n = shifted.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - half + 127) as u32) << 23);
    let v = e * s1 * s2;
    if x > 88.722_83 {
        f32::INFINITY
    } else if x < -87.336_55 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        v
    }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh(x)`: Cephes' odd polynomial below |x| = 0.625, `1 - 2 / (e^2|x| + 1)` above.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let p = -5.704_988_7e-3_f32;
    let p = p * z + 2.063_909e-2;
    let p = p * z - 5.373_971_6e-2;
    let p = p * z + 1.333_144_2e-1;
    let p = p * z - 3.333_328e-1;
    let small = x + x * z * p;
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// erf(x) within 1e-7 absolute: a rational approximation of odd degree 13 over even degree 8
/// on [-4, 4] (erf(±4) rounds to ±1 in f32), the form Eigen and XLA use (6.5e-8 from erf),
/// evaluated in f64 because f32 rounding in the polynomials alone adds up to 4e-7.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = f64::from(x.clamp(-4.0, 4.0));
    let z = x * x;
    let p = -2.726_142_258_013_06e-10;
    let p = p * z + 2.770_681_424_959_02e-8;
    let p = p * z - 2.101_024_020_825_08e-6;
    let p = p * z - 5.692_506_394_623_46e-5;
    let p = p * z - 7.349_906_303_268_55e-4;
    let p = p * z - 2.954_599_808_540_25e-3;
    let p = p * z - 1.609_603_332_624_15e-2;
    let q = -1.456_607_184_649_96e-5;
    let q = q * z - 2.133_740_552_789_05e-4;
    let q = q * z - 1.682_826_974_382_03e-3;
    let q = q * z - 7.373_329_167_204_68e-3;
    let q = q * z - 1.426_473_905_141_89e-2;
    (x * p / q) as f32
}
