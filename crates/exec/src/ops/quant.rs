//! Quantization: `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear`,
//! `MatMulInteger`, `ConvInteger`, `QLinearMatMul`, `QLinearConv`.
//!
//! Integer results are exact and match onnxruntime bit for bit: integer products are
//! summed in i64, and the float steps run in f32 in the same order as onnxruntime
//! (`x / scale`, `acc * (a_scale * b_scale / y_scale)`), rounding half to even and
//! saturating to the output type.

use candle_core::{DType, Tensor};
use whittle_ir::{DataType, NodeAttrs};

use super::conv::Window;
use super::linalg::{matmul_i64, numpy_matmul};
use super::util::{check_size, int_value};
use super::{normalize_axis, OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::kernels::dispatch;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("QuantizeLinear", quantize_linear);
    r.add("DequantizeLinear", dequantize_linear);
    r.add("DynamicQuantizeLinear", dynamic_quantize_linear);
    r.add("MatMulInteger", matmul_integer);
    r.add("ConvInteger", conv_integer);
    r.add("QLinearMatMul", qlinear_matmul);
    r.add("QLinearConv", qlinear_conv);
}

/// Smallest and largest value of a quantized integer type (uint8, int8, uint16, int16,
/// int32, uint4, int4).
pub fn quant_range(dtype: DataType) -> Result<(i64, i64)> {
    use DataType::*;
    match (dtype, dtype.int_range()) {
        (Uint8 | Int8 | Uint16 | Int16 | Int32 | Uint4 | Int4, Some((lo, hi))) => {
            Ok((lo as i64, hi as i64))
        }
        _ => bail!("{dtype} is not a supported quantized type"),
    }
}

/// Magnitudes below which [`round_small`] is exact (2^22).
pub const SMALL: f32 = 4_194_304.0;

