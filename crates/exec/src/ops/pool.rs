//! Pooling: `MaxPool` (with optional `Indices`), `AveragePool`, `LpPool` and their global
//! forms, over 1-D, 2-D and 3-D inputs.
//!
//! Plain 2-D max and average pools run on candle's pooling kernels (padding with -inf or
//! zeros first); dilated, 1-D/3-D and `ceil_mode` cases combine one strided view per kernel
//! tap with elementwise max or sums. Both are differentiable.

use candle_core::{DType, Tensor};
use whittle_ir::{DataType, NodeAttrs};

use super::conv::{kernel_offsets, pad_spatial, Resolved, Taps, Window};
use super::util::{check_size, require_float};
use super::{OpCtx, Registry};
use crate::bail;
use crate::error::Result;
use crate::value::Value;

/// Registers this family.
pub fn register(r: &mut Registry) {
    r.add("MaxPool", max_pool);
    r.add("AveragePool", average_pool);
    r.add("LpPool", lp_pool);
    r.add("GlobalMaxPool", |c| global(c, Global::Max));
    r.add("GlobalAveragePool", |c| global(c, Global::Avg));
    r.add("GlobalLpPool", |c| {
        let p = lp_order(c)?;
        global(c, Global::Lp(p))
    });
}

/// The input and its window, resolved against the input's spatial shape.
struct Pooling<'a> {
    x: &'a Value,
    window: Window,
    res: Resolved,
}

impl<'a> Pooling<'a> {
    fn new(c: &'a OpCtx) -> Result<Self> {
        let x = c.input(0)?;
        if !(3..=5).contains(&x.rank()) {
            bail!(
                "expects a [N, C, d1..dn] input with 1 <= n <= 3, got {:?}",
                x.shape()
            );
        }
        let window = Window::from_node(c.node, x.rank() - 2, None)?;
        let ceil = c.node.int_or("ceil_mode", 0)? != 0;
        let res = window.resolve(&x.shape()[2..], ceil)?;
        check_size(
            &[&x.shape()[..2], &res.out[..]].concat(),
            x.tensor().dtype(),
        )?;
        Ok(Pooling { x, window, res })
    }

    /// The input padded with `value`, including the `ceil_mode` tail.
    fn padded(&self, t: &Tensor, value: f64) -> Result<Tensor> {
        let end: Vec<usize> = self
            .res
            .end
            .iter()
            .zip(&self.res.extra)
            .map(|(e, x)| e + x)
            .collect();
        pad_spatial(t, &self.res.begin, &end, value)
    }

    fn no_padding(&self) -> bool {
        self.res
            .begin
            .iter()
            .chain(&self.res.end)
            .chain(&self.res.extra)
            .all(|&p| p == 0)
    }

    /// True when candle's 2-D pooling kernels apply (2-D, no dilation).
    fn candle_2d(&self) -> bool {
        self.window.rank() == 2 && self.window.dilations.iter().all(|&d| d == 1)
    }

    /// Folds `f` over every kernel tap of `padded`, starting from the first tap.
    fn fold_taps(
        &self,
        padded: &Tensor,
        f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor> {
        Taps::new(padded, &self.window, &self.res.out).fold(|acc, tap, _| {
            Ok(match acc {
                Some(a) => f(&a, &tap)?,
                None => tap,
            })
        })
    }

    /// Sum over each window of the zero-padded tensor `t`.
    fn window_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.fold_taps(&self.padded(t, 0.0)?, Tensor::add)
    }

    /// Number of elements each window covers (`[1, 1, out...]`), counting explicit padding
    /// when `include_pad` but never the `ceil_mode` tail.
    fn counts(&self, include_pad: bool, like: &Tensor) -> Result<Tensor> {
        let w = &self.window;
        let mut counts = vec![1.0f64];
        for i in 0..w.rank() {
            let len = self.x.shape()[i + 2];
            let (lo, hi) = if include_pad {
                (0, self.res.begin[i] + len + self.res.end[i])
            } else {
                (self.res.begin[i], self.res.begin[i] + len)
            };
            let axis: Vec<f64> = (0..self.res.out[i])
                .map(|o| {
                    (0..w.kernel[i])
                        .map(|k| o * w.strides[i] + k * w.dilations[i])
                        .filter(|&p| p >= lo && p < hi)
                        .count() as f64
                })
                .collect();
            counts = counts
                .iter()
                .flat_map(|&c| axis.iter().map(move |&a| c * a))
                .collect();
        }
        let mut shape = vec![1, 1];
        shape.extend(&self.res.out);
        Ok(Tensor::from_vec(counts, shape, like.device())?.to_dtype(like.dtype())?)
    }
}

/// Lowest value of a storage dtype, the neutral element of max.
fn lowest(dt: DType) -> f64 {
    match dt {
        DType::U8 => 0.0,
        DType::I64 => i64::MIN as f64,
        _ => f64::NEG_INFINITY,
    }
}

