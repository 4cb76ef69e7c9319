//! `Resize` (opsets 10 to 19) and the deprecated `Upsample`.
//!
//! Interpolation is separable: each resized axis gets a plan of taps (input indices and
//! weights per output position) computed on the host from the coordinate transformation,
//! then applied with `index_select` and weighted sums, so float paths stay differentiable.
//! Nearest resizing of the two last axes that candle's nearest upsampling reproduces
//! exactly (e.g. 2x upsampling in YOLO necks) runs on that single-pass kernel.

use candle_core::{DType, Tensor};
use whittle_ir::proto::NodeProto;
use whittle_ir::{DataType, NodeAttrs};

use super::util::check_size;
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("Resize", resize);
    r.add("Upsample", upsample);
}

/// How a fractional source coordinate picks one input index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Opset-10 Resize and Upsample: floor when upsampling, ceil when downsampling.
    Simple,
}

/// Interpolation mode.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest(Nearest),
    /// Linear interpolation (support radius 1).
    Linear,
    /// Cubic convolution with coefficient `a` (support radius 2).
    Cubic(f64),
}

/// Maps an output coordinate to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

/// Everything that decides how one axis is resampled.
#[derive(Clone, Copy, Debug)]
struct Settings {
    mode: Mode,
    coord: Coord,
    exclude_outside: bool,
    antialias: bool,
    extrapolation: f64,
}

impl Settings {
    /// Reads Resize's attributes (opset 11+).
    fn from_node(node: &NodeProto) -> Result<Self> {
        let nearest = match node
            .string_or("nearest_mode", "round_prefer_floor")?
            .as_str()
        {
            "round_prefer_floor" => Nearest::RoundPreferFloor,
            "round_prefer_ceil" => Nearest::RoundPreferCeil,
            "floor" => Nearest::Floor,
            "ceil" => Nearest::Ceil,
            other => bail!("unknown nearest_mode '{other}'"),
        };
        let coord = match node
            .string_or("coordinate_transformation_mode", "half_pixel")?
            .as_str()
        {
            "half_pixel" => Coord::HalfPixel,
            "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "align_corners" => Coord::AlignCorners,
            "asymmetric" => Coord::Asymmetric,
            "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
            "tf_crop_and_resize" => Coord::TfCropAndResize,
            other => bail!("unknown coordinate_transformation_mode '{other}'"),
        };
        let a = node.float_or("cubic_coeff_a", -0.75)? as f64;
        let mode = parse_mode(node, Mode::Nearest(nearest), a)?;
        let antialias = node.int_or("antialias", 0)? != 0;
        if antialias && matches!(mode, Mode::Nearest(_)) {
            bail!("antialias is not defined for nearest mode");
        }
        Ok(Settings {
            mode,
            coord,
            exclude_outside: node.int_or("exclude_outside", 0)? != 0,
            antialias,
            extrapolation: node.float_or("extrapolation_value", 0.0)? as f64,
        })
    }

    /// Opset-10 Resize and Upsample: asymmetric coordinates, simple nearest rounding.
    fn legacy(node: &NodeProto) -> Result<Self> {
        Ok(Settings {
            mode: parse_mode(node, Mode::Nearest(Nearest::Simple), -0.75)?,
            coord: Coord::Asymmetric,
            exclude_outside: false,
            antialias: false,
            extrapolation: 0.0,
        })
    }
}

fn parse_mode(node: &NodeProto, nearest: Mode, a: f64) -> Result<Mode> {
    Ok(match node.string_or("mode", "nearest")?.as_str() {
        "nearest" => nearest,
        "linear" | "bilinear" | "trilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic(a),
        other => bail!("unknown mode '{other}'"),
    })
}

/// The sampling of one axis: per tap, an input index and a weight for every output position.
#[derive(Clone, Debug, PartialEq)]
struct AxisPlan {
    /// `indices[t][o]`: input index of tap `t` for output `o`.
    indices: Vec<Vec<u32>>,
    /// `weights[t][o]`; empty for nearest sampling.
    weights: Vec<Vec<f64>>,
    /// Output positions that take the extrapolation value (tf_crop_and_resize).
    outside: Vec<bool>,
}