/// `x` rounded half to even, for |x| < [`SMALL`], without a saturating float-to-int
/// conversion (which keeps loops from vectorising): `x + 1.5 * 2^23` lies in [2^23, 2^24),
/// where the float grid is the integers, so the addition rounds `x` half to even, and the
/// bit patterns of that sum and of `1.5 * 2^23` differ by exactly the rounded value.
#[inline(always)]
pub fn round_small(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// Rounds half to even and saturates into an integer range after adding a zero point,
/// with the per-range work done once (build one per scale / zero point, apply it per
/// element).
#[derive(Clone, Copy, Debug)]
pub struct Saturator {
    zero_point: i64,
    range: (i64, i64),
    /// The range relative to the zero point, as floats.
    lo: f32,
    hi: f32,
    /// Whether the magic-number rounding is exact over the whole range.
    exact: bool,
}

impl Saturator {
    /// Saturation into `range` after adding `zero_point`.
    #[inline]
    pub fn new(zero_point: i64, range: (i64, i64)) -> Self {
        let (lo, hi) = ((range.0 - zero_point) as f32, (range.1 - zero_point) as f32);
        Saturator {
            zero_point,
            range,
            lo,
            hi,
            exact: lo > -SMALL && hi < SMALL,
        }
    }

    /// `saturate(round_half_even(v) + zero_point)`; NaN counts as 0.
    #[inline(always)]
    pub fn apply(&self, v: f32) -> i64 {
        if self.exact {
            return i64::from(self.apply_exact(v));
        }
        // Float-to-int `as` saturates (NaN gives 0), so the sum cannot overflow.
        let q = (v.round_ties_even() as i64).saturating_add(self.zero_point);
        q.clamp(self.range.0, self.range.1)
    }

    /// [`Saturator::apply`] for an exact range, in f32 and i32 without conversions that
    /// saturate, so loops vectorise: NaN becomes 0, the value is clamped, then rounded by
    /// [`round_small`]. Exact ranges are within 2^22 of the zero point, which is itself
    /// inside an 8- or 16-bit range, so the i32 sums cannot overflow.
    #[inline(always)]
    fn apply_exact(&self, v: f32) -> i32 {
        exact(v, self.lo, self.hi, self.zero_point as i32)
    }

    /// [`Saturator::apply`] of `v / scale` for every `v` of `ys`, in place, as exact f32
    /// integers (the planned executor keeps 8- and 16-bit quantized values in f32 buffers).
    #[inline(always)]
    pub fn quantize_in_place(&self, ys: &mut [f32], scale: f32) {
        if self.exact {
            ys.iter_mut()
                .for_each(|v| *v = self.apply_exact(*v / scale) as f32);
        } else {
            ys.iter_mut()
                .for_each(|v| *v = self.apply(*v / scale) as f32);
        }
    }

    /// Writes `to(apply(x / scale))` for every `x` of `xs` into `out` (as long as `xs`).
    #[inline(always)]
    pub fn quantize_slice<T>(&self, xs: &[f32], scale: f32, to: impl Fn(i64) -> T, out: &mut [T]) {
        let pairs = xs.iter().zip(out);
        if self.exact {
            pairs.for_each(|(&v, q)| *q = to(i64::from(self.apply_exact(v / scale))));
        } else {
            pairs.for_each(|(&v, q)| *q = to(self.apply(v / scale)));
        }
    }
}

/// [`Saturator::apply_exact`] with its range relative to the zero point, `[lo, hi]`: NaN
/// becomes 0, the value is clamped (`max`/`min`, equal to `clamp` on the numbers left, and
/// free of its per-call check, so loops over stepping parameters vectorise) and rounded.
#[inline(always)]
fn exact(v: f32, lo: f32, hi: f32, zero_point: i32) -> i32 {
    let v = if v.is_nan() { 0.0 } else { v };
    round_small(v.max(lo).min(hi)) + zero_point
}

/// The [`Saturator`]s of a tensor's parameters laid out as arrays, for the spans whose
/// parameters step along them (per-column weights, tables): one vector lane per element.
/// Only for exact saturators, i.e. every 8- and 16-bit type (see [`Steps::new`]).
#[derive(Clone, Debug)]
pub struct Steps {
    lo: Vec<f32>,
    hi: Vec<f32>,
    zero_points: Vec<i32>,
}

impl Steps {
    /// The arrays of `sats`, or `None` when one of them is not exact.
    pub fn new(sats: &[Saturator]) -> Option<Steps> {
        sats.iter().all(|s| s.exact).then(|| Steps {
            lo: sats.iter().map(|s| s.lo).collect(),
            hi: sats.iter().map(|s| s.hi).collect(),
            zero_points: sats.iter().map(|s| s.zero_point as i32).collect(),
        })
    }

    /// `*y = to(q)` for each pair `(x, y)` of `pairs`, `q` = [`Saturator::apply`] of `x /
    /// scale` under the saturator and scale of parameter `first + k` for the `k`-th pair
    /// (`scales` from `first` on; the pairs no longer than the parameters after it).
    #[inline(always)]
    pub fn quantize<'y, T: 'y>(
        &self,
        first: usize,
        scales: &[f32],
        pairs: impl Iterator<Item = (f32, &'y mut T)>,
        to: impl Fn(i32) -> T,
    ) {
        let (lo, hi, zps) = (
            &self.lo[first..],
            &self.hi[first..],
            &self.zero_points[first..],
        );
        let params = scales.iter().zip(lo).zip(hi).zip(zps);
        for ((x, y), (((&scale, &lo), &hi), &zp)) in pairs.zip(params) {
            *y = to(exact(x / scale, lo, hi, zp));
        }
    }
}

/// Rounds `v` half to even and saturates it (after adding `zero_point`) into `range`.
#[inline]
pub fn saturate_round(v: f32, zero_point: i64, range: (i64, i64)) -> i64 {
    Saturator::new(zero_point, range).apply(v)
}

/// Quantizes one value: `saturate(round_half_even(x / scale) + zero_point)` into the
/// range of `range` (see [`quant_range`]), computed in f32 like onnxruntime.
#[inline]
pub fn quantize_f32(x: f32, scale: f32, zero_point: i64, range: (i64, i64)) -> i64 {
    saturate_round(x / scale, zero_point, range)
}

/// Requantizes an exact integer accumulator with `multiplier` (`a_scale * b_scale /
/// y_scale`): `saturate(round_half_even(acc * multiplier) + zero_point)`.
pub fn requantize(acc: i64, multiplier: f32, zero_point: i64, range: (i64, i64)) -> i64 {
    saturate_round(acc as f32 * multiplier, zero_point, range)
}

/// Quantization parameters `(scale, zero_point)` of `DynamicQuantizeLinear` for data with
/// minimum `min` and maximum `max`: the range is widened to include 0 and mapped onto
/// uint8 (scale 1 for an all-zero range, as onnxruntime does).
pub fn dynamic_params(min: f32, max: f32) -> (f32, i64) {
    let (min, max) = (min.min(0.0), max.max(0.0));
    let scale = if max == min { 1.0 } else { (max - min) / 255.0 };
    let zero_point = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even() as i64;
    (scale, zero_point)
}

/// Which scale / zero-point element applies to each element of a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamLayout {
    /// One parameter for the whole tensor.
    PerTensor,
    /// One parameter per index of an axis with `len` elements and `inner` elements
    /// after it.
    PerAxis {
        /// Size of the axis.
        len: usize,
        /// Product of the dims after the axis.
        inner: usize,
    },
    /// One parameter per block of `block` indices along an axis (opset 21).
    Blocked {
        /// Size of the axis.
        len: usize,
        /// Product of the dims after the axis.
        inner: usize,
        /// Block size.
        block: usize,
        /// Number of blocks along the axis.
        blocks: usize,
    },
}

impl ParamLayout {
    /// The layout of parameters of shape `param` for data of shape `data`; `axis` is
    /// used by per-axis and blocked layouts, `block` > 0 selects blocked.
    pub fn new(data: &[usize], param: &[usize], axis: i64, block: i64) -> Result<Self> {
        let numel: usize = param.iter().product();
        if block <= 0 && numel == 1 && param.len() <= 1 {
            return Ok(ParamLayout::PerTensor);
        }
        let a = normalize_axis(axis, data.len())?;
        let (len, inner) = (data[a], data[a + 1..].iter().product());
        if block <= 0 {
            if param != [len] {
                bail!("parameter shape {param:?} does not fit axis {a} of {data:?}");
            }
            return Ok(ParamLayout::PerAxis { len, inner });
        }
        let block = block as usize;
        let blocks = len.div_ceil(block);
        let mut expect = data.to_vec();
        expect[a] = blocks;
        if param != expect {
            bail!("blocked parameter shape {param:?} should be {expect:?}");
        }
        Ok(ParamLayout::Blocked {
            len,
            inner,
            block,
            blocks,
        })
    }

    /// Index of the parameter for flat data index `i`.
    pub fn index(&self, i: usize) -> usize {
        match *self {
            ParamLayout::PerTensor => 0,
            ParamLayout::PerAxis { len, inner } => (i / inner.max(1)) % len.max(1),
            ParamLayout::Blocked {
                len,
                inner,
                block,
                blocks,
            } => {
                let inner = inner.max(1);
                let (outer, j, k) = (
                    i / (len * inner).max(1),
                    (i / inner) % len.max(1),
                    i % inner,
                );
                (outer * blocks + j / block) * inner + k
            }
        }
    }
}

/// A stretch of consecutive elements and the parameters they use (see
/// [`ParamLayout::for_each_span`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Every element uses parameter `p`.
    Shared(usize),
    /// Element `k` of the stretch uses parameter `first + k` (parameters along the last
    /// axis: per-column weights and tables, blocks across rows).
    Stepping(usize),
}

