//! Sliding-window operators: convolutions (float, integer, quantized, transposed) and
//! pooling (windowed and global).

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::{IrError, Result};
use crate::proto::NodeProto;

use super::Ctx;
use crate::shape::bad;
use crate::shape::dims::{add_to_dim, mul_dim};
use crate::shape::types::{known, Dim};
use crate::shape::values::{Info, Val};

/// Sliding-window attributes of a Conv or pool over `kernel.len()` spatial axes.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    pads: Vec<i64>,
    dilations: Vec<i64>,
    auto_pad: String,
    ceil_mode: bool,
}

impl Window {
    /// Reads the window attributes of `node` for the given kernel.
    fn read(node: &NodeProto, kernel: Vec<i64>) -> Result<Window> {
        let n = kernel.len();
        let get = |name: &str, len: usize, default: i64| -> Result<Vec<i64>> {
            let v = node.ints(name)?.unwrap_or_else(|| vec![default; len]);
            if v.len() != len {
                return bad(format!("'{name}' has {} entries, expected {len}", v.len()));
            }
            Ok(v)
        };
        let w = Window {
            strides: get("strides", n, 1)?,
            pads: get("pads", 2 * n, 0)?,
            dilations: get("dilations", n, 1)?,
            auto_pad: node.string_or("auto_pad", "NOTSET")?,
            ceil_mode: node.int_or("ceil_mode", 0)? != 0,
            kernel,
        };
        if w.kernel
            .iter()
            .chain(&w.strides)
            .chain(&w.dilations)
            .any(|&v| v < 1)
        {
            return bad("kernel sizes, strides and dilations must be positive");
        }
        Ok(w)
    }

    /// Kernel extent of axis `i` with dilation.
    fn extent(&self, i: usize) -> i128 {
        (self.kernel[i] as i128 - 1) * self.dilations[i] as i128 + 1
    }

    /// Explicit padding (begin + end) of axis `i`, `None` under SAME auto-padding.
    fn total_pad(&self, i: usize) -> Option<i128> {
        match self.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => None,
            "VALID" => Some(0),
            _ => Some(self.pads[i] as i128 + self.pads[i + self.kernel.len()] as i128),
        }
    }

    /// Output size of spatial axis `i` for an input of size `d`.
    fn out_dim(&self, i: usize, d: &Dim) -> Result<Dim> {
        let s = self.strides[i] as i128;
        let Some(pad) = self.total_pad(i) else {
            return Ok(match d {
                _ if s == 1 => d.clone(),
                Dim::Known(n) => Dim::Known(n.div_ceil(s as usize)),
                _ => Dim::Unknown,
            });
        };
        let ext = self.extent(i);
        let Dim::Known(n) = d else {
            let same = s == 1 && ext - 1 == pad;
            return Ok(if same { d.clone() } else { Dim::Unknown });
        };
        let padded = *n as i128 + pad;
        if padded < ext {
            return bad(format!(
                "kernel extent {ext} exceeds the padded input size {padded}"
            ));
        }
        let span = padded - ext;
        let mut out = if self.ceil_mode {
            (span + s - 1) / s + 1
        } else {
            span / s + 1
        };
        // The last window must start inside the input or its left padding.
        let begin = if self.auto_pad == "VALID" {
            0
        } else {
            self.pads[i] as i128
        };
        if self.ceil_mode && (out - 1) * s >= *n as i128 + begin {
            out -= 1;
        }
        Ok(Dim::Known(out as usize))
    }
}

/// Spatial kernel from attribute `kernel_shape` or the weight's known dims.
fn kernel_of(c: &Ctx, w: Option<&[Dim]>) -> Result<Option<Vec<i64>>> {
    if let Some(k) = c.node.ints("kernel_shape")? {
        return Ok(Some(k));
    }
    Ok(w.and_then(|w| known(w.get(2..)?))
        .map(|k| k.into_iter().map(|v| v as i64).collect()))
}

