//! Activations: `Relu` and its relatives, `Sigmoid`, `Gelu`, `Clip`, the softmax family
//! and `Dropout`.
//!
//! Float paths are candle tensor ops (differentiable); integer paths (`Relu`, `Clip`,
//! `PRelu`, `Shrink`) are exact host loops.

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use whittle_ir::seed::{SplitMix64, GOLDEN_GAMMA};
use whittle_ir::{DataType, NodeAttrs};

use super::unary::{numeric, TensorFn};
use super::util::{broadcast_shape, int_value, is_unsigned, map2_i64, map_f64, require_float};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

type CResult<T> = candle_core::Result<T>;

/// SELU's default `alpha` (as f32, the attribute's type).
const SELU_ALPHA: f32 = 1.673_263_2;
/// SELU's default `gamma`.
const SELU_GAMMA: f32 = 1.050_701;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Relu", |c| {
        numeric(c, Tensor::relu, |x, u| if u { x } else { x.max(0) })
    });
    r.add("LeakyRelu", |c| {
        let alpha = c.node.float_or("alpha", 0.01)? as f64;
        float(c, |t| negative_part(t, &t.affine(alpha, 0.0)?))
    });
    r.add("PRelu", prelu);
    r.add("Elu", |c| {
        let alpha = c.node.float_or("alpha", 1.0)? as f64;
        float(c, |t| t.elu(alpha))
    });
    r.add("Selu", |c| {
        let alpha = c.node.float_or("alpha", SELU_ALPHA)? as f64;
        let gamma = c.node.float_or("gamma", SELU_GAMMA)? as f64;
        float(c, |t| t.elu(alpha)?.affine(gamma, 0.0))
    });
    r.add("Celu", celu);
    r.add("Sigmoid", |c| float(c, sigmoid));
    r.add("HardSigmoid", |c| {
        let alpha = c.node.float_or("alpha", 0.2)? as f64;
        let beta = c.node.float_or("beta", 0.5)? as f64;
        float(c, |t| hard_sigmoid(t, alpha, beta))
    });
    r.add("HardSwish", |c| {
        float(c, |t| t.mul(&hard_sigmoid(t, 1.0 / 6.0, 0.5)?))
    });
    r.add("Tanh", |c| float(c, Tensor::tanh));
    r.add("Gelu", gelu);
    r.add("Softplus", |c| float(c, softplus));
    r.add("Softsign", |c| {
        float(c, |t| t.div(&t.abs()?.affine(1.0, 1.0)?))
    });
    r.add("Mish", |c| float(c, |t| t.mul(&softplus(t)?.tanh()?)));
    r.add("Swish", |c| {
        let alpha = c.node.float_or("alpha", 1.0)? as f64;
        float(c, |t| t.mul(&sigmoid(&t.affine(alpha, 0.0)?)?))
    });
    r.add("ThresholdedRelu", |c| {
        let alpha = c.node.float_or("alpha", 1.0)? as f64;
        float(c, |t| t.gt(alpha)?.where_cond(t, &t.zeros_like()?))
    });
    r.add("Shrink", shrink);
    r.add("Clip", clip);
    r.add("Softmax", |c| along_axis(c, softmax));
    r.add("LogSoftmax", |c| along_axis(c, log_softmax));
    r.add("Hardmax", |c| along_axis(c, hardmax));
    r.add("Dropout", dropout);
}

/// A float-only op computed by `f` on input 0.
fn float(c: &OpCtx, f: impl Fn(&Tensor) -> CResult<Tensor>) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    Ok(vec![x.with_tensor(f(x.tensor())?)?])
}

/// `t` where `t >= 0`, else `neg` (same shape).
fn negative_part(t: &Tensor, neg: &Tensor) -> CResult<Tensor> {
    t.lt(0.0)?.where_cond(neg, t)
}