/// Source coordinate of output position `o`. `scale` is the axis's scale factor; the
/// nominal output length is `scale * len` (as the ONNX reference uses it).
fn source_coord(
    coord: Coord,
    o: usize,
    len: usize,
    out: usize,
    scale: f64,
    roi: (f64, f64),
) -> f64 {
    let (x, len_f) = (o as f64, len as f64);
    let out_f = scale * len_f;
    match coord {
        Coord::HalfPixel => (x + 0.5) / scale - 0.5,
        Coord::HalfPixelSymmetric => {
            let adjustment = out as f64 / out_f;
            let offset = len_f / 2.0 * (1.0 - adjustment);
            offset + (x + 0.5) / scale - 0.5
        }
        Coord::PytorchHalfPixel if out_f == 1.0 => -0.5,
        Coord::PytorchHalfPixel => (x + 0.5) / scale - 0.5,
        Coord::AlignCorners if out_f == 1.0 => 0.0,
        Coord::AlignCorners => x * (len_f - 1.0) / (out_f - 1.0),
        Coord::Asymmetric => x / scale,
        Coord::TfHalfPixelForNn => (x + 0.5) / scale,
        Coord::TfCropAndResize => {
            let span = (roi.1 - roi.0) * (len_f - 1.0);
            let rel = if out_f == 1.0 {
                span / 2.0
            } else {
                x * span / (out_f - 1.0)
            };
            rel + roi.0 * (len_f - 1.0)
        }
    }
}

/// Index of the nearest input sample to `x`.
fn nearest_index(mode: Nearest, x: f64, scale: f64) -> i64 {
    if x == x.floor() {
        return x as i64;
    }
    let r = match mode {
        Nearest::RoundPreferFloor => (x - 0.5).ceil(),
        Nearest::RoundPreferCeil => (x + 0.5).floor(),
        Nearest::Floor => x.floor(),
        Nearest::Ceil => x.ceil(),
        Nearest::Simple if scale < 1.0 => x.ceil(),
        Nearest::Simple => x.floor(),
    };
    r as i64
}

/// Interpolation kernel value at distance `d` (linear or cubic convolution).
fn kernel(mode: Mode, d: f64) -> f64 {
    let d = d.abs();
    match mode {
        Mode::Cubic(a) if d <= 1.0 => ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0,
        Mode::Cubic(a) if d < 2.0 => ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a,
        Mode::Cubic(_) => 0.0,
        _ => (1.0 - d).max(0.0),
    }
}

/// Taps (index, weight) of one output position at source coordinate `x`.
fn taps(s: &Settings, x: f64, len: usize, scale: f64) -> Vec<(i64, f64)> {
    let radius = if matches!(s.mode, Mode::Cubic(_)) {
        2.0
    } else {
        1.0
    };
    // The left neighbour is strictly below x, so the ratio lies in (0, 1].
    let base = x.ceil() - 1.0;
    let ratio = x - base;
    let squeeze = if s.antialias { scale.min(1.0) } else { 1.0 };
    let first = (-radius / squeeze).floor() as i64 + 1;
    let mut taps: Vec<(i64, f64)> = (first..=1 - first)
        .map(|i| {
            (
                base as i64 + i,
                kernel(s.mode, squeeze * (i as f64 - ratio)),
            )
        })
        .collect();
    if s.exclude_outside {
        for t in taps.iter_mut().filter(|t| t.0 < 0 || t.0 >= len as i64) {
            t.1 = 0.0;
        }
    }
    if s.exclude_outside || s.antialias {
        let sum: f64 = taps.iter().map(|t| t.1).sum();
        let sum = if sum == 0.0 { 1.0 } else { sum };
        taps.iter_mut().for_each(|t| t.1 /= sum);
    }
    taps
}

/// Plans the resampling of an axis of length `len` to `out`.
fn plan_axis(
    s: &Settings,
    len: usize,
    out: usize,
    scale: f64,
    roi: (f64, f64),
) -> Result<AxisPlan> {
    if len == 0 {
        bail!("cannot resize an empty axis");
    }
    let clamp = |i: i64| i.clamp(0, len as i64 - 1) as u32;
    let coords: Vec<f64> = (0..out)
        .map(|o| source_coord(s.coord, o, len, out, scale, roi))
        .collect();
    let outside = coords
        .iter()
        .map(|&x| s.coord == Coord::TfCropAndResize && (x < 0.0 || x > len as f64 - 1.0))
        .collect();
    if let Mode::Nearest(mode) = s.mode {
        let idx = coords
            .iter()
            .map(|&x| clamp(nearest_index(mode, x, scale)))
            .collect();
        return Ok(AxisPlan {
            indices: vec![idx],
            weights: vec![],
            outside,
        });
    }
    let per_out: Vec<Vec<(i64, f64)>> = coords.iter().map(|&x| taps(s, x, len, scale)).collect();
    let n = per_out.first().map_or(0, Vec::len);
    if n > 1 << 12 {
        bail!("interpolation support of {n} taps is too large");
    }
    Ok(AxisPlan {
        indices: (0..n)
            .map(|t| per_out.iter().map(|p| clamp(p[t].0)).collect())
            .collect(),
        weights: (0..n)
            .map(|t| per_out.iter().map(|p| p[t].1).collect())
            .collect(),
        outside,
    })
}

