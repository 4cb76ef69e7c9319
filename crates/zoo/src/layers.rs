//! The layers zoo models are made of, as [`GraphBuilder`] methods. Each checks its input's
//! per-sample shape, creates its initialised parameters and returns its output [`Var`].

use whittle_ir::attr::make;
use whittle_ir::TensorData;

use crate::builder::{GraphBuilder, Var};
use crate::error::{build_bail, Result};

/// BatchNormalization's usual epsilon (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
/// LayerNormalization's usual epsilon (PyTorch's default).
pub const LN_EPS: f32 = 1e-5;

/// A 2-D convolution: square kernel, equal stride and padding on both axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Output channels.
    pub out: usize,
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride on both axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Channel groups (the input channels for a depthwise convolution).
    pub groups: usize,
    /// Whether the convolution has a bias (not when a BatchNormalization follows).
    pub bias: bool,
}

impl Conv {
    /// `kernel`×`kernel`, stride 1, "same" padding (`kernel / 2`), one group, no bias.
    pub fn new(out: usize, kernel: usize) -> Self {
        Conv {
            out,
            kernel,
            stride: 1,
            pad: kernel / 2,
            groups: 1,
            bias: false,
        }
    }
    /// With stride `stride`.
    pub fn stride(self, stride: usize) -> Self {
        Conv { stride, ..self }
    }
    /// With padding `pad`.
    pub fn pad(self, pad: usize) -> Self {
        Conv { pad, ..self }
    }
    /// Depthwise: one group per channel (`out` channels in and out).
    pub fn depthwise(self) -> Self {
        Conv {
            groups: self.out,
            ..self
        }
    }
    /// With a bias.
    pub fn bias(self) -> Self {
        Conv { bias: true, ..self }
    }
}

/// An activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `max(x, 0)`.
    Relu,
    /// `x · relu6(x + 3) / 6`.
    HardSwish,
}

/// Size of a sliding window's output along one axis, if the window fits.
fn window_out(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    (size + 2 * pad).checked_sub(kernel).map(|d| d / stride + 1)
}

/// The spatial output of a window over `x` ([C, H, W]), or an error naming `what`.
fn spatial(x: &Var, what: &str, kernel: usize, stride: usize, pad: usize) -> Result<[usize; 2]> {
    let [_, h, w] = x.shape[..] else {
        build_bail!(
            "{what} needs a [C,H,W] input, got {:?} ('{}')",
            x.shape,
            x.name
        );
    };
    match (window_out(h, kernel, stride, pad), window_out(w, kernel, stride, pad)) {
        (Some(oh), Some(ow)) => Ok([oh, ow]),
        _ => build_bail!(
            "{what}: a {kernel}x{kernel} window does not fit the {h}x{w} input '{}'; use a larger input",
            x.name
        ),
    }
}

/// NumPy broadcasting of two per-sample shapes.
fn broadcast(a: &Var, b: &Var) -> Result<Vec<usize>> {
    let rank = a.shape.len().max(b.shape.len());
    let dim = |v: &Var, i: usize| {
        (i + v.shape.len())
            .checked_sub(rank)
            .map_or(1, |j| v.shape[j])
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => build_bail!(
                "shapes {:?} ('{}') and {:?} ('{}') do not broadcast",
                a.shape,
                a.name,
                b.shape,
                b.name
            ),
        })
        .collect()
}

impl GraphBuilder {
    /// A convolution of `x` ([C, H, W]) with initialised weights.
    pub fn conv(&mut self, x: &Var, c: Conv) -> Result<Var> {
        let [oh, ow] = spatial(x, "Conv", c.kernel, c.stride, c.pad)?;
        let cin = x.shape[0];
        if c.groups == 0 || !cin.is_multiple_of(c.groups) || !c.out.is_multiple_of(c.groups) {
            build_bail!(
                "Conv: {} groups do not divide {cin} input and {} output channels",
                c.groups,
                c.out
            );
        }
        let name = self.reserve("conv");
        let fan_in = cin / c.groups * c.kernel * c.kernel;
        let dims = [c.out, cin / c.groups, c.kernel, c.kernel];
        let values = self.weights(&dims)?.fan_in(dims.iter().product(), fan_in);
        let mut inputs = vec![x.name.clone(), self.param(&name, "weight", &dims, &values)?];
        if c.bias {
            let values = self.weights(&[c.out])?.fan_in(c.out, fan_in);
            inputs.push(self.param(&name, "bias", &[c.out], &values)?);
        }
        let (k, s, p) = (c.kernel as i64, c.stride as i64, c.pad as i64);
        let attrs = vec![
            make::int("group", c.groups as i64),
            make::ints("kernel_shape", &[k, k]),
            make::ints("pads", &[p, p, p, p]),
            make::ints("strides", &[s, s]),
        ];
        Ok(self.emit(name, "Conv", inputs, attrs, vec![c.out, oh, ow]))
    }