/// `1 / (1 + e^-x)` as `(1 + tanh(x / 2)) / 2`: three passes, no overflow, finite gradients.
fn sigmoid(t: &Tensor) -> CResult<Tensor> {
    t.affine(0.5, 0.0)?.tanh()?.affine(0.5, 0.5)
}

fn hard_sigmoid(t: &Tensor, alpha: f64, beta: f64) -> CResult<Tensor> {
    t.affine(alpha, beta)?.maximum(0.0)?.minimum(1.0)
}

/// `log(1 + e^x)` as `max(x, 0) + log(1 + e^-|x|)`, which cannot overflow.
fn softplus(t: &Tensor) -> CResult<Tensor> {
    t.relu()?
        .add(&t.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)
}

fn celu(c: &OpCtx) -> Result<Vec<Value>> {
    let alpha = c.node.float_or("alpha", 1.0)? as f64;
    if alpha == 0.0 {
        bail!("alpha must not be 0");
    }
    // celu(x) = alpha * elu(x / alpha, 1)
    float(c, |t| {
        t.affine(1.0 / alpha, 0.0)?.elu(1.0)?.affine(alpha, 0.0)
    })
}

fn gelu(c: &OpCtx) -> Result<Vec<Value>> {
    let f: TensorFn = match c.node.string_or("approximate", "none")?.as_str() {
        "none" => Tensor::gelu_erf,
        "tanh" => Tensor::gelu,
        other => bail!("approximate = '{other}' is not 'none' or 'tanh'"),
    };
    float(c, f)
}

fn prelu(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, slope) = (c.input(0)?, c.input(1)?);
    if broadcast_shape(x.shape(), slope.shape())? != x.shape() {
        bail!(
            "slope shape {:?} does not broadcast to input shape {:?}",
            slope.shape(),
            x.shape()
        );
    }
    if x.dtype().is_float() {
        let neg = x.tensor().broadcast_mul(slope.tensor())?;
        return Ok(vec![x.with_tensor(negative_part(x.tensor(), &neg)?)?]);
    }
    let unsigned = is_unsigned(x.dtype());
    Ok(vec![map2_i64(x, slope, x.dtype(), move |v, s| {
        Ok(if v < 0 && !unsigned {
            v.wrapping_mul(s)
        } else {
            v
        })
    })?])
}

fn shrink(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let lambd = c.node.float_or("lambd", 0.5)? as f64;
    let bias = c.node.float_or("bias", 0.0)? as f64;
    if !x.dtype().is_float() {
        let f = move |v: f64| match v {
            v if v < -lambd => v + bias,
            v if v > lambd => v - bias,
            _ => 0.0,
        };
        return Ok(vec![map_f64(x, f)?]);
    }
    float(c, |t| {
        let inner = t
            .gt(lambd)?
            .where_cond(&t.affine(1.0, -bias)?, &t.zeros_like()?)?;
        t.lt(-lambd)?.where_cond(&t.affine(1.0, bias)?, &inner)
    })
}

/// A Clip bound: optional input `input` (opset >= 11) or float attribute `attr`, as
/// `(float, integer)`.
fn clip_bound(c: &OpCtx, input: usize, attr: &str) -> Result<Option<(f64, i64)>> {
    if c.opset < 11 {
        return Ok(c.node.float(attr)?.map(|f| (f as f64, f as i64)));
    }
    let Some(v) = c.opt_input(input) else {
        return Ok(None);
    };
    if v.numel() != 1 {
        bail!(
            "bound input #{input} must hold one element, has shape {:?}",
            v.shape()
        );
    }
    Ok(Some((v.to_f64_vec()?[0], v.to_i64_vec()?[0])))
}

