//! QuantizeLinear and DequantizeLinear of the planned executor, per tensor, per axis or
//! blocked, into 8- and 16-bit integer types.
//!
//! The plan keeps quantized values in its f32 buffers as exact integers (every 8- and
//! 16-bit value is one), so a QuantizeLinear -> DequantizeLinear pair runs on arena
//! buffers without a candle tensor between them. The arithmetic is the candle operator's
//! ([`crate::ops::quant`]): `saturate(round_half_even(x / scale) + zero_point)` in f32, NaN
//! to the zero point, and `(q - zero_point) * scale` with the difference exact; results are
//! the same bit for bit.

use rayon::prelude::*;

use super::dispatch;
use super::{check_len, error, Result};
use crate::ops::quant::{dequantize_spans_into, quant_range, ParamLayout, Saturator, Span, Steps};
use whittle_ir::DataType;

/// Elements per parallel piece (as the candle operator splits them).
const PIECE: usize = 1 << 15;

/// Scales and zero points of a QuantizeLinear / DequantizeLinear with constant
/// parameters, one per parameter index of their layout over the data.
#[derive(Clone, Debug)]
pub struct QuantParams {
    /// Which parameter each data element uses.
    pub layout: ParamLayout,
    /// Scales.
    pub scales: Vec<f32>,
    /// Zero points (as long as `scales`).
    pub zero_points: Vec<i64>,
    /// The quantized type.
    pub dtype: DataType,
    /// Rounding and saturation per zero point.
    sats: Vec<Saturator>,
    /// The same as arrays, for parameters stepping along a span.
    steps: Option<Steps>,
}

impl QuantParams {
    /// Parameters for data of quantized type `dtype` (8- or 16-bit integers only: their
    /// values are exact in f32); `zero_points` as long as `scales`.
    pub fn new(
        layout: ParamLayout,
        scales: Vec<f32>,
        zero_points: Vec<i64>,
        dtype: DataType,
    ) -> Result<Self> {
        if !matches!(
            dtype,
            DataType::Int8 | DataType::Uint8 | DataType::Int16 | DataType::Uint16
        ) {
            return Err(error(
                "quantize",
                format!("{dtype} is not an 8- or 16-bit type"),
            ));
        }
        if zero_points.len() != scales.len() {
            return Err(error(
                "quantize",
                format!(
                    "{} zero points for {} scales",
                    zero_points.len(),
                    scales.len()
                ),
            ));
        }
        let range = quant_range(dtype).map_err(|e| error("quantize", e.to_string()))?;
        let sats: Vec<Saturator> = zero_points
            .iter()
            .map(|&z| Saturator::new(z, range))
            .collect();
        Ok(QuantParams {
            layout,
            scales,
            zero_points,
            dtype,
            steps: Steps::new(&sats),
            sats,
        })
    }
}

/// `f(piece, span)` over the spans of `layout` in `ys`, after copying `src` (when given)
/// into `ys`, in pieces over the cores when `ys` is large.
fn spans_in_place(
    src: Option<&[f32]>,
    ys: &mut [f32],
    layout: &ParamLayout,
    f: impl Fn(&mut [f32], Span) + Sync,
) {
    let piece = |(i, y): (usize, &mut [f32])| {
        let base = i * PIECE;
        if let Some(src) = src {
            y.copy_from_slice(&src[base..base + y.len()]);
        }
        layout.for_each_span(base..base + y.len(), |r, span| {
            f(&mut y[r.start - base..r.end - base], span)
        });
    };
    if ys.len() <= PIECE {
        piece((0, ys));
    } else {
        ys.par_chunks_mut(PIECE).enumerate().for_each(piece);
    }
}

/// QuantizeLinear of `x` into `out` (as exact f32 integers of `p.dtype`).
pub fn quantize(x: &[f32], p: &QuantParams, out: &mut [f32]) -> Result<()> {
    check_len("quantize", "output", x.len(), out.len())?;
    quantize_span(Some(x), out, p);
    Ok(())
}