/// A host vector as a tensor of `x`'s rank that varies along `axis` only.
fn along_axis<T: candle_core::WithDType>(v: Vec<T>, x: &Tensor, axis: usize) -> Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[axis] = v.len();
    Ok(Tensor::from_vec(v, shape, x.device())?)
}

/// Applies an axis plan to `x` (float when the plan has weights).
fn apply_plan(x: &Tensor, axis: usize, plan: &AxisPlan, extrapolation: f64) -> Result<Tensor> {
    let dev = x.device();
    let mut y: Option<Tensor> = None;
    for (t, idx) in plan.indices.iter().enumerate() {
        let idx_t = Tensor::from_vec(idx.clone(), idx.len(), dev)?;
        let mut part = x.index_select(&idx_t, axis)?;
        if let Some(w) = plan.weights.get(t) {
            let w = along_axis(w.clone(), x, axis)?.to_dtype(x.dtype())?;
            part = part.broadcast_mul(&w)?;
        }
        y = Some(match y {
            Some(acc) => (acc + part)?,
            None => part,
        });
    }
    let Some(y) = y else {
        bail!("empty interpolation plan")
    };
    if !plan.outside.iter().any(|&o| o) {
        return Ok(y);
    }
    let mask: Vec<u8> = plan.outside.iter().map(|&o| o as u8).collect();
    let mask = along_axis(mask, x, axis)?.broadcast_as(y.dims())?;
    let fill = (y.ones_like()? * extrapolation)?;
    Ok(mask.where_cond(&fill, &y)?)
}

/// Output size, scale and region of interest of every axis.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    out: Vec<usize>,
    scales: Vec<f64>,
    roi: Vec<(f64, f64)>,
}

/// How `sizes` are fitted when the aspect ratio is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Resolves the target shape from `scales` or `sizes` (given for `axes`) and `roi`.
fn target(
    shape: &[usize],
    axes: &[usize],
    scales: Option<Vec<f64>>,
    sizes: Option<Vec<i64>>,
    roi: Option<Vec<f64>>,
    policy: Policy,
) -> Result<Target> {
    let rank = shape.len();
    let mut t = Target {
        out: shape.to_vec(),
        scales: vec![1.0; rank],
        roi: vec![(0.0, 1.0); rank],
    };
    if let Some(roi) = roi.filter(|r| !r.is_empty()) {
        if roi.len() != 2 * axes.len() {
            bail!("roi has {} values, expected {}", roi.len(), 2 * axes.len());
        }
        for (i, &a) in axes.iter().enumerate() {
            t.roi[a] = (roi[i], roi[axes.len() + i]);
        }
    }
    match (sizes, scales) {
        (Some(sizes), _) => {
            if sizes.len() != axes.len() || sizes.iter().any(|&s| s < 0) {
                bail!("sizes {sizes:?} do not fit axes {axes:?}");
            }
            let ratios: Vec<f64> = axes
                .iter()
                .zip(&sizes)
                .map(|(&a, &s)| s as f64 / shape[a] as f64)
                .collect();
            let fit = match policy {
                Policy::Stretch => None,
                Policy::NotLarger => ratios.iter().copied().reduce(f64::min),
                Policy::NotSmaller => ratios.iter().copied().reduce(f64::max),
            };
            for (i, &a) in axes.iter().enumerate() {
                let (scale, out) = match fit {
                    Some(f) => (f, (f * shape[a] as f64 + 0.5).floor() as usize),
                    None => (ratios[i], sizes[i] as usize),
                };
                (t.scales[a], t.out[a]) = (scale, out);
            }
        }
        (None, Some(scales)) => {
            if scales.len() != axes.len() || scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
                bail!("scales {scales:?} must be positive and fit axes {axes:?}");
            }
            for (&a, &s) in axes.iter().zip(&scales) {
                // Saturates: a size past usize::MAX fails the size check in `run`.
                (t.scales[a], t.out[a]) = (s, (s * shape[a] as f64) as usize);
            }
        }
        (None, None) => bail!("one of 'scales' and 'sizes' is required"),
    }
    Ok(t)
}

