//! The vector-Jacobian rules, one family per file, and the table mapping an operator to its
//! rule and to the forward values the rule reads.

mod elementwise;
mod linalg;
mod moves;
mod norm;
mod pool;
mod quant;
mod shape;
pub(super) mod window;

pub(super) use elementwise::zip_apply;

use std::collections::HashMap;

use whittle_ir::proto::NodeProto;

use super::buffers::Buffers;
use super::Recording;
use crate::bail;
use crate::error::Result;
use crate::executor::Executor;
use crate::ops::fake_quant::DOMAIN as WHITTLE_DOMAIN;
use crate::ops::{OpCtx, Registry};
use crate::value::Value;

/// A rule: the gradient of each input (`None` where not wanted or not differentiable) from
/// the gradients of the node's outputs.
pub(crate) type Rule = fn(&mut RuleCtx) -> Result<Vec<Option<Vec<f32>>>>;

/// A rule and the forward values it reads (input and output slots of the node).
pub(crate) struct RuleDef {
    pub rule: Rule,
    pub inputs: &'static [usize],
    pub outputs: &'static [usize],
}

/// Everything a rule sees.
pub(crate) struct RuleCtx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
    /// The seed the node's random draws had in the forward.
    pub seed: u64,
    pub exec: &'a Executor,
    pub rec: &'a Recording,
    /// Gradient of each output (`None`: the loss does not reach it).
    pub dys: Vec<Option<Vec<f32>>>,
    /// Whether each input needs a gradient.
    pub wants: Vec<bool>,
    /// Where gradient buffers come from (and go back to after the step).
    pub buffers: &'a Buffers,
}

impl RuleCtx<'_> {
    /// Whether input `i` needs a gradient.
    pub fn wants(&self, i: usize) -> bool {
        self.wants.get(i).copied().unwrap_or(false)
    }

    /// The gradient of output 0 (zeros where the loss reaches only other outputs).
    pub fn dy(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match self.dys.first() {
            Some(Some(g)) => Ok(std::borrow::Cow::Borrowed(g)),
            _ => Ok(std::borrow::Cow::Owned(vec![
                0.0;
                self.out_shape(0)?
                    .iter()
                    .product()
            ])),
        }
    }

    /// The gradient of output 0, taken out of the context (zeros as in [`RuleCtx::dy`]).
    pub fn take_dy(&mut self) -> Result<Vec<f32>> {
        match self.dys.first_mut().and_then(Option::take) {
            Some(g) => Ok(g),
            None => Ok(self.zeros(self.out_shape(0)?.iter().product())),
        }
    }

    /// A gradient buffer of `len` floats with unspecified contents (recycled between passes),
    /// for a kernel that writes every element.
    pub fn for_overwrite(&self, len: usize) -> Vec<f32> {
        self.buffers.for_overwrite(len)
    }

    /// Returns a buffer from [`RuleCtx::for_overwrite`] or [`RuleCtx::zeros`] that the rule
    /// no longer needs.
    pub fn give(&self, v: Vec<f32>) {
        self.buffers.give(v)
    }

    /// A gradient buffer of `len` zeros (recycled between passes).
    pub fn zeros(&self, len: usize) -> Vec<f32> {
        self.buffers.zeros(len)
    }

    /// The shape of input `i`.
    pub fn in_shape(&self, i: usize) -> Result<&[usize]> {
        match self.node.input.get(i) {
            Some(name) if !name.is_empty() => self.rec.shape(name),
            _ => bail!("input #{i} is missing"),
        }
    }

    /// The shape of output `i`.
    pub fn out_shape(&self, i: usize) -> Result<&[usize]> {
        match self.node.output.get(i) {
            Some(name) if !name.is_empty() => self.rec.shape(name),
            _ => bail!("output #{i} is missing"),
        }
    }

    /// The forward value of input `i`, `None` if the node omits it.
    pub fn opt_input(&self, i: usize) -> Result<Option<Value>> {
        match self.node.input.get(i) {
            Some(name) if !name.is_empty() => Ok(Some(self.rec.value(self.exec, name)?)),
            _ => Ok(None),
        }
    }

    /// The forward value of input `i`.
    pub fn input(&self, i: usize) -> Result<Value> {
        match self.opt_input(i)? {
            Some(v) => Ok(v),
            None => bail!("input #{i} is missing"),
        }
    }

    /// The forward value of output `i`.
    pub fn output(&self, i: usize) -> Result<Value> {
        match self.node.output.get(i) {
            Some(name) if !name.is_empty() => self.rec.value(self.exec, name),
            _ => bail!("output #{i} is missing"),
        }
    }

    /// The node's own operator run again (training mode, the forward's seed) with input 0
    /// replaced by `first` and every other input as in the forward.
    pub fn rerun(&self, first: Value) -> Result<Vec<Value>> {
        let node = self.node;
        let Some(op) = Registry::standard().get(&node.domain, &node.op_type) else {
            bail!("{} is not registered", node.op_type);
        };
        let mut inputs = vec![Some(first)];
        for i in 1..node.input.len() {
            inputs.push(self.opt_input(i)?);
        }
        let scope = HashMap::new();
        op(&OpCtx {
            node,
            opset: self.opset,
            training: true,
            seed: Some(self.seed),
            inputs,
            exec: self.exec,
            scope: &scope,
        })
    }
}