impl ParamLayout {
    /// Splits the flat element indices `range` into stretches whose parameters are one
    /// [`Span`] and calls `f(stretch, span)` for each in order, so element loops need no
    /// per-element index math.
    pub fn for_each_span(
        &self,
        range: std::ops::Range<usize>,
        mut f: impl FnMut(std::ops::Range<usize>, Span),
    ) {
        let mut i = range.start;
        while i < range.end {
            let (end, span) = self.span_at(i);
            let end = end.min(range.end);
            f(i..end, span);
            i = end;
        }
    }

    /// The span starting at element `i` and where it ends (exclusive, unbounded by the data).
    fn span_at(&self, i: usize) -> (usize, Span) {
        match *self {
            ParamLayout::PerTensor => (usize::MAX, Span::Shared(0)),
            ParamLayout::PerAxis { len, inner } => {
                let (len, inner) = (len.max(1), inner.max(1));
                let p = (i / inner) % len;
                if inner == 1 {
                    (i + len - p, Span::Stepping(p))
                } else {
                    ((i / inner + 1) * inner, Span::Shared(p))
                }
            }
            ParamLayout::Blocked {
                len, inner, block, ..
            } => {
                let (len, inner, block) = (len.max(1), inner.max(1), block.max(1));
                let p = self.index(i);
                if inner == 1 {
                    let j = i % len;
                    (i + (block - j % block).min(len - j), Span::Shared(p))
                } else {
                    ((i / inner + 1) * inner, Span::Stepping(p))
                }
            }
        }
    }
}

/// Scales and zero points of a QuantizeLinear / DequantizeLinear, one per parameter index
/// of their layout.
struct Params {
    layout: ParamLayout,
    scales: Vec<f32>,
    zero_points: Vec<i64>,
}

impl Params {
    /// The parameters `scale` and `zero_point` (None: zeros) laid out against `data`.
    fn new(
        data: &[usize],
        scale: &Value,
        zero_point: Option<&Value>,
        axis: i64,
        block: i64,
    ) -> Result<Self> {
        let layout = ParamLayout::new(data, scale.shape(), axis, block)?;
        let scales = scale.to_f32_vec()?;
        let zero_points = match zero_point {
            None => vec![0; scales.len()],
            Some(z) => {
                let values = z.to_i64_vec()?;
                if values.len() != scales.len() {
                    bail!(
                        "zero point of shape {:?} does not match the scale's shape {:?}",
                        z.shape(),
                        scale.shape()
                    );
                }
                values
            }
        };
        Ok(Params {
            layout,
            scales,
            zero_points,
        })
    }

    /// The scales and zero points.
    fn pair(&self) -> (&[f32], &[i64]) {
        (&self.scales, &self.zero_points)
    }

    /// The scale of flat element `i`.
    fn scale_at(&self, i: usize) -> f32 {
        self.scales[self.layout.index(i)]
    }
}

/// Elements per piece of the quantize / dequantize loops; larger tensors are split into
/// pieces that run on all cores.
const PIECE: usize = 1 << 15;

/// `f(stretch of xs, matching stretch of the output, span)` over the spans of `layout`
/// (see [`ParamLayout::for_each_span`]), in pieces over the cores when `xs` is large.
fn map_spans<X: Sync, Y: Send + Clone + Default>(
    xs: &[X],
    layout: &ParamLayout,
    f: impl Fn(&[X], &mut [Y], Span) + Sync,
) -> Vec<Y> {
    let mut out = vec![Y::default(); xs.len()];
    map_spans_into(xs, layout, f, &mut out);
    out
}