/// Output spatial dims of a windowed op over `x`'s spatial dims.
fn spatial(c: &Ctx, x: &[Dim], kernel: Option<Vec<i64>>) -> Result<Vec<Dim>> {
    let n = x.len() - 2;
    let Some(kernel) = kernel else {
        return Ok(vec![Dim::Unknown; n]);
    };
    if kernel.len() != n {
        return bad(format!(
            "kernel has {} axes, the input {n} spatial axes",
            kernel.len()
        ));
    }
    let w = Window::read(c.node, kernel)?;
    (0..n).map(|i| w.out_dim(i, &x[i + 2])).collect()
}

/// Input 0's dims, checked to be `[N, C, spatial...]`.
fn nchw<'a>(c: &Ctx<'a>) -> Result<Option<&'a [Dim]>> {
    match c.dims(0) {
        Some(x) if x.len() < 3 => bad(format!("input rank {} is below 3", x.len())),
        other => Ok(other),
    }
}

/// Conv, ConvInteger and QLinearConv (weights at input `wi`).
pub(super) fn conv(c: &Ctx, wi: usize, dtype: Option<DataType>) -> Result<Vec<Info>> {
    let Some(x) = nchw(c)? else {
        return Ok(vec![Info::new(dtype, None)]);
    };
    let w = c.dims(wi);
    let group = c.node.int_or("group", 1)?;
    if group < 1 {
        return bad(format!("group {group} is not positive"));
    }
    if let Some(w) = w {
        if w.len() != x.len() {
            return bad(format!(
                "weight rank {} differs from input rank {}",
                w.len(),
                x.len()
            ));
        }
        if let (Dim::Known(cx), Dim::Known(cw)) = (&x[1], &w[1]) {
            if *cx as i128 != *cw as i128 * group as i128 {
                return bad(format!(
                    "input has {cx} channels, weights expect {cw} x group {group}"
                ));
            }
        }
    }
    let m = w.map_or(Dim::Unknown, |w| w[0].clone());
    let mut dims = vec![x[0].clone(), m];
    dims.extend(spatial(c, x, kernel_of(c, w)?)?);
    Ok(vec![Info::new(dtype, Some(dims))])
}

/// `ConvTranspose`: `output_shape` when given, else the transposed window arithmetic.
pub(super) fn conv_transpose(c: &Ctx) -> Result<Vec<Info>> {
    let Some(x) = nchw(c)? else {
        return Ok(vec![c.like(0, None)]);
    };
    let n = x.len() - 2;
    let w = c.dims(1);
    let group = c.node.int_or("group", 1)?;
    let m = match w.map(|w| &w[1]) {
        Some(Dim::Known(k)) => mul_dim(*k, group)?,
        _ => Dim::Unknown,
    };
    let mut dims = vec![x[0].clone(), m];
    if let Some(shape) = c.node.ints("output_shape")? {
        let tail = shape.get(shape.len().saturating_sub(n)..).unwrap_or(&[]);
        dims.extend(tail.iter().map(|&v| Val::Int(v).to_dim()));
        return Ok(vec![c.like(0, Some(dims))]);
    }
    let Some(kernel) = kernel_of(c, w)? else {
        dims.extend(vec![Dim::Unknown; n]);
        return Ok(vec![c.like(0, Some(dims))]);
    };
    let win = Window::read(c.node, kernel)?;
    let out_pad = c.node.ints("output_padding")?.unwrap_or_else(|| vec![0; n]);
    for i in 0..n {
        let extra = *out_pad.get(i).unwrap_or(&0) as i128;
        dims.push(transposed_dim(&win, i, &x[i + 2], extra)?);
    }
    Ok(vec![c.like(0, Some(dims))])
}

/// Output size of ConvTranspose on spatial axis `i` for input size `d`.
fn transposed_dim(win: &Window, i: usize, d: &Dim, out_pad: i128) -> Result<Dim> {
    let Dim::Known(v) = d else {
        return Ok(Dim::Unknown);
    };
    let s = win.strides[i];
    match win.total_pad(i) {
        None => mul_dim(*v, s),
        Some(pad) => {
            let grown = s as i128 * (*v as i128 - 1) + out_pad;
            add_to_dim(&Dim::Known(0), grown + win.extent(i) - pad)
        }
    }
}