    /// BatchNormalization over axis 1: scale 1, bias 0, running mean 0, variance 1.
    pub fn batch_norm(&mut self, x: &Var, eps: f32) -> Result<Var> {
        let name = self.reserve("bn");
        let c = *x.shape.first().unwrap_or(&0);
        let mut inputs = vec![x.name.clone()];
        for (suffix, value) in [("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0)] {
            inputs.push(self.param(&name, suffix, &[c], &vec![value; c])?);
        }
        let attrs = vec![make::float("epsilon", eps)];
        Ok(self.emit(name, "BatchNormalization", inputs, attrs, x.shape.clone()))
    }

    /// Applies an activation.
    pub fn act(&mut self, x: &Var, act: Act) -> Var {
        match act {
            Act::Relu => self.unary(x, "Relu", "relu"),
            Act::HardSwish => self.unary(x, "HardSwish", "hswish"),
        }
    }

    /// Convolution (no bias), BatchNormalization and an optional activation.
    pub fn conv_bn(&mut self, x: &Var, c: Conv, eps: f32, act: Option<Act>) -> Result<Var> {
        let y = self.conv(x, c)?;
        let y = self.batch_norm(&y, eps)?;
        Ok(match act {
            Some(a) => self.act(&y, a),
            None => y,
        })
    }

    /// A fully connected layer on the last axis: `Gemm` for [features] inputs (weight
    /// [out, in]), `MatMul` + `Add` for higher ranks (weight [in, out]).
    pub fn linear(&mut self, x: &Var, out: usize) -> Result<Var> {
        let Some(&fan_in) = x.shape.last() else {
            build_bail!("a linear layer needs features, '{}' is a scalar", x.name);
        };
        let name = self.reserve("fc");
        let weight = self.weights(&[out, fan_in])?.fan_in(out * fan_in, fan_in);
        let bias = self.weights(&[out])?.fan_in(out, fan_in);
        let mut shape = x.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        if x.shape.len() == 1 {
            let w = self.param(&name, "weight", &[out, fan_in], &weight)?;
            let b = self.param(&name, "bias", &[out], &bias)?;
            let attrs = vec![make::int("transB", 1)];
            return Ok(self.emit(name, "Gemm", vec![x.name.clone(), w, b], attrs, shape));
        }
        let w = self.param(&name, "weight", &[fan_in, out], &weight)?;
        let b = self.param(&name, "bias", &[out], &bias)?;
        let y = self.emit(
            name,
            "MatMul",
            vec![x.name.clone(), w],
            vec![],
            shape.clone(),
        );
        Ok(self.node("Add", "bias", vec![y.name, b], vec![], shape))
    }

    /// A one-input node that keeps the shape.
    pub fn unary(&mut self, x: &Var, op: &str, kind: &str) -> Var {
        self.node(op, kind, vec![x.name.clone()], vec![], x.shape.clone())
    }

    /// `HardSigmoid` as PyTorch's `relu6(x + 3) / 6`.
    pub fn hard_sigmoid(&mut self, x: &Var) -> Var {
        let attrs = vec![make::float("alpha", 1.0 / 6.0), make::float("beta", 0.5)];
        self.node(
            "HardSigmoid",
            "hsigmoid",
            vec![x.name.clone()],
            attrs,
            x.shape.clone(),
        )
    }

    /// Exact GELU, `x · (1 + erf(x / √2)) / 2`, from opset-17 operators.
    pub fn gelu(&mut self, x: &Var) -> Var {
        let y = self.scale(x, std::f32::consts::FRAC_1_SQRT_2);
        let y = self.unary(&y, "Erf", "erf");
        let y = self.shift(&y, 1.0);
        let y = self.mul_same(x, &y);
        self.scale(&y, 0.5)
    }

    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: &Var) -> Var {
        let attrs = vec![make::int("axis", -1)];
        self.node(
            "Softmax",
            "softmax",
            vec![x.name.clone()],
            attrs,
            x.shape.clone(),
        )
    }

