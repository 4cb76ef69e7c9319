//! Builders for the inference tests: tiny models, values written like `N,3,?,28`,
//! and checks of the displayed types.

use std::collections::HashMap;

use crate::attr::make;
use crate::dtype::DataType;
use crate::model::Model;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use crate::tensor::TensorData;

use super::{infer, Dim, TensorType};

/// Dims written like `N,3,?,28` (empty: a scalar).
pub(super) fn parse_dims(s: &str) -> Vec<Dim> {
    if s.is_empty() {
        return vec![];
    }
    s.split(',')
        .map(|d| match (d, d.parse()) {
            (_, Ok(n)) => Dim::Known(n),
            ("?", _) => Dim::Unknown,
            _ => Dim::Symbol(d.to_string()),
        })
        .collect()
}

/// A graph input or value info; `dims` as in [`parse_dims`], `*` for unknown rank.
pub(super) fn value(name: &str, dtype: DataType, dims: &str) -> ValueInfoProto {
    let ty = TensorType {
        dtype: Some(dtype),
        dims: (dims != "*").then(|| parse_dims(dims)),
    };
    ty.to_value_info(name)
}

/// A node named `n_<first output>`.
pub(super) fn node(op: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: format!("n_{}", outs[0]),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A 1-D int64 initializer.
pub(super) fn ints(name: &str, v: &[i64]) -> TensorProto {
    TensorData::from_slice(vec![v.len()], v)
        .unwrap()
        .to_proto(name)
}

/// A 1-D float initializer.
pub(super) fn floats(name: &str, v: &[f32]) -> TensorProto {
    TensorData::from_slice(vec![v.len()], v)
        .unwrap()
        .to_proto(name)
}

/// A scalar initializer.
pub(super) fn scalar<T: crate::tensor::Element>(name: &str, v: T) -> TensorProto {
    TensorData::scalar(v).to_proto(name)
}

/// A model of one graph with the given inputs, initializers and nodes.
pub(super) fn model(
    opset: i64,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
) -> Model {
    Model::new(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            initializer: inits,
            input: inputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Inferred types (displayed) of every value.
pub(super) fn types(
    opset: i64,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
) -> HashMap<String, String> {
    let m = model(opset, inputs, inits, nodes);
    let t = infer(&m, &HashMap::new()).unwrap();
    t.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// The error inferring a model with one node.
pub(super) fn error(
    opset: i64,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    n: NodeProto,
) -> String {
    let m = model(opset, inputs, inits, vec![n]);
    infer(&m, &HashMap::new()).unwrap_err().to_string()
}

/// Asserts the displayed types of the named values.
pub(super) fn expect(t: &HashMap<String, String>, want: &[(&str, &str)]) {
    for (name, ty) in want {
        assert_eq!(
            t.get(*name).map(String::as_str),
            Some(*ty),
            "value '{name}'"
        );
    }
}

/// The transformer pattern: a Reshape target built by Shape -> Gather -> Unsqueeze -> Concat.
pub(super) fn attention_reshape() -> Model {
    model(
        13,
        vec![value("h", DataType::Float, "B,S,384")],
        vec![
            scalar("zero", 0i64),
            scalar("one", 1i64),
            ints("ax0", &[0]),
            ints("heads", &[12]),
            ints("dh", &[32]),
            ints("copy", &[0, 0, 12, -1]),
            ints("flat", &[-1, 384]),
        ],
        vec![
            node("Shape", &["h"], &["shape"], vec![]),
            node(
                "Gather",
                &["shape", "zero"],
                &["b"],
                vec![make::int("axis", 0)],
            ),
            node(
                "Gather",
                &["shape", "one"],
                &["s"],
                vec![make::int("axis", 0)],
            ),
            node("Unsqueeze", &["b", "ax0"], &["ub"], vec![]),
            node("Unsqueeze", &["s", "ax0"], &["us"], vec![]),
            node(
                "Concat",
                &["ub", "us", "heads", "dh"],
                &["target"],
                vec![make::int("axis", 0)],
            ),
            node("Reshape", &["h", "target"], &["split"], vec![]),
            node("Reshape", &["h", "copy"], &["split2"], vec![]),
            node("Reshape", &["h", "flat"], &["rows"], vec![]),
            node(
                "Transpose",
                &["split"],
                &["t"],
                vec![make::ints("perm", &[0, 2, 1, 3])],
            ),
            node("Transpose", &["split"], &["rev"], vec![]),
            node("Flatten", &["split"], &["f1"], vec![]),
            node("Flatten", &["split"], &["f2"], vec![make::int("axis", 2)]),
            node("ConstantOfShape", &["shape"], &["zeros"], vec![]),
            node("Mul", &["s", "one"], &["s_times_1"], vec![]),
            node("Unsqueeze", &["s_times_1", "ax0"], &["us1"], vec![]),
            node("Expand", &["zero", "us1"], &["ex"], vec![]),
        ],
    )
}