/// [`map_spans`] into `out` (as long as `xs`).
fn map_spans_into<X: Sync, Y: Send>(
    xs: &[X],
    layout: &ParamLayout,
    f: impl Fn(&[X], &mut [Y], Span) + Sync,
    out: &mut [Y],
) {
    let piece = |(i, (x, o)): (usize, (&[X], &mut [Y]))| {
        let base = i * PIECE;
        layout.for_each_span(base..base + x.len(), |r, span| {
            let r = r.start - base..r.end - base;
            f(&x[r.clone()], &mut o[r], span);
        });
    };
    if xs.len() <= PIECE {
        piece((0, (xs, out)));
    } else {
        use rayon::prelude::*;
        xs.par_chunks(PIECE)
            .zip(out.par_chunks_mut(PIECE))
            .enumerate()
            .for_each(piece);
    }
}

/// Quantizes `xs` with the scales and zero points (one per parameter index of `layout`)
/// into `range`, converting each result with `to`: `to(saturate(round_half_even(x /
/// scale) + zero_point))`, vectorised, and on all cores for large tensors.
pub fn quantize_values<T: Send + Clone + Default>(
    xs: &[f32],
    layout: &ParamLayout,
    (scales, zero_points): (&[f32], &[i64]),
    range: (i64, i64),
    to: impl Fn(i64) -> T + Sync,
) -> Vec<T> {
    let sats: Vec<Saturator> = zero_points
        .iter()
        .map(|&zp| Saturator::new(zp, range))
        .collect();
    let steps = Steps::new(&sats);
    let to = &to;
    map_spans(xs, layout, |x, out, span| match (span, &steps) {
        (Span::Shared(p), _) => dispatch(
            #[inline(always)]
            || sats[p].quantize_slice(x, scales[p], to, out),
        ),
        (Span::Stepping(p), Some(steps)) => dispatch(
            #[inline(always)]
            || {
                let pairs = x.iter().copied().zip(out.iter_mut());
                steps.quantize(p, &scales[p..], pairs, |q| to(i64::from(q)))
            },
        ),
        (Span::Stepping(p), None) => {
            let per = sats[p..p + x.len()].iter().zip(&scales[p..p + x.len()]);
            for ((&v, q), (sat, &scale)) in x.iter().zip(out).zip(per) {
                *q = to(sat.apply(v / scale));
            }
        }
    })
}

fn quantize_linear(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, scale, zp) = (c.input(0)?, c.input(1)?, c.opt_input(2));
    let out = match zp {
        Some(z) => z.dtype(),
        None => match c.node.int_or("output_dtype", 0)? {
            0 => DataType::Uint8,
            code => match DataType::from_code(code as i32) {
                Some(dt) => dt,
                None => bail!("unknown output_dtype {code}"),
            },
        },
    };
    let range = quant_range(out)?;
    let (axis, block) = (c.node.int_or("axis", 1)?, c.node.int_or("block_size", 0)?);
    let params = Params::new(x.shape(), scale, zp, axis, block)?;
    let device = x.tensor().device();
    let t = if crate::value::storage_dtype(out)? == DType::U8 {
        let q = x.with_f32(|xs| {
            quantize_values(xs, &params.layout, params.pair(), range, |q| q as u8)
        })?;
        Tensor::from_vec(q, x.shape(), device)?
    } else {
        let q =
            x.with_f32(|xs| quantize_values(xs, &params.layout, params.pair(), range, |q| q))?;
        Tensor::from_vec(q, x.shape(), device)?
    };
    Ok(vec![Value::new(t, out)?])
}

fn dequantize_linear(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, scale, zp) = (c.input(0)?, c.input(1)?, c.opt_input(2));
    if !scale.dtype().is_float() {
        bail!("x_scale must be a float tensor, got {}", scale.dtype());
    }
    let (axis, block) = (c.node.int_or("axis", 1)?, c.node.int_or("block_size", 0)?);
    let params = Params::new(x.shape(), scale, zp, axis, block)?;
    // 8-bit data centres exactly in i32, which converts to f32 in vector registers.
    let y = match x.tensor().dtype() {
        DType::U8 => x.with_slice(|qs: &[u8]| {
            dequantize_spans(qs, &params, |q, zp| (i32::from(q) - zp as i32) as f32)
        })?,
        // Up to 16 bits, stored as i64: the values and their difference fit i32 (the
        // zero point has x's type).
        _ if fits_i16_or_u16(x.dtype()) => x.with_slice(|qs: &[i64]| {
            dequantize_spans(qs, &params, |q, zp| (q as i32 - zp as i32) as f32)
        })?,
        _ => x.with_slice(|qs: &[i64]| {
            dequantize_spans(qs, &params, |q, zp| q.wrapping_sub(zp) as f32)
        })?,
    };
    let t = Tensor::from_vec(y, x.shape(), x.tensor().device())?;
    Ok(vec![Value::new(t, scale.dtype())?])
}

/// Whether every value of `dtype` lies in the i16 or u16 range.
fn fits_i16_or_u16(dtype: DataType) -> bool {
    dtype
        .int_range()
        .is_some_and(|(lo, hi)| lo >= i128::from(i16::MIN) && hi <= i128::from(u16::MAX))
}