/// Resizes `x` to `t` with `s`.
fn run(x: &Value, t: &Target, s: &Settings) -> Result<Value> {
    check_size(&t.out, x.tensor().dtype())?;
    let axes: Vec<usize> = (0..x.rank())
        .filter(|&a| {
            let (b, e) = t.roi[a];
            let identity = (t.scales[a] - 1.0).abs() < 1e-9 && t.out[a] == x.shape()[a];
            !(identity && b.abs() < 1e-9 && (e - 1.0).abs() < 1e-9)
        })
        .collect();
    let plans = axes
        .iter()
        .map(|&a| plan_axis(s, x.shape()[a], t.out[a], t.scales[a], t.roi[a]))
        .collect::<Result<Vec<_>>>()?;
    if let Some(y) = candle_nearest(x.tensor(), &axes, &plans)? {
        return x.with_tensor(y);
    }
    let interpolate = !matches!(s.mode, Mode::Nearest(_));
    let float = interpolate && !x.dtype().is_float();
    let mut y = if float {
        x.tensor().to_dtype(DType::F64)?
    } else {
        x.tensor().clone()
    };
    for (&a, plan) in axes.iter().zip(&plans) {
        y = apply_plan(&y, a, plan, s.extrapolation)?;
    }
    if float {
        return saturate(&y, x.dtype());
    }
    x.with_tensor(y)
}

/// Rounds and clamps f64 results into integer type `dt` (as the ONNX reference does).
fn saturate(y: &Tensor, dt: DataType) -> Result<Value> {
    let Some((lo, hi)) = dt.int_range() else {
        bail!("cannot resize {dt} tensors");
    };
    let v: Vec<f64> = y
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| v.round_ties_even().clamp(lo as f64, hi as f64))
        .collect();
    Value::new(Tensor::from_vec(v, y.dims(), y.device())?, DataType::Double)?.cast(dt)
}

/// Nearest resizing of exactly the two last axes of a 4-D tensor, when candle's nearest
/// upsampling picks the same source indices as the plans.
fn candle_nearest(x: &Tensor, axes: &[usize], plans: &[AxisPlan]) -> Result<Option<Tensor>> {
    if x.rank() != 4
        || axes != [2, 3]
        || plans
            .iter()
            .any(|p| !p.weights.is_empty() || p.outside.iter().any(|&o| o))
    {
        return Ok(None);
    }
    let candle_map = |len: usize, out: usize| -> Vec<u32> {
        let scale = len as f64 / out as f64;
        (0..out)
            .map(|o| ((o as f64 * scale) as usize).min(len - 1) as u32)
            .collect()
    };
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    let (oh, ow) = (plans[0].indices[0].len(), plans[1].indices[0].len());
    if candle_map(h, oh) != plans[0].indices[0] || candle_map(w, ow) != plans[1].indices[0] {
        return Ok(None);
    }
    Ok(Some(x.upsample_nearest2d(oh, ow)?))
}

/// An optional 1-D input, `None` when omitted or empty.
fn opt_vec<T>(c: &OpCtx, i: usize, read: fn(&Value) -> Result<Vec<T>>) -> Result<Option<Vec<T>>> {
    match c.opt_input(i) {
        Some(v) if v.numel() > 0 => Ok(Some(read(v)?)),
        _ => Ok(None),
    }
}

fn resize(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    if c.opset < 11 {
        let scales = opt_vec(c, 1, Value::to_f64_vec)?;
        let axes: Vec<usize> = (0..x.rank()).collect();
        let t = target(x.shape(), &axes, scales, None, None, Policy::Stretch)?;
        return Ok(vec![run(x, &t, &Settings::legacy(c.node)?)?]);
    }
    let axes = match c.node.ints("axes")? {
        Some(a) => a
            .iter()
            .map(|&a| c.axis(a, x.rank()))
            .collect::<Result<Vec<_>>>()?,
        None => (0..x.rank()).collect(),
    };
    let policy = match c
        .node
        .string_or("keep_aspect_ratio_policy", "stretch")?
        .as_str()
    {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        other => bail!("unknown keep_aspect_ratio_policy '{other}'"),
    };
    let t = target(
        x.shape(),
        &axes,
        opt_vec(c, 2, Value::to_f64_vec)?,
        opt_vec(c, 3, Value::to_i64_vec)?,
        opt_vec(c, 1, Value::to_f64_vec)?,
        policy,
    )?;
    Ok(vec![run(x, &t, &Settings::from_node(c.node)?)?])
}