/// QuantizeLinear of `y` in place.
pub fn quantize_in_place(y: &mut [f32], p: &QuantParams) {
    quantize_span(None, y, p);
}

fn quantize_span(src: Option<&[f32]>, y: &mut [f32], p: &QuantParams) {
    let (sats, scales) = (&p.sats, &p.scales);
    spans_in_place(src, y, &p.layout, |y, span| match (span, &p.steps) {
        (Span::Shared(i), _) => dispatch(
            #[inline(always)]
            || sats[i].quantize_in_place(y, scales[i]),
        ),
        (Span::Stepping(i), Some(steps)) => dispatch(
            #[inline(always)]
            || {
                let pairs = y.iter_mut().map(|v| (*v, v));
                steps.quantize(i, &scales[i..], pairs, |q| q as f32)
            },
        ),
        (Span::Stepping(i), None) => {
            let per = sats[i..i + y.len()].iter().zip(&scales[i..i + y.len()]);
            for (v, (sat, &scale)) in y.iter_mut().zip(per) {
                sat.quantize_in_place(std::slice::from_mut(v), scale);
            }
        }
    });
}

/// DequantizeLinear of `y` in place (`y` holds exact integers).
pub fn dequantize_in_place(y: &mut [f32], p: &QuantParams) {
    dequantize_span(None, y, p);
}

fn dequantize_span(src: Option<&[f32]>, y: &mut [f32], p: &QuantParams) {
    let (scales, zps) = (&p.scales, &p.zero_points);
    spans_in_place(src, y, &p.layout, |y, span| match span {
        Span::Shared(i) => {
            let (scale, zp) = (scales[i], zps[i] as f32);
            dispatch(
                #[inline(always)]
                || y.iter_mut().for_each(|v| *v = (*v - zp) * scale),
            );
        }
        Span::Stepping(i) => {
            let per = scales[i..i + y.len()].iter().zip(&zps[i..i + y.len()]);
            dispatch(
                #[inline(always)]
                || {
                    for (v, (&scale, &zp)) in y.iter_mut().zip(per) {
                        *v = (*v - zp as f32) * scale;
                    }
                },
            );
        }
    });
}

