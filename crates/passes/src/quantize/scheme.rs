//! Quantization schemes: integer types, ranges, scale/zero-point from a float range, and
//! quantization of weights (per tensor or per channel) and biases.

use serde::Serialize;
use whittle_exec::kernels::dispatch;
use whittle_exec::ops::quant::{quantize_values, ParamLayout, Span};
use whittle_ir::{DataType, TensorData};

use super::observer::{fold_finite, MinMax};

use crate::{bail, Result};

/// The 8-bit integer type of a quantized tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    /// Signed 8 bits.
    Int8,
    /// Unsigned 8 bits.
    Uint8,
}

impl QuantType {
    /// The ONNX element type.
    pub fn dtype(self) -> DataType {
        match self {
            QuantType::Int8 => DataType::Int8,
            QuantType::Uint8 => DataType::Uint8,
        }
    }
}

/// Scale and zero point of one quantized tensor or channel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QParams {
    /// Step between two integer levels.
    pub scale: f32,
    /// Integer that represents 0.0.
    pub zero_point: i64,
}

/// How a tensor maps onto integers: type, symmetric or asymmetric, reduced range.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scheme {
    /// Integer type.
    pub qtype: QuantType,
    /// Symmetric around zero (zero point in the middle) or asymmetric (min..max).
    pub symmetric: bool,
    /// Use 7 bits instead of 8 (avoids overflow of u8*s8 pairs on older x86 CPUs).
    pub reduce_range: bool,
}

impl Scheme {
    /// Weight scheme: int8 weights are symmetric, uint8 weights asymmetric.
    pub fn weights(qtype: QuantType, reduce_range: bool) -> Self {
        Scheme {
            qtype,
            symmetric: qtype == QuantType::Int8,
            reduce_range,
        }
    }

    /// Activation scheme: uint8 asymmetric or int8 symmetric, full range.
    pub fn activations(qtype: QuantType) -> Self {
        Scheme {
            qtype,
            symmetric: qtype == QuantType::Int8,
            reduce_range: false,
        }
    }

    /// Smallest and largest integer used, as onnxruntime's quantizer picks them.
    pub fn qrange(&self) -> (i64, i64) {
        match (self.qtype, self.reduce_range, self.symmetric) {
            (QuantType::Int8, true, _) => (-64, 64),
            (QuantType::Int8, false, true) => (-127, 127),
            (QuantType::Int8, false, false) => (-128, 127),
            (QuantType::Uint8, true, _) => (0, 127),
            (QuantType::Uint8, false, _) => (0, 255),
        }
    }

    /// Scale and zero point covering `[min, max]` widened to include 0 (symmetric:
    /// `[-a, a]` with `a = max(|min|, |max|)`, zero point in the middle). A zero-width
    /// range gets scale 1.
    ///
    /// Computed in f64 and the scale rounded once to f32, as ONNX Runtime's quantizer
    /// does: the same range gives bit-identical parameters (and so the same int8 weights),
    /// where f32 arithmetic (`(hi - lo)` rounded, then divided) was off by an ulp on
    /// about half the tensors and moved a few weights across a rounding tie.
    pub fn params(&self, min: f32, max: f32) -> QParams {
        let (qmin, qmax) = self.qrange();
        let (mut lo, mut hi) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
        if self.symmetric {
            let a = lo.abs().max(hi.abs());
            (lo, hi) = (-a, a);
        }
        let exact = (hi - lo) / (qmax - qmin) as f64;
        let scale = exact as f32;
        if !scale.is_finite() || scale <= f32::MIN_POSITIVE {
            return QParams {
                scale: 1.0,
                zero_point: if self.symmetric {
                    (qmin + qmax + 1) / 2
                } else {
                    qmin
                },
            };
        }
        let zero_point = if self.symmetric {
            ((qmin + qmax) as f64 / 2.0).round_ties_even()
        } else {
            (qmin as f64 - lo / exact).round_ties_even()
        };
        QParams {
            scale,
            zero_point: (zero_point as i64).clamp(qmin, qmax),
        }
    }
}

/// A weight tensor in integers, with one [`QParams`] per channel (one in all when per tensor).
#[derive(Clone, Debug)]
pub struct QuantizedWeight {
    /// The integers, int8 or uint8, same shape as the float weight.
    pub data: TensorData,
    /// One entry per channel along `axis` (one entry when `axis` is `None`).
    pub params: Vec<QParams>,
    /// The channel axis, `None` for per-tensor quantization.
    pub axis: Option<usize>,
}

impl QuantizedWeight {
    /// The scales as a tensor: a scalar per tensor, a 1-D tensor per channel.
    pub fn scale_tensor(&self) -> Result<TensorData> {
        let scales: Vec<f32> = self.params.iter().map(|p| p.scale).collect();
        param_tensor(&scales, self.axis.is_some())
    }

    /// The zero points as a tensor of the weight's integer type.
    pub fn zero_point_tensor(&self) -> Result<TensorData> {
        let zps: Vec<i64> = self.params.iter().map(|p| p.zero_point).collect();
        int_tensor(
            self.data.dtype(),
            vec_dims(zps.len(), self.axis.is_some()),
            &zps,
        )
    }
}