fn max_pool(c: &OpCtx) -> Result<Vec<Value>> {
    let p = Pooling::new(c)?;
    let x = p.x.tensor();
    let want_indices = c.node.output.get(1).is_some_and(|o| !o.is_empty());
    if want_indices {
        let column_major = c.node.int_or("storage_order", 0)? != 0;
        let (y, idx) = max_with_indices(&p, column_major)?;
        return Ok(vec![p.x.with_tensor(y)?, Value::new(idx, DataType::Int64)?]);
    }
    let padded = p.padded(x, lowest(x.dtype()))?;
    // Not in training: candle 0.11's MaxPool2D backward multiplies the gradient by the
    // window's share of maxima (1/4 for a unique maximum of 2x2) instead of dividing by it.
    let y = if p.candle_2d() && x.dtype().is_float() && !c.training {
        let (k, s) = (&p.window.kernel, &p.window.strides);
        padded.max_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))?
    } else {
        p.fold_taps(&padded, |a, b| a.maximum(b))?
    };
    Ok(vec![p.x.with_tensor(y)?])
}

/// Max pooling that also returns the flat input index of each maximum (the first one in
/// window order), with spatial axes in row- or column-major order.
fn max_with_indices(p: &Pooling, column_major: bool) -> Result<(Tensor, Tensor)> {
    let x = p.x.tensor();
    let dims = p.x.shape();
    let spatial = &dims[2..];
    let plane: usize = spatial.iter().product();
    let mut strides = vec![1usize; spatial.len()];
    for i in 0..spatial.len() {
        strides[i] = if column_major {
            spatial[..i].iter().product()
        } else {
            spatial[i + 1..].iter().product()
        };
    }
    let index: Vec<i64> = (0..p.x.numel())
        .map(|flat| {
            let (base, mut rest) = (flat - flat % plane, flat % plane);
            let mut pos = 0;
            for i in (0..spatial.len()).rev() {
                pos += (rest % spatial[i]) * strides[i];
                rest /= spatial[i];
            }
            (base + pos) as i64
        })
        .collect();
    let index = Tensor::from_vec(index, dims, x.device())?;
    let (xv, iv) = (p.padded(x, lowest(x.dtype()))?, p.padded(&index, -1.0)?);
    let mut values = Taps::new(&xv, &p.window, &p.res.out);
    let mut indices = Taps::new(&iv, &p.window, &p.res.out);
    let (mut best, mut arg): (Option<Tensor>, Option<Tensor>) = (None, None);
    for off in kernel_offsets(&p.window.kernel)? {
        let (v, i) = (values.tap(&off)?, indices.tap(&off)?);
        (best, arg) = match (best, arg) {
            (Some(b), Some(a)) => {
                let take = v.gt(&b)?;
                (
                    Some(take.where_cond(&v, &b)?),
                    Some(take.where_cond(&i, &a)?),
                )
            }
            _ => (Some(v), Some(i)),
        };
    }
    match (best, arg) {
        (Some(b), Some(a)) => Ok((b, a)),
        _ => bail!("empty kernel"),
    }
}

fn average_pool(c: &OpCtx) -> Result<Vec<Value>> {
    let p = Pooling::new(c)?;
    require_float(p.x)?;
    let include_pad = c.node.int_or("count_include_pad", 0)? != 0;
    let x = p.x.tensor();
    let y = if p.candle_2d() && p.no_padding() {
        let (k, s) = (&p.window.kernel, &p.window.strides);
        x.avg_pool2d_with_stride((k[0], k[1]), (s[0], s[1]))?
    } else {
        p.window_sum(x)?.broadcast_div(&p.counts(include_pad, x)?)?
    };
    Ok(vec![p.x.with_tensor(y)?])
}

/// The `p` attribute of Lp pools (default 2).
fn lp_order(c: &OpCtx) -> Result<f64> {
    let p = c.node.int_or("p", 2)?;
    if p < 1 {
        bail!("p must be positive, got {p}");
    }
    Ok(p as f64)
}

/// `|t|^p`.
fn abs_pow(t: &Tensor, p: f64) -> Result<Tensor> {
    Ok(match p {
        1.0 => t.abs()?,
        2.0 => t.sqr()?,
        _ => t.abs()?.powf(p)?,
    })
}

/// `t^(1/p)`.
fn root(t: &Tensor, p: f64) -> Result<Tensor> {
    Ok(match p {
        1.0 => t.clone(),
        2.0 => t.sqrt()?,
        _ => t.powf(1.0 / p)?,
    })
}

fn lp_pool(c: &OpCtx) -> Result<Vec<Value>> {
    let p = Pooling::new(c)?;
    require_float(p.x)?;
    let order = lp_order(c)?;
    let sum = p.window_sum(&abs_pow(p.x.tensor(), order)?)?;
    Ok(vec![p.x.with_tensor(root(&sum, order)?)?])
}