fn clip(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let lo = clip_bound(c, 1, "min")?;
    let hi = clip_bound(c, 2, "max")?;
    if x.dtype().is_float() {
        let mut t = x.tensor().clone();
        if let Some((lo, _)) = lo {
            t = t.maximum(lo)?;
        }
        if let Some((hi, _)) = hi {
            t = t.minimum(hi)?;
        }
        return Ok(vec![x.with_tensor(t)?]);
    }
    if !x.dtype().is_integer() {
        bail!("expects a numeric tensor, got {}", x.dtype());
    }
    // uint64 values live in i64 bit patterns: compare them as u64.
    let wide = x.dtype() == DataType::Uint64;
    let key = move |v: i64| if wide { v as u64 as i128 } else { v as i128 };
    let lo = lo.map_or(i128::MIN, |b| key(b.1));
    let hi = hi.map_or(i128::MAX, |b| key(b.1));
    let out: Vec<i64> = x
        .to_i64_vec()?
        .into_iter()
        .map(|v| key(v).max(lo).min(hi) as i64)
        .collect();
    Ok(vec![int_value(out, x.shape(), x.dtype(), x)?])
}

/// Runs `f` along one axis: since opset 13 the `axis` attribute (default -1) itself;
/// before, the input is flattened to 2-D at `axis` (default 1) and `f` runs on dim 1.
fn along_axis(c: &OpCtx, f: fn(&Tensor, usize) -> CResult<Tensor>) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    let t = x.tensor();
    if x.numel() == 0 {
        return Ok(vec![x.clone()]);
    }
    if c.opset >= 13 {
        let axis = c.axis(c.node.int_or("axis", -1)?, x.rank())?;
        return Ok(vec![x.with_tensor(f(t, axis)?)?]);
    }
    let rank = x.rank() as i64;
    let axis = c.node.int_or("axis", 1)?;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..=rank).contains(&axis) {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    let outer: usize = x.shape()[..axis as usize].iter().product();
    let flat = t.reshape((outer, x.numel() / outer))?;
    Ok(vec![x.with_tensor(f(&flat, 1)?.reshape(x.shape())?)?])
}

/// `x - max(x)` along `axis`; the max is a constant shift, so it is detached.
fn shifted(t: &Tensor, axis: usize) -> CResult<Tensor> {
    t.broadcast_sub(&t.max_keepdim(axis)?.detach())
}

fn softmax(t: &Tensor, axis: usize) -> CResult<Tensor> {
    let e = shifted(t, axis)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(axis)?)
}

fn log_softmax(t: &Tensor, axis: usize) -> CResult<Tensor> {
    let s = shifted(t, axis)?;
    s.broadcast_sub(&s.exp()?.sum_keepdim(axis)?.log()?)
}

/// One-hot of the first maximum along `axis`.
fn hardmax(t: &Tensor, axis: usize) -> CResult<Tensor> {
    let idx = t.argmax_keepdim(axis)?;
    let n = t.dim(axis)?;
    let mut shape = vec![1; t.rank()];
    shape[axis] = n;
    let range = Tensor::arange(0u32, n as u32, t.device())?.reshape(shape)?;
    range.broadcast_eq(&idx)?.to_dtype(t.dtype())
}

/// Dropout's ratio and whether it is in training mode.
fn dropout_mode(c: &OpCtx) -> Result<(f64, bool)> {
    if c.opset < 12 {
        // Opsets before 7 could also force inference with `is_test`.
        let train = c.training && c.node.int_or("is_test", 0)? == 0;
        return Ok((c.node.float_or("ratio", 0.5)? as f64, train));
    }
    let ratio = match c.opt_input(1) {
        Some(r) => r.to_f64_vec()?.first().copied().unwrap_or(0.5),
        None => 0.5,
    };
    let train = match c.opt_input(2) {
        Some(t) => t.to_i64_vec()?.first().is_some_and(|&v| v != 0),
        None => false,
    };
    Ok((ratio, c.training || train))
}