/// `(q - zero_point) * scale` for every element; `center(q, zero_point)` computes
/// `q - zero_point` exactly, as f32.
fn dequantize_spans<Q: Copy + Sync>(
    qs: &[Q],
    params: &Params,
    center: impl Fn(Q, i64) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; qs.len()];
    let (scales, zps) = params.pair();
    dequantize_spans_into(qs, &params.layout, scales, zps, center, &mut out);
    out
}

/// [`dequantize_spans`] into `out` (as long as `qs`) with the parameters `scales` and
/// `zero_points` laid out by `layout`: the planned executor's DequantizeLinear kernel
/// writes into its arena buffer through it.
pub fn dequantize_spans_into<Q: Copy + Sync>(
    qs: &[Q],
    layout: &ParamLayout,
    scales: &[f32],
    zero_points: &[i64],
    center: impl Fn(Q, i64) -> f32 + Sync,
    out: &mut [f32],
) {
    let center = &center;
    let f = |q: &[Q], y: &mut [f32], span: Span| match span {
        Span::Shared(p) => {
            let (scale, zp) = (scales[p], zero_points[p]);
            dispatch(
                #[inline(always)]
                || {
                    q.iter()
                        .zip(y)
                        .for_each(|(&q, y)| *y = center(q, zp) * scale)
                },
            );
        }
        Span::Stepping(p) => {
            let n = q.len();
            let per = scales[p..p + n].iter().zip(&zero_points[p..p + n]);
            dispatch(
                #[inline(always)]
                || {
                    for ((&q, y), (&scale, &zp)) in q.iter().zip(y).zip(per) {
                        *y = center(q, zp) * scale;
                    }
                },
            );
        }
    };
    map_spans_into(qs, layout, f, out);
}

fn dynamic_quantize_linear(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let xs: Vec<f32> = x.tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (scale, zp) = dynamic_params(min, max);
    let range = (0, 255);
    let q: Vec<i64> = xs
        .iter()
        .map(|&v| quantize_f32(v, scale, zp, range))
        .collect();
    let device = x.tensor().device();
    Ok(vec![
        int_value(q, x.shape(), DataType::Uint8, x)?,
        Value::f32(Tensor::new(scale, device)?)?,
        Value::new(Tensor::new(zp, device)?, DataType::Uint8)?,
    ])
}

/// `v - zero_point` as exact i64 data (the zero point is per tensor or per `axis`).
fn centered(v: &Value, zp: Option<&Value>, axis: i64) -> Result<Vec<i64>> {
    if v.dtype().is_float() {
        bail!("expects an integer tensor, got {}", v.dtype());
    }
    let data = v.to_i64_vec()?;
    let Some(zp) = zp else {
        return Ok(data);
    };
    let layout = ParamLayout::new(v.shape(), zp.shape(), axis, 0)?;
    let z = zp.to_i64_vec()?;
    Ok(data
        .iter()
        .enumerate()
        .map(|(i, &x)| x - z[layout.index(i)])
        .collect())
}

fn centered_tensor(v: &Value, zp: Option<&Value>, axis: i64) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        centered(v, zp, axis)?,
        v.shape(),
        v.tensor().device(),
    )?)
}

/// Exact integer matrix product of `a - a_zp` and `b - b_zp` (zero points per tensor,
/// per row of `a` or per column of `b`).
fn centered_matmul(
    a: &Value,
    a_zp: Option<&Value>,
    b: &Value,
    b_zp: Option<&Value>,
) -> Result<Tensor> {
    let a = centered_tensor(a, a_zp, -2)?;
    let b = centered_tensor(b, b_zp, -1)?;
    numpy_matmul(&a, &b, matmul_i64)
}

fn matmul_integer(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let acc = centered_matmul(a, c.opt_input(2), b, c.opt_input(3))?;
    Ok(vec![Value::new(acc, DataType::Int32)?])
}

/// A scale input and the output axis it varies along when it is not per tensor.
type AxisScale<'a> = (&'a Value, i64);

/// Requantizes exact accumulators of output shape `shape` with the per-element
/// multiplier `a_scale * b_scale / y_scale` (f32, onnxruntime's order).
fn requantize_output(
    acc: &[i64],
    shape: &[usize],
    scales: [AxisScale; 2],
    y_scale: &Value,
    y_zp: Option<&Value>,
    out: DataType,
) -> Result<Value> {
    let range = quant_range(out)?;
    let [a, b] = scales.map(|(v, axis)| Params::new(shape, v, None, axis, 0));
    let (a, b) = (a?, b?);
    let y = Params::new(shape, y_scale, y_zp, 0, 0)?;
    if y.layout != ParamLayout::PerTensor {
        bail!("y_scale and y_zero_point must be scalars");
    }
    let (ys, zp) = (y.scales[0], y.zero_points[0]);
    let q: Vec<i64> = acc
        .iter()
        .enumerate()
        .map(|(i, &s)| requantize(s, a.scale_at(i) * b.scale_at(i) / ys, zp, range))
        .collect();
    int_value(q, shape, out, y_scale)
}