/// Quantized values a DequantizeLinear step reads: the plan's own buffers (exact f32
/// integers) or a candle tensor's storage (`u8` for uint8, `i64` for the other types).
pub enum Quantized<'a> {
    /// Exact integers in f32.
    F32(&'a [f32]),
    /// uint8 storage.
    U8(&'a [u8]),
    /// Storage of the other integer types.
    I64(&'a [i64]),
}

/// DequantizeLinear of `q` into `out`.
pub fn dequantize(q: Quantized, p: &QuantParams, out: &mut [f32]) -> Result<()> {
    // `(q - zero_point) * scale` with the difference exact in i32 (8- and 16-bit data).
    let (layout, scales, zps) = (&p.layout, &p.scales[..], &p.zero_points[..]);
    match q {
        Quantized::F32(x) => {
            check_len("dequantize", "output", x.len(), out.len())?;
            dequantize_span(Some(x), out, p);
        }
        Quantized::U8(x) => {
            check_len("dequantize", "output", x.len(), out.len())?;
            let center = |q: u8, zp: i64| (i32::from(q) - zp as i32) as f32;
            dequantize_spans_into(x, layout, scales, zps, center, out);
        }
        Quantized::I64(x) => {
            check_len("dequantize", "output", x.len(), out.len())?;
            let center = |q: i64, zp: i64| (q as i32 - zp as i32) as f32;
            dequantize_spans_into(x, layout, scales, zps, center, out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(layout: ParamLayout, scales: &[f32], zps: &[i64], dtype: DataType) -> QuantParams {
        QuantParams::new(layout, scales.to_vec(), zps.to_vec(), dtype).unwrap()
    }

    #[test]
    fn quantize_rounds_half_to_even_saturates_and_maps_nan_to_the_zero_point() {
        let p = params(ParamLayout::PerTensor, &[0.5], &[10], DataType::Uint8);
        let x = [0.25, 0.75, -0.25, 1000.0, -1000.0, f32::NAN, 1.25, -5.0];
        let mut q = [0.0; 8];
        quantize(&x, &p, &mut q).unwrap();
        // x / 0.5 = 0.5 -> 0, 1.5 -> 2, -0.5 -> -0, saturated, NaN -> 0, 2.5 -> 2, -10.
        assert_eq!(q, [10.0, 12.0, 10.0, 255.0, 0.0, 10.0, 12.0, 0.0]);
        let p = params(ParamLayout::PerTensor, &[1.0], &[-3], DataType::Int8);
        let mut y = [-200.0, 3.5, 4.5, 200.0];
        quantize_in_place(&mut y, &p);
        assert_eq!(y, [-128.0, 1.0, 1.0, 127.0]);
    }

    #[test]
    fn per_axis_parameters_follow_the_axis_and_dequantize_inverts_exactly() {
        // Data [2, 3, 2], parameters along axis 1 (inner 2), and along the last axis.
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.7 - 4.0).collect();
        for (layout, n) in [
            (ParamLayout::PerAxis { len: 3, inner: 2 }, 3),
            (ParamLayout::PerAxis { len: 2, inner: 1 }, 2),
        ] {
            let scales: Vec<f32> = (0..n).map(|i| 0.1 + 0.05 * i as f32).collect();
            let zps: Vec<i64> = (0..n).map(|i| i as i64 - 1).collect();
            let p = params(layout, &scales, &zps, DataType::Int8);
            let mut q = vec![0.0; 12];
            quantize(&x, &p, &mut q).unwrap();
            for (i, (&v, &got)) in x.iter().zip(&q).enumerate() {
                let k = layout.index(i);
                let want = ((v / scales[k]).round_ties_even() as i64 + zps[k]).clamp(-128, 127);
                assert_eq!(got, want as f32, "element {i}");
            }
            let mut y = vec![0.0; 12];
            dequantize(Quantized::F32(&q), &p, &mut y).unwrap();
            let q8: Vec<i64> = q.iter().map(|&v| v as i64).collect();
            let mut y2 = vec![0.0; 12];
            dequantize(Quantized::I64(&q8), &p, &mut y2).unwrap();
            for i in 0..12 {
                let k = layout.index(i);
                let want = (q[i] as i64 - zps[k]) as f32 * scales[k];
                assert_eq!(y[i].to_bits(), want.to_bits(), "element {i}");
                assert_eq!(y2[i].to_bits(), want.to_bits(), "element {i}");
            }
            dequantize_in_place(&mut q, &p);
            assert_eq!(q, y);
        }
    }

    #[test]
    fn large_tensors_split_over_pieces_give_the_same_values() {
        let n = 3 * PIECE + 17;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let layout = ParamLayout::PerAxis { len: 5, inner: 1 };
        let p = params(
            layout,
            &[0.1, 0.2, 0.3, 0.4, 0.5],
            &[0, 1, 2, 3, 4],
            DataType::Uint8,
        );
        let mut q = vec![0.0; n];
        quantize(&x, &p, &mut q).unwrap();
        let u8s: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        let mut y = vec![0.0; n];
        dequantize(Quantized::U8(&u8s), &p, &mut y).unwrap();
        for i in (0..n).step_by(997) {
            let k = i % 5;
            let want = ((x[i] / p.scales[k]).round_ties_even() as i64 + k as i64).clamp(0, 255);
            assert_eq!(q[i], want as f32);
            assert_eq!(y[i], (want - k as i64) as f32 * p.scales[k]);
        }
        assert!(quantize(&x, &p, &mut [0.0; 3]).is_err());
    }
}
