//! [`GraphBuilder`]: emits ONNX nodes, initializers and constants with unique, scoped
//! names, and tracks each value's per-sample shape ([`Var`]) so layers can size their
//! weights. The layers themselves are in `layers.rs`.

use std::collections::{HashMap, HashSet};

use whittle_ir::memory::{ensure_fits, tensor_bytes};
use whittle_ir::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use whittle_ir::shape::{Dim, TensorType};
use whittle_ir::{DataType, GraphEdit, Model, TensorData};

use crate::error::{build_bail, Result};
use crate::init::Init;

/// ONNX IR version of zoo models.
pub const IR_VERSION: i64 = 8;
/// Opset of the default domain zoo models import.
pub const OPSET: i64 = 17;
/// Name of the symbolic batch dimension.
pub const BATCH: &str = "N";
/// Copies of the parameters that building and saving a model hold at once: the values
/// being drawn, the initializers, and the serialised model.
const PARAM_COPIES: u128 = 3;

/// A value of the graph being built: its name and its shape without the batch dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    /// The value's name.
    pub name: String,
    /// Per-sample shape (the graph value has a leading batch dimension `N`).
    pub shape: Vec<usize>,
}

/// Builds one graph: nodes, initialised parameters and shared constants.
pub struct GraphBuilder {
    graph: GraphProto,
    init: Init,
    scope: Vec<String>,
    names: HashSet<String>,
    constants: HashMap<String, String>,
    /// Bytes of the parameters asked for through [`GraphBuilder::weights`] so far.
    param_bytes: u128,
}

impl GraphBuilder {
    /// An empty graph whose weights are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        GraphBuilder {
            graph: GraphProto::default(),
            init: Init::new(seed),
            scope: Vec::new(),
            names: HashSet::new(),
            constants: HashMap::new(),
            param_bytes: 0,
        }
    }

    /// Declares a float graph input of shape `[N, shape...]`.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Var {
        self.names.insert(name.to_string());
        self.graph.input.push(value_info(name, shape));
        Var {
            name: name.to_string(),
            shape: shape.to_vec(),
        }
    }

    /// Runs `f` with node and parameter names prefixed by `name.`.
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    /// Reserves a node name no one uses yet: `scope.kind`, then `scope.kind_1`, ...
    /// (to name a node's parameters before [`GraphBuilder::emit`]ting it).
    pub fn reserve(&mut self, kind: &str) -> String {
        let base = self
            .scope
            .iter()
            .map(String::as_str)
            .chain([kind])
            .collect::<Vec<_>>()
            .join(".");
        let mut name = base.clone();
        let mut k = 0;
        while self.names.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.names.insert(name.clone());
        name
    }

    /// Emits a node named after `kind`; its single output (same name) has per-sample `shape`.
    pub fn node(
        &mut self,
        op: &str,
        kind: &str,
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
        shape: Vec<usize>,
    ) -> Var {
        let name = self.reserve(kind);
        self.emit(name, op, inputs, attributes, shape)
    }

    /// Emits a node under a name from [`GraphBuilder::reserve`]; its output has that name.
    pub fn emit(
        &mut self,
        name: String,
        op: &str,
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
        shape: Vec<usize>,
    ) -> Var {
        self.graph.node.push(NodeProto {
            name: name.clone(),
            op_type: op.to_string(),
            input: inputs,
            output: vec![name.clone()],
            attribute: attributes,
            ..Default::default()
        });
        Var { name, shape }
    }

    /// Adds a float initializer `owner.suffix`; returns its name.
    pub fn param(
        &mut self,
        owner: &str,
        suffix: &str,
        dims: &[usize],
        values: &[f32],
    ) -> Result<String> {
        let name = format!("{owner}.{suffix}");
        let data = TensorData::from_slice(dims.to_vec(), values)?;
        self.graph.initializer.push(data.to_proto(&name));
        self.names.insert(name.clone());
        Ok(name)
    }

    /// The random source for a parameter of `dims`, once the parameters so far plus this one
    /// are known to fit in the memory available ([`whittle_ir::memory::ensure_fits`]), with
    /// the copies that building and saving the model hold at once: an oversized option fails
    /// here, before anything is drawn or allocated.
    pub fn weights(&mut self, dims: &[usize]) -> Result<&mut Init> {
        let total = tensor_bytes(dims, 4).and_then(|b| b.checked_add(self.param_bytes));
        let needed = total.and_then(|b| b.checked_mul(PARAM_COPIES));
        ensure_fits(needed, "building the model")
            .map_err(|e| crate::error::ZooError::Build(e.to_string()))?;
        self.param_bytes = total.unwrap_or(u128::MAX);
        Ok(&mut self.init)
    }

    /// A `Constant` node holding `data` (one per distinct value); returns its output name.
    pub fn constant(&mut self, data: TensorData) -> String {
        let key = format!("{:?}{:?}{:?}", data.dtype(), data.dims(), data.bytes());
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let saved = std::mem::take(&mut self.scope);
        let name = self.reserve("const");
        self.scope = saved;
        let tensor = data.to_proto(&name);
        self.graph.node.push(NodeProto {
            name: name.clone(),
            op_type: "Constant".into(),
            output: vec![name.clone()],
            attribute: vec![whittle_ir::attr::make::tensor("value", tensor)],
            ..Default::default()
        });
        self.constants.insert(key, name.clone());
        name
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        self.constant(TensorData::scalar(value))
    }

    /// Finishes the graph with `out` as its only output, renamed to `name`, and wraps it
    /// in a model (IR version [`IR_VERSION`], opset [`OPSET`]).
    pub fn finish(mut self, out: &Var, name: &str, graph_name: &str) -> Result<Model> {
        if self.names.contains(name) {
            build_bail!("the output name '{name}' is already used in the graph");
        }
        self.graph.rename_value(&out.name, name);
        self.graph.output.push(value_info(name, &out.shape));
        self.graph.name = graph_name.to_string();
        let proto = ModelProto {
            ir_version: IR_VERSION,
            producer_name: "whittle-zoo".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            graph: Some(self.graph),
            ..Default::default()
        };
        let model = Model::new(proto);
        whittle_ir::validate(&model)?;
        Ok(model)
    }
}

/// A float `ValueInfo` of shape `[N, shape...]`.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let dims = std::iter::once(Dim::Symbol(BATCH.into()))
        .chain(shape.iter().map(|&d| Dim::Known(d)))
        .collect();
    let ty = TensorType {
        dtype: Some(DataType::Float),
        dims: Some(dims),
    };
    ty.to_value_info(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_scoped_unique_and_constants_shared() {
        let mut b = GraphBuilder::new(0);
        let x = b.input("input", &[4]);
        let half = b.scalar(0.5);
        let y = b
            .scoped("block", |b| {
                let y = b.node(
                    "Mul",
                    "mul",
                    vec![x.name.clone(), half.clone()],
                    vec![],
                    vec![4],
                );
                let again = b.scalar(0.5);
                Ok(b.node("Mul", "mul", vec![y.name, again], vec![], vec![4]))
            })
            .unwrap();
        let names: Vec<&str> = b.graph.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["const", "block.mul", "block.mul_1"]);
        let model = b.finish(&y, "out", "toy").unwrap();
        assert_eq!(model.graph().node[2].output, ["out"]);
        assert_eq!(model.opset(""), Some(OPSET));
    }
}