/// Reduction of a global pool.
#[derive(Clone, Copy)]
enum Global {
    Max,
    Avg,
    Lp(f64),
}

fn global(c: &OpCtx, kind: Global) -> Result<Vec<Value>> {
    let x = c.input(0)?;
    require_float(x)?;
    if x.rank() < 3 {
        bail!("expects a [N, C, d1..dn] input, got {:?}", x.shape());
    }
    let axes: Vec<usize> = (2..x.rank()).collect();
    let t = x.tensor();
    let y = match kind {
        Global::Max => axes.iter().try_fold(t.clone(), |a, &d| a.max_keepdim(d))?,
        Global::Avg => t.mean_keepdim(axes)?,
        Global::Lp(p) => root(&abs_pow(t, p)?.sum_keepdim(axes)?, p)?,
    };
    Ok(vec![x.with_tensor(y)?])
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use whittle_ir::attr::make;
    use whittle_ir::proto::NodeProto;

    use super::*;
    use crate::ops::conv::tests::{arange, flat, run_node};

    #[test]
    fn ceil_mode_adds_a_tail_window() {
        // ONNX maxpool_2d_ceil: 4x4 input, kernel 3, stride 2, ceil -> 2x2 output.
        let n = NodeProto {
            attribute: vec![
                make::ints("kernel_shape", &[3, 3]),
                make::ints("strides", &[2, 2]),
            ],
            ..Default::default()
        };
        let w = Window::from_node(&n, 2, None).unwrap();
        let r = w.resolve(&[4, 4], true).unwrap();
        assert_eq!(r.out, vec![2, 2]);
        assert_eq!(r.extra, vec![1, 1]);
        assert_eq!(w.resolve(&[4, 4], false).unwrap().out, vec![1, 1]);
    }

    #[test]
    fn max_pool_returns_row_or_column_major_indices() {
        let data = Tensor::new(&[1f32, 5.0, 2.0, 4.0, 3.0, 6.0], &Device::Cpu).unwrap();
        let x = Value::f32(data.reshape((1, 1, 2, 3)).unwrap()).unwrap();
        for (order, want) in [(0, [1, 5]), (1, [2, 5])] {
            let attrs = vec![
                make::ints("kernel_shape", &[2, 2]),
                make::int("storage_order", order),
            ];
            let y = run_node("MaxPool", attrs, vec![x.clone()], 2).unwrap();
            assert_eq!(flat(&y[0]), [5.0, 6.0]);
            assert_eq!(y[1].dtype(), DataType::Int64);
            assert_eq!(y[1].to_i64_vec().unwrap(), want);
        }
    }

    #[test]
    fn dilated_ceil_max_pool_and_uint8_inputs() {
        let attrs = vec![
            make::ints("kernel_shape", &[2]),
            make::ints("strides", &[2]),
            make::ints("dilations", &[2]),
            make::int("ceil_mode", 1),
        ];
        let y = run_node("MaxPool", attrs, vec![arange(&[1, 1, 6])], 1).unwrap();
        assert_eq!(flat(&y[0]), [2.0, 4.0, 4.0]);
        let bytes = Tensor::new(&[3u8, 9, 1, 7], &Device::Cpu).unwrap();
        let x = Value::new(bytes.reshape((1, 1, 4)).unwrap(), DataType::Uint8).unwrap();
        let attrs = vec![
            make::ints("kernel_shape", &[2]),
            make::ints("strides", &[2]),
        ];
        let y = run_node("MaxPool", attrs, vec![x], 1).unwrap();
        assert_eq!(y[0].dtype(), DataType::Uint8);
        assert_eq!(y[0].to_i64_vec().unwrap(), [9, 7]);
    }

    #[test]
    fn average_pool_counts_padding_only_when_asked() {
        for (include, want) in [(0, [0.0, 0.5, 1.5, 2.0]), (1, [0.0, 0.5, 1.5, 1.0])] {
            let attrs = vec![
                make::ints("kernel_shape", &[2]),
                make::ints("pads", &[1, 1]),
                make::int("count_include_pad", include),
            ];
            let y = run_node("AveragePool", attrs, vec![arange(&[1, 1, 3])], 1).unwrap();
            assert_eq!(flat(&y[0]), want);
        }
    }

    #[test]
    fn global_lp_pool_is_a_norm_over_space() {
        let t = Tensor::new(&[3f32, 4.0, 0.0, 0.0], &Device::Cpu).unwrap();
        let x = Value::f32(t.reshape((1, 1, 2, 2)).unwrap()).unwrap();
        let y = run_node("GlobalLpPool", vec![], vec![x], 1).unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 1, 1]);
        assert_eq!(flat(&y[0]), [5.0]);
    }
}