/// A kernel's refusal as an executor error (the backward names the node).
pub(super) fn kern<T>(r: crate::kernels::Result<T>) -> Result<T> {
    r.map_err(|e| crate::error::ExecError::msg(e.to_string()))
}

/// The rule of `op_type` in `domain`, if there is one.
pub(crate) fn lookup(domain: &str, op_type: &str) -> Option<RuleDef> {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    let def = |rule: Rule, inputs: &'static [usize], outputs: &'static [usize]| RuleDef {
        rule,
        inputs,
        outputs,
    };
    if domain == WHITTLE_DOMAIN && op_type == "FakeQuantize" {
        return Some(def(quant::fake_quantize, &[0, 1, 2], &[]));
    }
    if !domain.is_empty() {
        return None;
    }
    Some(match op_type {
        "Add" | "Sub" => def(elementwise::add_sub, &[], &[]),
        "Mul" | "Div" => def(elementwise::mul_div, &[0, 1], &[]),
        "Relu" | "Sigmoid" | "Tanh" | "Exp" => def(elementwise::from_output, &[], &[0]),
        "LeakyRelu" | "HardSigmoid" | "HardSwish" | "Erf" | "Gelu" => {
            def(elementwise::from_input, &[0], &[])
        }
        "Gemm" => def(linalg::gemm_rule, &[0, 1], &[]),
        "MatMul" => def(linalg::matmul, &[0, 1], &[]),
        "Conv" => def(linalg::conv, &[0, 1], &[]),
        "BatchNormalization" => def(norm::batch_norm, &[0, 1], &[]),
        "LayerNormalization" => def(norm::layer_norm, &[0, 1], &[]),
        "Softmax" => def(norm::softmax, &[], &[0]),
        "MaxPool" => def(pool::max_pool, &[0], &[]),
        "AveragePool" => def(pool::average_pool, &[], &[]),
        "GlobalAveragePool" => def(pool::global_average_pool, &[], &[]),
        "Identity" | "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => {
            def(shape::same_elements, &[], &[])
        }
        "Transpose" => def(shape::transpose, &[], &[]),
        "Concat" => def(shape::concat, &[], &[]),
        "ReduceMean" | "ReduceSum" => def(shape::reduce, &[1], &[]),
        "Dropout" => def(shape::dropout, &[1, 2], &[]),
        "Gather" => def(moves::gather, &[1], &[]),
        "Slice" => def(moves::copies, &[1, 2, 3, 4], &[]),
        "Expand" | "Tile" | "GatherElements" | "GatherND" => def(moves::copies, &[1], &[]),
        "DepthToSpace" | "SpaceToDepth" => def(moves::copies, &[], &[]),
        _ => return None,
    })
}