fn vec_dims(n: usize, per_channel: bool) -> Vec<usize> {
    if per_channel {
        vec![n]
    } else {
        vec![]
    }
}

/// A float32 parameter tensor: scalar (`per_channel == false`) or 1-D.
pub fn param_tensor(values: &[f32], per_channel: bool) -> Result<TensorData> {
    Ok(TensorData::from_slice(
        vec_dims(values.len(), per_channel),
        values,
    )?)
}

/// An integer tensor of `dtype` (int8, uint8 or int32) from i64 values already in range.
pub fn int_tensor(dtype: DataType, dims: Vec<usize>, values: &[i64]) -> Result<TensorData> {
    Ok(match dtype {
        DataType::Int8 => {
            let v: Vec<i8> = values.iter().map(|&x| x as i8).collect();
            TensorData::from_slice(dims, &v)?
        }
        DataType::Uint8 => {
            let v: Vec<u8> = values.iter().map(|&x| x as u8).collect();
            TensorData::from_slice(dims, &v)?
        }
        DataType::Int32 => {
            let v: Vec<i32> = values.iter().map(|&x| x as i32).collect();
            TensorData::from_slice(dims, &v)?
        }
        other => bail!("cannot store quantized values as {other}"),
    })
}

/// Quantizes `values` with the parameters `layout` assigns, converting each integer with `to`.
fn quantize_channels<T: Send + Clone + Default>(
    values: &[f32],
    layout: ParamLayout,
    params: &[QParams],
    range: (i64, i64),
    to: impl Fn(i64) -> T + Sync,
) -> Vec<T> {
    let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
    let zero_points: Vec<i64> = params.iter().map(|p| p.zero_point).collect();
    quantize_values(values, &layout, (&scales, &zero_points), range, to)
}

/// The range of each of the `channels` parameters `layout` assigns to `values`, its
/// loops compiled for the CPU's vector instructions ([`dispatch`]).
fn channel_ranges(values: &[f32], layout: ParamLayout, channels: usize) -> Vec<MinMax> {
    let mut ranges = vec![MinMax::default(); channels];
    // Parameters stepping along a span (per-column weights) keep their bounds in two
    // arrays, a vector lane per element ([`fold_finite`]).
    let (mut lo, mut hi) = (
        vec![f32::INFINITY; channels],
        vec![f32::NEG_INFINITY; channels],
    );
    layout.for_each_span(0..values.len(), |run, span| match span {
        Span::Shared(c) => dispatch(
            #[inline(always)]
            || ranges[c].update(&values[run]),
        ),
        Span::Stepping(c) => dispatch(
            #[inline(always)]
            || {
                let bounds = lo[c..].iter_mut().zip(&mut hi[c..]);
                for ((lo, hi), &v) in bounds.zip(&values[run]) {
                    fold_finite(lo, hi, v);
                }
            },
        ),
    });
    for ((range, min), max) in ranges.iter_mut().zip(lo).zip(hi) {
        *range = range.merged(MinMax { min, max });
    }
    ranges
}

/// Quantizes a float weight with `scheme`, per channel along `axis` or per tensor.
pub fn quantize_weight(
    name: &str,
    w: &TensorData,
    scheme: &Scheme,
    axis: Option<usize>,
) -> Result<QuantizedWeight> {
    let values: Vec<f32> = w.to_vec()?;
    let dims = w.dims().to_vec();
    let (layout, channels) = match axis {
        Some(a) if a < dims.len() => (
            ParamLayout::PerAxis {
                len: dims[a],
                inner: dims[a + 1..].iter().product(),
            },
            dims[a],
        ),
        Some(a) => bail!("weight '{name}' of shape {dims:?} has no channel axis {a}"),
        None => (ParamLayout::PerTensor, 1),
    };
    let params: Vec<QParams> = channel_ranges(&values, layout, channels)
        .iter()
        .map(|r| {
            let (lo, hi) = r.range();
            scheme.params(lo, hi)
        })
        .collect();
    let range = scheme.qrange();
    let data = match scheme.qtype {
        QuantType::Int8 => {
            let q = quantize_channels(&values, layout, &params, range, |v| v as i8);
            TensorData::from_slice(dims, &q)?
        }
        QuantType::Uint8 => {
            let q = quantize_channels(&values, layout, &params, range, |v| v as u8);
            TensorData::from_slice(dims, &q)?
        }
    };
    Ok(QuantizedWeight { data, params, axis })
}

