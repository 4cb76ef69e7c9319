//! Operator implementations, one file per family, and the registry that maps
//! `(domain, op_type)` to an implementation. Adding an operator touches one family file.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use whittle_ir::proto::{GraphProto, NodeProto};
use whittle_ir::NodeAttrs;

use crate::bail;
use crate::error::Result;
use crate::executor::Executor;
use crate::value::Value;

pub mod activation;
pub mod batch_norm_train;
pub mod contrib;
pub mod conv;
pub mod elementwise;
pub mod erf;
pub mod fake_quant;
pub mod index;
pub mod linalg;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod shape;
pub mod unary;
pub mod util;

/// An operator implementation: reads its inputs and attributes from the context.
pub type OpFn = fn(&OpCtx) -> Result<Vec<Value>>;

/// Everything an operator sees while it runs.
pub struct OpCtx<'a> {
    /// The node being run (attributes, name).
    pub node: &'a NodeProto,
    /// Opset version of the node's domain.
    pub opset: i64,
    /// True when the graph runs in training mode (Dropout, BatchNormalization statistics).
    pub training: bool,
    /// Seed for this node's random draws (Dropout), when the run was given one.
    pub seed: Option<u64>,
    /// The node's inputs; `None` for omitted optional inputs.
    pub inputs: Vec<Option<Value>>,
    /// The executor, for operators with subgraphs.
    pub exec: &'a Executor,
    /// Values visible to subgraphs (the enclosing scope).
    pub scope: &'a HashMap<String, Value>,
}

impl OpCtx<'_> {
    /// Required input `i`.
    pub fn input(&self, i: usize) -> Result<&Value> {
        match self.inputs.get(i) {
            Some(Some(v)) => Ok(v),
            _ => bail!("required input #{i} is missing"),
        }
    }

    /// Optional input `i` (absent or empty name gives `None`).
    pub fn opt_input(&self, i: usize) -> Option<&Value> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// Number of input slots the node lists.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Axis attribute or input normalised into `0..rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        normalize_axis(axis, rank)
    }

    /// Runs a subgraph with `inputs` bound to its formal inputs, in this node's scope.
    pub fn run_subgraph(&self, graph: &GraphProto, inputs: Vec<Value>) -> Result<Vec<Value>> {
        self.exec
            .run_subgraph(graph, inputs, self.scope, self.training)
    }

    /// A required graph attribute.
    pub fn graph_attr(&self, name: &str) -> Result<&GraphProto> {
        match self.node.graph(name)? {
            Some(g) => Ok(g),
            None => bail!("attribute '{name}' is required"),
        }
    }
}

/// Normalises a possibly negative axis into `0..rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Maps `(domain, op_type)` to implementations.
#[derive(Default)]
pub struct Registry {
    ops: HashMap<(String, String), OpFn>,
}

impl Registry {
    /// Registers `op` of the default ONNX domain.
    pub fn add(&mut self, op: &str, f: OpFn) {
        self.add_in("", op, f);
    }

    /// Registers `op` of `domain`.
    pub fn add_in(&mut self, domain: &str, op: &str, f: OpFn) {
        self.ops.insert((domain.to_string(), op.to_string()), f);
    }

    /// The implementation of `op` in `domain` ("ai.onnx" is the default domain).
    pub fn get(&self, domain: &str, op: &str) -> Option<OpFn> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.ops.get(&(domain.to_string(), op.to_string())).copied()
    }

    /// Supported operators grouped by domain, sorted.
    pub fn list(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (domain, op) in self.ops.keys() {
            out.entry(domain.clone()).or_default().push(op.clone());
        }
        out.values_mut().for_each(|v| v.sort());
        out
    }

    /// The registry of every operator whittle implements.
    pub fn standard() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut r = Registry::default();
            activation::register(&mut r);
            contrib::register(&mut r);
            conv::register(&mut r);
            elementwise::register(&mut r);
            fake_quant::register(&mut r);
            index::register(&mut r);
            linalg::register(&mut r);
            norm::register(&mut r);
            pool::register(&mut r);
            quant::register(&mut r);
            reduce::register(&mut r);
            resize::register(&mut r);
            shape::register(&mut r);
            unary::register(&mut r);
            r
        })
    }
}
