//! Per-operator inference rules: the node context they read ([`Ctx`]) and the one
//! dispatch table ([`rule`]) from operator type to rule. The rules themselves live in
//! one file per operator family.

use std::collections::HashMap;

use crate::attr::NodeAttrs;
use crate::dtype::DataType;
use crate::error::Result;
use crate::proto::NodeProto;

use super::types::Dim;
use super::values::{Info, Val, UNKNOWN_INFO};

mod conv_pool;
mod elementwise;
mod generate;
mod index;
mod nn;
mod quant;
mod reduce;
mod resize;
mod shape_ops;

use conv_pool::{conv, conv_transpose, global_pool, pool};
use elementwise::{broadcast_op, cast, cast_to, unary, BROADCAST, COMPARE, UNARY};
use generate::{constant, constant_of_shape, range, shape, size};
use index::{gather, gather_block_quantized, non_zero, slice};
use nn::{batch_norm, dropout, gemm, layer_norm, matmul, matmul_nbits};
use quant::{dynamic_quantize, quantize};
use reduce::{arg_reduce, reduce, top_k, REDUCE};
use resize::{pad, resize};
use shape_ops::{concat, expand, flatten, reshape, split, squeeze, tile, transpose, unsqueeze};

/// An integer list given by an attribute (old opsets) or an input (newer ones).
enum Param {
    Absent,
    Unknown,
    Ints(Vec<i64>),
}

/// A node being inferred, with what is known about its inputs.
struct Ctx<'a> {
    node: &'a NodeProto,
    opset: i64,
    inputs: Vec<Option<&'a Info>>,
}

impl<'a> Ctx<'a> {
    fn op(&self) -> &str {
        &self.node.op_type
    }

    fn input(&self, i: usize) -> Option<&'a Info> {
        self.inputs.get(i).copied().flatten()
    }

    fn info(&self, i: usize) -> &'a Info {
        self.input(i).unwrap_or(&UNKNOWN_INFO)
    }

    fn dims(&self, i: usize) -> Option<&'a [Dim]> {
        self.info(i).dims()
    }

    fn dtype(&self, i: usize) -> Option<DataType> {
        self.info(i).ty.dtype
    }

    /// Integer list from attribute `attr` before opset `since`, from input `input` after.
    fn param(&self, attr: &str, input: usize, since: i64) -> Result<Param> {
        if self.opset < since {
            return Ok(self.node.ints(attr)?.map_or(Param::Absent, Param::Ints));
        }
        Ok(match self.input(input) {
            None => Param::Absent,
            Some(info) => info.ints().map_or(Param::Unknown, Param::Ints),
        })
    }

    /// Output with input `i`'s element type and the given dims.
    fn like(&self, i: usize, dims: Option<Vec<Dim>>) -> Info {
        Info::new(self.dtype(i), dims)
    }

    /// Output with element type `dtype` and input `i`'s dims.
    fn shaped_like(&self, i: usize, dtype: Option<DataType>) -> Info {
        Info::new(dtype, self.dims(i).map(<[_]>::to_vec))
    }

    /// A shape given as input `i`: its tracked values, or unknowns when only its length
    /// is known (and at most `MAX_TRACKED`: a declared length is only a claim).
    fn shape_input(&self, i: usize) -> Option<Vec<Val>> {
        let info = self.info(i);
        info.data.clone().or_else(|| match info.dims() {
            Some([Dim::Known(n)]) if *n <= super::MAX_TRACKED => Some(vec![Val::Unk; *n]),
            _ => None,
        })
    }
}

/// Outputs of one node (fewer than its outputs when the rest are unknown).
pub(super) fn infer_node(
    node: &NodeProto,
    opset: i64,
    infos: &HashMap<String, Info>,
) -> Result<Vec<Info>> {
    let inputs = node
        .input
        .iter()
        .map(|n| (!n.is_empty()).then(|| infos.get(n).unwrap_or(&UNKNOWN_INFO)))
        .collect();
    let c = Ctx {
        node,
        opset,
        inputs,
    };
    match node.domain.as_str() {
        "" | "ai.onnx" => rule(&c),
        "com.microsoft" if c.op() == "MatMulNBits" => matmul_nbits(&c),
        "com.microsoft" if c.op() == "GatherBlockQuantized" => gather_block_quantized(&c),
        _ => Ok(vec![]),
    }
}

/// The dispatch table: the outputs of the node in `c` by its operator type.
fn rule(c: &Ctx) -> Result<Vec<Info>> {
    use DataType::*;
    match c.op() {
        "Identity" => Ok(vec![c.info(0).clone()]),
        op if UNARY.contains(&op) => Ok(vec![unary(c)]),
        "IsNaN" | "IsInf" => Ok(vec![c.shaped_like(0, Some(Bool))]),
        op if BROADCAST.contains(&op) => broadcast_op(c, c.dtype(0)),
        op if COMPARE.contains(&op) => broadcast_op(c, Some(Bool)),
        "Where" => broadcast_op(c, c.dtype(1)),
        "Cast" => cast(c),
        "CastLike" => cast_to(c, c.dtype(1)),
        "Conv" => conv(c, 1, c.dtype(0)),
        "ConvInteger" => conv(c, 1, Some(Int32)),
        "QLinearConv" => conv(c, 3, c.dtype(7)),
        "ConvTranspose" => conv_transpose(c),
        "MaxPool" | "AveragePool" | "LpPool" => pool(c),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool(c),
        "BatchNormalization" => batch_norm(c),
        "LayerNormalization" => layer_norm(c),
        "Gemm" => gemm(c),
        "MatMul" => matmul(c, 1, c.dtype(0)),
        "MatMulInteger" => matmul(c, 1, Some(Int32)),
        "QLinearMatMul" => matmul(c, 3, c.dtype(7)),
        "Flatten" => flatten(c),
        "Reshape" => reshape(c),
        "Transpose" => transpose(c),
        "Squeeze" => squeeze(c),
        "Unsqueeze" => unsqueeze(c),
        "Concat" => concat(c),
        "Split" => split(c),
        "Slice" => slice(c),
        "Gather" => gather(c),
        "GatherElements" => Ok(vec![c.shaped_like(1, c.dtype(0))]),
        "Expand" => expand(c),
        "Tile" => tile(c),
        "Shape" => shape(c),
        "Size" => size(c),
        "ConstantOfShape" => constant_of_shape(c),
        "Constant" => constant(c),
        "Range" => range(c),
        op if REDUCE.contains(&op) => reduce(c),
        "ArgMax" | "ArgMin" => arg_reduce(c),
        "Dropout" => dropout(c),
        "Resize" | "Upsample" => resize(c),
        "Pad" => pad(c),
        "QuantizeLinear" => quantize(c),
        "DequantizeLinear" => Ok(vec![c.shaped_like(0, c.dtype(1))]),
        "DynamicQuantizeLinear" => Ok(dynamic_quantize(c)),
        "TopK" => top_k(c),
        "NonZero" => Ok(vec![non_zero(c)]),
        _ => Ok(vec![]),
    }
}