fn dropout(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let (ratio, train) = dropout_mode(c)?;
    // Opsets 7-9 return the mask in the input's type, later ones as bool.
    let mask_type = if c.opset >= 10 {
        DataType::Bool
    } else {
        x.dtype()
    };
    if !train || ratio == 0.0 {
        let ones = x.tensor().ones_like()?.to_dtype(DType::U8)?;
        return Ok(vec![
            x.clone(),
            Value::new(ones, DataType::Bool)?.cast(mask_type)?,
        ]);
    }
    require_float(x)?;
    if !(0.0..1.0).contains(&ratio) {
        bail!("ratio {ratio} is outside [0, 1)");
    }
    let draw = match (c.node.int("seed")?, c.seed) {
        (Some(seed), _) => Draw::Numpy(seed as u32),
        (None, Some(seed)) => Draw::Stream(seed),
        (None, None) => Draw::Candle,
    };
    let keep = keep_mask(x.tensor(), ratio, draw)?;
    let scale = 1.0 / (1.0 - ratio);
    let t = x.tensor();
    // Off candle's tape (the graph-level backward's forward, inference in training mode) an
    // f32 input is scaled in one parallel pass; on the tape through candle's operators.
    let y = match (t.dtype(), t.track_op()) {
        (DType::F32, false) => {
            let mut y = crate::kernels::zeros(keep.len());
            let scale = scale as f32;
            x.with_f32(|xs| {
                y.par_chunks_mut(DRAW_CHUNK)
                    .zip(xs.par_chunks(DRAW_CHUNK).zip(keep.par_chunks(DRAW_CHUNK)))
                    .for_each(|(y, (xs, k))| {
                        for ((v, &x), &k) in y.iter_mut().zip(xs).zip(k) {
                            *v = if k != 0 { x * scale } else { 0.0 };
                        }
                    })
            })?;
            Tensor::from_vec(y, t.shape(), t.device())?
        }
        _ => {
            let mask = Tensor::from_vec(keep.clone(), t.shape(), t.device())?;
            t.mul(&mask.to_dtype(t.dtype())?.affine(scale, 0.0)?)?
        }
    };
    let keep = Tensor::from_vec(keep, t.shape(), t.device())?;
    Ok(vec![
        x.with_tensor(y)?,
        Value::new(keep, DataType::Bool)?.cast(mask_type)?,
    ])
}

/// Where Dropout's uniform draws come from.
#[derive(Clone, Copy)]
enum Draw {
    /// The node's `seed` attribute: the Mersenne Twister seeded as numpy's
    /// `np.random.seed(seed)` (matching ONNX's reference implementation).
    Numpy(u32),
    /// A seeded run (the trainer): element `i` draws splitmix64's `i`-th value from this
    /// seed, so chunks of the mask are drawn in parallel and the same on any thread count.
    Stream(u64),
    /// No seed: candle's generator.
    Candle,
}

/// Elements per rayon task of Dropout's draws and scaling.
const DRAW_CHUNK: usize = 16 * 1024;

/// Which elements of `t` Dropout keeps (1) at `ratio`: those whose uniform draw in [0, 1)
/// is at least `ratio`.
fn keep_mask(t: &Tensor, ratio: f64, draw: Draw) -> Result<Vec<u8>> {
    let n = t.elem_count();
    Ok(match draw {
        Draw::Numpy(seed) => {
            let mut mt = Mt19937::new(seed);
            (0..n).map(|_| u8::from(mt.next_f64() >= ratio)).collect()
        }
        Draw::Stream(seed) => {
            // A draw of 53 bits k is kept when k / 2^53 >= ratio, that is k >= ratio * 2^53
            // rounded up (exact: the scaling is by a power of two).
            let threshold = (ratio * (1u64 << 53) as f64).ceil() as u64;
            let mut keep = vec![0u8; n];
            keep.par_chunks_mut(DRAW_CHUNK)
                .enumerate()
                .for_each(|(chunk, k)| {
                    let first = (chunk * DRAW_CHUNK) as u64;
                    let mut g =
                        SplitMix64::new(seed.wrapping_add(first.wrapping_mul(GOLDEN_GAMMA)));
                    for v in k.iter_mut() {
                        *v = u8::from(g.next_u64() >> 11 >= threshold);
                    }
                });
            keep
        }
        Draw::Candle => Tensor::rand(0f32, 1f32, t.shape(), t.device())?
            .ge(ratio)?
            .flatten_all()?
            .to_vec1::<u8>()?,
    })
}