fn upsample(c: &OpCtx) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    let scales = match c.node.floats("scales")? {
        Some(s) => s.iter().map(|&v| v as f64).collect(),
        None => c.input(1)?.to_f64_vec()?,
    };
    let axes: Vec<usize> = (0..x.rank()).collect();
    let t = target(x.shape(), &axes, Some(scales), None, None, Policy::Stretch)?;
    Ok(vec![run(x, &t, &Settings::legacy(c.node)?)?])
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use whittle_ir::attr::make;

    use super::*;
    use crate::ops::conv::tests::{arange, flat, run_node};

    fn i64s(v: &[i64]) -> Value {
        Value::new(Tensor::new(v, &Device::Cpu).unwrap(), DataType::Int64).unwrap()
    }

    fn f32s(v: &[f32]) -> Value {
        Value::f32(Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn tf_half_pixel_nearest_downsampling() {
        // ONNX resize_downsample_sizes_nearest_tf_half_pixel_for_nn (input 1..=16 there).
        let attrs = vec![make::string(
            "coordinate_transformation_mode",
            "tf_half_pixel_for_nn",
        )];
        let inputs = vec![
            arange(&[1, 1, 4, 4]),
            f32s(&[]),
            f32s(&[]),
            i64s(&[1, 1, 3, 2]),
        ];
        let y = run_node("Resize", attrs, inputs, 1).unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 3, 2]);
        assert_eq!(flat(&y[0]), [5.0, 7.0, 9.0, 11.0, 13.0, 15.0]);
    }

    #[test]
    fn linear_upsampling_matches_the_onnx_example() {
        let x =
            Value::f32(Tensor::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &Device::Cpu).unwrap()).unwrap();
        let attrs = vec![make::string("mode", "linear")];
        let inputs = vec![x, f32s(&[]), f32s(&[1.0, 1.0, 2.0, 2.0])];
        let y = run_node("Resize", attrs, inputs, 1).unwrap();
        let row0 = flat(&y[0])[..4].to_vec();
        let row1 = flat(&y[0])[4..8].to_vec();
        assert_eq!(row0, [1.0, 1.25, 1.75, 2.0]);
        assert_eq!(row1, [1.5, 1.75, 2.25, 2.5]);
    }

    #[test]
    fn nearest_2x_uses_candle_and_agrees_with_gathering() {
        let x = arange(&[1, 2, 3, 5]);
        let t = target(
            x.shape(),
            &[0, 1, 2, 3],
            Some(vec![1.0, 1.0, 2.0, 2.0]),
            None,
            None,
            Policy::Stretch,
        )
        .unwrap();
        for (mode, rounding) in [
            ("asymmetric", "floor"),
            ("half_pixel", "round_prefer_floor"),
        ] {
            let node = NodeProto {
                attribute: vec![
                    make::string("coordinate_transformation_mode", mode),
                    make::string("nearest_mode", rounding),
                ],
                ..Default::default()
            };
            let s = Settings::from_node(&node).unwrap();
            let plans: Vec<AxisPlan> = [2, 3]
                .iter()
                .map(|&a| plan_axis(&s, x.shape()[a], t.out[a], 2.0, (0.0, 1.0)).unwrap())
                .collect();
            let fast = candle_nearest(x.tensor(), &[2, 3], &plans)
                .unwrap()
                .unwrap();
            let slow = apply_plan(
                &apply_plan(x.tensor(), 2, &plans[0], 0.0).unwrap(),
                3,
                &plans[1],
                0.0,
            )
            .unwrap();
            assert_eq!(
                flat(&Value::f32(fast).unwrap()),
                flat(&Value::f32(slow).unwrap())
            );
        }
    }

    #[test]
    fn antialias_widens_and_normalises_the_linear_kernel() {
        let node = NodeProto {
            attribute: vec![make::string("mode", "linear"), make::int("antialias", 1)],
            ..Default::default()
        };
        let s = Settings::from_node(&node).unwrap();
        // Half-pixel output 0 of a 2x downsample sits at 0.5.
        let w: Vec<f64> = taps(&s, 0.5, 8, 0.5).iter().map(|t| t.1).collect();
        assert_eq!(w, [0.125, 0.375, 0.375, 0.125]);
        assert_eq!(taps(&s, 0.5, 8, 0.5)[0].0, -1);
    }
}