/// `MaxPool`, `AveragePool`, `LpPool`: windowed output and (MaxPool) int64 indices.
pub(super) fn pool(c: &Ctx) -> Result<Vec<Info>> {
    let kernel = c
        .node
        .ints("kernel_shape")?
        .ok_or_else(|| IrError::invalid("missing attribute 'kernel_shape'"))?;
    let dims = match nchw(c)? {
        Some(x) => {
            let mut d = x[..2].to_vec();
            d.extend(spatial(c, x, Some(kernel))?);
            Some(d)
        }
        None => None,
    };
    Ok(vec![
        c.like(0, dims.clone()),
        Info::new(Some(DataType::Int64), dims),
    ])
}

/// Global pools: every spatial axis becomes 1.
pub(super) fn global_pool(c: &Ctx) -> Result<Vec<Info>> {
    let dims = nchw(c)?.map(|x| {
        let mut d = x[..2].to_vec();
        d.resize(x.len(), Dim::Known(1));
        d
    });
    Ok(vec![c.like(0, dims)])
}

#[cfg(test)]
mod tests {
    use crate::attr::make;
    use crate::dtype::DataType::{Float, Uint8};
    use crate::shape::test_util::{error, expect, ints, node, types, value};

    #[test]
    fn convolutions_and_pools() {
        let x = || value("x", Float, "N,3,32,32");
        let t = types(
            17,
            vec![
                x(),
                value("w", Float, "8,3,3,3"),
                value("wg", Float, "6,1,3,3"),
                value("x1", Float, "1,1,3"),
                value("x4", Float, "1,1,4,4"),
                value("x56", Float, "1,1,5,6"),
                value("x78", Float, "1,1,7,8"),
            ],
            vec![],
            vec![
                node(
                    "Conv",
                    &["x", "w"],
                    &["c1"],
                    vec![
                        make::ints("pads", &[1, 1, 1, 1]),
                        make::ints("strides", &[2, 2]),
                    ],
                ),
                node(
                    "Conv",
                    &["x", "w"],
                    &["c2"],
                    vec![make::ints("dilations", &[2, 2])],
                ),
                node("Conv", &["x", "wg"], &["c3"], vec![make::int("group", 3)]),
                node(
                    "Conv",
                    &["x", "w"],
                    &["c4"],
                    vec![
                        make::string("auto_pad", "SAME_UPPER"),
                        make::ints("strides", &[3, 3]),
                    ],
                ),
                node(
                    "MaxPool",
                    &["x"],
                    &["p1", "idx"],
                    vec![
                        make::ints("kernel_shape", &[2, 2]),
                        make::ints("strides", &[2, 2]),
                    ],
                ),
                // ORT and the ONNX reference give 2 here (the last window would start in the
                // right padding); onnx.shape_inference 1.23 says 3.
                node(
                    "MaxPool",
                    &["x1"],
                    &["p2"],
                    vec![
                        make::ints("kernel_shape", &[2]),
                        make::ints("strides", &[2]),
                        make::ints("pads", &[1, 1]),
                        make::int("ceil_mode", 1),
                    ],
                ),
                node(
                    "MaxPool",
                    &["x4"],
                    &["p3"],
                    vec![
                        make::ints("kernel_shape", &[3, 3]),
                        make::ints("strides", &[2, 2]),
                        make::int("ceil_mode", 1),
                    ],
                ),
                node(
                    "AveragePool",
                    &["x56"],
                    &["p4"],
                    vec![
                        make::ints("kernel_shape", &[3, 3]),
                        make::ints("strides", &[2, 2]),
                        make::string("auto_pad", "SAME_UPPER"),
                    ],
                ),
                node(
                    "MaxPool",
                    &["x78"],
                    &["p5"],
                    vec![
                        make::ints("kernel_shape", &[3, 3]),
                        make::ints("dilations", &[2, 2]),
                    ],
                ),
                node("GlobalAveragePool", &["x"], &["gap"], vec![]),
            ],
        );
        expect(
            &t,
            &[
                ("c1", "float[N,8,16,16]"),
                ("c2", "float[N,8,28,28]"),
                ("c3", "float[N,6,30,30]"),
                ("c4", "float[N,8,11,11]"),
                ("p1", "float[N,3,16,16]"),
                ("idx", "int64[N,3,16,16]"),
                ("p2", "float[1,1,2]"),
                ("p3", "float[1,1,2,2]"),
                ("p4", "float[1,1,3,3]"),
                ("p5", "float[1,1,3,4]"),
                ("gap", "float[N,3,1,1]"),
            ],
        );
        let err = error(
            17,
            vec![x(), value("w", Float, "8,4,3,3")],
            vec![],
            node("Conv", &["x", "w"], &["y"], vec![]),
        );
        assert!(err.contains("n_y") && err.contains("3 channels"), "{err}");
    }