    /// `x · s` for a scalar `s`.
    pub fn scale(&mut self, x: &Var, s: f32) -> Var {
        let c = self.scalar(s);
        self.node(
            "Mul",
            "scale",
            vec![x.name.clone(), c],
            vec![],
            x.shape.clone(),
        )
    }

    /// `x + s` for a scalar `s`.
    pub fn shift(&mut self, x: &Var, s: f32) -> Var {
        let c = self.scalar(s);
        self.node(
            "Add",
            "shift",
            vec![x.name.clone(), c],
            vec![],
            x.shape.clone(),
        )
    }

    fn mul_same(&mut self, a: &Var, b: &Var) -> Var {
        self.node(
            "Mul",
            "mul",
            vec![a.name.clone(), b.name.clone()],
            vec![],
            a.shape.clone(),
        )
    }

    /// Elementwise `a + b` with broadcasting.
    pub fn add(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let shape = broadcast(a, b)?;
        Ok(self.node(
            "Add",
            "add",
            vec![a.name.clone(), b.name.clone()],
            vec![],
            shape,
        ))
    }

    /// Elementwise `a · b` with broadcasting.
    pub fn mul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let shape = broadcast(a, b)?;
        Ok(self.node(
            "Mul",
            "mul",
            vec![a.name.clone(), b.name.clone()],
            vec![],
            shape,
        ))
    }

    /// Max pooling with a square `kernel` and `stride`, no padding.
    pub fn max_pool(&mut self, x: &Var, kernel: usize, stride: usize) -> Result<Var> {
        let [oh, ow] = spatial(x, "MaxPool", kernel, stride, 0)?;
        let (k, s) = (kernel as i64, stride as i64);
        let attrs = vec![
            make::ints("kernel_shape", &[k, k]),
            make::ints("strides", &[s, s]),
        ];
        let shape = vec![x.shape[0], oh, ow];
        Ok(self.node("MaxPool", "maxpool", vec![x.name.clone()], attrs, shape))
    }

    /// Global average pooling of [C, H, W] to [C, 1, 1].
    pub fn global_avg_pool(&mut self, x: &Var) -> Result<Var> {
        spatial(x, "GlobalAveragePool", 1, 1, 0)?;
        let shape = vec![x.shape[0], 1, 1];
        Ok(self.node(
            "GlobalAveragePool",
            "gap",
            vec![x.name.clone()],
            vec![],
            shape,
        ))
    }

    /// Flattens each sample to one axis.
    pub fn flatten(&mut self, x: &Var) -> Var {
        let attrs = vec![make::int("axis", 1)];
        let shape = vec![x.shape.iter().product()];
        self.node("Flatten", "flatten", vec![x.name.clone()], attrs, shape)
    }

    /// Reshapes each sample to `shape` (same element count).
    pub fn reshape(&mut self, x: &Var, shape: &[usize]) -> Result<Var> {
        if shape.iter().product::<usize>() != x.shape.iter().product::<usize>() {
            build_bail!("cannot reshape '{}' {:?} to {shape:?}", x.name, x.shape);
        }
        // 0 keeps the batch dimension.
        let target: Vec<i64> = std::iter::once(0)
            .chain(shape.iter().map(|&d| d as i64))
            .collect();
        let c = self.constant(TensorData::from_slice(vec![target.len()], &target)?);
        Ok(self.node(
            "Reshape",
            "reshape",
            vec![x.name.clone(), c],
            vec![],
            shape.to_vec(),
        ))
    }

    /// Permutes each sample's axes (`perm` over the per-sample axes).
    pub fn transpose(&mut self, x: &Var, perm: &[usize]) -> Result<Var> {
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..x.shape.len()).collect::<Vec<_>>() {
            build_bail!("{perm:?} is not a permutation of the axes of '{}'", x.name);
        }
        let full: Vec<i64> = std::iter::once(0)
            .chain(perm.iter().map(|&p| p as i64 + 1))
            .collect();
        let shape = perm.iter().map(|&p| x.shape[p]).collect();
        let attrs = vec![make::ints("perm", &full)];
        Ok(self.node("Transpose", "transpose", vec![x.name.clone()], attrs, shape))
    }

    /// Batched matrix product of [..., M, K] and [..., K, N] (same leading axes).
    pub fn matmul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        if ra < 2
            || ra != rb
            || a.shape[..ra - 2] != b.shape[..rb - 2]
            || a.shape[ra - 1] != b.shape[rb - 2]
        {
            build_bail!(
                "MatMul: shapes {:?} ('{}') and {:?} ('{}') do not multiply",
                a.shape,
                a.name,
                b.shape,
                b.name
            );
        }
        let mut shape = a.shape.clone();
        shape[ra - 1] = b.shape[rb - 1];
        Ok(self.node(
            "MatMul",
            "matmul",
            vec![a.name.clone(), b.name.clone()],
            vec![],
            shape,
        ))
    }

    /// Mean over per-sample axis `axis`, which is dropped.
    pub fn mean_over(&mut self, x: &Var, axis: usize) -> Result<Var> {
        if axis >= x.shape.len() {
            build_bail!("'{}' {:?} has no axis {axis}", x.name, x.shape);
        }
        let attrs = vec![
            make::ints("axes", &[axis as i64 + 1]),
            make::int("keepdims", 0),
        ];
        let mut shape = x.shape.clone();
        shape.remove(axis);
        Ok(self.node("ReduceMean", "mean", vec![x.name.clone()], attrs, shape))
    }

    /// LayerNormalization over the last axis: scale 1, bias 0.
    pub fn layer_norm(&mut self, x: &Var, eps: f32) -> Result<Var> {
        let name = self.reserve("ln");
        let d = *x.shape.last().unwrap_or(&1);
        let scale = self.param(&name, "scale", &[d], &vec![1.0; d])?;
        let bias = self.param(&name, "bias", &[d], &vec![0.0; d])?;
        let attrs = vec![make::int("axis", -1), make::float("epsilon", eps)];
        let inputs = vec![x.name.clone(), scale, bias];
        Ok(self.emit(name, "LayerNormalization", inputs, attrs, x.shape.clone()))
    }

    /// Dropout with `ratio` (active only in training mode); no node when `ratio` is 0.
    pub fn dropout(&mut self, x: &Var, ratio: f32) -> Var {
        if ratio == 0.0 {
            return x.clone();
        }
        let r = self.scalar(ratio);
        self.node(
            "Dropout",
            "dropout",
            vec![x.name.clone(), r],
            vec![],
            x.shape.clone(),
        )
    }

    /// A trainable tensor of `shape`, usable as a [`Var`] that broadcasts against samples.
    pub fn embedding(&mut self, kind: &str, shape: &[usize], std: f32) -> Result<Var> {
        let values = self
            .weights(shape)?
            .truncated_normal(shape.iter().product(), std);
        let owner = self.reserve(kind);
        let name = self.param(&owner, "weight", shape, &values)?;
        Ok(Var {
            name,
            shape: shape.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(shape: &[usize]) -> Var {
        Var {
            name: "x".into(),
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn windows_and_broadcasts_have_the_expected_shapes() {
        assert_eq!(window_out(28, 5, 1, 2), Some(28));
        assert_eq!(window_out(14, 5, 1, 0), Some(10));
        assert_eq!(window_out(7, 2, 2, 0), Some(3));
        assert_eq!(window_out(3, 5, 1, 0), None);
        assert_eq!(
            broadcast(&var(&[8, 4, 4]), &var(&[8, 1, 1])).unwrap(),
            [8, 4, 4]
        );
        assert_eq!(broadcast(&var(&[49, 64]), &var(&[64])).unwrap(), [49, 64]);
        let e = broadcast(&var(&[8, 4]), &var(&[3, 4]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[8, 4]") && e.contains("[3, 4]"), "{e}");
    }
}
