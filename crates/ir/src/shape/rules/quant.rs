//! Quantization: `QuantizeLinear` and `DynamicQuantizeLinear`. `DequantizeLinear` is a
//! one-line entry of the dispatch table; the integer and quantized convolutions and
//! matrix products live beside their float rules.

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::Result;

use super::Ctx;
use crate::shape::values::Info;

/// `QuantizeLinear`: the zero point's type, else `output_dtype`, else uint8.
pub(super) fn quantize(c: &Ctx) -> Result<Vec<Info>> {
    let attr = c.node.int_or("output_dtype", 0)?;
    let dtype = match c.input(2) {
        Some(zp) => zp.ty.dtype,
        None if attr != 0 => DataType::from_code(attr as i32),
        None => Some(DataType::Uint8),
    };
    Ok(vec![c.shaped_like(0, dtype)])
}

/// `DynamicQuantizeLinear`: uint8 data of input 0's shape, a float scale and a uint8
/// zero point.
pub(super) fn dynamic_quantize(c: &Ctx) -> Vec<Info> {
    vec![
        c.shaped_like(0, Some(DataType::Uint8)),
        Info::new(Some(DataType::Float), Some(vec![])),
        Info::new(Some(DataType::Uint8), Some(vec![])),
    ]
}

#[cfg(test)]
mod tests {
    use crate::dtype::DataType::{Float, Int8};
    use crate::shape::test_util::{expect, node, scalar, types, value};

    #[test]
    fn quantization() {
        let t = types(
            18,
            vec![value("x", Float, "1,3,20,10"), value("q", Int8, "4,5")],
            vec![scalar("s", 0.5f32), scalar("zp8", 0i8)],
            vec![
                node("QuantizeLinear", &["x", "s", "zp8"], &["qi8"], vec![]),
                node("QuantizeLinear", &["x", "s"], &["qu8"], vec![]),
                node("DequantizeLinear", &["q", "s", "zp8"], &["dq"], vec![]),
                node(
                    "DynamicQuantizeLinear",
                    &["x"],
                    &["dy", "dys", "dyz"],
                    vec![],
                ),
            ],
        );
        expect(
            &t,
            &[
                ("qi8", "int8[1,3,20,10]"),
                ("qu8", "uint8[1,3,20,10]"),
                ("dq", "float[4,5]"),
                ("dy", "uint8[1,3,20,10]"),
                ("dys", "float[]"),
                ("dyz", "uint8[]"),
            ],
        );
    }
}