fn qlinear_matmul(c: &OpCtx) -> Result<Vec<Value>> {
    let (a, a_scale, a_zp) = (c.input(0)?, c.input(1)?, c.opt_input(2));
    let (b, b_scale, b_zp) = (c.input(3)?, c.input(4)?, c.opt_input(5));
    let (y_scale, y_zp) = (c.input(6)?, c.opt_input(7));
    let acc = centered_matmul(a, a_zp, b, b_zp)?;
    let shape = acc.dims().to_vec();
    let acc: Vec<i64> = acc.flatten_all()?.to_vec1()?;
    let out = y_zp.map_or(a.dtype(), Value::dtype);
    let scales = [(a_scale, -2), (b_scale, -1)];
    Ok(vec![requantize_output(
        &acc, &shape, scales, y_scale, y_zp, out,
    )?])
}

fn conv_integer(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, w) = (c.input(0)?, c.input(1)?);
    let (acc, shape) = centered_conv(c, x, c.opt_input(2), w, c.opt_input(3))?;
    Ok(vec![int_value(acc, &shape, DataType::Int32, x)?])
}

fn qlinear_conv(c: &OpCtx) -> Result<Vec<Value>> {
    let (x, x_scale, x_zp) = (c.input(0)?, c.input(1)?, c.opt_input(2));
    let (w, w_scale, w_zp) = (c.input(3)?, c.input(4)?, c.opt_input(5));
    let (y_scale, y_zp) = (c.input(6)?, c.opt_input(7));
    let (mut acc, shape) = centered_conv(c, x, x_zp, w, w_zp)?;
    if let Some(bias) = c.opt_input(8) {
        let layout = ParamLayout::new(&shape, bias.shape(), 1, 0)?;
        let b = bias.to_i64_vec()?;
        acc.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += b[layout.index(i)]);
    }
    let out = y_zp.map_or(x.dtype(), Value::dtype);
    let scales = [(x_scale, 1), (w_scale, 1)];
    Ok(vec![requantize_output(
        &acc, &shape, scales, y_scale, y_zp, out,
    )?])
}

/// Exact convolution of `x - x_zp` with `w - w_zp` (per output channel), with the
/// node's conv attributes. Returns the accumulators and the output shape.
fn centered_conv(
    c: &OpCtx,
    x: &Value,
    x_zp: Option<&Value>,
    w: &Value,
    w_zp: Option<&Value>,
) -> Result<(Vec<i64>, Vec<usize>)> {
    let g = ConvGeom::from_node(c, x.shape(), w.shape())?;
    let xs = centered(x, x_zp, 1)?;
    let ws = centered(w, w_zp, 0)?;
    Ok((conv_i64(&xs, &ws, &g), g.output_shape()))
}

/// Shape arithmetic of an N-D convolution (`x: [N, C, *in]`, `w: [M, C/group, *k]`);
/// the window geometry is the float `Conv`'s [`Window`].
#[derive(Clone, Debug, PartialEq)]
struct ConvGeom {
    batch: usize,
    channels: usize,
    maps: usize,
    group: usize,
    input: Vec<usize>,
    window: Window,
    pad_begin: Vec<usize>,
    output: Vec<usize>,
}

impl ConvGeom {
    fn from_node(c: &OpCtx, x: &[usize], w: &[usize]) -> Result<Self> {
        if x.len() < 3 || w.len() != x.len() {
            bail!("conv shapes x {x:?} and w {w:?} do not match");
        }
        let window = Window::from_node(c.node, x.len() - 2, Some(&w[2..]))?;
        Self::new(x, w, c.node.int_or("group", 1)?, window)
    }

    fn new(x: &[usize], w: &[usize], group: i64, window: Window) -> Result<Self> {
        let kernel = &window.kernel;
        if x.len() < 3 || w.len() != x.len() || w[2..] != kernel[..] || kernel.contains(&0) {
            bail!("conv shapes x {x:?} and w {w:?} do not match kernel {kernel:?}");
        }
        let (channels, maps) = (x[1], w[0]);
        if group < 1 || channels % group as usize != 0 || maps % group as usize != 0 {
            bail!("group {group} does not divide {channels} channels and {maps} maps");
        }
        let group = group as usize;
        if w[1] * group != channels {
            bail!("bad conv weights {w:?} for {channels} channels");
        }
        let r = window.resolve(&x[2..], false)?;
        let g = ConvGeom {
            batch: x[0],
            channels,
            maps,
            group,
            input: x[2..].to_vec(),
            window,
            pad_begin: r.begin,
            output: r.out,
        };
        // The im2col matrix: [C / group, kernel..., output...].
        let col = [&[channels / group], &g.window.kernel[..], &g.output[..]].concat();
        check_size(&col, DType::I64)?;
        check_size(&g.output_shape(), DType::I64)?;
        Ok(g)
    }

    fn output_shape(&self) -> Vec<usize> {
        [self.batch, self.maps]
            .into_iter()
            .chain(self.output.iter().copied())
            .collect()
    }
}

/// Row-major coordinates of every index of `dims`.
fn coords(dims: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = dims.iter().product();
    (0..total)
        .map(|mut i| {
            let mut c = vec![0; dims.len()];
            for d in (0..dims.len()).rev() {
                c[d] = i % dims[d];
                i /= dims[d];
            }
            c
        })
        .collect()
}