/// The MT19937 generator (Matsumoto & Nishimura), as numpy's legacy `RandomState` uses it.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        let mut prev = seed;
        for (i, s) in state.iter_mut().enumerate() {
            *s = if i == 0 {
                seed
            } else {
                1_812_433_253u32
                    .wrapping_mul(prev ^ (prev >> 30))
                    .wrapping_add(i as u32)
            };
            prev = *s;
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A double in [0, 1) with 53 random bits, as numpy's `random_sample`.
    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn close(got: &Tensor, want: &[f32]) {
        let got = got.to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} != {want:?}");
        }
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn sigmoid_and_softplus_match_their_definitions() {
        let t = f32s(&[-2.0, 0.0, 3.0]);
        // 1 / (1 + e^2) = 0.1192029, 1 / (1 + e^-3) = 0.9525741
        close(&sigmoid(&t).unwrap(), &[0.119_202_9, 0.5, 0.952_574_1]);
        // ln(1 + e^-2) = 0.126928, ln 2 = 0.693147, ln(1 + e^3) = 3.048587
        close(
            &softplus(&t).unwrap(),
            &[0.126_928, std::f32::consts::LN_2, 3.048_587],
        );
    }

    #[test]
    fn softmax_family_along_last_axis() {
        let t = f32s(&[1.0, 2.0, 3.0]);
        // e^k / (e + e^2 + e^3)
        close(
            &softmax(&t, 0).unwrap(),
            &[0.090_030_6, 0.244_728_5, 0.665_240_9],
        );
        close(
            &log_softmax(&t, 0).unwrap(),
            &[-2.407_606, -1.407_606, -0.407_606],
        );
        let tie = f32s(&[3.0, 1.0, 3.0]);
        close(&hardmax(&tie, 0).unwrap(), &[1.0, 0.0, 0.0]);
    }

    #[test]
    fn hard_sigmoid_saturates() {
        let t = f32s(&[-4.0, 0.0, 1.0, 4.0]);
        close(&hard_sigmoid(&t, 0.2, 0.5).unwrap(), &[0.0, 0.5, 0.7, 1.0]);
    }

    #[test]
    fn seeded_stream_mask_is_splitmix_drawn_serially() {
        // Chunks drawn in parallel equal one serial splitmix64 stream, the integer threshold
        // equals comparing the 53-bit draw with the ratio, and about 1 - ratio is kept.
        let n = 3 * DRAW_CHUNK + 5;
        let t = Tensor::zeros(n, DType::F32, &candle_core::Device::Cpu).unwrap();
        let (seed, ratio) = (42u64, 0.3);
        let keep = keep_mask(&t, ratio, Draw::Stream(seed)).unwrap();
        let mut g = SplitMix64::new(seed);
        let serial: Vec<u8> = (0..n).map(|_| u8::from(g.next_f64() >= ratio)).collect();
        assert_eq!(keep, serial);
        let kept = keep.iter().filter(|&&k| k == 1).count() as f64 / n as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
        assert_ne!(keep, keep_mask(&t, ratio, Draw::Stream(seed + 1)).unwrap());
    }

    #[test]
    fn mersenne_twister_matches_numpy_seed_zero() {
        // np.random.seed(0); np.random.random_sample(3)
        let mut mt = Mt19937::new(0);
        let want = [
            0.548_813_503_927_325,
            0.715_189_366_372_419_6,
            0.602_763_376_071_644,
        ];
        for w in want {
            assert!((mt.next_f64() - w).abs() < 1e-15);
        }
    }
}