/// A bias quantized to int32 with scale `x_scale * w_scale[c]` (an f32 product) and zero
/// point 0, and the scales used (one per channel, or one). Each value is divided in f64
/// and rounded half to even, as ONNX Runtime's quantizer does.
pub fn quantize_bias(
    name: &str,
    bias: &TensorData,
    x_scale: f32,
    w: &QuantizedWeight,
) -> Result<(TensorData, Vec<f32>)> {
    let values: Vec<f32> = bias.to_vec()?;
    let n = w.params.len();
    if n != 1 && n != values.len() {
        bail!(
            "bias '{name}' has {} values but the weight has {n} channels",
            values.len()
        );
    }
    let scales: Vec<f32> = w.params.iter().map(|p| p.scale * x_scale).collect();
    let (lo, hi) = (f64::from(i32::MIN), f64::from(i32::MAX));
    let q: Vec<i64> = values
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let scale = f64::from(scales[if n == 1 { 0 } else { i }]);
            (f64::from(b) / scale).round_ties_even().clamp(lo, hi) as i64
        })
        .collect();
    Ok((
        int_tensor(DataType::Int32, bias.dims().to_vec(), &q)?,
        scales,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_uint8_params_match_hand_computation() {
        let s = Scheme::activations(QuantType::Uint8);
        // [-1, 3] over 255 steps: scale 4/255, zero point round(255/4) = 64.
        let p = s.params(-1.0, 3.0);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(p.zero_point, 64);
        // Ranges are widened to include 0.
        assert_eq!(s.params(2.0, 5.1).zero_point, 0);
    }

    #[test]
    fn symmetric_int8_params_and_reduced_range() {
        let p = Scheme::weights(QuantType::Int8, false).params(-0.5, 1.27);
        assert!((p.scale - 0.01).abs() < 1e-7);
        assert_eq!(p.zero_point, 0);
        let r = Scheme::weights(QuantType::Int8, true);
        assert_eq!(r.qrange(), (-64, 64));
        // [-6.4, 6.4] over 128 steps.
        assert!((r.params(-6.4, 1.0).scale - 0.1).abs() < 1e-7);
        // A zero range gets scale 1 rather than dividing by zero.
        assert_eq!(r.params(0.0, 0.0).scale, 1.0);
    }

    #[test]
    fn params_equal_onnxruntime_bit_for_bit() {
        // Ranges where f32 arithmetic gave a scale one ulp off; expected values from ONNX
        // Runtime 1.32's quant_utils.compute_scale_zp(rmin, rmax, 0, 255) on f32 inputs.
        let s = Scheme::activations(QuantType::Uint8);
        let cases: [(f32, f32, u32, i64); 4] = [
            (-1.819_907_3, 8.753_959, 1_026_152_551, 44),
            (-1.630_875, 11.220_869, 1_028_550_446, 32),
            (-2.572_213, 0.403_026_9, 1_010_772_350, 220),
            (-2.188_966_3, 2.107_867_5, 1_015_679_411, 130),
        ];
        for (lo, hi, bits, zp) in cases {
            let p = s.params(lo, hi);
            assert_eq!(p.scale.to_bits(), bits, "[{lo}, {hi}]");
            assert_eq!(p.zero_point, zp, "[{lo}, {hi}]");
        }
        // Symmetric schemes put the zero point in the middle whatever the rounding.
        assert_eq!(
            Scheme::weights(QuantType::Int8, false)
                .params(-0.3, 0.7)
                .zero_point,
            0
        );
    }

    #[test]
    fn bias_rounds_like_onnxruntime() {
        // b / scale lands within 1e-6 of a half: f32 division rounded these the other way.
        let w = QuantizedWeight {
            data: TensorData::from_slice(vec![2], &[1i8, 1]).unwrap(),
            params: vec![
                QParams {
                    scale: 2.315_488_4e-5,
                    zero_point: 0,
                },
                QParams {
                    scale: 4.722_628e-4,
                    zero_point: 0,
                },
            ],
            axis: Some(0),
        };
        let bias = TensorData::from_slice(vec![2], &[0.561_286_f32, 0.953_734_7]).unwrap();
        let (q, _) = quantize_bias("b", &bias, 1.0, &w).unwrap();
        // ORT: round(float64(b) / float64(x_scale * w_scale)) = 24240.5005 -> 24241,
        // 2019.49997 -> 2019.
        assert_eq!(q.to_vec::<i32>().unwrap(), vec![24241, 2019]);
    }

    #[test]
    fn per_channel_weights_get_one_scale_per_output_channel() {
        let w = TensorData::from_slice(vec![2, 3], &[1.0f32, -2.0, 0.5, 10.0, 5.0, -1.0]).unwrap();
        let s = Scheme::weights(QuantType::Int8, false);
        let q = quantize_weight("w", &w, &s, Some(0)).unwrap();
        assert_eq!(q.params.len(), 2);
        assert!((q.params[0].scale - 2.0 / 127.0).abs() < 1e-7);
        assert_eq!(
            q.data.to_vec::<i8>().unwrap(),
            vec![64, -127, 32, 127, 64, -13]
        );
        let (b, scales) = quantize_bias(
            "b",
            &TensorData::from_slice(vec![2], &[0.1f32, -1.0]).unwrap(),
            0.5,
            &q,
        )
        .unwrap();
        assert_eq!(scales.len(), 2);
        // 0.1 / (0.5 * 2/127) = 12.7 -> 13; -1 / (0.5 * 10/127) = -25.4 -> -25.
        assert_eq!(b.to_vec::<i32>().unwrap(), vec![13, -25]);
    }
}