    #[test]
    fn conv_transpose_follows_the_spec_examples() {
        let t = types(
            17,
            vec![value("x", Float, "1,1,3,3"), value("w", Float, "1,2,3,3")],
            vec![],
            vec![
                node("ConvTranspose", &["x", "w"], &["y1"], vec![]),
                node(
                    "ConvTranspose",
                    &["x", "w"],
                    &["y2"],
                    vec![
                        make::ints("strides", &[3, 2]),
                        make::ints("output_padding", &[1, 1]),
                    ],
                ),
                node(
                    "ConvTranspose",
                    &["x", "w"],
                    &["y3"],
                    vec![
                        make::ints("strides", &[3, 2]),
                        make::ints("output_shape", &[10, 8]),
                    ],
                ),
                node(
                    "ConvTranspose",
                    &["x", "w"],
                    &["y4"],
                    vec![
                        make::ints("strides", &[2, 2]),
                        make::string("auto_pad", "SAME_UPPER"),
                    ],
                ),
            ],
        );
        expect(
            &t,
            &[
                ("y1", "float[1,2,5,5]"),
                ("y2", "float[1,2,10,8]"),
                ("y3", "float[1,2,10,8]"),
                ("y4", "float[1,2,6,6]"),
            ],
        );
    }

    #[test]
    fn integer_convolutions() {
        let t = types(
            13,
            vec![
                value("x", Uint8, "1,3,8,8"),
                value("w", Uint8, "4,3,3,3"),
                value("s", Float, ""),
                value("zp", Uint8, ""),
            ],
            vec![],
            vec![
                node("ConvInteger", &["x", "w"], &["ci"], vec![]),
                node(
                    "QLinearConv",
                    &["x", "s", "zp", "w", "s", "zp", "s", "zp"],
                    &["qc"],
                    vec![make::ints("pads", &[1, 1, 1, 1])],
                ),
            ],
        );
        expect(&t, &[("ci", "int32[1,4,6,6]"), ("qc", "uint8[1,4,8,8]")]);
    }

    #[test]
    fn absurd_attributes_are_errors_not_panics() {
        let x = || vec![value("x", Float, "1,2,8,8"), value("w", Float, "2,2,3,3")];
        let huge = i64::MAX;
        let cases = [
            node(
                "MaxPool",
                &["x"],
                &["y"],
                vec![make::ints("kernel_shape", &[huge, 1])],
            ),
            node(
                "MaxPool",
                &["x"],
                &["y"],
                vec![
                    make::ints("kernel_shape", &[3, 3]),
                    make::ints("pads", &[-huge, 0, -huge, 0]),
                ],
            ),
            node(
                "ConvTranspose",
                &["x", "w"],
                &["y"],
                vec![make::ints("strides", &[huge, huge])],
            ),
            node(
                "ConvTranspose",
                &["x", "w"],
                &["y"],
                vec![make::int("group", -3)],
            ),
            node("Tile", &["x", "reps"], &["y"], vec![]),
        ];
        for n in cases {
            let err = error(13, x(), vec![ints("reps", &[1, 1, huge, 2])], n);
            assert!(err.contains("n_y"), "{err}");
        }
        // Huge but representable padding is simply a big output.
        let t = types(
            13,
            x(),
            vec![],
            vec![node(
                "MaxPool",
                &["x"],
                &["y"],
                vec![
                    make::ints("kernel_shape", &[1, 1]),
                    make::ints("pads", &[0, 0, huge, 0]),
                ],
            )],
        );
        expect(&t, &[("y", &format!("float[1,2,{},8]", 8 + huge as u64))]);
    }
}