/// Exact N-D convolution by im2col: for each image and group, the padded input patches
/// form a `[C/group * k, out]` matrix multiplied by the group's `[M/group, C/group * k]`
/// weights. Products and sums are exact in i64.
fn conv_i64(x: &[i64], w: &[i64], g: &ConvGeom) -> Vec<i64> {
    let (cg, mg) = (g.channels / g.group, g.maps / g.group);
    let (kc, oc) = (coords(&g.window.kernel), coords(&g.output));
    let (kp, op) = (kc.len(), oc.len());
    let ip: usize = g.input.iter().product();
    // Flat input offset of each (kernel, output) position, or None inside the padding.
    let offsets: Vec<Option<usize>> = kc
        .iter()
        .flat_map(|k| oc.iter().map(move |o| (k, o)))
        .map(|(k, o)| {
            (0..k.len()).try_fold(0usize, |acc, d| {
                let p = (o[d] * g.window.strides[d] + k[d] * g.window.dilations[d])
                    .checked_sub(g.pad_begin[d])?;
                (p < g.input[d]).then_some(acc * g.input[d] + p)
            })
        })
        .collect();
    let mut out = vec![0i64; g.batch * g.maps * op];
    let mut col = vec![0i64; cg * kp * op];
    for b in 0..g.batch {
        for gi in 0..g.group {
            for ci in 0..cg {
                let img = &x[(b * g.channels + gi * cg + ci) * ip..][..ip];
                let dst = &mut col[ci * kp * op..][..kp * op];
                dst.iter_mut()
                    .zip(&offsets)
                    .for_each(|(d, o)| *d = o.map_or(0, |o| img[o]));
            }
            for m in 0..mg {
                let map = gi * mg + m;
                let y = &mut out[(b * g.maps + map) * op..][..op];
                let wr = &w[map * cg * kp..][..cg * kp];
                for (r, &wv) in wr.iter().enumerate().filter(|(_, &wv)| wv != 0) {
                    let row = &col[r * op..][..op];
                    y.iter_mut().zip(row).for_each(|(a, &v)| *a += wv * v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::AutoPad;

    const U8: (i64, i64) = (0, 255);
    const I8: (i64, i64) = (-128, 127);

    #[test]
    fn fast_rounding_matches_round_ties_even() {
        let reference = |v: f32, zp: i64, r: (i64, i64)| {
            let v = if v.is_nan() { 0.0 } else { v };
            ((v.round_ties_even() as i64).saturating_add(zp)).clamp(r.0, r.1)
        };
        let mut values: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.25).collect();
        values.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e9,
            -1e9,
            0.49999997,
        ]);
        for (zp, range) in [
            (0, I8),
            (128, U8),
            (3, I8),
            (0, (-32768, 32767)),
            (0, (0, 15)),
        ] {
            for &v in &values {
                assert_eq!(
                    saturate_round(v, zp, range),
                    reference(v, zp, range),
                    "{v} {zp}"
                );
            }
            // The vectorised loop agrees with the scalar path, scale applied first.
            let mut looped = vec![0; values.len()];
            Saturator::new(zp, range).quantize_slice(&values, 0.5, |q| q, &mut looped);
            let scalar: Vec<i64> = values
                .iter()
                .map(|&v| reference(v / 0.5, zp, range))
                .collect();
            assert_eq!(looped, scalar, "zero point {zp}, range {range:?}");
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        // ONNX spec example: x / 2 + 128 with ties to even.
        let q: Vec<i64> = [0.0, 2.0, 3.0, 1000.0, -254.0, -1000.0]
            .iter()
            .map(|&x| quantize_f32(x, 2.0, 128, U8))
            .collect();
        assert_eq!(q, vec![128, 129, 130, 255, 1, 0]);
        assert_eq!(quantize_f32(5.0, 2.0, 0, I8), 2);
        assert_eq!(quantize_f32(-5.0, 2.0, 0, I8), -2);
        assert_eq!(quantize_f32(7.0, 2.0, 0, I8), 4);
        assert_eq!(quantize_f32(-1000.0, 1.0, 0, I8), -128);
        assert_eq!(quantize_f32(f32::NAN, 1.0, 3, I8), 3);
        assert_eq!(quantize_f32(100.0, 1.0, 0, (-8, 7)), 7);
    }

    #[test]
    fn requantize_rounds_then_adds_the_zero_point() {
        // 10 * 0.25 = 2.5 rounds to 2, then + zero point.
        assert_eq!(requantize(10, 0.25, 5, U8), 7);
        assert_eq!(requantize(-3000, 0.5, 0, I8), -128);
    }

    #[test]
    fn dynamic_params_follow_the_spec() {
        // ONNX example: x = [0, 2, -3, -2.5, 1.34, 0.5]: scale 5/255, zero point 153.
        let (s, z) = dynamic_params(-3.0, 2.0);
        assert_eq!(s, 5.0 / 255.0);
        assert_eq!(z, 153);
        // -2.5 / s is just above -127.5 in f32, as in the spec's expected output.
        assert_eq!(quantize_f32(-2.5, s, z, U8), 26);
        assert_eq!(quantize_f32(1.34, s, z, U8), 221);
        // Positive-only data widens the range to 0.
        assert_eq!(dynamic_params(1.0, 2.55), (0.01, 0));
        assert_eq!(dynamic_params(0.0, 0.0), (1.0, 0));
    }

    #[test]
    fn param_layouts_index_axes_and_blocks() {
        let per_axis = ParamLayout::new(&[2, 3, 2], &[3], 1, 0).unwrap();
        let idx: Vec<usize> = (0..12).map(|i| per_axis.index(i)).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        assert_eq!(
            ParamLayout::new(&[4], &[], 1, 0).unwrap(),
            ParamLayout::PerTensor
        );
        let blocked = ParamLayout::new(&[2, 5], &[2, 3], 1, 2).unwrap();
        let idx: Vec<usize> = (0..10).map(|i| blocked.index(i)).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 3, 3, 4, 4, 5]);
        assert!(ParamLayout::new(&[2, 5], &[2, 2], 1, 2).is_err());
        assert!(ParamLayout::new(&[2, 5], &[4], 1, 0).is_err());
    }

    #[test]
    fn spans_give_every_element_its_parameter() {
        let layouts = [
            ParamLayout::PerTensor,
            ParamLayout::new(&[4, 3, 5], &[3], 1, 0).unwrap(),
            ParamLayout::new(&[6, 7], &[7], 1, 0).unwrap(),
            ParamLayout::new(&[6, 7], &[6], 0, 0).unwrap(),
            ParamLayout::new(&[2, 9], &[2, 3], 1, 4).unwrap(),
            ParamLayout::new(&[9, 5], &[3, 5], 0, 4).unwrap(),
        ];
        for layout in layouts {
            // Whole tensors and pieces that start and end mid-span.
            for range in [0..90, 5..37, 41..42] {
                let mut seen = Vec::new();
                layout.for_each_span(range.clone(), |run, span| {
                    assert!(!run.is_empty(), "{layout:?}: empty stretch");
                    seen.extend(run.enumerate().map(|(k, i)| match span {
                        Span::Shared(p) => (i, p),
                        Span::Stepping(p) => (i, p + k),
                    }));
                });
                let expected: Vec<_> = range.map(|i| (i, layout.index(i))).collect();
                assert_eq!(seen, expected, "{layout:?}");
            }
        }
    }

    fn window(k: &[usize], strides: usize, pads: usize, dil: usize, auto_pad: AutoPad) -> Window {
        let n = k.len();
        Window {
            kernel: k.to_vec(),
            strides: vec![strides; n],
            dilations: vec![dil; n],
            pads_begin: vec![pads; n],
            pads_end: vec![pads; n],
            auto_pad,
        }
    }

    fn geom(
        x: &[usize],
        w: &[usize],
        group: i64,
        strides: usize,
        pads: usize,
        dil: usize,
    ) -> ConvGeom {
        let win = window(&w[2..], strides, pads, dil, AutoPad::NotSet);
        ConvGeom::new(x, w, group, win).unwrap()
    }

    #[test]
    fn conv_matches_hand_computed_values() {
        // 3x3 image 1..9, 2x2 kernel of ones, padding 1: sums of each 2x2 window.
        let x: Vec<i64> = (1..=9).collect();
        let g = geom(&[1, 1, 3, 3], &[1, 1, 2, 2], 1, 1, 1, 1);
        assert_eq!(g.output_shape(), vec![1, 1, 4, 4]);
        let y = conv_i64(&x, &[1; 4], &g);
        assert_eq!(
            y,
            vec![1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]
        );
        // Strides 2 and dilation 2 in 1-D: x = 0..7, kernel [1, -1] spans 3.
        let x: Vec<i64> = (0..7).collect();
        let g = geom(&[1, 1, 7], &[1, 1, 2], 1, 2, 0, 2);
        assert_eq!(conv_i64(&x, &[1, -1], &g), vec![-2, -2, -2]);
        // Two groups, one channel each.
        let x = vec![1, 2, 3, 10, 20, 30];
        let g = geom(&[1, 2, 3], &[2, 1, 1], 2, 1, 0, 1);
        assert_eq!(conv_i64(&x, &[2, -1], &g), vec![2, 4, 6, -10, -20, -30]);
    }

    #[test]
    fn conv_geometry_rejects_bad_shapes() {
        let k = window(&[2, 2], 1, 0, 1, AutoPad::NotSet);
        assert!(ConvGeom::new(&[1, 3, 4, 4], &[2, 2, 2, 2], 1, k.clone()).is_err());
        assert!(ConvGeom::new(&[1, 2, 4, 4], &[3, 1, 2, 2], 2, k.clone()).is_err());
        assert!(ConvGeom::new(&[1, 2, 4, 4], &[2, 2, 3, 3], 1, k).is_err());
        let same = window(&[3], 2, 0, 1, AutoPad::SameUpper);
        let same = ConvGeom::new(&[1, 1, 5], &[1, 1, 3], 1, same).unwrap();
        assert_eq!((same.output, same.pad_begin), (vec![3], vec![1]));
    }
}
